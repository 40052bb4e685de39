"""Window geometry of sliding window dilated attention (DilateFormer eq. 3).

A query at row ``i``, column ``j`` attends to the positions
``(i + p * r, j + q * r)`` for ``p, q`` in ``[-(k // 2), k // 2]``: a k x k grid
of positions, ``r`` apart, centred on the query. Window order is row-major over
``(p, q)``, the column order of ``torch.nn.Unfold`` (and so of the paper's code).

Everything here is plain Python (plus two small tensor helpers), so that the
figures and the tests can ask "which pixels does this query see?" without
running any attention.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ._checks import check_dilation, check_kernel_size, check_positive_int

__all__ = [
    "Window",
    "dilated_window",
    "window_offsets",
    "window_span",
    "padding_counts",
    "inside_mask",
    "downsampled_side",
]


def window_span(kernel_size: int, dilation: int) -> int:
    """Side length, in pixels, covered by a k x k window with dilation r: (k - 1) * r + 1."""
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    return (kernel_size - 1) * dilation + 1


def window_offsets(kernel_size: int, dilation: int) -> list[tuple[int, int]]:
    """The k*k (row, column) offsets of a dilated window, in window (unfold) order."""
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    half = kernel_size // 2
    steps = range(-half, half + 1)
    return [(p * dilation, q * dilation) for p in steps for q in steps]


@dataclass(frozen=True)
class Window:
    """The dilated window of one query on an ``height`` x ``width`` map."""

    query: tuple[int, int]
    kernel_size: int
    dilation: int
    height: int
    width: int
    positions: tuple[tuple[int, int], ...]
    """(row, column) of every window position, in window order; may lie outside the map."""
    outside: tuple[bool, ...]
    """True where that position lies beyond the border (a zero-padded key)."""

    @property
    def span(self) -> int:
        return (self.kernel_size - 1) * self.dilation + 1

    @property
    def n_inside(self) -> int:
        return self.outside.count(False)

    @property
    def n_outside(self) -> int:
        return self.outside.count(True)

    @property
    def inside_positions(self) -> list[tuple[int, int]]:
        return [pos for pos, out in zip(self.positions, self.outside) if not out]

    @property
    def outside_positions(self) -> list[tuple[int, int]]:
        return [pos for pos, out in zip(self.positions, self.outside) if out]


def dilated_window(
    row: int, col: int, kernel_size: int, dilation: int, height: int, width: int
) -> Window:
    """The positions a query at (row, col) attends to, and which lie beyond the border.

    >>> w = dilated_window(0, 0, kernel_size=3, dilation=2, height=8, width=8)
    >>> w.positions[:3], w.n_outside, w.span
    (((-2, -2), (-2, 0), (-2, 2)), 5, 5)
    """
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    for name, value, size in (("row", row, height), ("col", col, width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < size:
            raise ValueError(f"{name} must be an int in [0, {size - 1}], got {value!r}")
    row, col = int(row), int(col)
    positions = tuple((row + dr, col + dc) for dr, dc in window_offsets(kernel_size, dilation))
    outside = tuple(not (0 <= r < height and 0 <= c < width) for r, c in positions)
    return Window((row, col), kernel_size, dilation, height, width, positions, outside)


def inside_mask(
    height: int, width: int, kernel_size: int, dilation: int, device=None
) -> torch.Tensor:
    """Boolean (height, width, k*k): True where window position o of query (i, j) is on the map."""
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    offsets = torch.tensor(window_offsets(kernel_size, dilation), device=device)  # k*k, 2
    rows = torch.arange(height, device=device).view(height, 1, 1) + offsets[:, 0]  # H, 1, k*k
    cols = torch.arange(width, device=device).view(1, width, 1) + offsets[:, 1]  # 1, W, k*k
    return ((rows >= 0) & (rows < height)) & ((cols >= 0) & (cols < width))  # H, W, k*k


def padding_counts(
    height: int, width: int, kernel_size: int, dilation: int, device=None
) -> torch.Tensor:
    """Integer (height, width): how many of each query's k*k window positions lie beyond the border."""
    inside = inside_mask(height, width, kernel_size, dilation, device=device)  # H, W, k*k
    return (~inside).sum(-1)  # H, W


def downsampled_side(side: int) -> int:
    """The side after a 3x3 convolution with stride 2 and padding 1 (DilateFormer's stem
    steps and its downsampling between stages): n pixels -> ceil(n / 2)."""
    return (side + 1) // 2
