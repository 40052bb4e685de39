"""Which positions a query attends to: one window, every dilation group of MSDA, and the border.

- ``receptive_field`` / ``plot_receptive_field``: the dilated window of one
  query (DilateFormer eq. 3) and the square of side (k - 1) * r + 1 it spans.
- ``head_groups`` / ``multi_scale_view`` / ``plot_multi_scale``: MSDA's split of
  heads and channels over dilations (eq. 4-5) and all groups' windows at once,
  the paper's Figure 4.
- ``window_coverage`` / ``plot_window_coverage``: for every query, how many of
  its k*k window positions lie on the map, which is what zero padding outputs
  when all logits are equal. Lesson 02 shows the figure, then the same counts
  live in the browser (``dilate_lab.course.explorers.CoverageExplorer``, whose
  JavaScript tests/test_explorers.py checks against ``window_coverage``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..._checks import check_dilations, check_head_split, check_kernel_size, check_positive_int
from ...geometry import Window, dilated_window, padding_counts, window_span
from ._style import (
    _ATTENDED_COLOR,
    _BEYOND_COLOR,
    _Verbatim,
    _call_text,
    _cells,
    _check_image,
    _check_query,
    _draw_map,
    _footer,
    _group_color,
    _mark_query,
    _no_ticks,
    _star,
)

__all__ = [
    "ReceptiveField",
    "receptive_field",
    "plot_receptive_field",
    "HeadGroup",
    "head_groups",
    "MultiScaleView",
    "multi_scale_view",
    "plot_multi_scale",
    "window_coverage",
    "plot_window_coverage",
]


# ---------------------------------------------------------------------------
# 1. the receptive field of one query
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReceptiveField:
    """What ``plot_receptive_field`` draws, in map coordinates (cell centres at integers)."""

    window: Window
    margin: int
    """Cells of zero padding drawn around the map: r * (k // 2), the farthest a window reaches out."""
    span_box: tuple[float, float, float]
    """(left, top, side) of the square the window spans: side (k - 1) * r + 1, centred on the query."""


def receptive_field(
    kernel_size: int, dilation: int, row: int, col: int, height: int, width: int
) -> ReceptiveField:
    """The window of the query at (row, col), the margin to draw around the map, and its span square."""
    window = dilated_window(row, col, kernel_size, dilation, height, width)
    span = window.span
    return ReceptiveField(window, dilation * (kernel_size // 2), (col - span / 2, row - span / 2, span))


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
    field = receptive_field(kernel_size, dilation, row, col, height, width)
    window = field.window
    image = _check_image(image)

    fig = Figure(figsize=(4.4, 4.8), dpi=80)
    ax = fig.add_axes((0.1, 0.14, 0.85, 0.74))
    _draw_map(ax, height, width, field.margin, image)
    _draw_receptive_field(ax, field, on_photo=image is not None)
    ax.set_title(
        f"kernel {kernel_size}, dilation {dilation}: span (k-1)*r+1 = {window.span}\n"
        f"{window.n_inside} of {kernel_size * kernel_size} positions on the map, "
        f"{window.n_outside} beyond the border (zero padding)",
        fontsize=9, y=1.01,
    )
    extra = {"image": _Verbatim("photo")} if image is not None else {}
    call = _call_text(
        "plot_receptive_field", kernel_size=kernel_size, dilation=dilation, row=row, col=col,
        height=height, width=width, **extra,
    )
    _footer(fig, textwrap.fill(call, 80))
    return fig


def _draw_receptive_field(ax, field: ReceptiveField, on_photo: bool) -> None:
    """The window's cells (outlined only over a photograph), the padded ones hatched, the span, the query."""
    window = field.window
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
    left, top, side = field.span_box
    ax.add_patch(
        Rectangle((left, top), side, side, fill=False, ls="--", edgecolor="0.2", lw=1.2, zorder=3, gid="span")
    )
    row, col = window.query
    _star(ax, row, col, 14, 5)


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


@dataclass(frozen=True)
class MultiScaleView:
    """What ``plot_multi_scale`` draws: each group's window and the table of who gets what."""

    groups: tuple[HeadGroup, ...]
    windows: tuple[Window, ...]
    """Group i's window around the query, dilation ``groups[i].dilation``."""
    margin: int
    """Cells of padding drawn around the map: the widest group's reach, max(r) * (k // 2)."""
    insets: tuple[float, ...]
    """How far group i's squares sit inside their cells: nested, so that shared positions show every colour."""
    table: tuple[tuple[str, str, str, str], ...]
    """(dilation, heads, channels, span) of each group, as printed."""


def multi_scale_view(
    row: int, col: int, height: int, width: int, kernel_size: int, dilations: Sequence[int], dim: int, num_heads: int
) -> MultiScaleView:
    """Every dilation group's window around the query at (row, col), and the head/channel table."""
    groups = head_groups(dim, num_heads, dilations, kernel_size)
    _check_query(row, col, height, width)
    windows = tuple(dilated_window(row, col, kernel_size, g.dilation, height, width) for g in groups)
    step = 0.34 / len(groups)
    table = tuple(
        (str(g.dilation), _ranges_text(g.heads), _ranges_text(g.channels), f"{g.span}x{g.span}") for g in groups
    )
    return MultiScaleView(
        tuple(groups), windows, max(g.dilation for g in groups) * (kernel_size // 2),
        tuple(0.04 + step * g.index for g in groups), table,
    )


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
    view = multi_scale_view(row, col, height, width, kernel_size, dilations, dim, num_heads)
    image = _check_image(image)

    fig = Figure(figsize=(7.6, 4.6), dpi=80)
    ax = fig.add_axes((0.05, 0.12, 0.5, 0.74))
    _draw_map(ax, height, width, margin=view.margin, image=image)
    _draw_group_windows(ax, view)
    _mark_query(ax, row, col, corner=True)
    ax.set_title(f"query ({row}, {col}): {len(view.groups)} dilation groups, kernel {kernel_size}", fontsize=9, y=1.01)
    _draw_groups_table(fig.add_axes((0.6, 0.12, 0.38, 0.74)), view, dim, num_heads)
    dilations = tuple(g.dilation for g in view.groups)
    _footer(
        fig,
        _call_text("plot_multi_scale", row=row, col=col, height=height, width=width,
                   kernel_size=kernel_size, dilations=dilations, dim=dim, num_heads=num_heads),
        y=0.02,
    )
    return fig


def _draw_group_windows(ax, view: MultiScaleView) -> None:
    """Each group's on-map positions filled in its colour, its padded positions hatched, nested by inset."""
    for group, window, inset in zip(view.groups, view.windows, view.insets):
        color = _group_color(group.index)
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


def _draw_groups_table(table_ax, view: MultiScaleView, dim: int, num_heads: int) -> None:
    """The table of dilation, heads, channels and span per group, and the key to the map under it."""
    table_ax.axis("off")
    header = ["dilation", "heads", "channels", "span"]
    table = table_ax.table(cellText=[list(row) for row in view.table], colLabels=header, loc="upper center",
                           cellLoc="center")
    table.set_gid("groups-table")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.4)
    for g in view.groups:
        table[g.index + 1, 0].set_facecolor(_group_color(g.index))
    table_ax.set_title(f"dim {dim}, {num_heads} heads of {dim // num_heads} channels", fontsize=9, y=1.01)
    n_padded = ", ".join(str(w.n_outside) for w in view.windows)
    key = [
        "Coloured squares: each group's window on the map. They are nested (group 0 largest) "
        "only so that a position two groups share shows both colours.",
        f"Hatched: beyond the border, zero padding ({n_padded} positions per group).",
        "Gold outline, star in the corner: the query, which every group's window contains.",
    ]
    table_ax.text(0.0, 0.02, "\n".join(textwrap.fill(line, 48) for line in key), transform=table_ax.transAxes,
                  fontsize=7, va="bottom", ha="left", gid="legend-text")


# ---------------------------------------------------------------------------
# 3. zero padding at the border: how much of each window lies on the map
# ---------------------------------------------------------------------------
def window_coverage(height: int, width: int, kernel_size: int, dilations: Sequence[int]) -> np.ndarray:
    """Integer (len(dilations), height, width): how many of each query's k*k window positions lie on the map."""
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    check_kernel_size(kernel_size)
    dilations = check_dilations(dilations, "dilations")
    kk = kernel_size * kernel_size
    return np.stack(
        [(kk - padding_counts(height, width, kernel_size, r)).numpy() for r in dilations]
    )  # dilations, H, W


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
    coverage = window_coverage(height, width, kernel_size, dilations)  # dilations, H, W
    dilations = check_dilations(dilations, "dilations")
    kk = kernel_size * kernel_size
    fig = Figure(figsize=(3.0 * len(dilations) + 0.6, 3.5), dpi=80)
    axes = fig.subplots(1, len(dilations), squeeze=False)[0]
    for ax, dilation, inside in zip(axes, dilations, coverage):
        image = ax.imshow(inside.astype(np.float64) / kk, vmin=0, vmax=1, cmap="viridis", gid=f"coverage-r{dilation}")
        if height * width <= 144:  # label each cell: "n/k*k", or just n where that would not fit
            for (i, j), n in np.ndenumerate(inside):
                label = f"{n}/{kk}" if kk < 10 and width <= 8 else str(n)
                ax.text(j, i, label, ha="center", va="center", fontsize=7,
                        color="white" if n / kk < 0.6 else "black")
        ax.set_title(f"dilation {dilation}", fontsize=9)
        _no_ticks(ax)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="share of softmax on real keys")
    fig.suptitle(
        f"kernel {kernel_size} on a {height}x{width} map: window positions on the map (of {kk}); "
        "with zero padding, q = k = 0 and v = 1, SWDA outputs exactly this share",
        fontsize=9,
    )
    _footer(fig, _call_text(
        "plot_window_coverage", height=height, width=width, kernel_size=kernel_size,
        dilations=tuple(dilations),
    ))
    return fig
