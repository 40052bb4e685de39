"""One query's attention in every head, drawn over the whole (small) image it was computed on.

Where ``attention_heads`` zooms in on a photograph's large map, this figure is for a
map small enough to show whole, such as the 8 x 8 tokens of a digit (lesson 00): one
panel per head, the image in grey, the head's k x k window coloured by its weights,
the window's span as a dashed square. Side by side, the three dilations show their
three window sizes, and trained weights show that they are far from equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ...geometry import Window
from ._style import _BEYOND_COLOR, _Verbatim, _call_text, _cells, _check_image, _draw_map, _footer, _no_ticks
from .attention_heads import attention_heads

__all__ = ["HeadMap", "HeadAttention", "head_attention", "plot_head_attention"]


@dataclass(frozen=True)
class HeadMap:
    """One head's weights for the query: over its window, and spread onto the map."""

    head: int
    dilation: int
    window: Window
    weights: np.ndarray
    """(k*k,) softmax weights in window order, positions beyond the border included."""
    on_map: np.ndarray
    """(H, W): each map cell's weight in this head's window; 0 for cells outside it."""
    padding: float
    """The share of the softmax that goes to positions beyond the border (zero padding)."""


@dataclass(frozen=True)
class HeadAttention:
    """What ``plot_head_attention`` draws: the map, the query and every head's window."""

    height: int
    width: int
    row: int
    col: int
    kernel_size: int
    margin: int
    """Cells shown beyond the border: how far the farthest window position lies outside (0: none)."""
    heads: tuple[HeadMap, ...]

    @property
    def uniform(self) -> float:
        """The weight of every position if a head spread its attention equally: 1 / k**2."""
        return 1.0 / self.kernel_size**2


def _distance_beyond(position: tuple[int, int], height: int, width: int) -> int:
    """How many cells (row, col) lies beyond the map's border (0 on the map)."""
    r, c = position
    return max(0, -r, r - (height - 1), -c, c - (width - 1))


def head_attention(weights, row: int, col: int, kernel_size: int, dilations: Sequence[int]) -> HeadAttention:
    """Every head's weights for the query at (row, col), over its window and spread onto the map.

    ``weights``: (heads, H, W, k*k) softmax weights in window order (what
    ``SmallDilateFormer.attention_maps`` returns); ``dilations``: each head's dilation.
    """
    view = attention_heads(weights, row, col, kernel_size, dilations)  # checks every argument
    heads, margin = [], 0
    for head in view.heads:
        on_map = np.zeros((view.height, view.width), dtype=np.float64)  # H, W
        for (r, c), w, out in zip(head.window.positions, head.weights, head.window.outside):
            if out:
                margin = max(margin, _distance_beyond((r, c), view.height, view.width))
            else:
                on_map[r, c] = w  # window positions are distinct: nothing is overwritten
        heads.append(HeadMap(head.head, head.dilation, head.window, np.asarray(head.weights), on_map, head.padding))
    return HeadAttention(view.height, view.width, row, col, kernel_size, margin, tuple(heads))


def plot_head_attention(
    image,
    weights,
    row: int,
    col: int,
    kernel_size: int,
    dilations: Sequence[int],
    title: str = "",
    vmax: float | None = None,
) -> Figure:
    """One panel per head: the image in grey, the query's window coloured by the head's weights.

    ``image``: what the (H, W) map was computed from, stretched over it (None: a
    plain grid); ``weights``: (heads, H, W, k*k) softmax weights in window order;
    ``dilations``: each head's dilation. Each window position is labelled with
    its weight in %; positions beyond the border (zero padding) are hatched; the
    dashed square is the window's span, (k - 1) * dilation + 1 cells wide. All
    heads share one colour scale, 0 to ``vmax`` (None: the largest weight shown).

    Artists: ``"head-0"``, ``"head-1"``, ... (PatchCollections, one square per
    on-map window position, ``get_array()`` their weights), ``"head-0-padding"``,
    ... (positions beyond the border), ``"span-0"``, ... (the dashed squares),
    ``"query"`` in every panel and ``"colorbar"``.
    """
    view = head_attention(weights, row, col, kernel_size, dilations)
    image = _check_image(image)
    if vmax is None:
        largest = max(float(np.max(head.weights)) for head in view.heads)
        top, scale = (largest if largest > 0 else 1.0), {}
    elif isinstance(vmax, bool) or not isinstance(vmax, (int, float)) or not 0 < vmax <= 1:
        raise ValueError(f"vmax must be None or a number in (0, 1], the top of the colour scale; got {vmax!r}")
    else:
        top, scale = float(vmax), {"vmax": round(float(vmax), 4)}
    norm = Normalize(0.0, top)

    n = len(view.heads)
    fig = Figure(figsize=(2.6 * n + 0.9, 3.6), dpi=80)
    panel = 0.88 / n
    for head in view.heads:
        ax = fig.add_axes((0.02 + head.head * panel, 0.07, panel * 0.92, 0.68))
        _draw_head(ax, view, head, norm, image)
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), cax=fig.add_axes((0.91, 0.1, 0.014, 0.62)))
    colorbar.ax.set_gid("colorbar")
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label(f"softmax weight\n(all equal: {view.uniform:.3f} each)", fontsize=7)
    fig.suptitle(title or f"query ({row}, {col}): each head's weights", fontsize=9, y=0.98)
    _footer(fig, _call_text("plot_head_attention", image=_Verbatim("image"), weights=_Verbatim("weights"),
                            row=row, col=col, kernel_size=kernel_size, dilations=tuple(dilations), **scale))
    return fig


def _draw_head(ax, view: HeadAttention, head: HeadMap, norm: Normalize, image) -> None:
    """One head: the image, its window coloured and labelled by weight, its span, the query."""
    window, weights = head.window, head.weights
    _draw_map(ax, view.height, view.width, margin=view.margin, image=image)
    if image is not None and np.ndim(image) == 2:
        ax.images[-1].set_cmap("gray")
    for outside, gid, style in (
        (False, f"head-{head.head}", dict(edgecolor="white", lw=0.6)),
        (True, f"head-{head.head}-padding", dict(edgecolor=_BEYOND_COLOR, hatch="///", lw=1.0)),
    ):
        chosen = [o for o, out in enumerate(window.outside) if out == outside]
        cells = _cells([window.positions[o] for o in chosen], gid, inset=0.04, cmap="viridis",
                       norm=norm, alpha=0.8, zorder=2, **style)
        cells.set_array(weights[chosen])
        ax.add_collection(cells)
    for (i, j), w in zip(window.positions, weights):
        ax.text(j, i, f"{100 * w:.0f}", ha="center", va="center", fontsize=7, zorder=6,
                color="white" if norm(w) < 0.6 else "black")
    half = window.span / 2
    span = Rectangle((view.col - half, view.row - half), window.span, window.span, fill=False, edgecolor="white",
                     ls="--", lw=1.2, zorder=5)
    span.set_gid(f"span-{head.head}")
    ax.add_patch(span)
    ax.add_patch(Rectangle((view.col - 0.5, view.row - 0.5), 1, 1, fill=False, edgecolor="cyan", lw=2.0, zorder=5,
                           gid="query"))  # an outline: the query's own weight stays readable
    _no_ticks(ax)
    k = view.kernel_size
    padding = f"; {100 * head.padding:.0f}% on padding" if window.n_outside else ""
    ax.set_title(
        f"head {head.head}: dilation {head.dilation}\n{k}x{k} window spanning {window.span}x{window.span} cells\n"
        f"weights {100 * float(weights.min()):.0f}% to {100 * float(weights.max()):.0f}%{padding}",
        fontsize=8, y=1.01,
    )
