"""Figures and measurements of lessons 01-03, and the tensor explorers of lessons 06 and 06b, checked on the
drawn data. (The window explorers are browser-native now: tests/test_explorers.py and the browser tests.)"""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dilate_lab import (
    neighbour_correlation,
    plot_attention_cost,
    plot_neighbour_correlation,
    plot_unfold_columns,
    plot_window_coverage,
    swda,
    unfold_integer_map,
)
from dilate_lab.course.cost import global_attention, measure_global_vs_window


def image_by_gid(fig, gid):
    found = [im for ax in fig.axes for im in ax.get_images() if im.get_gid() == gid]
    assert len(found) == 1, f"expected one image {gid!r}, found {len(found)}"
    return np.asarray(found[0].get_array())


def line_by_gid(fig, gid):
    found = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]
    assert len(found) == 1, f"expected one line {gid!r}"
    return found[0]


# --------------------------------------------------------------------------- coverage (lesson 02)
@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("H,W", [(8, 8), (5, 9)])
def test_coverage_is_what_swda_gives_for_equal_logits(kernel_size, H, W):
    """With q = k = 0 and v = 1, zero-padded SWDA outputs the share of the window on the map."""
    dilations = (1, 2, 3)
    fig = plot_window_coverage(H, W, kernel_size, dilations)
    q = torch.zeros(1, 1, H, W, 1, dtype=torch.float64)
    v = torch.ones(1, 1, H, W, 1, dtype=torch.float64)
    for dilation in dilations:
        drawn = image_by_gid(fig, f"coverage-r{dilation}")
        expected = swda(q, q, v, kernel_size, dilation)[0, 0, :, :, 0].numpy()
        np.testing.assert_allclose(drawn, expected, atol=1e-12)


def test_coverage_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        plot_window_coverage(8, 8, 4)
    with pytest.raises(ValueError, match="dilations"):
        plot_window_coverage(8, 8, 3, ())


# --------------------------------------------------------------------------- unfold (lesson 03)
def unfold_by_hand(H, W, kernel_size, dilation):
    """Column n = pixel n's window (row-major offsets), pixels numbered from 1, 0 = padding."""
    half = kernel_size // 2
    columns = np.zeros((kernel_size**2, H * W), dtype=np.int64)
    for i, j in itertools.product(range(H), range(W)):
        for o, (p, s) in enumerate(itertools.product(range(-half, half + 1), repeat=2)):
            a, b = i + p * dilation, j + s * dilation
            columns[o, i * W + j] = a * W + b + 1 if 0 <= a < H and 0 <= b < W else 0
    return columns


@pytest.mark.parametrize("H,W,kernel_size,dilation", [(4, 4, 3, 1), (5, 3, 3, 2), (6, 6, 5, 1), (3, 5, 3, 3)])
def test_unfold_columns_are_the_windows(H, W, kernel_size, dilation):
    expected = unfold_by_hand(H, W, kernel_size, dilation)
    np.testing.assert_array_equal(unfold_integer_map(H, W, kernel_size, dilation).numpy(), expected)
    row, col = H - 1, W // 2
    fig = plot_unfold_columns(H, W, kernel_size, dilation, row, col)
    np.testing.assert_array_equal(image_by_gid(fig, "unfold-matrix"), expected)
    boxed = [p for ax in fig.axes for p in ax.patches if p.get_gid() == "column"]
    assert len(boxed) == 1 and boxed[0].get_x() == pytest.approx(row * W + col - 0.5)


def test_unfold_figure_rejects_query_off_the_map():
    with pytest.raises(ValueError, match="row"):
        plot_unfold_columns(4, 4, 3, 1, row=4, col=0)


# --------------------------------------------------------------------------- cost (lesson 01)
def test_global_attention_matches_sdpa():
    q, k, v = (torch.randn(2, 3, 4, 5, 6, dtype=torch.float64) for _ in range(3))
    expected = F.scaled_dot_product_attention(
        q.reshape(2, 3, 20, 6), k.reshape(2, 3, 20, 6), v.reshape(2, 3, 20, 6)
    ).reshape(2, 3, 4, 5, 6)
    torch.testing.assert_close(global_attention(q, k, v), expected)


def test_measurements_and_their_figure():
    rows = measure_global_vs_window(sides=(4, 8), heads=2, head_dim=8, repeats=1, device="cpu")
    assert [r["side"] for r in rows] == [4, 8]
    assert rows[1]["global_scores"] == 2 * 64 * 64 and rows[1]["window_scores"] == 2 * 64 * 9
    for r in rows:
        assert r["global_ms"] > 0 and r["window_ms"] > 0
        # the (N, N) score matrix alone is 2 heads * N^2 float32 values
        assert r["global_peak_bytes"] >= 2 * r["tokens"] ** 2 * 4
    assert rows[1]["global_peak_bytes"] > rows[1]["window_peak_bytes"]
    fig = plot_attention_cost(rows)
    np.testing.assert_allclose(line_by_gid(fig, "global-time").get_ydata(), [r["global_ms"] for r in rows])
    np.testing.assert_allclose(
        line_by_gid(fig, "window-memory").get_ydata(), [r["window_peak_bytes"] / 2**20 for r in rows]
    )
    with pytest.raises(ValueError, match="rows"):
        plot_attention_cost([])
    with pytest.raises(ValueError, match="sides"):
        measure_global_vs_window(sides=())


def test_neighbour_correlation_on_known_images():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((64, 64))
    assert np.abs(neighbour_correlation(noise, 4)).max() < 0.1  # independent pixels
    ramp = np.add.outer(np.arange(64.0), np.arange(64.0))
    np.testing.assert_allclose(neighbour_correlation(ramp, 4), 1.0, atol=1e-3)  # perfectly predictable
    fig = plot_neighbour_correlation(rng.random((32, 32, 3)), max_offset=8, dilations=(1, 2))
    assert len(line_by_gid(fig, "correlation").get_ydata()) == 8
    assert line_by_gid(fig, "reach-r2").get_xdata()[0] == 2
    with pytest.raises(ValueError, match="max_offset"):
        neighbour_correlation(noise[:4, :4], 8)


# --------------------------------------------------------------------------- lessons 06 and 06b explorers
def test_speed_explorers_follow_their_controls():
    from dilate_lab import block_mask_explorer, shifted_views_explorer

    views = shifted_views_explorer()
    assert views.error is None and len(views.figure.axes) >= 9
    views.controls["kernel_size"].value = 5
    assert views.error is None and len(views.figure.axes) >= 25  # one panel per window position

    blocks = block_mask_explorer()
    assert blocks.error is None
    before = blocks.figure
    blocks.controls["block_size"].value = 16
    assert blocks.error is None and blocks.figure is not before
    for side in (8, 20, 32):
        for dilation in (1, 2, 3):
            blocks.controls["side"].value = side
            blocks.controls["dilation"].value = dilation
            assert blocks.error is None, blocks.error

