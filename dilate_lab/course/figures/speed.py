"""Figures of lessons 06 and 06b: the copy-free shifted views, and where the time goes.

- ``shifted_views`` / ``plot_shifted_views`` (lesson 06, the shift form): the idea
  behind the copy-free implementations. Pad K once; window position ``o`` of *every*
  query is then one H x W slice of the padded K, shifted by that position's offset.
  The k*k slices line up with the queries: element [i, j] of slice o is key o of query (i, j).
- ``plot_time_breakdown`` (the profiler of the optional lesson 06b): where the time
  goes, from ``dilate_lab.bench.profile_ops``.

The rest of these two lessons' pictures have modules of their own: the GPU launch
timeline of lesson 06 is in ``timeline``; lesson 06b's flat table, image row and Triton
tile are in ``kernels``, its memory-traffic count in ``traffic``, and what a block-sparse
kernel computes (``plot_block_mask``) in ``blocks``.

Like the other figures, these draw on ``matplotlib.figure.Figure`` (never
pyplot), give the artists that carry meaning a ``gid``, and print the call that
produced a map figure at its foot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..._checks import check_dilation, check_kernel_size, check_positive_int
from ...geometry import window_offsets
from ._pictures import canvas_png, set_square_cells, square_cells
from ._style import _BEYOND_COLOR, _QUERY_COLOR, _call_text, _check_query, _draw_map, _footer, _no_ticks, _star

__all__ = [
    "ShiftedView",
    "shifted_views",
    "plot_shifted_views",
    "ShiftedViewsPicture",
    "plot_time_breakdown",
]

_VIEW_COLOR = "tab:blue"
_MAX_VIEW_KERNEL = 5
_MAX_VIEW_MAP = 16


# ---------------------------------------------------------------------------
# 1. the k*k shifted views of the zero-padded K
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ShiftedView:
    """Window position ``o`` as one H x W slice of the zero-padded K, and the query's key in it."""

    index: int
    """o, in window (``F.unfold``) order: o = a * k + b."""
    shift: tuple[int, int]
    """(row, col) offset of the view from the map: ((a - k//2) * r, (b - k//2) * r)."""
    rows: tuple[int, int]
    """The view is ``K_pad[rows[0]:rows[1], cols[0]:cols[1]]``: start a * r, length H."""
    cols: tuple[int, int]
    key: tuple[int, int]
    """Map coordinates of the view's element [row, col]: key o of the query (may lie in the padding)."""
    on_map: bool


def _check_view_sizes(height: int, width: int, kernel_size: int) -> None:
    if kernel_size > _MAX_VIEW_KERNEL:
        raise ValueError(
            f"kernel_size must be at most {_MAX_VIEW_KERNEL} here (one panel per window position), "
            f"got {kernel_size}"
        )
    if max(height, width) > _MAX_VIEW_MAP:
        raise ValueError(
            f"height and width must be at most {_MAX_VIEW_MAP} here (so that cells stay readable), "
            f"got {height} x {width}"
        )


def shifted_views(
    height: int, width: int, kernel_size: int, dilation: int, row: int, col: int
) -> list[ShiftedView]:
    """The k*k views of K padded by p = r * (k // 2), and where each puts key o of the query (row, col).

    View o = (a, b) starts at (a * r, b * r) of the padded K, so its element
    [row, col] is K_pad[row + a * r, col + b * r] = K[row + (a - k//2) * r, col + (b - k//2) * r]:
    the query's window position o, exactly as ``dilated_window`` lists it.
    Kernels up to 5 and maps up to 16 x 16 (one readable panel per view).
    """
    _check_query(row, col, height, width)
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    _check_view_sizes(height, width, kernel_size)
    views = []
    for o, (d_row, d_col) in enumerate(window_offsets(kernel_size, dilation)):
        a, b = divmod(o, kernel_size)
        key = (row + d_row, col + d_col)
        views.append(ShiftedView(
            o, (d_row, d_col), (a * dilation, a * dilation + height), (b * dilation, b * dilation + width), key,
            0 <= key[0] < height and 0 <= key[1] < width,
        ))
    return views


def plot_shifted_views(
    height: int = 6, width: int = 6, kernel_size: int = 3, dilation: int = 2, row: int = 1, col: int = 4
) -> Figure:
    """One panel per window position o: the H x W view of the zero-padded K that holds key o of every query.

    K is padded by ``p = dilation * (kernel_size // 2)`` on every side. For window
    position ``o = (a, b)`` (window order, as in ``F.unfold``) the view is
    ``K_pad[a*r : a*r + H, b*r : b*r + W]``: the map shifted by the offset
    ``((a - k//2) * r, (b - k//2) * r)``. Each panel draws the padded K (the map
    framed in black, its zero padding dotted) and, in blue, the H x W slice that
    forms view o. The star is the query (row, col); the view's element at that
    same index [row, col] is the cell at the arrow's head: key o of the query,
    outlined gold when it lies on the map, red and hatched when it is a zero of
    the padding. A legend under the panels says so.

    Artists, per panel o: ``"view-o"`` (the shaded view), ``"key-o"`` (the
    query's key in it), ``"shift-o"`` (the arrow; not drawn for the centre), and
    ``"query"`` and ``"padded-K"`` in every panel; ``"legend"`` (the figure's legend).
    """
    return ShiftedViewsPicture(height, width, kernel_size, dilation, dpi=80).draw(row, col)


class ShiftedViewsPicture:
    """``plot_shifted_views`` for one map, kernel and dilation, redrawn quickly for any query.

    The k*k panels (maps, padding, views, titles) do not depend on the query; the
    keys, arrows, stars, title, the legend's first label and the footer do. The artists
    of both are made once; ``draw(row, col)`` gives the second their new places,
    styles and words.
    ``prepare()`` draws the first into a background image, and ``png(row, col)`` then
    draws only the second over it, so a move of the query costs a few artists and
    one PNG instead of k*k panels (the explorer of lesson 06 at kernel 5 went from
    about 0.6 s to a tenth of that, measured).
    """

    def __init__(self, height: int, width: int, kernel_size: int, dilation: int, dpi: int = 96):
        shifted_views(height, width, kernel_size, dilation, 0, 0)  # checks the arguments
        self.height, self.width, self.kernel_size, self.dilation = height, width, kernel_size, dilation
        self.pad = dilation * (kernel_size // 2)
        side = max(height, width) + 2 * self.pad
        panel = min(2.3, 0.6 + 0.17 * side)
        self._fig_height = panel * kernel_size + 2.2  # panels, the title, the legend and the call
        self.figure = fig = Figure(figsize=(max(6.0, panel * kernel_size + 0.4), self._fig_height), dpi=dpi)
        self._axes = fig.subplots(kernel_size, kernel_size, squeeze=False)
        self._query_artists: list = []  # (owner, artist): what a query changes, drawn over the background
        self._keys, self._arrows, self._stars = [], [], []
        for view in shifted_views(height, width, kernel_size, dilation, 0, 0):
            a, b = divmod(view.index, kernel_size)
            ax = self._axes[a][b]
            _draw_view_panel(ax, view, height, width, self.pad)
            key, arrow, star = _view_query_artists(ax, view)
            self._keys.append(key)
            self._arrows.append(arrow)
            self._stars.append(star)
            self._query_artists += [(ax, artist) for artist in (key, arrow, star) if artist is not None]
        fig.subplots_adjust(left=0.03, right=0.97, bottom=1.15 / self._fig_height,
                            top=1 - 0.95 / self._fig_height, wspace=0.12, hspace=0.45)
        self._title = fig.suptitle("", fontsize=8)
        self._legend = _views_legend(fig, height, width, self._fig_height)
        _footer(fig, "")
        self._footer = fig.texts[-1]
        # of the legend only the query's label changes: the rest of it is drawn with the panels. Its
        # column is as wide as its longest label, never this one, so the label keeps its place.
        self._query_artists += [(fig, self._title), (fig, self._legend.get_texts()[0]), (fig, self._footer)]
        self._background = None

    def draw(self, row: int, col: int) -> Figure:
        """The figure with the query (row, col): its keys, arrows, stars, title, legend and footer."""
        views = shifted_views(self.height, self.width, self.kernel_size, self.dilation, row, col)
        for view, key, arrow, star in zip(views, self._keys, self._arrows, self._stars):
            _place_view_query(view, key, arrow, star, row, col)
        k, pad = self.kernel_size, self.pad
        self._title.set_text(
            f"{k * k} views of K zero-padded to {self.height + 2 * pad} x {self.width + 2 * pad}. "
            f"Blue: the {self.height} x {self.width} slice of padded K that forms view o;\n"
            f"its element under the star's index [{row}, {col}] is the key at the arrow's head: "
            f"key o of the query {(row, col)}"
        )
        self._legend.get_texts()[0].set_text(f"the query {(row, col)}")
        self._footer.set_text(_call_text(
            "plot_shifted_views", height=self.height, width=self.width, kernel_size=k,
            dilation=self.dilation, row=row, col=col,
        ))
        return self.figure

    def prepare(self) -> ShiftedViewsPicture:
        """Draw the panels that no query changes into the background image (once; the slow part)."""
        if self._background is None:
            canvas = FigureCanvasAgg(self.figure)
            for _, artist in self._query_artists:
                artist.set_visible(False)
            try:
                canvas.draw()
            finally:
                for _, artist in self._query_artists:
                    artist.set_visible(True)
            self._background = canvas.copy_from_bbox(self.figure.bbox)
        return self

    def png(self, row: int, col: int) -> bytes:
        """The figure for the query (row, col) as PNG bytes, drawing only what the query changes."""
        self.prepare()
        self.draw(row, col)
        canvas = self.figure.canvas
        canvas.restore_region(self._background)
        for owner, artist in self._query_artists:
            owner.draw_artist(artist)
        return canvas_png(canvas)


def _draw_view_panel(ax, view: ShiftedView, height: int, width: int, pad: int) -> None:
    """What a panel shows whatever the query: the padded K, view o over it, the panel's title."""
    o, (d_row, d_col) = view.index, view.shift
    _draw_map(ax, height, width, pad)
    ax.add_patch(Rectangle(
        (-pad - 0.5, -pad - 0.5), width + 2 * pad, height + 2 * pad,
        facecolor="white", edgecolor="0.6", hatch="..", lw=0.5, zorder=-1, gid="padded-K",
    ))
    ax.add_patch(Rectangle(
        (d_col - 0.5, d_row - 0.5), width, height,
        facecolor=_VIEW_COLOR, edgecolor=_VIEW_COLOR, alpha=0.25, lw=1.5, zorder=3, gid=f"view-{o}",
    ))
    ax.set_xlim(-pad - 0.5, width + pad - 0.5)
    ax.set_ylim(height + pad - 0.5, -pad - 0.5)
    _no_ticks(ax)
    ax.set_title(
        f"o={o}: shift ({d_row:+d}, {d_col:+d})\nK_pad[{view.rows[0]}:{view.rows[1]}, "
        f"{view.cols[0]}:{view.cols[1]}]",
        fontsize=7,
    )


def _view_query_artists(ax, view: ShiftedView) -> tuple:
    """A panel's artists that a query places: its key in view o, the arrow to it (None for the
    centre, whose shift is zero), the star."""
    o = view.index
    key = ax.add_collection(square_cells([], f"key-{o}", inset=0.05, zorder=5, facecolor="none"), autolim=False)
    arrow = None
    if view.shift != (0, 0):
        arrow = ax.annotate(
            "", xy=(0, 0), xytext=(0, 0), zorder=6,
            arrowprops=dict(arrowstyle="->", color="black", lw=1.0, shrinkA=3, shrinkB=3),
        )
        arrow.set_gid(f"shift-{o}")
    _star(ax, 0, 0, 9, 7)
    return key, arrow, ax.lines[-1]


def _place_view_query(view: ShiftedView, key, arrow, star, row: int, col: int) -> None:
    """The query's key in view o (outlined gold on the map, red and hatched in the padding), the
    arrow from the query to it, the star on the query."""
    set_square_cells(key, [view.key], inset=0.05)
    if view.on_map:
        key.set(edgecolor=_QUERY_COLOR, hatch=None, linewidth=2.0)
    else:
        key.set(edgecolor=_BEYOND_COLOR, hatch="xxx", linewidth=1.2)
    if arrow is not None:
        arrow.xy = (view.key[1], view.key[0])
        arrow.set_position((col, row))
    star.set_data([col], [row])


def _views_legend(fig, height: int, width: int, fig_height: float):
    """The legend under the panels: the query (its label says where: ``draw`` writes it), a view,
    the key on the map or in the padding, the map."""
    handles = [
        Line2D([], [], marker="*", ms=9, color=_QUERY_COLOR, mec="black", ls="none"),
        Patch(facecolor=to_rgba(_VIEW_COLOR, 0.25), edgecolor=_VIEW_COLOR),
        Patch(facecolor="none", edgecolor=_QUERY_COLOR, lw=2.0),
        Patch(facecolor="none", edgecolor=_BEYOND_COLOR, hatch="xxx"),
        Patch(facecolor="white", edgecolor="0.6", hatch=".."),
        Patch(facecolor="0.95", edgecolor="black", lw=1.5),
    ]
    labels = [
        "the query",
        f"view o: a {height} x {width} slice of padded K",
        "key o of the query, on the map",
        "key o of the query, a zero of the padding",
        "zero padding of K (logit 0, value 0)",
        f"the {height} x {width} map",
    ]
    legend = fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False,
                        bbox_to_anchor=(0.5, 0.4 / fig_height))
    legend.set_gid("legend")
    return legend


# ---------------------------------------------------------------------------
# 2. where the time goes
# ---------------------------------------------------------------------------
def _short_op_name(name: str, limit: int = 36) -> str:
    """An operator name short enough for a tick label: autograd's prefix shortened, then cut."""
    name = name.replace("autograd::engine::evaluate_function: ", "autograd: ")
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_time_breakdown(profiles: Mapping[str, Sequence], top: int = 5) -> Figure:
    """Self time of the top operators of each profile, as horizontal bars, one panel per profile.

    ``profiles``: name -> the list of ``OpTime`` from ``dilate_lab.bench.profile_ops``
    (largest first). The operators beyond ``top`` are summed in one "(other)" bar.
    Each panel has its own time axis: its title gives the total per run.

    Artists: ``"bars-<name>"`` (the BarContainer's patches carry the gid).
    """
    if not isinstance(profiles, Mapping) or not profiles or any(len(ops) == 0 for ops in profiles.values()):
        raise ValueError(
            "profiles must be a non-empty dict of name -> non-empty list of OpTime "
            "(from dilate_lab.bench.profile_ops)"
        )
    check_positive_int(top, "top")
    fig = Figure(figsize=(8.4, 1.0 + 0.38 * (top + 1) * len(profiles)), dpi=80)
    axes = fig.subplots(len(profiles), 1, squeeze=False)[:, 0]
    for ax, (name, ops) in zip(axes, profiles.items()):
        shown, rest = list(ops[:top]), list(ops[top:])
        labels = [f"{_short_op_name(op.name)} (x{op.calls})" for op in shown]
        values = [op.self_ms for op in shown]
        if rest:
            labels.append(f"(other: {len(rest)} operators)")
            values.append(sum(op.self_ms for op in rest))
        total = sum(op.self_ms for op in ops)
        positions = np.arange(len(values))[::-1]  # the largest on top
        bars = ax.barh(positions, values, color=_VIEW_COLOR)
        for patch in bars.patches:
            patch.set_gid(f"bars-{name}")
        if rest:
            bars.patches[-1].set_color("0.6")
        for y, value in zip(positions, values):
            ax.text(value, y, f" {value:.2f} ms ({value / total:.0%})", va="center", fontsize=7)
        ax.set_yticks(positions, labels, fontsize=7)
        ax.set_xlim(0, max(values) * 1.35)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{name}: {total:.1f} ms per run (self time of each operator)", fontsize=9)
    axes[-1].set_xlabel("milliseconds per run", fontsize=8)
    fig.tight_layout()
    return fig
