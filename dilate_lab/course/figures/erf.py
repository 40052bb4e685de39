"""The effective receptive field of a stack of SWDA layers (Luo et al., 2016).

- ``theoretical_span``: the side 1 + sum (k - 1) * r_l of what a stack can see.
- ``effective_receptive_field``: |d output[centre] / d input| of a seeded stack.
- ``window_chain_counts``: how many chains of windows join each input pixel to the
  centre output, computed exactly without a gradient (the same pixels are reached).
- ``erf_panels`` / ``plot_effective_receptive_field``: several dilation
  schedules side by side on one log scale.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..._checks import check_dilations, check_kernel_size, check_positive_int, check_seed
from ...functional import swda
from ._style import _call_text, _footer, _no_ticks

__all__ = [
    "theoretical_span",
    "effective_receptive_field",
    "window_chain_counts",
    "GRADIENT_COST_LIMIT",
    "gradient_cost",
    "ErfPanels",
    "erf_panels",
    "plot_effective_receptive_field",
]


def theoretical_span(kernel_size: int, dilations: Sequence[int]) -> int:
    """Side of the square a stack of SWDA layers can see: 1 + sum over layers of (k - 1) * r."""
    check_kernel_size(kernel_size)
    dilations = check_dilations(dilations, "dilations")
    return 1 + sum((kernel_size - 1) * r for r in dilations)


def effective_receptive_field(
    dilations: Sequence[int],
    kernel_size: int = 3,
    size: int | None = None,
    channels: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """|d output[centre] / d input| for a stack of single-head SWDA layers, as a (size, size) map.

    Layer l projects its input to q, k, v with seeded random (channels x channels)
    matrices and applies ``swda`` with dilation ``dilations[l]`` (zero padding).
    The gradient of the sum of the centre pixel's output channels with respect to
    the input, summed in absolute value over channels, is the effective receptive
    field (Luo et al., 2016): positions no chain of windows reaches get exactly 0.
    ``size`` defaults to the theoretical span plus a margin of 2 on each side.
    """
    span = theoretical_span(kernel_size, dilations)
    dilations = check_dilations(dilations, "dilations")
    size = span + 4 if size is None else size
    check_positive_int(size, "size")
    check_positive_int(channels, "channels")
    check_seed(seed)
    return _cached_erf(dilations, kernel_size, int(size), int(channels), int(seed)).copy()


@contextlib.contextmanager
def _one_thread():
    """Run torch on one CPU thread inside: these tensors are tiny, and on a busy machine torch's
    worker threads made one gradient 10 to 100 times slower than a single thread (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=32)
def _cached_erf(dilations: tuple[int, ...], kernel_size: int, size: int, channels: int, seed: int) -> np.ndarray:
    """The computation behind ``effective_receptive_field``, cached: a widget that changes
    one of two schedules recomputes only that one."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, size, size, channels, generator=generator, dtype=torch.float64)  # B, heads, H, W, C
    x.requires_grad_(True)
    with torch.enable_grad(), _one_thread():  # enable_grad: also when called under torch.no_grad()
        h = x
        for r in dilations:
            wq, wk, wv = torch.randn(3, channels, channels, generator=generator, dtype=torch.float64) / channels**0.5
            # "shift": plain autograd, so unreachable pixels get a gradient of exactly 0
            h = swda(h @ wq, h @ wk, h @ wv, kernel_size, r, impl="shift")  # 1, 1, size, size, C
        centre = size // 2
        h[0, 0, centre, centre].sum().backward()
    grad = x.grad[0, 0].abs().sum(-1).numpy()  # size, size
    grad.setflags(write=False)  # shared by the cache
    return grad


GRADIENT_COST_LIMIT = 300_000
"""Above this ``gradient_cost`` the explorer shows window-chain counts instead of a gradient.
(1, 2, 3) at kernel 7 (cost 247,107) took 0.04 s of CPU; eight layers of dilation 9 at
kernel 7 (cost 75 million) took 26 s on a quiet 2-core machine."""


def gradient_cost(kernel_size: int, dilations: Sequence[int], size: int) -> int:
    """Work of one effective-receptive-field gradient, in window positions visited: layers * size^2 * k^2."""
    return len(dilations) * size * size * kernel_size * kernel_size


def window_chain_counts(dilations: Sequence[int], kernel_size: int = 3, size: int | None = None) -> np.ndarray:
    """How many chains of windows lead from each input pixel to the centre output, as a (size, size) map.

    A chain picks one window position per layer; its pixels must stay on the map
    (beyond the border is zero padding, a constant that passes no gradient). The
    count is exact, needs no tensor, and is nonzero exactly where the gradient of
    ``effective_receptive_field`` is (tests check both). With every attention
    weight equal it is the gradient itself, up to scale. The window is separable,
    so the count is the outer product of one count per axis: ``size * k`` steps
    per layer instead of ``size^2 * k^2``.
    """
    span = theoretical_span(kernel_size, dilations)
    dilations = check_dilations(dilations, "dilations")
    size = span + 4 if size is None else size
    check_positive_int(size, "size")
    line = np.zeros(size)
    line[size // 2] = 1.0
    half = kernel_size // 2
    for r in reversed(dilations):  # from the output back to the input, one layer at a time
        spread = np.zeros(size)
        for p in range(-half, half + 1):
            shift = p * r
            if abs(shift) < size:
                spread[max(shift, 0): size + min(shift, 0)] += line[max(-shift, 0): size - max(shift, 0)]
        line = spread
    return np.outer(line, line)


@dataclass(frozen=True)
class ErfPanels:
    """What ``plot_effective_receptive_field`` draws: one log-gradient map per schedule, on one scale."""

    schedules: tuple[tuple[int, ...], ...]
    spans: tuple[int, ...]
    """``theoretical_span`` of each schedule."""
    size: int
    log_grads: tuple[np.ndarray, ...]
    """log10(|grad| / max |grad|) per schedule, (size, size); NaN where the gradient is exactly 0."""
    reached: tuple[int, ...]
    """How many pixels have a non-zero gradient, per schedule."""
    floor: float
    """Bottom of the shared colour scale: the lowest value any panel reaches, rounded down to half
    a decade, at most -0.5 and never below -6 (below that the colours would only show rounding)."""
    measure: str = "gradient"
    """What the maps hold: ``"gradient"`` (|d out / d in|) or ``"chains"`` (window-chain counts)."""


def _check_schedules(schedules) -> list[tuple[int, ...]]:
    if isinstance(schedules, (str, bytes)) or not isinstance(schedules, Sequence) or len(schedules) == 0:
        raise ValueError(f"schedules must be a non-empty list of dilation schedules, e.g. [[1, 1, 1], [1, 2, 3]]; got {schedules!r}")
    return [check_dilations(s, f"schedules[{i}]") for i, s in enumerate(schedules)]


MEASURES = ("gradient", "chains", "auto")


def _choose_measure(measure: str, schedules, kernel_size: int, size: int) -> str:
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    if measure != "auto":
        return measure
    cost = max(gradient_cost(kernel_size, s, size) for s in schedules)
    return "gradient" if cost <= GRADIENT_COST_LIMIT else "chains"


def erf_panels(
    schedules: Sequence[Sequence[int]], kernel_size: int = 3, size: int | None = None, seed: int = 0,
    measure: str = "gradient",
) -> ErfPanels:
    """The effective receptive field of every schedule on one (size, size) map, as log10 of the
    normalised gradient; ``size`` defaults to the largest theoretical span plus 4.

    ``measure="chains"`` maps ``window_chain_counts`` instead (no gradient: the same pixels
    reached, in microseconds); ``"auto"`` takes the gradient while ``gradient_cost`` stays
    within ``GRADIENT_COST_LIMIT``, the counts beyond (what the explorer does, so that
    every setting answers quickly).
    """
    schedules = _check_schedules(schedules)
    spans = [theoretical_span(kernel_size, s) for s in schedules]
    size = max(spans) + 4 if size is None else size
    check_positive_int(size, "size")
    measure = _choose_measure(measure, schedules, kernel_size, size)
    log_grads, reached_counts = [], []
    for schedule in schedules:
        if measure == "gradient":
            grad = effective_receptive_field(schedule, kernel_size, size, seed=seed)
        else:
            grad = window_chain_counts(schedule, kernel_size, size)
        reached = grad > 0
        log_grad = np.full(grad.shape, np.nan)
        log_grad[reached] = np.log10(grad[reached] / grad.max())
        log_grads.append(log_grad)
        reached_counts.append(int(reached.sum()))
    lowest = min(float(np.nanmin(g)) for g in log_grads)
    floor = max(-6.0, min(-0.5, np.floor(2 * lowest) / 2))  # half decades; at least one
    return ErfPanels(tuple(schedules), tuple(spans), size, tuple(log_grads), tuple(reached_counts), floor, measure)


def plot_effective_receptive_field(
    schedules: Sequence[Sequence[int]] = ((1, 1, 1), (1, 2, 3)),
    kernel_size: int = 3,
    size: int | None = None,
    seed: int = 0,
    measure: str = "gradient",
) -> Figure:
    """Effective receptive fields of stacks of SWDA layers, one panel per dilation schedule.

    Colour: log10 of |gradient| relative to its maximum, on one scale for all
    panels, from 0 down to the smallest value any panel reaches (rounded down to
    half a decade, and never below -6, where the colours would only show
    rounding); white: exactly zero (no chain of windows reaches the pixel).
    Dashed square: the theoretical span 1 + sum (k - 1) * r. With [1, 2, 3] the
    three layers cover 13 x 13 pixels without holes; [1, 1, 1] only 7 x 7;
    [2, 2, 2] 13 x 13 but with holes (the "gridding" of stacked dilations).

    ``measure``: see ``erf_panels``; with window-chain counts the title says so.

    Artists: ``"erf-0"``, ``"erf-1"``, ... (images; their masked array holds the
    normalised log gradient) and ``"span-0"``, ``"span-1"``, ... (the dashed squares).
    """
    panels = erf_panels(schedules, kernel_size, size, seed, measure)
    count = len(panels.schedules)
    fig = Figure(figsize=(3.3 * count + 0.6, 3.9), dpi=80)
    width = 0.86 / count  # of the figure, per panel; the colour bar takes the right edge
    for i in range(count):
        image = _draw_erf_panel(fig.add_axes((0.04 + i * width, 0.1, width * 0.92, 0.72)), panels, i)
    colorbar = fig.colorbar(image, cax=fig.add_axes((0.92, 0.1, 0.012, 0.72)))
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label("log10 |grad| / max", fontsize=7)
    if panels.measure == "gradient":
        fig.suptitle(f"effective receptive field, kernel {kernel_size}: log10 |grad| (white = 0)", fontsize=9, y=0.98)
    else:
        colorbar.set_label("log10 chains / max", fontsize=7)
        fig.suptitle(
            f"kernel {kernel_size}: log10 of the number of window chains to the centre (white = 0): the pixels\n"
            "a gradient would reach, counted exactly (a gradient of this many positions would be too slow here)",
            fontsize=8, y=0.99,
        )
    extra = {} if measure == "gradient" else {"measure": measure}
    _footer(fig, _call_text("plot_effective_receptive_field", schedules=[list(s) for s in panels.schedules],
                            kernel_size=kernel_size, size=panels.size, seed=seed, **extra))
    return fig


def _draw_erf_panel(ax, panels: ErfPanels, i: int):
    """Schedule ``i``'s log gradient (clipped to the shared scale) and its dashed theoretical span."""
    schedule, span = panels.schedules[i], panels.spans[i]
    shown = np.ma.masked_invalid(np.clip(panels.log_grads[i], panels.floor, 0.0))
    image = ax.imshow(shown, cmap="viridis", vmin=panels.floor, vmax=0.0, interpolation="nearest")
    image.set_gid(f"erf-{i}")
    centre = panels.size // 2
    ax.add_patch(
        Rectangle((centre - span / 2, centre - span / 2), span, span, fill=False, ls="--",
                  edgecolor="tab:cyan", lw=1.4, gid=f"span-{i}")
    )
    _no_ticks(ax)
    ax.set_title(
        f"dilations {list(schedule)}\ntheoretical span {span}x{span}, {panels.reached[i]} pixels reached",
        fontsize=9, y=1.01,
    )
    return image
