"""Each head's attention weights for one query, zoomed in on the image the map came from.

- ``attention_heads`` / ``plot_attention_heads``: one model's heads for one query;
- ``plot_attention_comparison``: the same query under several models (untrained, trained), one row each;
- ``head_sharpness`` / ``plot_head_sharpness``: how concentrated each head's weights are over
  many queries (mean largest weight, mean entropy), for several models side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..._checks import check_dilations
from ...geometry import Window, dilated_window
from ._style import _BEYOND_COLOR, _cells, _check_image, _check_query, _draw_map, _no_ticks

__all__ = [
    "HeadWindow",
    "AttentionHeads",
    "attention_heads",
    "plot_attention_heads",
    "plot_attention_comparison",
    "HeadSharpness",
    "attention_entropy",
    "head_sharpness",
    "plot_head_sharpness",
]


@dataclass(frozen=True)
class HeadWindow:
    """One head's window around the query and its softmax weights over it."""

    head: int
    dilation: int
    window: Window
    weights: np.ndarray
    """(k*k,) in window order, padded positions included."""
    padding: float
    """The share of the softmax that goes to positions beyond the border."""


@dataclass(frozen=True)
class AttentionHeads:
    """What ``plot_attention_heads`` draws: the map, the zoom and every head's window."""

    height: int
    width: int
    reach: int
    """Half the side of the zoomed square: the widest window's reach, max(r) * (k // 2), and one cell more."""
    heads: tuple[HeadWindow, ...]


def attention_heads(weights, row: int, col: int, kernel_size: int, dilations: Sequence[int]) -> AttentionHeads:
    """Every head's window and weights for the query at (row, col).

    ``weights``: (heads, H, W, k*k) softmax weights in window order;
    ``dilations``: each head's dilation.
    """
    weights = np.asarray(weights)
    if weights.ndim != 4 or weights.shape[-1] != kernel_size * kernel_size:
        raise ValueError(
            f"weights must be (heads, H, W, kernel_size**2 = {kernel_size * kernel_size}), got shape {weights.shape}"
        )
    heads, height, width, _ = weights.shape
    dilations = check_dilations(dilations, "dilations")
    if len(dilations) != heads:
        raise ValueError(f"dilations must give one dilation per head ({heads}), got {len(dilations)}: {dilations}")
    _check_query(row, col, height, width)
    windows = []
    for h, r in enumerate(dilations):
        window = dilated_window(row, col, kernel_size, r, height, width)
        head_weights = weights[h, row, col]  # k*k
        padding = float(head_weights[list(window.outside)].sum()) if window.n_outside else 0.0
        windows.append(HeadWindow(h, r, window, head_weights, padding))
    reach = max(dilations) * (kernel_size // 2) + 1  # zoom: the widest window and one cell around it
    return AttentionHeads(height, width, reach, tuple(windows))


def plot_attention_heads(
    image,
    weights,
    row: int,
    col: int,
    kernel_size: int,
    dilations: Sequence[int],
    title: str = "",
    vmax: float = 1.0,
) -> Figure:
    """Each head's attention weights for the query at feature cell (row, col), zoomed in on the photograph.

    ``weights``: (heads, H, W, k*k) softmax weights in window order (e.g. from
    ``block_attention``); ``dilations``: each head's dilation; ``image``: the
    photograph the (H, W) feature map was computed from, stretched over the map.

    The first panel shows the whole map (over the photograph), the query (cyan
    cross) and the zoomed area (white square). Then one panel per head, zoomed on the widest
    window, the query's cell outlined in cyan: each window position is coloured by its weight and labelled with it
    in %, positions beyond the border (zero padding) hatched, with their weight
    too. Every head shares one fixed colour scale, 0 to ``vmax`` (default 1, the
    whole range of a softmax weight), shown by the colour bar: nearly uniform
    weights look uniform, as they are.

    Artists: ``"head-0"``, ``"head-1"``, ... (PatchCollections, one square per
    on-map window position, ``get_array()`` the weights), ``"head-0-padding"``,
    ... (the positions beyond the border, same), ``"query"`` in every panel,
    ``"zoom-box"`` and ``"colorbar"``.
    """
    view = attention_heads(weights, row, col, kernel_size, dilations)
    image = _check_image(image)
    if isinstance(vmax, bool) or not isinstance(vmax, (int, float)) or not 0 < vmax <= 1:
        raise ValueError(f"vmax must be a number in (0, 1], the top of the colour scale; got {vmax!r}")
    norm = Normalize(0.0, float(vmax))

    fig = Figure(figsize=(2.9 * (len(view.heads) + 1) + 0.6, 3.6), dpi=80)
    panel = 0.9 / (len(view.heads) + 1)
    _draw_overview(fig.add_axes((0.02, 0.06, panel * 0.92, 0.74)), view, row, col, image)
    for head in view.heads:
        ax = fig.add_axes((0.02 + (head.head + 1) * panel, 0.06, panel * 0.92, 0.74))
        _draw_head(ax, view, head, norm, image)
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap="inferno"), cax=fig.add_axes((0.93, 0.1, 0.012, 0.66)))
    colorbar.ax.set_gid("colorbar")
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label("softmax weight (one scale for all heads)", fontsize=7)
    fig.suptitle(title or f"query ({row}, {col})", fontsize=9, y=0.98)
    return fig


def _draw_overview(ax, view: AttentionHeads, row: int, col: int, image) -> None:
    """The whole map over the photograph, the query as a cyan cross and the zoomed square."""
    _draw_map(ax, view.height, view.width, margin=0, image=image)
    ax.plot([col], [row], marker="+", ms=9, mew=1.5, color="cyan", zorder=5, gid="query", ls="none")
    reach = view.reach
    ax.add_patch(
        Rectangle((col - reach - 0.5, row - reach - 0.5), 2 * reach + 1, 2 * reach + 1, fill=False,
                  edgecolor="white", lw=1.2, zorder=4, gid="zoom-box")
    )
    _no_ticks(ax)
    ax.set_title(f"the whole map, {view.height}x{view.width} cells\nquery ({row}, {col}); square: zoomed area",
                 fontsize=8, y=1.01)


def _draw_head(ax, view: AttentionHeads, head: HeadWindow, norm: Normalize, image) -> None:
    """One head, zoomed: its positions coloured and labelled by weight, padded ones hatched."""
    window, weights, reach = head.window, head.weights, view.reach
    row, col = window.query
    _draw_map(ax, view.height, view.width, margin=reach, image=image)
    ax.set_xlim(col - reach - 0.5, col + reach + 0.5)
    ax.set_ylim(row + reach + 0.5, row - reach - 0.5)
    for outside, gid, style in (
        (False, f"head-{head.head}", dict(edgecolor="white", lw=0.6)),
        (True, f"head-{head.head}-padding", dict(edgecolor=_BEYOND_COLOR, hatch="///", lw=1.0)),
    ):
        chosen = [o for o, out in enumerate(window.outside) if out == outside]
        cells = _cells([window.positions[o] for o in chosen], gid, inset=0.06, cmap="inferno",
                       norm=norm, alpha=0.85, zorder=2, **style)
        cells.set_array(weights[chosen])
        ax.add_collection(cells)
    for (i, j), w in zip(window.positions, weights):
        ax.text(j, i, f"{100 * w:.1f}", ha="center", va="center", fontsize=6, zorder=6,
                color="white" if norm(w) < 0.6 else "black")
    ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="cyan", lw=1.6, zorder=5,
                           gid="query"))  # an outline: the query's own weight stays readable
    _no_ticks(ax)
    ax.set_title(
        f"head {head.head}, dilation {head.dilation} (weights in %)\n"
        f"{float(weights.min()):.3f} to {float(weights.max()):.3f}; padding {100 * head.padding:.0f}%",
        fontsize=8, y=1.01,
    )


def plot_attention_comparison(
    image,
    weights_by_model: Mapping[str, object],
    row: int,
    col: int,
    kernel_size: int,
    dilations: Sequence[int],
    title: str = "",
) -> Figure:
    """The same query under several models, one row each (e.g. untrained above, trained below).

    ``weights_by_model``: {row label: (heads, H, W, k*k) softmax weights}, every entry
    of one shape; the other arguments as in ``plot_attention_heads``. Every panel shares
    one colour scale, 0 to 1, so that rows compare at a glance. Artists as in
    ``plot_attention_heads``, with ``"m{i}-"`` before each gid of row i (``"m1-head-0"``).
    """
    if not isinstance(weights_by_model, Mapping) or not weights_by_model:
        raise ValueError("weights_by_model must be a non-empty dict {label: (heads, H, W, k*k) weights}")
    views = {label: attention_heads(w, row, col, kernel_size, dilations) for label, w in weights_by_model.items()}
    shapes = {np.asarray(w).shape for w in weights_by_model.values()}
    if len(shapes) != 1:
        raise ValueError(f"weights_by_model: every model's weights must have one shape, got {sorted(shapes)}")
    image = _check_image(image)
    norm = Normalize(0.0, 1.0)
    columns, rows = len(dilations) + 1, len(views)
    fig = Figure(figsize=(2.9 * columns + 0.6, 3.2 * rows + 0.3), dpi=80)
    panel_w, panel_h = 0.9 / columns, 0.92 / rows
    for i, (label, view) in enumerate(views.items()):
        bottom = 0.03 + (rows - 1 - i) * panel_h
        overview = fig.add_axes((0.02, bottom, panel_w * 0.92, panel_h * 0.76))
        _draw_overview(overview, view, row, col, image)
        overview.set_title(f"{label}\nquery ({row}, {col}); square: zoomed area", fontsize=8, y=1.01)
        row_axes = [overview]
        for head in view.heads:
            ax = fig.add_axes((0.02 + (head.head + 1) * panel_w, bottom, panel_w * 0.92, panel_h * 0.76))
            _draw_head(ax, view, head, norm, image)
            row_axes.append(ax)
        for artist in {a for ax in row_axes for a in ax.findobj()}:  # this row's: "head-0" -> "m{i}-head-0"
            if artist.get_gid():
                artist.set_gid(f"m{i}-{artist.get_gid()}")
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap="inferno"), cax=fig.add_axes((0.93, 0.1, 0.012, 0.8)))
    colorbar.ax.set_gid("colorbar")
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label("softmax weight (one scale for every panel)", fontsize=7)
    fig.suptitle(title or f"query ({row}, {col})", fontsize=9, y=0.995)
    return fig


@dataclass(frozen=True)
class HeadSharpness:
    """How concentrated one head's softmax weights are, averaged over many queries."""

    head: int
    dilation: int
    max_weight: float
    """Mean over the queries of the largest weight in the window (uniform: 1 / k*k)."""
    entropy: float
    """Mean over the queries of -sum(w log w) over the window, in nats (uniform: log(k*k))."""

    @property
    def positions(self) -> float:
        """exp(entropy): over how many positions an even spread with this entropy would be."""
        return math.exp(self.entropy)


def attention_entropy(weights) -> np.ndarray:
    """-sum(w log w) over the last axis (a window's softmax weights), in nats; 0 log 0 counts as 0."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim < 1 or w.shape[-1] < 1:
        raise ValueError(f"weights must end with the window axis (..., k*k), got shape {w.shape}")
    if (w < 0).any():
        raise ValueError("weights must be softmax weights (no negative values)")
    safe = np.where(w > 0, w, 1.0)  # log(1) = 0 where w = 0
    return -(w * np.log(safe)).sum(axis=-1)


def head_sharpness(weights, dilations: Sequence[int]) -> tuple[HeadSharpness, ...]:
    """Per head: the mean largest weight and the mean entropy over every query given.

    ``weights``: (heads, H, W, k*k) for one image or (N, heads, H, W, k*k) for N images,
    softmax weights over each window, padded positions included (they take softmax mass
    too, so a head that gives much of its weight to padding is concentrated there).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 4:
        w = w[None]  # 1, heads, H, W, k*k
    if w.ndim != 5:
        raise ValueError(f"weights must be (heads, H, W, k*k) or (N, heads, H, W, k*k), got shape {w.shape}")
    heads = w.shape[1]
    dilations = check_dilations(dilations, "dilations")
    if len(dilations) != heads:
        raise ValueError(f"dilations must give one dilation per head ({heads}), got {len(dilations)}: {dilations}")
    per_head = np.moveaxis(w, 1, 0).reshape(heads, -1, w.shape[-1])  # heads, N*H*W, k*k
    entropy = attention_entropy(per_head).mean(axis=1)  # heads
    largest = per_head.max(axis=-1).mean(axis=1)  # heads
    return tuple(
        HeadSharpness(h, r, float(largest[h]), float(entropy[h])) for h, r in enumerate(dilations)
    )


def plot_head_sharpness(summaries: Mapping[str, Sequence[HeadSharpness]], kernel_size: int, title: str = "") -> Figure:
    """Bars per head for each model: the mean largest weight, and over how many positions it spreads.

    ``summaries``: {model label: ``head_sharpness(...)``}, every model with the same heads.
    Left panel: mean largest weight (dashed line: 1 / k*k, an even spread). Right panel:
    exp(mean entropy), the number of positions an even spread with that entropy would
    cover (dashed line: k*k). Bars: rectangles with gids ``"bars-<label>-max"`` and
    ``"bars-<label>-positions"``, one per head in order, whose heights are the values.
    """
    if not isinstance(summaries, Mapping) or not summaries:
        raise ValueError("summaries must be a non-empty dict {label: head_sharpness(...)}")
    layouts = {tuple((s.head, s.dilation) for s in heads) for heads in summaries.values()}
    if len(layouts) != 1:
        raise ValueError("summaries: every model must have the same heads and dilations")
    heads = next(iter(layouts))
    kk = kernel_size * kernel_size
    fig = Figure(figsize=(8.4, 3.0), dpi=80)
    axes = (fig.add_axes((0.08, 0.2, 0.38, 0.62)), fig.add_axes((0.58, 0.2, 0.38, 0.62)))
    width = 0.8 / len(summaries)
    x = np.arange(len(heads))
    colours = ("#9e9e9e", "#d9541e", "#2a7ab9", "#4c9a2a")
    for m, (label, stats) in enumerate(summaries.items()):
        offset = (m - (len(summaries) - 1) / 2) * width
        for ax, key, values in (
            (axes[0], "max", [s.max_weight for s in stats]),
            (axes[1], "positions", [s.positions for s in stats]),
        ):
            bars = ax.bar(x + offset, values, width * 0.9, label=label, color=colours[m % len(colours)])
            for patch in bars.patches:
                patch.set_gid(f"bars-{label}-{key}")
            for xi, v in zip(x + offset, values):
                ax.text(xi, v, f"{v:.2f}" if key == "max" else f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    axes[0].axhline(1 / kk, color="black", ls="--", lw=0.8)
    axes[0].set_ylim(0, 1)
    axes[0].set_title(f"mean largest weight (dashed: 1/{kk}, even)", fontsize=9)
    axes[1].axhline(kk, color="black", ls="--", lw=0.8)
    axes[1].set_ylim(0, kk * 1.15)
    axes[1].set_title(f"positions it spreads over, exp(entropy) (dashed: {kk})", fontsize=9)
    for ax in axes:
        ax.set_xticks(x, [f"head {h}\ndilation {r}" for h, r in heads], fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    axes[0].legend(fontsize=8, loc="upper left", frameon=False)
    fig.suptitle(title or "how concentrated each head's attention is", fontsize=10, y=0.98)
    return fig
