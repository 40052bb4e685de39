"""Each head's attention weights for one query, zoomed in on the image the map came from.

- ``attention_heads`` / ``plot_attention_heads``: one model's heads for one query;
- ``plot_attention_comparison``: the same query under several models (untrained, trained), one row each;
- ``AttentionPicture``: either figure built once and redrawn quickly for another query (the explorers);
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
from ._pictures import figure_png, set_square_cells, square_cells
from ._style import _BEYOND_COLOR, _check_image, _check_query, _draw_map, _no_ticks

__all__ = [
    "HeadWindow",
    "AttentionHeads",
    "attention_heads",
    "plot_attention_heads",
    "plot_attention_comparison",
    "AttentionPicture",
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

    Artists: ``"head-0"``, ``"head-1"``, ... (collections, one square per
    on-map window position, ``get_array()`` the weights), ``"head-0-padding"``,
    ... (the positions beyond the border, same), ``"query"`` in every panel,
    ``"zoom-box"`` and ``"colorbar"``. ``AttentionPicture`` redraws it for another query.
    """
    return AttentionPicture(image, weights, kernel_size, dilations, vmax=vmax).draw(row, col, title)


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
    return AttentionPicture(image, weights_by_model, kernel_size, dilations).draw(row, col, title)


class AttentionPicture:
    """``plot_attention_heads`` (weights: one array) or ``plot_attention_comparison`` (weights:
    {label: array}, one row each), built once and redrawn quickly for any query.

    The axes, the photograph, the colour bar and the k*k labels of each head are made
    once; ``draw(row, col)`` moves the zoom, gives the window collections their new
    squares and weights and the labels their new text, position and colour.
    ``draw(..., image=..., weights=...)`` shows other data of the same shapes (another
    image of a data set). ``png(row, col)`` draws and returns the PNG at the picture's dpi.
    """

    def __init__(self, image, weights, kernel_size: int, dilations: Sequence[int], vmax: float = 1.0, dpi: int = 80):
        self.comparison = isinstance(weights, Mapping)
        self.weights = self._check_weights(weights, kernel_size, dilations)
        self.image = _check_image(image)
        if isinstance(vmax, bool) or not isinstance(vmax, (int, float)) or not 0 < vmax <= 1:
            raise ValueError(f"vmax must be a number in (0, 1], the top of the colour scale; got {vmax!r}")
        self.kernel_size, self.dilations = kernel_size, tuple(dilations)
        self.norm = Normalize(0.0, float(vmax))
        first = next(iter(self.weights.values()))
        _, self.height, self.width, _ = first.shape
        self.reach = max(self.dilations) * (kernel_size // 2) + 1  # as attention_heads computes it
        columns, rows = len(self.dilations) + 1, len(self.weights)
        if self.comparison:
            self.figure = Figure(figsize=(2.9 * columns + 0.6, 3.2 * rows + 0.3), dpi=dpi)
            panel_w, panel_h = 0.9 / columns, 0.92 / rows
            boxes = [(0.03 + (rows - 1 - i) * panel_h, panel_h * 0.76) for i in range(rows)]  # bottom, height
            colorbar_box, title_y = (0.93, 0.1, 0.012, 0.8), 0.995
            colorbar_label = "softmax weight (one scale for every panel)"
        else:
            self.figure = Figure(figsize=(2.9 * columns + 0.6, 3.6), dpi=dpi)
            panel_w = 0.9 / columns
            boxes = [(0.06, 0.74)]
            colorbar_box, title_y = (0.93, 0.1, 0.012, 0.66), 0.98
            colorbar_label = "softmax weight (one scale for all heads)"
        self._rows = []
        for i, (bottom, panel_h) in enumerate(boxes):
            overview = self.figure.add_axes((0.02, bottom, panel_w * 0.92, panel_h))
            heads = [
                self.figure.add_axes((0.02 + (h + 1) * panel_w, bottom, panel_w * 0.92, panel_h))
                for h in range(len(self.dilations))
            ]
            self._rows.append(self._build_row(overview, heads, prefix=f"m{i}-" if self.comparison else ""))
        colorbar = self.figure.colorbar(ScalarMappable(norm=self.norm, cmap="inferno"),
                                        cax=self.figure.add_axes(colorbar_box))
        colorbar.ax.set_gid("colorbar")
        colorbar.ax.tick_params(labelsize=7)
        colorbar.set_label(colorbar_label, fontsize=7)
        self._title = self.figure.suptitle("", fontsize=9, y=title_y)

    @staticmethod
    def _check_weights(weights, kernel_size, dilations) -> dict:
        if not isinstance(weights, Mapping):
            weights = {None: weights}
        arrays = {label: np.asarray(w) for label, w in weights.items()}
        for w in arrays.values():  # shapes, dilations (the query is checked at each draw)
            attention_heads(w, 0, 0, kernel_size, dilations)
        shapes = {w.shape for w in arrays.values()}
        if len(shapes) != 1:
            raise ValueError(f"weights_by_model: every model's weights must have one shape, got {sorted(shapes)}")
        return arrays

    def _build_row(self, overview, head_axes, prefix: str) -> dict:
        """One model's panels: the overview with its cross and zoom box, each head's squares and labels."""
        height, width, image = self.height, self.width, self.image
        _draw_map(overview, height, width, margin=0, image=image)
        (cross,) = overview.plot([], [], marker="+", ms=9, mew=1.5, color="cyan", zorder=5, gid="query", ls="none")
        zoom = Rectangle((0, 0), 2 * self.reach + 1, 2 * self.reach + 1, fill=False, edgecolor="white", lw=1.2,
                         zorder=4, gid="zoom-box")
        overview.add_patch(zoom)
        _no_ticks(overview)
        heads = []
        for h, ax in enumerate(head_axes):
            _draw_map(ax, height, width, margin=self.reach, image=image)
            cells = {}
            for outside, gid, style in (
                (False, f"head-{h}", dict(edgecolor="white", lw=0.6)),
                (True, f"head-{h}-padding", dict(edgecolor=_BEYOND_COLOR, hatch="///", lw=1.0)),
            ):
                cells[outside] = square_cells([], gid, inset=0.06, cmap="inferno", norm=self.norm, alpha=0.85,
                                              zorder=2, **style)
                ax.add_collection(cells[outside], autolim=False)
            labels = [ax.text(0, 0, "", ha="center", va="center", fontsize=6, zorder=6)
                      for _ in range(self.kernel_size**2)]
            outline = Rectangle((0, 0), 1, 1, fill=False, edgecolor="cyan", lw=1.6, zorder=5, gid="query")
            ax.add_patch(outline)  # an outline: the query's own weight stays readable
            _no_ticks(ax)
            heads.append(dict(ax=ax, cells=cells, labels=labels, outline=outline))
        if prefix:  # this row's: "head-0" -> "m{i}-head-0"
            for artist in {a for ax in [overview, *head_axes] for a in ax.findobj()}:
                if artist.get_gid():
                    artist.set_gid(prefix + artist.get_gid())
        return dict(overview=overview, cross=cross, zoom=zoom, heads=heads,
                    photos=[im for ax in [overview, *head_axes] for im in ax.images])

    def draw(self, row: int, col: int, title: str = "", image=None, weights=None) -> Figure:
        """The figure for the query at (row, col); ``image`` / ``weights`` replace the data (same shapes).

        Every argument is checked before anything is drawn: a refused one leaves the picture as it was."""
        new_weights = self.weights if weights is None else self._same_form_weights(weights)
        new_image = self.image if image is None else self._same_shape_image(image)
        views = [attention_heads(w, row, col, self.kernel_size, self.dilations) for w in new_weights.values()]
        if new_image is not self.image:
            self.image = new_image
            for parts in self._rows:
                for photo in parts["photos"]:
                    photo.set_data(new_image)
                    if new_image.ndim == 2:  # a colour-mapped image scales to its data, as imshow does
                        photo.autoscale()
        self.weights = new_weights
        for label, parts, view in zip(self.weights, self._rows, views):
            self._draw_row(parts, view, row, col, label)
        self._title.set_text(title or f"query ({row}, {col})")
        return self.figure

    def png(self, row: int, col: int, title: str = "", image=None, weights=None) -> bytes:
        """``draw`` and the picture as PNG bytes at the figure's dpi."""
        return figure_png(self.draw(row, col, title, image=image, weights=weights))

    def _same_form_weights(self, weights) -> dict:
        if isinstance(weights, Mapping) != self.comparison:
            raise ValueError("weights must have the form the picture was built with (an array, or a dict of them)")
        new = self._check_weights(weights, self.kernel_size, self.dilations)
        shape = next(iter(self.weights.values())).shape
        if list(new) != list(self.weights) or next(iter(new.values())).shape != shape:
            raise ValueError(f"weights must have the labels {list(self.weights)} and the shape {shape} "
                             "the picture was built with")
        return new

    def _same_shape_image(self, image) -> np.ndarray:
        array = _check_image(image)
        if self.image is None or array is None or array.shape != self.image.shape:
            shape = None if self.image is None else self.image.shape
            raise ValueError(f"image must have the shape the picture was built with, {shape}")
        return array

    def _draw_row(self, parts: dict, view: AttentionHeads, row: int, col: int, label) -> None:
        """One model's row for the query: the cross and zoom box, then each head's squares, labels and title."""
        reach, norm = self.reach, self.norm
        parts["cross"].set_data([col], [row])
        parts["zoom"].set_xy((col - reach - 0.5, row - reach - 0.5))
        if label is None:
            parts["overview"].set_title(
                f"the whole map, {view.height}x{view.width} cells\nquery ({row}, {col}); square: zoomed area",
                fontsize=8, y=1.01)
        else:
            parts["overview"].set_title(f"{label}\nquery ({row}, {col}); square: zoomed area", fontsize=8, y=1.01)
        for head, drawn in zip(view.heads, parts["heads"]):
            window, weights = head.window, head.weights
            ax = drawn["ax"]
            ax.set_xlim(col - reach - 0.5, col + reach + 0.5)
            ax.set_ylim(row + reach + 0.5, row - reach - 0.5)
            for outside, cells in drawn["cells"].items():
                chosen = [o for o, out in enumerate(window.outside) if out == outside]
                set_square_cells(cells, [window.positions[o] for o in chosen], inset=0.06)
                cells.set_array(weights[chosen])
            for text, (i, j), w in zip(drawn["labels"], window.positions, weights):
                text.set_position((j, i))
                text.set_text(f"{100 * w:.1f}")
                text.set_color("white" if norm(w) < 0.6 else "black")
            drawn["outline"].set_xy((col - 0.5, row - 0.5))
            ax.set_title(
                f"head {head.head}, dilation {head.dilation} (weights in %)\n"
                f"{float(weights.min()):.3f} to {float(weights.max()):.3f}; padding {100 * head.padding:.0f}%",
                fontsize=8, y=1.01,
            )


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
