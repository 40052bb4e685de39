"""nn.Unfold (im2col) on a tiny integer map: each pixel's window becomes one column.

Pixel n of an H x W map holds the number n + 1, so that every entry of the
unfolded (k*k, H*W) matrix says which pixel it copied (0: zero padding).
"""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..._checks import check_dilation, check_kernel_size, check_positive_int
from ...geometry import Window, dilated_window
from ._style import _BEYOND_COLOR, _QUERY_COLOR, _call_text, _cells, _check_query, _draw_map, _footer

__all__ = ["unfold_integer_map", "plot_unfold_columns"]


def unfold_integer_map(height: int, width: int, kernel_size: int, dilation: int) -> torch.Tensor:
    """F.unfold of the map 1..H*W (0 marks zero padding): (k*k, H*W), column n = pixel n's window."""
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    pixels = torch.arange(1, height * width + 1, dtype=torch.float32).reshape(1, 1, height, width)
    columns = torch.nn.functional.unfold(
        pixels, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2)
    )  # 1, 1*k*k, H*W
    return columns[0].round().to(torch.int64)  # k*k, H*W


def plot_unfold_columns(
    height: int = 4, width: int = 4, kernel_size: int = 3, dilation: int = 1, row: int = 1, col: int = 1
) -> Figure:
    """nn.Unfold on the map 1..H*W: each pixel's window becomes one column.

    Left: the map, the query (row, col) and its window. Right: the (k*k, H*W)
    unfold output with the query's column boxed; 0 is zero padding.

    Artists: ``"unfold-matrix"`` (image of the unfolded integers), ``"window"``
    (the window cells on the map), ``"column"`` (the boxed column).
    """
    _check_query(row, col, height, width)
    columns = unfold_integer_map(height, width, kernel_size, dilation)  # k*k, H*W
    kk, n = columns.shape
    window = dilated_window(row, col, kernel_size, dilation, height, width)
    margin = dilation * (kernel_size // 2)
    fig = Figure(figsize=(3.2 + 0.32 * n, 3.6 + 0.1 * kk), dpi=80)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, max(1.0, n / (height + 2 * margin))]})
    colours = matplotlib.colormaps["viridis"].with_extremes(under="0.85")
    norm = dict(vmin=0.5, vmax=height * width + 0.5, cmap=colours)
    _draw_unfold_input(left, window, margin, norm)
    _draw_unfold_matrix(right, columns, window, norm)
    _footer(fig, _call_text(
        "plot_unfold_columns", height=height, width=width, kernel_size=kernel_size,
        dilation=dilation, row=row, col=col,
    ))
    fig.subplots_adjust(bottom=0.16, top=0.82, wspace=0.25)
    return fig


def _label_color(value: int, pixels: int) -> str:
    """Black on the light end of viridis (the top 40% of 1..pixels) and on grey padding, else white."""
    return "black" if value == 0 or value > 0.6 * pixels else "white"


def _draw_unfold_input(ax, window: Window, margin: int, norm: dict) -> None:
    """The map 1..H*W, numbered, with the query's window outlined (padded positions hatched)."""
    height, width = window.height, window.width
    _draw_map(ax, height, width, margin)
    pixels = np.arange(1, height * width + 1).reshape(height, width)
    ax.imshow(pixels, extent=(-0.5, width - 0.5, height - 0.5, -0.5), zorder=0.5, gid="pixels", **norm)
    ax.add_collection(
        _cells(window.inside_positions, "window", inset=0.08, facecolor="none", edgecolor=_QUERY_COLOR, lw=2)
    )
    ax.add_collection(
        _cells(window.outside_positions, "window-padding", inset=0.06, facecolor="none",
               edgecolor=_BEYOND_COLOR, hatch="xxx", lw=1.0)
    )
    for (i, j), value in np.ndenumerate(pixels):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7, zorder=6,
                color=_label_color(value, height * width))
    ax.set_title(f"input (1, 1, {height}, {width})\nquery {window.query} and its window", fontsize=9)


def _draw_unfold_matrix(ax, columns: torch.Tensor, window: Window, norm: dict) -> None:
    """The (k*k, H*W) unfold output, numbered where it fits, the query's column boxed."""
    kk, n = columns.shape
    ax.imshow(columns.numpy(), aspect="auto", gid="unfold-matrix", **norm)  # 0 (padding) shows grey
    if n * kk <= 400:
        for (o, m), value in np.ndenumerate(columns.numpy()):
            ax.text(m, o, str(value), ha="center", va="center", fontsize=6, color=_label_color(value, n))
    row, col = window.query
    index = row * window.width + col
    ax.add_patch(Rectangle((index - 0.5, -0.5), 1, kk, fill=False, edgecolor=_QUERY_COLOR, lw=2.5, gid="column"))
    ax.set_xlabel("column = pixel row * W + col", fontsize=8)
    ax.set_ylabel("row = window position", fontsize=8)
    ax.set_title(
        f"F.unfold(x, {window.kernel_size}, dilation={window.dilation}, "
        f"padding={window.dilation * (window.kernel_size // 2)})\n-> (1, {kk}, {n}); column {index} boxed",
        fontsize=9,
    )
    ax.tick_params(labelsize=6)
