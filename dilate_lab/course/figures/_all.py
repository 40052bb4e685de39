"""Figures of the course: pure matplotlib functions that each return a ``Figure``.

Every function here takes plain arguments, draws with ``matplotlib.figure.Figure``
(not pyplot, so nothing is kept in a global registry and nothing leaks when a
widget redraws), and returns the figure. The widgets in ``dilate_lab.widgets``
only wire controls to these functions, so a lesson can show the static figure
first and the widget over the very same function next.

Artists that carry the figure's meaning have a ``gid`` (``"attended"``,
``"beyond-border"``, ``"query"``, ``"span"``, ...) so that tests, and curious
learners, can find what was drawn. Cell (row, col) of a map is the unit square
centred on x = col, y = row, with row 0 at the top, like ``imshow``.

The map figures print, at their foot, the call that produced them.

Small computations live next to their figures because nothing else uses
them: the inward-shifted window of NATTEN (``shifted_window``), the softmax
weights of one border query under three border rules (``border_attention``),
the gradient-based effective receptive field of a stack of SWDA layers
(``effective_receptive_field``), and the map each stage of a DilateFormer works
on (``dilateformer_stage_shapes``).
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.ticker import MaxNLocator

from ..._checks import check_dilation, check_dilations, check_head_split, check_kernel_size, check_positive_int
from ...functional import swda
from ...geometry import dilated_window, padding_counts, window_span

__all__ = [
    "BORDER_MODES",
    "GROUP_COLORS",
    "HeadGroup",
    "BorderAttention",
    "head_groups",
    "shifted_window",
    "border_attention",
    "theoretical_span",
    "effective_receptive_field",
    "plot_receptive_field",
    "plot_multi_scale",
    "plot_border_modes",
    "plot_effective_receptive_field",
    "plot_attention_heads",
    "plot_shape_trace",
    "format_bytes",
    "StageShape",
    "dilateformer_stage_shapes",
    "plot_dilateformer_architecture",
    "plot_window_coverage",
    "unfold_integer_map",
    "plot_unfold_columns",
    "plot_attention_cost",
    "neighbour_correlation",
    "plot_neighbour_correlation",
]

GROUP_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
"""One colour per dilation group, in group order (cycled beyond six groups)."""

BORDER_MODES = ("zeros", "mask", "shifted")
"""The border rules compared by ``plot_border_modes``: the paper's zero padding,
masking the padded keys out, and NATTEN's window shifted inward."""

_ATTENDED_COLOR = "tab:blue"
_BEYOND_COLOR = "tab:red"
_QUERY_COLOR = "gold"


# ---------------------------------------------------------------------------
# drawing helpers shared by the map figures
# ---------------------------------------------------------------------------
def _call_text(name: str, **kwargs) -> str:
    """The call that produced a figure, printed at its foot (NATTEN's figures do the same)."""
    args = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return f"{name}({args})"


class _Verbatim(str):
    """A string that ``_call_text`` prints without quotes (for arguments too long to print)."""

    def __repr__(self) -> str:
        return str(self)


def _cells(positions, gid: str, inset: float = 0.0, **style) -> PatchCollection:
    """One square per (row, col) cell, inset from the cell's edges by ``inset``."""
    side = 1.0 - 2.0 * inset
    squares = [Rectangle((c - 0.5 + inset, r - 0.5 + inset), side, side) for r, c in positions]
    collection = PatchCollection(squares, match_original=False, **style)
    collection.set_gid(gid)
    return collection


def _draw_map(ax, height: int, width: int, margin: int, image=None) -> None:
    """The map's cells (or a photograph stretched over them), its border and the padded margin."""
    ax.set_xlim(-0.5 - margin, width - 0.5 + margin)
    ax.set_ylim(height - 0.5 + margin, -0.5 - margin)  # row 0 at the top
    ax.set_aspect("equal")
    if image is not None:
        ax.imshow(
            image, extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="nearest",
            gid="photo", zorder=0,
        )
    else:
        background = Rectangle((-0.5, -0.5), width, height, facecolor="0.95", zorder=0)
        background.set_gid("map")
        ax.add_patch(background)
    if image is None and max(height, width) + 2 * margin <= 48:  # finer is only grey noise
        ax.vlines(np.arange(width + 1) - 0.5, -0.5, height - 0.5, colors="0.75", lw=0.5, zorder=1)
        ax.hlines(np.arange(height + 1) - 0.5, -0.5, width - 0.5, colors="0.75", lw=0.5, zorder=1)
    border = Rectangle((-0.5, -0.5), width, height, fill=False, edgecolor="black", lw=1.5, zorder=4)
    border.set_gid("border")
    ax.add_patch(border)
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.tick_params(labelsize=7, length=2)


def _check_image(image):
    if image is None:
        return None
    array = np.asarray(image)
    if array.ndim not in (2, 3) or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(
            f"image must be an array (rows, cols) or (rows, cols, 3 or 4), e.g. "
            f"load_sample_image(height, width); got shape {array.shape}"
        )
    return array


def _check_query(row, col, height, width) -> None:
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    for name, value, size in (("row", row, height), ("col", col, width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < size:
            raise ValueError(f"{name} must be an int in [0, {size - 1}] (the map is {height} x {width}), got {value!r}")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


# ---------------------------------------------------------------------------
# 1. the receptive field of one query
# ---------------------------------------------------------------------------
def plot_receptive_field(
    kernel_size: int = 3,
    dilation: int = 2,
    row: int = 4,
    col: int = 4,
    height: int = 9,
    width: int = 9,
    image=None,
) -> Figure:
    """Which positions the query at (row, col) attends to with SWDA (DilateFormer eq. 3).

    Blue cells: window positions on the map. Red hatched cells: positions beyond
    the border, which the paper fills with zero keys that still take softmax mass.
    Gold star: the query. Dashed square: the span (k - 1) * r + 1 the window covers.
    With ``image`` (an (height, width, 3) array, e.g. ``load_sample_image(height,
    width)``) the cells are drawn over a photograph, one pixel per cell.

    Artists: ``"attended"`` and ``"beyond-border"`` (PatchCollections, one square
    per cell), ``"query"``, ``"span"``, ``"border"``, ``"map"`` or ``"photo"``.
    """
    window = dilated_window(row, col, kernel_size, dilation, height, width)
    image = _check_image(image)
    margin = dilation * (kernel_size // 2)

    fig = Figure(figsize=(4.4, 4.8), dpi=80)
    ax = fig.add_axes((0.1, 0.14, 0.85, 0.74))
    _draw_map(ax, height, width, margin, image)
    on_photo = image is not None
    attended_style = (
        dict(facecolor="none", edgecolor="cyan", lw=2.0)  # the photo stays visible underneath
        if on_photo
        else dict(facecolor=_ATTENDED_COLOR, edgecolor="navy", alpha=0.7)
    )
    ax.add_collection(_cells(window.inside_positions, "attended", inset=0.06, zorder=2, **attended_style))
    ax.add_collection(
        _cells(
            window.outside_positions, "beyond-border", inset=0.06,
            facecolor="none", edgecolor=_BEYOND_COLOR, hatch="xxx", lw=1.0, zorder=2,
        )
    )
    span = window.span
    ax.add_patch(
        Rectangle(
            (col - span / 2, row - span / 2), span, span, fill=False, ls="--",
            edgecolor="0.2", lw=1.2, zorder=3, gid="span",
        )
    )
    ax.plot([col], [row], marker="*", ms=14, color=_QUERY_COLOR, mec="black", zorder=5, gid="query", ls="none")
    ax.set_title(
        f"kernel {kernel_size}, dilation {dilation}: span (k-1)*r+1 = {span}\n"
        f"{window.n_inside} of {kernel_size * kernel_size} positions on the map, "
        f"{window.n_outside} beyond the border (zero padding)",
        fontsize=9, y=1.01,
    )
    extra = {"image": _Verbatim("photo")} if on_photo else {}
    call = _call_text(
        "plot_receptive_field", kernel_size=kernel_size, dilation=dilation, row=row, col=col,
        height=height, width=width, **extra,
    )
    fig.text(0.5, 0.01, textwrap.fill(call, 80), ha="center", fontsize=6, family="monospace")
    return fig


# ---------------------------------------------------------------------------
# 2. several dilations at once: the paper's Figure 4
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadGroup:
    """The heads and channels that MSDA gives to one dilation."""

    index: int
    dilation: int
    heads: range
    channels: range
    span: int


def head_groups(dim: int, num_heads: int, dilations: Sequence[int], kernel_size: int = 3) -> list[HeadGroup]:
    """How MSDA splits heads and channels across dilations (DilateFormer eq. 4-5).

    The channels are cut into ``len(dilations)`` contiguous groups, each a block of
    ``num_heads / len(dilations)`` heads of ``dim / num_heads`` channels, as in the
    official code's ``reshape(B, 3, num_dilation, C // num_dilation, H, W)``.

    >>> [(g.dilation, list(g.heads), (g.channels.start, g.channels.stop)) for g in head_groups(72, 3, (1, 2, 3))]
    [(1, [0], (0, 24)), (2, [1], (24, 48)), (3, [2], (48, 72))]
    """
    check_positive_int(dim, "dim")
    check_positive_int(num_heads, "num_heads")
    check_kernel_size(kernel_size)
    dilations = check_dilations(dilations, "dilations")
    check_head_split(dim, num_heads, dilations, "dilations")
    per_group_heads = num_heads // len(dilations)
    per_group_channels = dim // len(dilations)
    return [
        HeadGroup(
            i, r,
            range(i * per_group_heads, (i + 1) * per_group_heads),
            range(i * per_group_channels, (i + 1) * per_group_channels),
            window_span(kernel_size, r),
        )
        for i, r in enumerate(dilations)
    ]


def _ranges_text(values: range) -> str:
    return str(values.start) if len(values) == 1 else f"{values.start}-{values.stop - 1}"


def _mark_query(ax, row: int, col: int, corner: bool = False) -> None:
    """The query: a gold outline around its cell and a gold star.

    ``corner=True`` puts a small star in the cell's top-left corner, so that
    what the figure draws or prints in the query's own cell stays visible.
    """
    outline = Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=_QUERY_COLOR, lw=2.2, zorder=6)
    outline.set_gid("query-cell")
    ax.add_patch(outline)
    x, y, size = (col - 0.3, row - 0.3, 7) if corner else (col, row, 12)
    ax.plot([x], [y], marker="*", ms=size, color=_QUERY_COLOR, mec="black", mew=0.6, zorder=7, gid="query", ls="none")


def plot_multi_scale(
    row: int = 7,
    col: int = 7,
    height: int = 15,
    width: int = 15,
    kernel_size: int = 3,
    dilations: Sequence[int] = (1, 2, 3),
    dim: int = 144,
    num_heads: int = 6,
    image=None,
) -> Figure:
    """One query, every dilation group of MSDA at once, one colour per group (the paper's Fig. 4).

    Each group's window positions are squares in the group's colour. The squares
    are nested (group 0 the largest, each later group a little smaller) only so
    that a position two groups share shows both colours; their size means
    nothing else. Hatched squares: window positions beyond the border, which the
    paper's zero padding fills with zero keys. The query (gold outline, star in
    its corner) lies in every group's window. The table beside says which heads
    and channels go to which dilation; the defaults are stage 2 of
    DilateFormer-Tiny (dim 144, 6 heads, dilations 1, 2, 3).

    Artists: ``"group-0"``, ``"group-1"``, ... (PatchCollections, one square per
    on-map window position of that group), ``"padding-0"``, ``"padding-1"``, ...
    (the group's positions beyond the border), ``"query"``, ``"query-cell"`` and
    the table ``"groups-table"``.
    """
    groups = head_groups(dim, num_heads, dilations, kernel_size)
    dilations = tuple(g.dilation for g in groups)
    _check_query(row, col, height, width)
    image = _check_image(image)
    windows = [dilated_window(row, col, kernel_size, r, height, width) for r in dilations]
    margin = max(dilations) * (kernel_size // 2)

    fig = Figure(figsize=(7.6, 4.6), dpi=80)
    ax = fig.add_axes((0.05, 0.12, 0.5, 0.74))
    _draw_map(ax, height, width, margin=margin, image=image)
    step = 0.34 / len(groups)
    for group, window in zip(groups, windows):
        color = GROUP_COLORS[group.index % len(GROUP_COLORS)]
        inset = 0.04 + step * group.index
        ax.add_collection(
            _cells(
                window.inside_positions, f"group-{group.index}", inset=inset,
                facecolor=color, edgecolor="black", lw=0.4, alpha=0.9, zorder=2 + group.index * 0.01,
            )
        )
        ax.add_collection(
            _cells(
                window.outside_positions, f"padding-{group.index}", inset=inset,
                facecolor="none", edgecolor=color, hatch="////", lw=1.0, zorder=2 + group.index * 0.01,
            )
        )
    _mark_query(ax, row, col, corner=True)
    ax.set_title(f"query ({row}, {col}): {len(groups)} dilation groups, kernel {kernel_size}", fontsize=9, y=1.01)

    table_ax = fig.add_axes((0.6, 0.12, 0.38, 0.74))
    table_ax.axis("off")
    header = ["dilation", "heads", "channels", "span"]
    body = [
        [str(g.dilation), _ranges_text(g.heads), _ranges_text(g.channels), f"{g.span}x{g.span}"]
        for g in groups
    ]
    table = table_ax.table(cellText=body, colLabels=header, loc="upper center", cellLoc="center")
    table.set_gid("groups-table")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.4)
    for g in groups:
        table[g.index + 1, 0].set_facecolor(GROUP_COLORS[g.index % len(GROUP_COLORS)])
    table_ax.set_title(f"dim {dim}, {num_heads} heads of {dim // num_heads} channels", fontsize=9, y=1.01)
    n_padded = ", ".join(str(w.n_outside) for w in windows)
    key = [
        "Coloured squares: each group's window on the map. They are nested (group 0 largest) "
        "only so that a position two groups share shows both colours.",
        f"Hatched: beyond the border, zero padding ({n_padded} positions per group).",
        "Gold outline, star in the corner: the query, which every group's window contains.",
    ]
    table_ax.text(0.0, 0.02, "\n".join(textwrap.fill(line, 48) for line in key), transform=table_ax.transAxes,
                  fontsize=7, va="bottom", ha="left", gid="legend-text")
    fig.text(
        0.5, 0.02,
        _call_text("plot_multi_scale", row=row, col=col, height=height, width=width,
                   kernel_size=kernel_size, dilations=dilations, dim=dim, num_heads=num_heads),
        ha="center", fontsize=6, family="monospace",
    )
    return fig


# ---------------------------------------------------------------------------
# 3. the border: zero padding, masking, NATTEN's shifted window
# ---------------------------------------------------------------------------
def _shifted_start(index: int, length: int, kernel_size: int, dilation: int) -> int:
    """First position, along one axis, of NATTEN's window for the query at ``index``.

    NATTEN keeps the window inside the map: along an axis, the positions with
    the query's residue modulo ``dilation`` form a sub-grid; the window is k
    consecutive sub-grid positions, centred on the query where it fits and
    pushed inward at the border.
    """
    residue = index % dilation
    subgrid_length = (length - residue + dilation - 1) // dilation
    centred = index // dilation - kernel_size // 2
    start = min(max(centred, 0), subgrid_length - kernel_size)
    return residue + start * dilation


def shifted_window(
    row: int, col: int, kernel_size: int, dilation: int, height: int, width: int
) -> list[tuple[int, int]]:
    """The k*k positions NATTEN's neighbourhood attention gives the query at (row, col).

    Inside the map it is exactly the dilated window of SWDA; near a border it is
    shifted inward so that every position is on the map and no padding is needed.
    Like NATTEN, it needs ``kernel_size * dilation <= height`` and ``<= width``.
    Positions are in window (row-major) order.
    """
    _check_query(row, col, height, width)
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    for name, size in (("height", height), ("width", width)):
        if kernel_size * dilation > size:
            raise ValueError(
                f"NATTEN's shifted window needs kernel_size * dilation <= {name}; "
                f"got {kernel_size} * {dilation} = {kernel_size * dilation} > {name} = {size}"
            )
    top = _shifted_start(row, height, kernel_size, dilation)
    left = _shifted_start(col, width, kernel_size, dilation)
    steps = range(kernel_size)
    return [(top + a * dilation, left + b * dilation) for a in steps for b in steps]


@dataclass(frozen=True)
class BorderAttention:
    """The softmax weights of one query under one border rule."""

    mode: str
    positions: tuple[tuple[int, int], ...]
    """Every position that takes part in the softmax, in window order (may lie beyond the border)."""
    weights: np.ndarray
    """Softmax weight of each position, summing to 1."""
    outside: tuple[bool, ...]

    @property
    def padding_mass(self) -> float:
        """The share of the softmax that goes to zero-padded keys."""
        return float(sum(w for w, out in zip(self.weights, self.outside) if out))


def border_attention(
    row: int,
    col: int,
    kernel_size: int,
    dilation: int,
    height: int,
    width: int,
    mode: str = "zeros",
    seed: int = 0,
    head_dim: int = 8,
    queries: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
) -> BorderAttention:
    """Softmax weights of the query at (row, col) over its window, under one border rule.

    ``queries`` and ``keys``: (height, width, head_dim) tensors; by default seeded
    random vectors (``seed``, ``head_dim`` channels). Logits are
    ``q . k / sqrt(head_dim)``, as in ``swda``. ``mode``:
    ``"zeros"``: the paper; positions beyond the border are zero keys with logit
    exactly 0, and they keep their share of the softmax. ``"mask"``: they are left
    out and the rest renormalised. ``"shifted"``: NATTEN's window, shifted inward,
    so that all k*k keys are real.
    """
    if mode not in BORDER_MODES:
        raise ValueError(f"mode must be one of {BORDER_MODES}, got {mode!r}")
    check_positive_int(head_dim, "head_dim")
    if mode == "shifted":
        positions = shifted_window(row, col, kernel_size, dilation, height, width)
        outside = [False] * len(positions)
    else:
        window = dilated_window(row, col, kernel_size, dilation, height, width)
        positions, outside = list(window.positions), list(window.outside)
        if mode == "mask":
            positions = window.inside_positions
            outside = [False] * len(positions)
    if queries is None or keys is None:
        _check_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        queries = torch.randn(height, width, head_dim, generator=generator, dtype=torch.float64)
        keys = torch.randn(height, width, head_dim, generator=generator, dtype=torch.float64)
    for name, tensor in (("queries", queries), ("keys", keys)):
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape[:2]) != (height, width) or tensor.dim() != 3:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be a tensor (height, width, head_dim) = ({height}, {width}, d), got {shape}")
    head_dim = queries.shape[-1]
    query = queries[row, col]  # head_dim
    logits = torch.stack(
        [
            query.new_zeros(()) if out else (query * keys[r, c]).sum() * head_dim**-0.5
            for (r, c), out in zip(positions, outside)
        ]
    )  # n
    weights = torch.softmax(logits, dim=0).numpy()
    return BorderAttention(mode, tuple(positions), weights, tuple(outside))


_MODE_TITLES = {"zeros": "zero padding (paper)", "mask": "masking", "shifted": "NATTEN: shifted inward"}


def plot_border_modes(
    row: int = 0,
    col: int = 1,
    kernel_size: int = 3,
    dilation: int = 2,
    height: int = 10,
    width: int = 10,
    seed: int = 0,
) -> Figure:
    """Zero padding vs masking vs NATTEN's shifted window for one query near the border.

    Each panel colours the window positions by their softmax weight (seeded random
    queries and keys) and says how much of the softmax goes to padding. Weights
    are printed in the cells (as percentages) for kernels up to 5, the query's
    own weight included: the query is marked by a gold outline and a small star
    in the corner of its cell, so that its number stays readable.

    Artists: ``"zeros-window"``, ``"mask-window"``, ``"shifted-window"``
    (PatchCollections, one square per position that takes part in the softmax,
    coloured by weight: ``get_array()`` holds the weights), ``"query"`` and
    ``"query-cell"`` in each panel. If the map is too small for NATTEN
    (kernel_size * dilation > map size), its panel says so, in a box wrapped to
    the panel, instead of drawing.
    """
    _check_seed(seed)
    _check_query(row, col, height, width)
    margin = dilation * (kernel_size // 2)
    results: dict[str, BorderAttention | str] = {}
    for mode in BORDER_MODES:
        try:
            results[mode] = border_attention(row, col, kernel_size, dilation, height, width, mode, seed)
        except ValueError as error:
            if mode != "shifted":
                raise
            results[mode] = str(error)

    fig = Figure(figsize=(10.2, 4.0), dpi=80)
    annotate = kernel_size <= 5
    for i, mode in enumerate(BORDER_MODES):
        ax = fig.add_axes((0.03 + i * 0.33, 0.12, 0.29, 0.7))
        _draw_map(ax, height, width, margin)
        if i > 0:  # same coordinates as the first panel; tick labels cost a third of a redraw
            ax.set_xticks([])
            ax.set_yticks([])
        _mark_query(ax, row, col, corner=annotate)
        result = results[mode]
        if isinstance(result, str):
            ax.set_title(f"{_MODE_TITLES[mode]}\nnot possible here", fontsize=9, y=1.01)
            # one clause a paragraph, each wrapped to the panel's width (about 34 characters at 7 pt)
            message = "\n".join(textwrap.fill(part, 34) for part in result.split("; "))
            ax.text(
                0.5, 0.5, message + "\n(make the map larger)", transform=ax.transAxes, ha="center",
                va="center", fontsize=7, clip_on=True, bbox=dict(facecolor="white", edgecolor="0.5"),
            )
            continue
        cells = _cells(result.positions, f"{mode}-window", inset=0.04, cmap="viridis", edgecolor="black", lw=0.5, zorder=2)
        cells.set_array(result.weights)
        cells.set_clim(0.0, max(float(result.weights.max()), 1e-9))
        if mode == "zeros":
            outside_cells = [p for p, out in zip(result.positions, result.outside) if out]
            ax.add_collection(
                _cells(outside_cells, "beyond-border", inset=0.04, facecolor="none", edgecolor=_BEYOND_COLOR, hatch="///", lw=1.0, zorder=3)
            )
        ax.add_collection(cells)
        if annotate:
            for (r, c), w in zip(result.positions, result.weights):
                ax.text(c + 0.08, r + 0.08, f"{100 * w:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if w < 0.6 * result.weights.max() else "black", zorder=8)
        n_keys = len(result.positions) - sum(result.outside)
        ax.set_title(
            f"{_MODE_TITLES[mode]}\n{n_keys} real keys; {100 * result.padding_mass:.1f}% of the softmax on padding",
            fontsize=9, y=1.01,
        )
    fig.suptitle(
        f"query ({row}, {col}), kernel {kernel_size}, dilation {dilation}; weights in %, seeded random q and k",
        fontsize=9, y=0.98,
    )
    fig.text(
        0.5, 0.02,
        _call_text("plot_border_modes", row=row, col=col, kernel_size=kernel_size, dilation=dilation,
                   height=height, width=width, seed=seed),
        ha="center", fontsize=6, family="monospace",
    )
    return fig


# ---------------------------------------------------------------------------
# 4. the effective receptive field of a stack of SWDA layers
# ---------------------------------------------------------------------------
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
    _check_seed(seed)
    return _cached_erf(dilations, kernel_size, int(size), int(channels), int(seed)).copy()


@functools.lru_cache(maxsize=32)
def _cached_erf(dilations: tuple[int, ...], kernel_size: int, size: int, channels: int, seed: int) -> np.ndarray:
    """The computation behind ``effective_receptive_field``, cached: a widget that changes
    one of two schedules recomputes only that one."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, size, size, channels, generator=generator, dtype=torch.float64)  # B, heads, H, W, C
    x.requires_grad_(True)
    with torch.enable_grad():  # also when called under torch.no_grad()
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


def plot_effective_receptive_field(
    schedules: Sequence[Sequence[int]] = ((1, 1, 1), (1, 2, 3)),
    kernel_size: int = 3,
    size: int | None = None,
    seed: int = 0,
) -> Figure:
    """Effective receptive fields of stacks of SWDA layers, one panel per dilation schedule.

    Colour: log10 of |gradient| relative to its maximum, on one scale for all
    panels, from 0 down to the smallest value any panel reaches (rounded down to
    half a decade, and never below -6, where the colours would only show
    rounding); white: exactly zero (no chain of windows reaches the pixel).
    Dashed square: the theoretical span 1 + sum (k - 1) * r. With [1, 2, 3] the
    three layers cover 13 x 13 pixels without holes; [1, 1, 1] only 7 x 7;
    [2, 2, 2] 13 x 13 but with holes (the "gridding" of stacked dilations).

    Artists: ``"erf-0"``, ``"erf-1"``, ... (images; their masked array holds the
    normalised log gradient) and ``"span-0"``, ``"span-1"``, ... (the dashed squares).
    """
    if isinstance(schedules, (str, bytes)) or not isinstance(schedules, Sequence) or len(schedules) == 0:
        raise ValueError(f"schedules must be a non-empty list of dilation schedules, e.g. [[1, 1, 1], [1, 2, 3]]; got {schedules!r}")
    schedules = [check_dilations(s, f"schedules[{i}]") for i, s in enumerate(schedules)]
    spans = [theoretical_span(kernel_size, s) for s in schedules]
    size = max(spans) + 4 if size is None else size
    check_positive_int(size, "size")
    log_grads, reached_counts = [], []
    for schedule in schedules:
        grad = effective_receptive_field(schedule, kernel_size, size, seed=seed)
        reached = grad > 0
        log_grad = np.full(grad.shape, np.nan)
        log_grad[reached] = np.log10(grad[reached] / grad.max())
        log_grads.append(log_grad)
        reached_counts.append(int(reached.sum()))
    lowest = min(float(np.nanmin(g)) for g in log_grads)
    floor = max(-6.0, min(-0.5, np.floor(2 * lowest) / 2))  # half decades; at least one

    fig = Figure(figsize=(3.3 * len(schedules) + 0.6, 3.9), dpi=80)
    width = 0.86 / len(schedules)  # of the figure, per panel; the colour bar takes the right edge
    centre = size // 2
    for i, (schedule, span, log_grad) in enumerate(zip(schedules, spans, log_grads)):
        shown = np.ma.masked_invalid(np.clip(log_grad, floor, 0.0))
        ax = fig.add_axes((0.04 + i * width, 0.1, width * 0.92, 0.72))
        image = ax.imshow(shown, cmap="viridis", vmin=floor, vmax=0.0, interpolation="nearest")
        image.set_gid(f"erf-{i}")
        ax.add_patch(
            Rectangle((centre - span / 2, centre - span / 2), span, span, fill=False, ls="--",
                      edgecolor="tab:cyan", lw=1.4, gid=f"span-{i}")
        )
        ax.set_xticks([])  # positions do not matter here, and tick labels cost a third of a redraw
        ax.set_yticks([])
        ax.set_title(
            f"dilations {list(schedule)}\ntheoretical span {span}x{span}, {reached_counts[i]} pixels reached",
            fontsize=9, y=1.01,
        )
    colorbar = fig.colorbar(image, cax=fig.add_axes((0.92, 0.1, 0.012, 0.72)))
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label("log10 |grad| / max", fontsize=7)
    fig.suptitle(f"effective receptive field, kernel {kernel_size}: log10 |grad| (white = 0)", fontsize=9, y=0.98)
    fig.text(
        0.5, 0.01,
        _call_text("plot_effective_receptive_field", schedules=[list(s) for s in schedules],
                   kernel_size=kernel_size, size=size, seed=seed),
        ha="center", fontsize=6, family="monospace",
    )
    return fig


# ---------------------------------------------------------------------------
# 5. each head's attention on a photograph
# ---------------------------------------------------------------------------
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
    image = _check_image(image)
    if isinstance(vmax, bool) or not isinstance(vmax, (int, float)) or not 0 < vmax <= 1:
        raise ValueError(f"vmax must be a number in (0, 1], the top of the colour scale; got {vmax!r}")
    reach = max(dilations) * (kernel_size // 2) + 1  # zoom: the widest window and one cell around it
    norm = Normalize(0.0, float(vmax))

    fig = Figure(figsize=(2.9 * (heads + 1) + 0.6, 3.6), dpi=80)
    panel = 0.9 / (heads + 1)
    overview = fig.add_axes((0.02, 0.06, panel * 0.92, 0.74))
    _draw_map(overview, height, width, margin=0, image=image)
    overview.plot([col], [row], marker="+", ms=9, mew=1.5, color="cyan", zorder=5, gid="query", ls="none")
    overview.add_patch(
        Rectangle((col - reach - 0.5, row - reach - 0.5), 2 * reach + 1, 2 * reach + 1, fill=False,
                  edgecolor="white", lw=1.2, zorder=4, gid="zoom-box")
    )
    overview.set_xticks([])
    overview.set_yticks([])
    overview.set_title(f"the whole map, {height}x{width} cells\nquery ({row}, {col}); square: zoomed area",
                       fontsize=8, y=1.01)
    for h, r in enumerate(dilations):
        window = dilated_window(row, col, kernel_size, r, height, width)
        head_weights = weights[h, row, col]  # k*k
        ax = fig.add_axes((0.02 + (h + 1) * panel, 0.06, panel * 0.92, 0.74))
        _draw_map(ax, height, width, margin=reach, image=image)
        ax.set_xlim(col - reach - 0.5, col + reach + 0.5)
        ax.set_ylim(row + reach + 0.5, row - reach - 0.5)
        for outside, gid, style in (
            (False, f"head-{h}", dict(edgecolor="white", lw=0.6)),
            (True, f"head-{h}-padding", dict(edgecolor=_BEYOND_COLOR, hatch="///", lw=1.0)),
        ):
            chosen = [o for o, out in enumerate(window.outside) if out == outside]
            cells = _cells([window.positions[o] for o in chosen], gid, inset=0.06, cmap="inferno",
                           norm=norm, alpha=0.85, zorder=2, **style)
            cells.set_array(head_weights[chosen])
            ax.add_collection(cells)
        for (i, j), w in zip(window.positions, head_weights):
            ax.text(j, i, f"{100 * w:.1f}", ha="center", va="center", fontsize=6, zorder=6,
                    color="white" if norm(w) < 0.6 else "black")
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="cyan", lw=1.6, zorder=5,
                               gid="query"))  # an outline: the query's own weight stays readable
        ax.set_xticks([])
        ax.set_yticks([])
        padding = float(head_weights[list(window.outside)].sum()) if window.n_outside else 0.0
        ax.set_title(
            f"head {h}, dilation {r} (weights in %)\n"
            f"{float(head_weights.min()):.3f} to {float(head_weights.max()):.3f}; padding {100 * padding:.0f}%",
            fontsize=8, y=1.01,
        )
    scale = ScalarMappable(norm=norm, cmap="inferno")
    colorbar = fig.colorbar(scale, cax=fig.add_axes((0.93, 0.1, 0.012, 0.66)))
    colorbar.ax.set_gid("colorbar")
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label("softmax weight (one scale for all heads)", fontsize=7)
    fig.suptitle(title or f"query ({row}, {col})", fontsize=9, y=0.98)
    return fig


# ---------------------------------------------------------------------------
# 6. tensor sizes through MSDA
# ---------------------------------------------------------------------------
def _binary_unit(nbytes: float) -> tuple[int, str]:
    """The largest binary unit (bytes per unit, name) that ``nbytes`` reaches, up to GiB."""
    names = ("B", "KiB", "MiB", "GiB")
    power = 0
    while power < len(names) - 1 and abs(nbytes) >= 1024 ** (power + 1):
        power += 1
    return 1024**power, names[power]


def format_bytes(nbytes: float) -> str:
    """1536 -> '1.5 KiB': a size in bytes, in the largest binary unit (B, KiB, MiB, GiB) it reaches.

    Binary units (1 KiB = 1024 bytes, 1 MiB = 1024 KiB), as PyTorch's memory
    statistics count.
    """
    unit, name = _binary_unit(nbytes)
    return f"{nbytes:.0f} B" if unit == 1 else f"{nbytes / unit:.1f} {name}"


def plot_shape_trace(rows) -> Figure:
    """Memory of every tensor of an MSDA forward pass, as horizontal bars (rows of ``trace_msda_shapes``).

    The k*k copies of K and V that the paper's unfold makes are red; the label of
    each bar gives the tensor's shape. The memory axis is in binary units (KiB,
    MiB) with round ticks.

    Artists: the bars, rectangles with gid ``"k*k copies"`` or ``"other tensors"``;
    a bar's width is the tensor's size in bytes, its y the row's index.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("rows must be a non-empty list of ShapeRow, from trace_msda_shapes(...)")
    fig = Figure(figsize=(7.5, 0.24 * len(rows) + 1.0), dpi=80)
    ax = fig.add_axes((0.5, 0.6 / (0.24 * len(rows) + 1.0), 0.46, 1 - 0.9 / (0.24 * len(rows) + 1.0)))
    positions = np.arange(len(rows))
    for flag, gid, color in ((True, "k*k copies", _BEYOND_COLOR), (False, "other tensors", "0.6")):
        chosen = [i for i, row in enumerate(rows) if row.kk_copy == flag]
        bars = ax.barh(positions[chosen], [rows[i].nbytes for i in chosen], color=color, label=gid)
        for bar in bars:
            bar.set_gid(gid)
    ax.set_yticks(positions, [f"{row.step}  {tuple(row.shape)}" for row in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    largest = max(max(row.nbytes for row in rows), 1)
    unit, name = _binary_unit(largest)
    ticks = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(0, largest / unit)
    ticks = [t for t in ticks if 0 <= t <= largest / unit * 1.001]
    ax.set_xticks([t * unit for t in ticks], [f"{t:g} {name}" for t in ticks])
    ax.set_xlim(0, largest * 1.05)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("memory (1 KiB = 1024 bytes)", fontsize=8)
    total = sum(row.nbytes for row in rows)
    copies = sum(row.nbytes for row in rows if row.kk_copy)
    ax.set_title(
        f"{format_bytes(total)} in all, {format_bytes(copies)} ({100 * copies / total:.0f}%) in k*k copies of K and V",
        fontsize=8, y=1.01,
    )
    ax.legend(fontsize=7, loc="lower right")
    return fig


# ---------------------------------------------------------------------------
# 6b. the whole model: a DilateBlock and the four-stage pyramid
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StageShape:
    """One stage of a DilateFormer: the map its blocks work on, and what the blocks are."""

    index: int
    channels: int
    height: int
    width: int
    depth: int
    kind: str
    """``"DilateBlock"`` or ``"GlobalBlock"``."""
    num_heads: int
    dilation: tuple[int, ...] | None
    """The dilation groups of a DilateBlock stage; None for global attention."""


def _halve(side: int) -> int:
    """A 3x3 convolution with stride 2 and padding 1: n pixels -> ceil(n / 2)."""
    return (side + 1) // 2


def dilateformer_stage_shapes(model, image_size: int = 224) -> list[StageShape]:
    """Per stage of ``model`` (a ``DilateFormer``), the (C, H, W) its blocks see for a square image.

    Read from the model's own modules: the stem's two stride-2 convolutions and
    every stage's downsampling (a stride-2 3x3 convolution, padding 1) each turn
    a side of n pixels into ceil(n / 2); the channels are the blocks' ``dim``.
    """
    stages = getattr(model, "stages", None)
    if stages is None or not hasattr(model, "patch_embed"):
        raise ValueError(f"model must be a DilateFormer (with patch_embed and stages), got {type(model).__name__}")
    check_positive_int(image_size, "image_size")
    side = _halve(_halve(image_size))  # the stem: two stride-2 convolutions
    shapes = []
    for i, stage in enumerate(stages):
        block = stage.blocks[0]
        attention = block.attn
        dilated = hasattr(attention, "dilation")
        shapes.append(
            StageShape(
                i, block.dim, side, side, len(stage.blocks), type(block).__name__, attention.num_heads,
                tuple(attention.dilation) if dilated else None,
            )
        )
        if not isinstance(stage.downsample, torch.nn.Identity):
            side = _halve(side)
    return shapes


def _box(ax, x, y, w, h, text, gid, color, fontsize=7, text_gid=None):
    """A rounded box with centred text, in data coordinates."""
    box = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01,rounding_size=0.015", facecolor=color,
                         edgecolor="0.25", lw=0.8, zorder=2)
    box.set_gid(gid)
    ax.add_patch(box)
    label = ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, zorder=3)
    label.set_gid(text_gid or f"{gid}-label")
    return box


def _arrow(ax, start, end, **style):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, lw=0.9, color="0.25",
                                 shrinkA=0, shrinkB=0, zorder=1, **style))


def plot_dilateformer_architecture(model, image_size: int = 224) -> Figure:
    """A DilateBlock as a block diagram, and the model's four-stage pyramid, drawn from ``model``.

    Left: the DilateBlock of the first stage, as the residual stream x and its
    three branches: a depthwise 3x3 convolution (the conditional position
    embedding), LayerNorm then MSDA, LayerNorm then the MLP, each added back
    to x. The labels come from the block's own modules (its dilations, its MLP width).
    Right: the image, the stem (/4), and one square per stage, its side
    proportional to the map's, blue for DilateBlock stages, orange for global
    attention, labelled with the depth, the heads and (C, H, W)
    (``dilateformer_stage_shapes``).

    Artists: ``"block-pos_embed"``, ``"block-norm1"``, ``"block-attn"``,
    ``"block-norm2"``, ``"block-mlp"`` (boxes); ``"image"``, ``"stem"``,
    ``"stage-0"``, ``"stage-1"``, ... (boxes, with ``"stage-0-label"``, ... texts).
    """
    stages = dilateformer_stage_shapes(model, image_size)
    dilated = [s for s in stages if s.kind == "DilateBlock"]
    fig = Figure(figsize=(11.0, 4.3), dpi=80)

    # ---- left: one DilateBlock
    ax = fig.add_axes((0.01, 0.04, 0.33, 0.84))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    example = dilated[0] if dilated else stages[0]
    block = model.stages[example.index].blocks[0]
    attention_text = (
        f"MSDA\nr = {', '.join(map(str, example.dilation))}, k = {block.attn.kernel_size}"
        if example.dilation else "global\nattention"
    )
    hidden = block.mlp.fc1.out_features
    stream_x = 0.12
    ax.add_line(Line2D([stream_x, stream_x], [0.93, 0.06], color="0.25", lw=1.2, zorder=1))
    ax.text(stream_x, 0.96, "x: (B, C, H, W)", ha="center", fontsize=7)
    ax.text(stream_x, 0.01, "to the next block", ha="center", fontsize=7)
    branches = [  # (y of the branch, its boxes: (name, text, colour))
        (0.76, [("pos_embed", "DWConv 3x3\n(position embedding)", "#dfe9f5")]),
        (0.47, [("norm1", "LN", "#eeeeee"), ("attn", attention_text, "#c6dbef")]),
        (0.18, [("norm2", "LN", "#eeeeee"), ("mlp", f"MLP\nC -> {hidden} -> C", "#fdd0a2")]),
    ]
    for y, boxes in branches:
        x = 0.3
        _arrow(ax, (stream_x, y + 0.06), (x, y + 0.06))
        for name, text, color in boxes:
            w = 0.16 if name.startswith("norm") else 0.38
            _box(ax, x, y, w, 0.12, text, f"block-{name}", color)
            if name != boxes[-1][0]:
                _arrow(ax, (x + w, y + 0.06), (x + w + 0.05, y + 0.06))
            x += w + 0.05
        # back to the stream, added to x
        ax.add_line(Line2D([x - 0.05 - 0.19, x - 0.05 - 0.19], [y, y - 0.07], color="0.25", lw=0.9))
        _arrow(ax, (x - 0.05 - 0.19, y - 0.07), (stream_x + 0.025, y - 0.07))
        ax.add_patch(Circle((stream_x, y - 0.07), 0.022, facecolor="white", edgecolor="0.25", zorder=3))
        ax.text(stream_x, y - 0.07, "+", ha="center", va="center", fontsize=9, zorder=4)
    ax.set_title(f"one {type(block).__name__} (stage {example.index + 1}): three residual branches", fontsize=9)

    # ---- right: the pyramid
    ax = fig.add_axes((0.36, 0.04, 0.63, 0.84))
    ax.axis("off")
    largest = stages[0].height
    scale = 0.42 / largest  # the first stage's square is 0.42 high
    ax.set_ylim(-0.3, 0.5)
    x = 0.0
    _box(ax, x, 0.0, 0.3, 0.42, f"image\n3 x {image_size} x {image_size}", "image", "white")
    x += 0.3
    _arrow(ax, (x + 0.02, 0.21), (x + 0.2, 0.21))
    ax.text(x + 0.11, 0.25, "stem\n4 convs, /4", ha="center", va="bottom", fontsize=7, gid="stem")
    x += 0.22
    colors = {"DilateBlock": "tab:blue", "GlobalBlock": "tab:orange"}
    for s in stages:
        side = max(s.height * scale, 0.03)
        box = Rectangle((x, 0.0), side, side, facecolor=colors.get(s.kind, "0.6"), alpha=0.75, edgecolor="0.2")
        box.set_gid(f"stage-{s.index}")
        ax.add_patch(box)
        kind = "Dilate" if s.kind == "DilateBlock" else "Global"
        detail = f"r = {','.join(map(str, s.dilation))}" if s.dilation else "global"
        label = ax.text(
            x + side / 2, -0.03,
            f"stage {s.index + 1}\n{s.depth} x {kind}\n{s.num_heads} heads, {detail}\n"
            f"{s.channels} x {s.height} x {s.width}",
            ha="center", va="top", fontsize=7,
        )
        label.set_gid(f"stage-{s.index}-label")
        x += max(side, 0.3)
        if s.index < len(stages) - 1:
            downsampled = not isinstance(model.stages[s.index].downsample, torch.nn.Identity)
            _arrow(ax, (x + 0.01, 0.05), (x + 0.12, 0.05))
            ax.text(x + 0.065, 0.08, "conv 3x3\nstride 2" if downsampled else "", ha="center", va="bottom", fontsize=6)
            x += 0.14
    ax.set_xlim(-0.02, x + 0.02)
    ax.set_aspect("equal")
    ax.set_title(
        "the pyramid: each square's side is proportional to its map's side\n"
        "blue: DilateBlock stages (MSDA), orange: GlobalBlock stages; last line (C, H, W)",
        fontsize=9,
    )
    fig.text(0.5, 0.005, f"plot_dilateformer_architecture(model, image_size={image_size}): "
             f"depths {tuple(s.depth for s in stages)}, embed_dim {stages[0].channels}",
             ha="center", fontsize=6, family="monospace")
    return fig


# ---------------------------------------------------------------------------
# 7. zero padding at the border: how much of each window lies on the map
# ---------------------------------------------------------------------------
def plot_window_coverage(
    height: int = 8, width: int = 8, kernel_size: int = 3, dilations: Sequence[int] = (1, 2, 3)
) -> Figure:
    """For every query, the share of its k*k window that lies on the map, one panel per dilation.

    With the paper's zero padding and all logits equal (q = k = 0) and all values 1,
    SWDA outputs exactly this share: the padded positions take the rest of the
    softmax mass and contribute zeros. Cells show "n/k*k" (or n alone on larger
    windows and maps): n window positions of k*k on the map.

    Artists: one ``"coverage-r<dilation>"`` image per panel, its array the share.
    """
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    check_kernel_size(kernel_size)
    dilations = check_dilations(dilations, "dilations")
    kk = kernel_size * kernel_size
    fig = Figure(figsize=(3.0 * len(dilations) + 0.6, 3.5), dpi=80)
    axes = fig.subplots(1, len(dilations), squeeze=False)[0]
    for ax, dilation in zip(axes, dilations):
        inside = kk - padding_counts(height, width, kernel_size, dilation)  # H, W
        share = inside.double().numpy() / kk
        image = ax.imshow(share, vmin=0, vmax=1, cmap="viridis", gid=f"coverage-r{dilation}")
        if height * width <= 144:  # label each cell: "n/k*k", or just n where that would not fit
            for i in range(height):
                for j in range(width):
                    n = int(inside[i, j])
                    label = f"{n}/{kk}" if kk < 10 and width <= 8 else str(n)
                    ax.text(j, i, label, ha="center", va="center", fontsize=7,
                            color="white" if n / kk < 0.6 else "black")
        ax.set_title(f"dilation {dilation}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="share of softmax on real keys")
    fig.suptitle(
        f"kernel {kernel_size} on a {height}x{width} map: window positions on the map (of {kk}); "
        "with zero padding, q = k = 0 and v = 1, SWDA outputs exactly this share",
        fontsize=9,
    )
    call = _call_text(
        "plot_window_coverage", height=height, width=width, kernel_size=kernel_size,
        dilations=tuple(dilations),
    )
    fig.text(0.5, 0.01, call, ha="center", fontsize=6, family="monospace")
    return fig


# ---------------------------------------------------------------------------
# 8. nn.Unfold on a tiny integer map, column by column
# ---------------------------------------------------------------------------
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
    _draw_map(left, height, width, margin)
    pixels = np.arange(1, height * width + 1).reshape(height, width)
    left.imshow(pixels, extent=(-0.5, width - 0.5, height - 0.5, -0.5), zorder=0.5, gid="pixels", **norm)
    left.add_collection(
        _cells(window.inside_positions, "window", inset=0.08, facecolor="none", edgecolor=_QUERY_COLOR, lw=2)
    )
    left.add_collection(
        _cells(window.outside_positions, "window-padding", inset=0.06, facecolor="none",
               edgecolor=_BEYOND_COLOR, hatch="xxx", lw=1.0)
    )
    for i in range(height):
        for j in range(width):
            light = pixels[i, j] > 0.6 * height * width
            left.text(j, i, str(pixels[i, j]), ha="center", va="center", fontsize=7, zorder=6,
                      color="black" if light else "white")
    left.set_title(f"input (1, 1, {height}, {width})\nquery {(row, col)} and its window", fontsize=9)

    right.imshow(columns.numpy(), aspect="auto", gid="unfold-matrix", **norm)  # 0 (padding) shows grey
    if n * kk <= 400:
        for o in range(kk):
            for m in range(n):
                value = int(columns[o, m])
                light = value == 0 or value > 0.6 * height * width  # grey padding, yellow end
                right.text(m, o, str(value), ha="center", va="center", fontsize=6,
                           color="black" if light else "white")
    index = row * width + col
    right.add_patch(Rectangle((index - 0.5, -0.5), 1, kk, fill=False, edgecolor=_QUERY_COLOR, lw=2.5, gid="column"))
    right.set_xlabel("column = pixel row * W + col", fontsize=8)
    right.set_ylabel("row = window position", fontsize=8)
    right.set_title(
        f"F.unfold(x, {kernel_size}, dilation={dilation}, padding={margin})\n-> (1, {kk}, {n}); column {index} boxed",
        fontsize=9,
    )
    right.tick_params(labelsize=6)
    call = _call_text(
        "plot_unfold_columns", height=height, width=width, kernel_size=kernel_size,
        dilation=dilation, row=row, col=col,
    )
    fig.text(0.5, 0.01, call, ha="center", fontsize=6, family="monospace")
    fig.subplots_adjust(bottom=0.16, top=0.82, wspace=0.25)
    return fig


# ---------------------------------------------------------------------------
# 9. the cost of global attention against a window, measured (lesson 01)
# ---------------------------------------------------------------------------
def plot_attention_cost(rows: Sequence[dict]) -> Figure:
    """Time and peak memory of global attention and SWDA against the number of pixels N.

    ``rows``: the output of ``dilate_lab.cost.measure_global_vs_window``. Dotted
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
    fig.text(0.5, 0.01, "plot_attention_cost(measure_global_vs_window(...))", ha="center", fontsize=6, family="monospace")
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
        ax.axvline(reach, color=GROUP_COLORS[i % len(GROUP_COLORS)], ls="--", lw=1.2, gid=f"reach-r{dilation}",
                   label=f"reach of a {kernel_size}x{kernel_size} window, r={dilation}")
    ax.set_xlabel("distance t between two pixels", fontsize=8)
    ax.set_ylabel("correlation", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.set_title("nearby pixels are nearly redundant", fontsize=9)
    fig.text(0.5, 0.01, _call_text("plot_neighbour_correlation", image=_Verbatim("photo"), max_offset=max_offset,
                                   kernel_size=kernel_size, dilations=tuple(dilations)),
             ha="center", fontsize=6, family="monospace")
    fig.subplots_adjust(bottom=0.17, wspace=0.15)
    return fig
