"""Window geometry against brute force and against nn.Unfold's own column order."""

import pytest
import torch
import torch.nn.functional as F

from dilate_lab import (
    dilated_window,
    inside_mask,
    padding_counts,
    window_offsets,
    window_span,
)


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("dilation", [1, 2, 3, 4])
def test_span_is_distance_between_outermost_positions_plus_one(kernel_size, dilation):
    offsets = window_offsets(kernel_size, dilation)
    rows = [dr for dr, _ in offsets]
    assert window_span(kernel_size, dilation) == max(rows) - min(rows) + 1
    assert len(offsets) == kernel_size**2


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (3, 2), (5, 3), (7, 2)])
def test_window_order_is_unfold_column_order(kernel_size, dilation):
    """Unfold a map whose pixels hold their own index: the columns spell out each window."""
    H, W = 9, 11
    index = torch.arange(H * W, dtype=torch.float64).reshape(1, 1, H, W) + 1  # 0 marks padding
    cols = F.unfold(index, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2))
    cols = cols.reshape(kernel_size**2, H, W)  # k*k, H, W
    for row, col in [(0, 0), (4, 5), (8, 10), (1, 9)]:
        window = dilated_window(row, col, kernel_size, dilation, H, W)
        for o, ((r, c), outside) in enumerate(zip(window.positions, window.outside)):
            expected = 0 if outside else r * W + c + 1
            assert cols[o, row, col].item() == expected


@pytest.mark.parametrize("H,W", [(8, 8), (5, 9), (1, 1), (2, 5)])
@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (3, 3), (5, 2), (7, 1)])
def test_inside_mask_and_counts_match_brute_force(H, W, kernel_size, dilation):
    mask = inside_mask(H, W, kernel_size, dilation)
    counts = padding_counts(H, W, kernel_size, dilation)
    half = kernel_size // 2
    for i in range(H):
        for j in range(W):
            brute = [
                0 <= i + p * dilation < H and 0 <= j + s * dilation < W
                for p in range(-half, half + 1)
                for s in range(-half, half + 1)
            ]
            assert mask[i, j].tolist() == brute
            assert counts[i, j].item() == brute.count(False)
            window = dilated_window(i, j, kernel_size, dilation, H, W)
            assert window.n_outside == brute.count(False)
            assert len(window.inside_positions) == brute.count(True)


def test_corner_window_example():
    window = dilated_window(0, 0, kernel_size=3, dilation=2, height=8, width=8)
    assert window.positions == (
        (-2, -2), (-2, 0), (-2, 2), (0, -2), (0, 0), (0, 2), (2, -2), (2, 0), (2, 2),
    )
    assert window.outside == (True, True, True, True, False, False, True, False, False)
    assert window.span == 5 and window.n_inside == 4 and window.n_outside == 5


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(row=8, col=0), "row"),
        (dict(row=0, col=-1), "col"),
        (dict(row=0, col=0, kernel_size=2), "kernel_size"),
        (dict(row=0, col=0, dilation=0), "dilation"),
        (dict(row=0, col=0, height=0), "height"),
    ],
)
def test_bad_geometry_arguments(kwargs, name):
    args = dict(row=0, col=0, kernel_size=3, dilation=1, height=8, width=8) | kwargs
    with pytest.raises(ValueError, match=name):
        dilated_window(**args)
