"""The compute half of every figure, checked on numbers.

Each ``plot_*`` draws what a pure function returns; these tests check those
functions without drawing. Expected values come from the definition (DilateFormer
eq. 3: the query (i, j) attends to (i + p*r, j + q*r), p, q in [-(k//2), k//2]),
from an independent computation (F.pad and slicing, a brute-force loop), or by
hand for a tiny case; never from the code under test.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dilate_lab import dilateformer_tiny
from dilate_lab.course import figures
from dilate_lab.course.shapes import trace_msda_shapes


def window_by_definition(row, col, k, r):
    """Window positions in window order, from eq. 3."""
    half = k // 2
    return [(row + p * r, col + q * r) for p in range(-half, half + 1) for q in range(-half, half + 1)]


# ---------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kernel_size, dilation, row, col", [(3, 2, 0, 0), (5, 1, 4, 8), (3, 3, 8, 5), (7, 1, 2, 9)])
def test_receptive_field_window_margin_and_span_square(kernel_size, dilation, row, col):
    height, width = 9, 11
    field = figures.receptive_field(kernel_size, dilation, row, col, height, width)
    assert list(field.window.positions) == window_by_definition(row, col, kernel_size, dilation)
    # the margin is how far the window reaches beyond its query: the farthest position
    reach = max(abs(r - row) for r, _ in window_by_definition(row, col, kernel_size, dilation))
    assert field.margin == reach
    left, top, side = field.span_box
    # the square's edges run along the outer edges of the first and last window cells
    positions = window_by_definition(row, col, kernel_size, dilation)
    assert (left, top) == (min(c for _, c in positions) - 0.5, min(r for r, _ in positions) - 0.5)
    assert left + side == max(c for _, c in positions) + 0.5


def test_multi_scale_view_by_hand():
    view = figures.multi_scale_view(0, 1, 6, 6, 3, (1, 2, 3), dim=96, num_heads=6)
    assert view.table == (("1", "0-1", "0-31", "3x3"), ("2", "2-3", "32-63", "5x5"), ("3", "4-5", "64-95", "7x7"))
    assert view.margin == 3
    # nested: group 0 the largest square, each later group further inside its cell
    assert view.insets[0] == pytest.approx(0.04)
    assert all(a < b for a, b in zip(view.insets, view.insets[1:])) and view.insets[-1] < 0.5
    # query (0, 1), kernel 3: row -r is off the map for every r; column 1 - r too for r >= 2
    assert [w.n_outside for w in view.windows] == [3, 5, 5]
    for window, r in zip(view.windows, (1, 2, 3)):
        assert list(window.positions) == window_by_definition(0, 1, 3, r)


def test_multi_scale_view_refuses_an_uneven_split():
    with pytest.raises(ValueError, match="dilations"):
        figures.multi_scale_view(0, 0, 6, 6, 3, (1, 2, 3, 4), dim=96, num_heads=6)


def test_window_coverage_by_hand_and_by_brute_force():
    coverage = figures.window_coverage(3, 3, 3, (1,))
    assert coverage.tolist() == [[[4, 6, 4], [6, 9, 6], [4, 6, 4]]]  # corner, edge, centre of a 3x3 map
    height, width, k = 5, 7, 3
    coverage = figures.window_coverage(height, width, k, (1, 2, 3))
    assert coverage.shape == (3, height, width)
    for d, r in enumerate((1, 2, 3)):
        for i, j in itertools.product(range(height), range(width)):
            on_map = sum(0 <= a < height and 0 <= b < width for a, b in window_by_definition(i, j, k, r))
            assert coverage[d, i, j] == on_map


# ---------------------------------------------------------------------------
# borders
# ---------------------------------------------------------------------------
def test_border_modes_give_every_rule_and_the_natten_message_when_it_cannot_run():
    results = figures.border_modes(0, 0, 3, 2, 10, 10, seed=0)
    assert set(results) == set(figures.BORDER_MODES)
    zeros, mask = results["zeros"], results["mask"]
    # query (0, 0), k = 3, r = 2: 4 of the 9 positions are on the map, 5 padded
    assert sum(zeros.outside) == 5 and len(mask.positions) == 4
    # masking renormalises the zero-padding weights of the real keys
    real = np.array([w for w, out in zip(zeros.weights, zeros.outside) if not out])
    np.testing.assert_allclose(mask.weights, real / real.sum(), rtol=1e-12)
    small = figures.border_modes(0, 0, 3, 3, 6, 6)
    assert isinstance(small["shifted"], str) and "kernel_size * dilation" in small["shifted"]


def test_border_modes_check_the_seed():
    with pytest.raises(ValueError, match="seed"):
        figures.border_modes(0, 0, 3, 1, 5, 5, seed=-1)


# ---------------------------------------------------------------------------
# effective receptive field
# ---------------------------------------------------------------------------
def test_erf_panels_support_counts_floor_and_normalisation():
    panels = figures.erf_panels([(1, 1, 1), (1, 2, 3), (2, 2, 2)], kernel_size=3)
    assert panels.spans == (7, 13, 13)
    assert panels.size == 17  # the largest span and a margin of 2 on each side
    # [1, 1, 1]: every pixel of the 7x7 span; [1, 2, 3]: all 13x13 (no holes);
    # [2, 2, 2]: only the even offsets of 13x13, 7x7 of them (the gridding of equal dilations)
    assert panels.reached == (49, 169, 49)
    for log_grad, reached in zip(panels.log_grads, panels.reached):
        assert np.nanmax(log_grad) == 0.0  # normalised by the maximum
        assert int(np.isfinite(log_grad).sum()) == reached
    lowest = min(np.nanmin(g) for g in panels.log_grads)
    assert panels.floor <= lowest or panels.floor == -6.0
    assert panels.floor * 2 == int(panels.floor * 2) and -6.0 <= panels.floor <= -0.5


def test_erf_panels_refuse_an_empty_list():
    with pytest.raises(ValueError, match="schedules"):
        figures.erf_panels([])


# ---------------------------------------------------------------------------
# attention heads
# ---------------------------------------------------------------------------
def test_attention_heads_windows_weights_and_padding_share():
    rng = np.random.default_rng(0)
    weights = rng.random((2, 6, 7, 9))
    weights /= weights.sum(-1, keepdims=True)
    view = figures.attention_heads(weights, 0, 6, 3, (1, 2))
    assert (view.height, view.width, view.reach) == (6, 7, 2 * 1 + 1)
    for head, r in zip(view.heads, (1, 2)):
        positions = window_by_definition(0, 6, 3, r)
        assert list(head.window.positions) == positions
        np.testing.assert_array_equal(head.weights, weights[head.head, 0, 6])
        padded = [o for o, (a, b) in enumerate(positions) if not (0 <= a < 6 and 0 <= b < 7)]
        assert len(padded) == 5  # top row and right column of a corner-adjacent query
        assert head.padding == pytest.approx(weights[head.head, 0, 6, padded].sum())


def test_attention_heads_wants_one_dilation_per_head():
    with pytest.raises(ValueError, match="one dilation per head"):
        figures.attention_heads(np.full((3, 4, 4, 9), 1 / 9), 0, 0, 3, (1, 2))


# ---------------------------------------------------------------------------
# tensor shapes
# ---------------------------------------------------------------------------
def rows_of(*sizes_and_flags):
    return [SimpleNamespace(step=f"t{i}", shape=(n,), dtype=torch.float32, nbytes=n, kk_copy=kk)
            for i, (n, kk) in enumerate(sizes_and_flags)]


def test_memory_totals_by_hand():
    totals = figures.memory_totals(rows_of((1024, False), (3072, True), (4096, False)))
    assert (totals.total, totals.copies) == (8192, 3072)
    assert totals.copies_percent == 37.5
    assert totals.summary() == "8.0 KiB in all, 3.0 KiB (38%)"
    with pytest.raises(ValueError, match="rows"):
        figures.memory_totals([])


@pytest.mark.parametrize("largest, unit, name", [(700, 1, "B"), (3 * 2**20, 2**20, "MiB"), (2.5 * 2**30, 2**30, "GiB")])
def test_memory_ticks_are_round_and_within_the_axis(largest, unit, name):
    ticks, got_unit, got_name = figures.memory_ticks(largest)
    assert (got_unit, got_name) == (unit, name)
    assert ticks[0] == 0 and ticks[-1] <= largest / unit * 1.001 and 2 <= len(ticks) <= 6
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
    np.testing.assert_allclose(np.diff(ticks), step)


def test_shape_table_html_has_a_row_per_tensor_and_marks_the_copies():
    rows = trace_msda_shapes(1, 72, 14, 14, 3, 3, (1, 2, 3))
    table = figures.shape_table_html(rows)
    assert table.count("<tr class=") == len(rows)
    assert table.count('class="dl-kk-row"') == sum(row.kk_copy for row in rows) > 0
    copies = sum(row.nbytes for row in rows if row.kk_copy)
    assert f"{len(rows)} tensors" in table and figures.format_bytes(copies) in table


# ---------------------------------------------------------------------------
# architecture
# ---------------------------------------------------------------------------
def test_pyramid_layout_of_tiny_by_hand():
    stages = figures.dilateformer_stage_shapes(dilateformer_tiny(), 224)  # maps 56, 28, 14, 7
    layout = figures.pyramid_layout(stages)
    # the first square is 0.42; the others scale with the map's side: 0.21, 0.105, 0.0525
    np.testing.assert_allclose(layout.sides, [0.42, 0.21, 0.105, 0.0525])
    # image 0.3 + stem 0.22; then each column max(side, 0.3) wide, 0.14 for each arrow
    np.testing.assert_allclose(layout.stage_x, [0.52, 0.52 + 0.42 + 0.14, 1.08 + 0.3 + 0.14, 1.52 + 0.3 + 0.14])
    np.testing.assert_allclose(layout.arrow_x, [0.94, 1.38, 1.82])
    assert layout.right == pytest.approx(2.26)


def test_block_branches_read_the_block():
    model = dilateformer_tiny()
    block = model.stages[0].blocks[0]
    branches = figures.block_branches(block, (1, 2, 3))
    names = [name for _, boxes in branches for name, _, _ in boxes]
    assert names == ["pos_embed", "norm1", "attn", "norm2", "mlp"]
    texts = {name: text for _, boxes in branches for name, text, _ in boxes}
    assert texts["attn"] == "MSDA\nr = 1, 2, 3, k = 3"
    assert texts["mlp"] == f"MLP\nC -> {4 * 72} -> C"  # mlp_ratio 4 of dim 72
    assert figures.block_branches(model.stages[3].blocks[0], None)[1][1][1][1] == "global\nattention"


# ---------------------------------------------------------------------------
# speed: shifted views and block-sparse tiles
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("H, W, k, r, row, col", [(6, 6, 3, 2, 1, 4), (5, 7, 5, 1, 4, 0), (4, 4, 3, 3, 0, 3)])
def test_shifted_views_slice_padded_k_at_the_query_key(H, W, k, r, row, col):
    pad = r * (k // 2)
    numbers = torch.arange(1, H * W + 1, dtype=torch.float32).reshape(1, 1, H, W)
    padded = F.pad(numbers, (pad, pad, pad, pad))[0, 0]  # H + 2p, W + 2p; 0 is padding
    views = figures.shifted_views(H, W, k, r, row, col)
    assert [v.index for v in views] == list(range(k * k))
    for view, (kr, kc) in zip(views, window_by_definition(row, col, k, r)):
        sliced = padded[view.rows[0]:view.rows[1], view.cols[0]:view.cols[1]]
        assert tuple(sliced.shape) == (H, W)
        assert view.key == (kr, kc)
        on_map = 0 <= kr < H and 0 <= kc < W
        assert view.on_map == on_map
        assert int(sliced[row, col]) == (kr * W + kc + 1 if on_map else 0)


def test_window_pairs_by_brute_force():
    H, W, k, r = 4, 5, 3, 2
    keys, on_map = figures.window_pairs(H, W, k, r)
    assert keys.shape == on_map.shape == (H * W, k * k)
    for n in range(H * W):
        expected = window_by_definition(n // W, n % W, k, r)
        for o, (a, b) in enumerate(expected):
            inside = 0 <= a < H and 0 <= b < W
            assert on_map[n, o] == inside
            if inside:
                assert keys[n, o] == a * W + b


def test_block_reads_by_brute_force():
    H, W, k, r, size = 8, 8, 3, 2, 16
    usage = figures.window_block_usage(H, W, k, r, size)
    reads = figures.block_reads(usage, 5, 3)  # pixel 43: block 2, pixels 32..47
    assert reads.query_block == 2
    assert reads.members.tolist() == list(range(32, 48))
    expected = sorted({a * W + b for n in range(32, 48) for a, b in window_by_definition(n // W, n % W, k, r)
                       if 0 <= a < H and 0 <= b < W})
    assert reads.read.tolist() == expected
    blocks = sorted({p // size for p in expected})
    assert reads.loaded_blocks.tolist() == blocks
    assert reads.loaded.tolist() == [p for b in blocks for p in range(b * size, (b + 1) * size)]


def test_block_reads_cut_the_last_block_short():
    usage = figures.window_block_usage(3, 5, 3, 1, 4)  # 15 pixels: blocks of 4, 4, 4, 3
    reads = figures.block_reads(usage, 2, 4)
    assert reads.query_block == 3 and reads.members.tolist() == [12, 13, 14]
    assert reads.loaded.max() == 14
