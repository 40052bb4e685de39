"""The effective receptive field of a stack of SWDA layers (Luo et al., 2016).

- ``theoretical_span``: the side 1 + sum (k - 1) * r_l of what a stack can see.
- ``effective_receptive_field``: |d output[centre] / d input| of a seeded stack.
- ``window_chain_counts``: how many chains of windows join each input pixel to the
  centre output, computed exactly without a gradient (the same pixels are reached).
- ``erf_panels`` / ``plot_effective_receptive_field``: several dilation
  schedules side by side on one log scale; ``ErfPicture`` redraws it quickly (the explorer).
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
from ._pictures import figure_png
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
    "ErfPicture",
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
    centre = size // 2
    # Only the pixels that can reach the centre output are computed: layer l's outputs within the
    # reach of the layers after it, (k // 2) * sum(r of the later layers), of the centre; their
    # windows read layer l's inputs within its own reach more. Beyond the map both are cut at the
    # border, where the cropped input is zero-padded exactly as the whole map is; inside the map no
    # window of a kept output leaves the cropped input. The gradient is the same as on the whole
    # map, for a fraction of the work (the last layers compute a few pixels instead of size^2).
    reaches = [(kernel_size // 2) * r for r in dilations]
    later = [sum(reaches[layer + 1:]) for layer in range(len(dilations))]  # reach of the layers after each

    def around_centre(reach: int) -> tuple[int, int]:
        return max(centre - reach, 0), min(centre + reach + 1, size)

    with torch.enable_grad(), _one_thread():  # enable_grad: also when called under torch.no_grad()
        start, stop = around_centre(later[0] + reaches[0])
        h = x[:, :, start:stop, start:stop]  # 1, 1, side, side, C
        for layer, r in enumerate(dilations):
            wq, wk, wv = torch.randn(3, channels, channels, generator=generator, dtype=torch.float64) / channels**0.5
            # "shift": plain autograd, so unreachable pixels get a gradient of exactly 0
            h = swda(h @ wq, h @ wk, h @ wv, kernel_size, r, impl="shift")  # 1, 1, side, side, C
            kept_start, kept_stop = around_centre(later[layer])
            kept = slice(kept_start - start, kept_stop - start)  # in the cropped input's coordinates
            h = h[:, :, kept, kept]  # 1, 1, kept, kept, C
            start = kept_start
        h[0, 0, centre - start, centre - start].sum().backward()
    grad = x.grad[0, 0].abs().sum(-1).numpy()  # size, size
    grad.setflags(write=False)  # shared by the cache
    return grad


GRADIENT_COST_LIMIT = 300_000
"""Above this ``gradient_cost`` the explorer shows window-chain counts instead of a gradient.
(1, 2, 3) at kernel 7 (cost 247,107) took 0.02 s of CPU (0.03-0.04 s before only the pixels
that reach the centre were computed); eight layers of dilation 9 at kernel 7 (cost 75
million) took 26 s on a quiet 2-core machine on the whole map."""


def gradient_cost(kernel_size: int, dilations: Sequence[int], size: int) -> int:
    """Work of one effective-receptive-field gradient on the whole map, in window positions visited:
    layers * size^2 * k^2 (an upper bound: only the pixels that reach the centre are computed)."""
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
    ``ErfPicture`` redraws it for other schedules.
    """
    count = len(_check_schedules(schedules))
    return ErfPicture(count).draw(schedules, kernel_size, size, seed, measure)


class ErfPicture:
    """``plot_effective_receptive_field`` for ``count`` schedules, built once and redrawn for any of them.

    The panels, the colour bar and the texts are made once; ``draw`` gives the images
    their new maps and colour scale, the dashed squares their span and the texts
    their words (the erf explorer redraws in a fraction of the time of a new figure).
    """

    def __init__(self, count: int, dpi: int = 80):
        check_positive_int(count, "count")
        self.count = count
        self.figure = fig = Figure(figsize=(3.3 * count + 0.6, 3.9), dpi=dpi)
        width = 0.86 / count  # of the figure, per panel; the colour bar takes the right edge
        self._panels = []
        for i in range(count):
            ax = fig.add_axes((0.04 + i * width, 0.1, width * 0.92, 0.72))
            image = ax.imshow(np.ma.masked_all((1, 1)), cmap="viridis", vmin=-1.0, vmax=0.0, interpolation="nearest")
            image.set_gid(f"erf-{i}")
            span = Rectangle((0, 0), 1, 1, fill=False, ls="--", edgecolor="tab:cyan", lw=1.4, gid=f"span-{i}")
            ax.add_patch(span)
            _no_ticks(ax)
            self._panels.append((ax, image, span))
        self._colorbar = fig.colorbar(image, cax=fig.add_axes((0.92, 0.1, 0.012, 0.72)))
        self._colorbar.ax.tick_params(labelsize=7)
        self._title = fig.suptitle("")
        _footer(fig, "")
        self._footer = fig.texts[-1]

    def draw(
        self, schedules: Sequence[Sequence[int]], kernel_size: int = 3, size: int | None = None, seed: int = 0,
        measure: str = "gradient",
    ) -> Figure:
        """The figure for these schedules (as many as the picture has panels); arguments as in ``erf_panels``."""
        given = len(_check_schedules(schedules))
        if given != self.count:
            raise ValueError(f"schedules must hold {self.count} schedules (one per panel), got {given}")
        panels = erf_panels(schedules, kernel_size, size, seed, measure)
        for i, (ax, image, span) in enumerate(self._panels):
            _show_erf_panel(ax, image, span, panels, i)
        if panels.measure == "gradient":
            self._colorbar.set_label("log10 |grad| / max", fontsize=7)
            self._title.set_text(f"effective receptive field, kernel {kernel_size}: log10 |grad| (white = 0)")
            self._title.set(fontsize=9, y=0.98)
        else:
            self._colorbar.set_label("log10 chains / max", fontsize=7)
            self._title.set_text(
                f"kernel {kernel_size}: log10 of the number of window chains to the centre (white = 0): the pixels\n"
                "a gradient would reach, counted exactly (a gradient of this many positions would be too slow here)"
            )
            self._title.set(fontsize=8, y=0.99)
        extra = {} if measure == "gradient" else {"measure": measure}
        self._footer.set_text(_call_text(
            "plot_effective_receptive_field", schedules=[list(s) for s in panels.schedules],
            kernel_size=kernel_size, size=panels.size, seed=seed, **extra,
        ))
        return self.figure

    def png(self, *args, **kwargs) -> bytes:
        """``draw`` and the picture as PNG bytes at the figure's dpi."""
        return figure_png(self.draw(*args, **kwargs))


def _show_erf_panel(ax, image, span, panels: ErfPanels, i: int) -> None:
    """Schedule ``i``'s log gradient (clipped to the shared scale) and its dashed theoretical span."""
    schedule, width, size = panels.schedules[i], panels.spans[i], panels.size
    image.set_data(np.ma.masked_invalid(np.clip(panels.log_grads[i], panels.floor, 0.0)))
    image.set_clim(panels.floor, 0.0)
    image.set_extent((-0.5, size - 0.5, size - 0.5, -0.5))  # what imshow gives a size x size image
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    centre = size // 2
    span.set_bounds(centre - width / 2, centre - width / 2, width, width)
    ax.set_title(
        f"dilations {list(schedule)}\ntheoretical span {width}x{width}, {panels.reached[i]} pixels reached",
        fontsize=9, y=1.01,
    )
