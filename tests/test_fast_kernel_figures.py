"""Lesson 06b's pictures of the fast kernels, checked against the kernels themselves and F.unfold."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dilate_lab.course.figures.kernels import (
    flat_window,
    plot_flat_window,
    plot_row_work,
    plot_tile_loads,
    row_work,
    tile_loads,
)
from dilate_lab.course.figures.traffic import forward_traffic, plot_forward_traffic
from dilate_lab.ops.fused import _window_shifts

CASES = [(5, 7, 3, 2, 1, 5), (6, 6, 3, 1, 0, 0), (7, 9, 5, 1, 6, 8), (8, 5, 3, 3, 4, 2), (9, 11, 3, 2, 4, 5)]


def cells_of(fig, gid):
    """(row, col) of every square of the PatchCollections with this gid (x = col, y = row)."""
    found = [c for ax in fig.axes for c in ax.collections if c.get_gid() == gid]
    assert found, f"no collection {gid!r}"
    return sorted(
        (round(path.vertices[:, 1].mean()), round(path.vertices[:, 0].mean()))
        for collection in found for path in collection.get_paths()
    )


def unfold_column(height, width, kernel_size, dilation, row, col):
    """The pixel numbers 1..H*W (0: padding) of the query's window, by F.unfold."""
    numbers = torch.arange(1, height * width + 1, dtype=torch.float64).reshape(1, 1, height, width)
    pad = dilation * (kernel_size // 2)
    return F.unfold(numbers, kernel_size, dilation=dilation, padding=pad)[0, :, row * width + col].long().tolist()


# --------------------------------------------------------------------------- "fused": the flat table
@pytest.mark.parametrize("H,W,kernel_size,dilation,row,col", CASES)
def test_flat_window_uses_the_fused_shifts_and_lands_on_the_unfold_keys(H, W, kernel_size, dilation, row, col):
    window = flat_window(H, W, kernel_size, dilation, row, col)
    assert window.shifts == tuple(_window_shifts(kernel_size, dilation, W))  # what "fused" itself uses
    column = unfold_column(H, W, kernel_size, dilation, row, col)
    n = row * W + col
    for o, number in enumerate(column):
        assert window.on_map[o] == (number != 0)
        flat = n + window.shifts[o]
        if number != 0:  # on the map, the flat shift reaches exactly the key
            assert window.landed[o] == divmod(number - 1, W) == window.keys[o]
        elif 0 <= flat < H * W:  # padding, but inside the table: a real pixel that is not the key
            assert o in window.wrong and window.landed[o] == divmod(flat, W) != window.keys[o]
        else:
            assert o in window.outside and window.landed[o] is None
    assert sorted(window.wrong + window.outside) == [o for o, number in enumerate(column) if number == 0]


def test_flat_window_figure_draws_the_right_keys_and_the_wrong_pixels():
    window = flat_window(5, 7, 3, 2, 1, 5)
    assert window.wrong and window.outside  # the default shows both kinds
    fig = plot_flat_window(5, 7, 3, 2, 1, 5)
    keys = [k for k, ok in zip(window.keys, window.on_map) if ok]
    assert cells_of(fig, "window-keys") == sorted(keys) == cells_of(fig, "flat-keys")
    assert cells_of(fig, "window-padding") == sorted(k for k, ok in zip(window.keys, window.on_map) if not ok)
    assert cells_of(fig, "flat-wrong") == sorted(window.landed[o] for o in window.wrong)
    numbers = [t.get_text() for t in fig.axes[1].texts if t.get_gid() == "table-rows"]
    assert numbers == [str(i) for i in range(5 * 7)]


# --------------------------------------------------------------------------- "cpp": one image row
@pytest.mark.parametrize("H,W,kernel_size,dilation,row,col", CASES)
def test_row_work_reads_the_rows_of_every_window_of_the_row(H, W, kernel_size, dilation, row, col):
    work = row_work(H, W, kernel_size, dilation, row)
    rows_of_keys = {
        (number - 1) // W for j in range(W) for number in unfold_column(H, W, kernel_size, dilation, row, j) if number
    }
    assert set(work.rows_read) == rows_of_keys
    assert set(work.rows_read) | set(work.rows_skipped) == set(work.key_rows) and len(work.key_rows) == kernel_size
    assert all(not 0 <= r < H for r in work.rows_skipped)
    assert work.stride % work.lanes == 0 and W <= work.stride < W + work.lanes
    assert work.positions == kernel_size**2


def test_row_work_figure_marks_the_weights_of_padded_keys_and_the_rounding():
    H, W, kernel_size, dilation, row = 7, 11, 3, 2, 1
    fig = plot_row_work(H, W, kernel_size, dilation, row)
    padded = [
        (o, j) for j in range(W)
        for o, number in enumerate(unfold_column(H, W, kernel_size, dilation, row, j)) if number == 0
    ]
    assert cells_of(fig, "weights-padding") == sorted(padded)
    stride = row_work(H, W, kernel_size, dilation, row).stride
    assert len(cells_of(fig, "weights-rounding")) == kernel_size**2 * (stride - W)
    assert len(cells_of(fig, "weights-used")) == kernel_size**2 * W - len(padded)
    read = [p for p in fig.axes[0].patches if p.get_gid() == "rows-read"]
    assert sorted(round(p.get_y() + p.get_height() / 2) for p in read) == [1, 3]


# --------------------------------------------------------------------------- "triton": a tile of queries
@pytest.mark.parametrize("H,W,block_q,tile", [(8, 8, 16, 1), (5, 7, 16, 2), (9, 11, 32, 0)])
def test_tile_loads_mask_exactly_the_zero_padded_keys(H, W, block_q, tile):
    kernel_size, dilation = 3, 2
    for offset in range(kernel_size**2):
        loads = tile_loads(H, W, kernel_size, dilation, block_q, tile, offset)
        pixels = range(tile * block_q, min((tile + 1) * block_q, H * W))
        assert loads.queries == tuple(divmod(n, W) for n in pixels)
        for (r, c), key, masked in zip(loads.queries, loads.keys, loads.masked):
            number = unfold_column(H, W, kernel_size, dilation, r, c)[offset]
            assert masked == (number == 0)
            if number:
                assert key == divmod(number - 1, W)


def test_tile_loads_figure_draws_each_offset():
    fig = plot_tile_loads(8, 8, 3, 2, 16, 1, offsets=(0, 8))
    assert len(fig.axes) == 2
    for o in (0, 8):
        loads = tile_loads(8, 8, 3, 2, 16, 1, o)
        assert cells_of(fig, f"loads-{o}") == sorted(k for k, m in zip(loads.keys, loads.masked) if not m)
        assert cells_of(fig, f"masked-{o}") == sorted(k for k, m in zip(loads.keys, loads.masked) if m)
    assert len(cells_of(fig, "tile")) == 2 * 16


def test_kernel_figures_reject_bad_arguments():
    with pytest.raises(ValueError, match="row"):
        flat_window(5, 7, 3, 2, 5, 0)
    with pytest.raises(ValueError, match="height and width"):
        plot_flat_window(20, 7, 3, 2, 0, 0)
    with pytest.raises(ValueError, match="kernel_size"):
        plot_flat_window(5, 7, 4, 2, 0, 0)
    with pytest.raises(ValueError, match="lanes"):
        row_work(5, 7, 3, 2, 0, lanes=0)
    with pytest.raises(ValueError, match="tile"):
        tile_loads(8, 8, 3, 2, 16, 4, 0)  # 64 pixels: tiles 0-3
    with pytest.raises(ValueError, match="offset"):
        tile_loads(8, 8, 3, 2, 16, 0, 9)
    with pytest.raises(ValueError, match="offsets"):
        plot_tile_loads(offsets=())


# --------------------------------------------------------------------------- the memory-traffic count
@pytest.mark.parametrize("kernel_size, head_dim", [(3, 24), (5, 8), (7, 64), (1, 16)])
def test_forward_traffic_against_the_floor(kernel_size, head_dim):
    count = forward_traffic(kernel_size, head_dim)
    kk = kernel_size**2
    assert count.total("floor") == 4  # read q, k, v and write the output: 4 N*d, whatever k and d
    assert count.total("cpp") == pytest.approx(4 + kk / head_dim)  # the floor, plus the (k*k, N) weights
    # fused reads q once per window row and K once per position, and passes over the output k*k times
    assert count.total("fused") > count.total("cpp") and count.vs_floor("fused") >= kk / 2
    assert count.vs_floor("cpp") == pytest.approx(count.total("cpp") / 4)
    assert count.flops_per_output == {"floor": 2, "cpp": 4 * kk}


def test_forward_traffic_figure_stacks_the_parts():
    count = forward_traffic(3, 24)
    fig = plot_forward_traffic(3, 24)
    (ax,) = fig.axes
    for name in count.parts:
        bars = [p for p in ax.patches if p.get_gid() == f"traffic-{name}"]
        assert [b.get_width() for b in bars] == pytest.approx([amount for _, amount in count.parts[name]])
        assert bars[-1].get_x() + bars[-1].get_width() == pytest.approx(count.total(name))  # stacked end to end
    labels = [t.get_text() for t in ax.texts]
    assert any(f"{count.vs_floor('fused'):.1f}x the floor" in text for text in labels)
    with pytest.raises(ValueError, match="head_dim"):
        forward_traffic(3, 0)
    with pytest.raises(ValueError, match="kernel_size"):
        plot_forward_traffic(2, 24)
    assert np.isclose(count.total("fused") / count.total("floor"), count.vs_floor("fused"))
