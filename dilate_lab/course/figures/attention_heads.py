"""Each head's attention weights for one query, zoomed in on the photograph the map came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..._checks import check_dilations
from ...geometry import Window, dilated_window
from ._style import _BEYOND_COLOR, _cells, _check_image, _check_query, _draw_map, _no_ticks

__all__ = ["HeadWindow", "AttentionHeads", "attention_heads", "plot_attention_heads"]


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
