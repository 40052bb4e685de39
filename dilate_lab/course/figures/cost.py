"""Why a window: what global attention costs, and how little nearby pixels add (lesson 01).

- ``plot_attention_cost``: time and memory of global attention and SWDA against
  the number of pixels, from ``dilate_lab.course.cost.measure_global_vs_window``.
- ``neighbour_correlation`` / ``plot_neighbour_correlation``: how alike a pixel
  and its neighbour at distance t are in a photograph, against each dilation's reach.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..._checks import check_dilations, check_kernel_size, check_positive_int
from ._style import _ATTENDED_COLOR, _BEYOND_COLOR, _Verbatim, _call_text, _footer, _group_color

__all__ = ["plot_attention_cost", "neighbour_correlation", "plot_neighbour_correlation"]


# ---------------------------------------------------------------------------
# 1. the cost of global attention against a window, measured (lesson 01)
# ---------------------------------------------------------------------------
def plot_attention_cost(rows: Sequence[dict]) -> Figure:
    """Time and peak memory of global attention and SWDA against the number of pixels N.

    ``rows``: the output of ``dilate_lab.course.cost.measure_global_vs_window``. Dotted
    lines show the slopes N^2 and N through the largest map, for comparison.

    Artists: lines ``"global-time"``, ``"window-time"``, ``"global-memory"``, ``"window-memory"``.
    """
    if not rows:
        raise ValueError("rows must hold at least one measurement (from measure_global_vs_window)")
    tokens = np.array([row["tokens"] for row in rows], dtype=float)
    fig = Figure(figsize=(8.4, 3.4), dpi=80)
    ax_time, ax_mem = fig.subplots(1, 2)
    panels = [(ax_time, "ms", "forward time (ms, best run)", 1.0), (ax_mem, "peak_bytes", "peak memory (MiB)", 2**-20)]
    for ax, key, label, unit in panels:
        for kind, colour in (("global", _BEYOND_COLOR), ("window", _ATTENDED_COLOR)):
            values = [row[f"{kind}_{key}"] for row in rows]
            if any(value is None for value in values):
                continue
            values = np.array(values, dtype=float) * unit
            name = "global attention" if kind == "global" else "sliding window (SWDA)"
            ax.plot(tokens, values, marker="o", color=colour, label=name, gid=f"{kind}-{'time' if key == 'ms' else 'memory'}")
            slope = 2 if kind == "global" else 1
            ax.plot(tokens, values[-1] * (tokens / tokens[-1]) ** slope, ls=":", color=colour, lw=1,
                    label=f"slope N^{slope}" if slope == 2 else "slope N")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pixels N = H * W", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("global attention grows as N^2, a k x k window as N k^2", fontsize=9)
    _footer(fig, "plot_attention_cost(measure_global_vs_window(...))")
    fig.subplots_adjust(bottom=0.18, wspace=0.3)
    return fig


def neighbour_correlation(image, max_offset: int = 16) -> np.ndarray:
    """Correlation of a grey image with itself shifted by 1..max_offset pixels (mean of both axes)."""
    array = np.asarray(image, dtype=float)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=-1)
    if array.ndim != 2 or min(array.shape) <= max_offset:
        raise ValueError(
            f"image must be a 2-D or (rows, cols, channels) array larger than max_offset={max_offset}, "
            f"got shape {np.shape(image)}"
        )
    check_positive_int(max_offset, "max_offset")
    values = []
    for offset in range(1, max_offset + 1):
        across = np.corrcoef(array[:, :-offset].ravel(), array[:, offset:].ravel())[0, 1]
        down = np.corrcoef(array[:-offset, :].ravel(), array[offset:, :].ravel())[0, 1]
        values.append((across + down) / 2)
    return np.array(values)


def plot_neighbour_correlation(image, max_offset: int = 16, kernel_size: int = 3, dilations: Sequence[int] = (1, 2, 3)) -> Figure:
    """How alike a pixel and its neighbour at distance t are, in a real photograph.

    Left: the photograph. Right: the correlation against t, with the reach
    r * (k // 2) of each dilation marked: a window with dilation 1 spends its
    k*k keys on nearly identical neighbours; dilation reaches farther for free.

    Artists: line ``"correlation"``, vertical lines ``"reach-r<dilation>"``.
    """
    correlation = neighbour_correlation(image, max_offset)
    check_kernel_size(kernel_size)
    dilations = check_dilations(dilations, "dilations")
    fig = Figure(figsize=(8.0, 3.3), dpi=80)
    ax_img, ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    ax_img.imshow(np.asarray(image), cmap="gray" if np.ndim(image) == 2 else None)
    ax_img.set_axis_off()
    ax_img.set_title("grace_hopper.jpg (matplotlib sample data)", fontsize=8)
    offsets = np.arange(1, max_offset + 1)
    ax.plot(offsets, correlation, marker="o", ms=3, color="black", gid="correlation")
    for i, dilation in enumerate(dilations):
        reach = dilation * (kernel_size // 2)
        ax.axvline(reach, color=_group_color(i), ls="--", lw=1.2, gid=f"reach-r{dilation}",
                   label=f"reach of a {kernel_size}x{kernel_size} window, r={dilation}")
    ax.set_xlabel("distance t between two pixels", fontsize=8)
    ax.set_ylabel("correlation", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.set_title("nearby pixels are nearly redundant", fontsize=9)
    _footer(fig, _call_text("plot_neighbour_correlation", image=_Verbatim("photo"), max_offset=max_offset,
                            kernel_size=kernel_size, dilations=tuple(dilations)))
    fig.subplots_adjust(bottom=0.17, wspace=0.15)
    return fig
