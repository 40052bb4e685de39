"""How the fast SWDA kernels reach the keys (lesson 06b): one picture per kernel.

- ``flat_window`` / ``plot_flat_window``: the ``"fused"`` Function reads the map as one
  flat table of pixel rows; window position o of query row n is table row n + shift_o.
  A flat shift is the 2-D shift, except where the window leaves the map: there it
  lands on a *wrong* pixel (the row end wraps into the next row) or outside the table.
- ``row_work`` / ``plot_row_work``: the C++ kernel's unit of work, one image row: the
  k rows of K it reads, the rows beyond the border it never reads, and its weights
  stored as k*k lines of W numbers, rounded up to whole vectors.
- ``tile_loads`` / ``plot_tile_loads``: a Triton program's tile of consecutive
  queries and, for one window offset, the keys it loads; a load beyond the border is
  masked and reads 0, which is the paper's zero padding.

Like the other figures, these draw on ``matplotlib.figure.Figure``, give the artists
that carry meaning a ``gid``, and print the call that produced them at their foot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..._checks import check_dilation, check_kernel_size, check_positive_int
from ...geometry import window_offsets
from ._style import _BEYOND_COLOR, _QUERY_COLOR, _call_text, _cells, _check_query, _draw_map, _footer, _mark_query

__all__ = [
    "FlatWindow", "flat_window", "plot_flat_window",
    "RowWork", "row_work", "plot_row_work",
    "TileLoads", "tile_loads", "plot_tile_loads",
]

_KEY_COLOR = "tab:blue"
_WRONG_COLOR = "tab:orange"
_MAX_MAP = 16


def _check_small_map(height: int, width: int) -> None:
    if max(height, width) > _MAX_MAP:
        raise ValueError(
            f"height and width must be at most {_MAX_MAP} here (so that cells stay readable), got {height} x {width}"
        )


def _label_cells(ax, cells: Sequence[tuple[int, int]], labels: Sequence[str], gid: str, **style) -> None:
    for (r, c), text in zip(cells, labels):
        ax.text(c, r, text, **{"ha": "center", "va": "center", "fontsize": 7, "zorder": 8, "gid": gid, **style})


# ---------------------------------------------------------------------------
# 1. "fused": the map as one flat table of rows
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FlatWindow:
    """Where each window position of one query lands in the flat table of pixel rows."""

    query: tuple[int, int]
    index: int
    """n = row * W + col: the query's row in the flat table."""
    shifts: tuple[int, ...]
    """shift_o = d_row * W + d_col, in window (unfold) order."""
    keys: tuple[tuple[int, int], ...]
    """The window's keys on the map (may lie beyond the border)."""
    on_map: tuple[bool, ...]
    landed: tuple[tuple[int, int] | None, ...]
    """The pixel of table row n + shift_o, or None where that row is outside the table."""

    @property
    def wrong(self) -> tuple[int, ...]:
        """Window positions whose table row is a real pixel but not the key: the mask replaces them."""
        return tuple(o for o, (ok, at) in enumerate(zip(self.on_map, self.landed)) if not ok and at is not None)

    @property
    def outside(self) -> tuple[int, ...]:
        """Window positions whose table row is outside the table: the loops skip them."""
        return tuple(o for o, at in enumerate(self.landed) if at is None)


def flat_window(height: int, width: int, kernel_size: int, dilation: int, row: int, col: int) -> FlatWindow:
    """The window of query (row, col) as rows of the flat (H*W, d) table: row n + shift_o for position o."""
    _check_query(row, col, height, width)
    n, pixels = row * width + col, height * width
    shifts, keys, on_map, landed = [], [], [], []
    for d_row, d_col in window_offsets(kernel_size, dilation):
        shift = d_row * width + d_col
        key = (row + d_row, col + d_col)
        shifts.append(shift)
        keys.append(key)
        on_map.append(0 <= key[0] < height and 0 <= key[1] < width)
        landed.append(divmod(n + shift, width) if 0 <= n + shift < pixels else None)
    return FlatWindow((row, col), n, tuple(shifts), tuple(keys), tuple(on_map), tuple(landed))


def plot_flat_window(
    height: int = 5, width: int = 7, kernel_size: int = 3, dilation: int = 2, row: int = 1, col: int = 5
) -> Figure:
    """Left: the query's window on the map. Right: the flat table folded back into rows, each cell
    numbered by its table row, with window position o drawn at table row n + shift_o.

    Artists: ``"window-keys"`` and ``"window-padding"`` (left: keys on the map, zero padding),
    ``"flat-keys"`` (right: table rows that are the right key), ``"flat-wrong"`` (right: a real
    pixel that is not the key, replaced by the mask), ``"table-rows"`` (the cell numbers).
    """
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    _check_small_map(height, width)
    window = flat_window(height, width, kernel_size, dilation, row, col)
    margin = dilation * (kernel_size // 2)
    fig = Figure(figsize=(8.4, 4.2), dpi=80)
    left, right = fig.subplots(1, 2)
    _draw_map(left, height, width, margin)
    inside = [o for o, ok in enumerate(window.on_map) if ok]
    beyond = [o for o, ok in enumerate(window.on_map) if not ok]
    left.add_collection(_cells([window.keys[o] for o in inside], "window-keys", inset=0.05,
                               facecolor=_KEY_COLOR, alpha=0.55, zorder=3))
    left.add_collection(_cells([window.keys[o] for o in beyond], "window-padding", inset=0.05,
                               facecolor="none", edgecolor=_BEYOND_COLOR, hatch="xxx", zorder=3))
    _label_cells(left, window.keys, [str(o) for o in range(len(window.keys))], "window-labels")
    _mark_query(left, row, col, corner=True)
    left.set_title(f"the window of query {window.query} on the map\n"
                   f"({len(beyond)} of {len(window.keys)} positions are zero padding)", fontsize=8)

    _draw_map(right, height, width, margin)  # the same scale as the left panel
    cells = [(r, c) for r in range(height) for c in range(width)]
    _label_cells(right, [(r + 0.3, c + 0.26) for r, c in cells], [str(r * width + c) for r, c in cells],
                 "table-rows", color="0.45", fontsize=5)
    right_keys = [o for o in inside]
    right.add_collection(_cells([window.landed[o] for o in right_keys], "flat-keys", inset=0.05,
                                facecolor=_KEY_COLOR, alpha=0.55, zorder=3))
    right.add_collection(_cells([window.landed[o] for o in window.wrong], "flat-wrong", inset=0.05,
                                facecolor=_WRONG_COLOR, alpha=0.6, hatch="//", zorder=3))
    shown = right_keys + list(window.wrong)
    _label_cells(right, [window.landed[o] for o in shown], [str(o) for o in shown], "flat-labels")
    _mark_query(right, row, col, corner=True)
    right.set_title(f"the flat table (row numbers) folded into the map: o at row {window.index} + shift_o;\n"
                    f"{len(window.wrong)} on a wrong pixel (masked), {len(window.outside)} outside the table (skipped)",
                    fontsize=8)
    handles = [
        Patch(facecolor=_KEY_COLOR, alpha=0.55), Patch(facecolor="none", edgecolor=_BEYOND_COLOR, hatch="xxx"),
        Patch(facecolor=_WRONG_COLOR, alpha=0.6, hatch="//"),
    ]
    labels = ["key o: the right pixel", "zero padding (beyond the border)",
              "a wrong pixel (the row end wrapped): logit and weight replaced by 0"]
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.05))
    fig.subplots_adjust(left=0.05, right=0.98, top=0.86, bottom=0.16, wspace=0.15)
    _footer(fig, _call_text("plot_flat_window", height=height, width=width, kernel_size=kernel_size,
                            dilation=dilation, row=row, col=col))
    return fig


# ---------------------------------------------------------------------------
# 2. "cpp": one image row as the unit of work
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RowWork:
    """What the C++ kernel reads and stores for the W queries of image row ``row``."""

    row: int
    key_rows: tuple[int, ...]
    """The k rows of K its windows reach, row + (a - k//2) * r, top to bottom."""
    rows_read: tuple[int, ...]
    """Those on the map: read (and kept in the cache)."""
    rows_skipped: tuple[int, ...]
    """Those beyond the border: never read (their keys are zeros)."""
    positions: int
    """k*k: one line of weights per window position."""
    stride: int
    """Each line's length: W rounded up to whole vectors of ``lanes`` numbers."""
    lanes: int


def row_work(height: int, width: int, kernel_size: int, dilation: int, row: int, lanes: int = 8) -> RowWork:
    """The key rows one image row reads and the (k*k, stride) lines its weights fill."""
    _check_query(row, 0, height, width)
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    check_positive_int(lanes, "lanes")
    half = kernel_size // 2
    key_rows = tuple(row + (a - half) * dilation for a in range(kernel_size))
    read = tuple(r for r in key_rows if 0 <= r < height)
    skipped = tuple(r for r in key_rows if not 0 <= r < height)
    stride = -(-width // lanes) * lanes
    return RowWork(row, key_rows, read, skipped, kernel_size * kernel_size, stride, lanes)


def plot_row_work(
    height: int = 7, width: int = 11, kernel_size: int = 3, dilation: int = 2, row: int = 1, lanes: int = 8
) -> Figure:
    """Left: image row ``row`` (its W queries), the key rows it reads and those it never reads.
    Right: its weights, k*k lines of ``stride`` numbers (line o: weight o of every query of the row).

    Artists: ``"query-row"``, ``"rows-read"``, ``"rows-skipped"`` (left); ``"weights-used"``,
    ``"weights-padding"`` (the zero-padded keys' entries) and ``"weights-rounding"`` (the
    entries past W, computed and never used) on the right.
    """
    _check_small_map(height, width)
    work = row_work(height, width, kernel_size, dilation, row, lanes)
    margin = dilation * (kernel_size // 2)
    fig = Figure(figsize=(8.4, 4.0), dpi=80)
    left, right = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1, 1.25]))
    _draw_map(left, height, width, margin)
    left.add_patch(Rectangle((-0.5, row - 0.5), width, 1, facecolor=_QUERY_COLOR, alpha=0.7, zorder=3, gid="query-row"))
    for gid, rows, style in (
        ("rows-read", work.rows_read, dict(facecolor=_KEY_COLOR, alpha=0.3, edgecolor=_KEY_COLOR)),
        ("rows-skipped", work.rows_skipped, dict(facecolor="none", edgecolor=_BEYOND_COLOR, hatch="xxx")),
    ):
        for r in rows:
            x0, span = (-0.5, width) if gid == "rows-read" else (-0.5 - margin, width + 2 * margin)
            left.add_patch(Rectangle((x0, r - 0.45), span, 0.9, lw=1.5, zorder=4, gid=gid, **style))
    left.set_title(f"image row {row}: {width} queries; it reads key rows {list(work.rows_read)}"
                   + (f",\nnever rows {list(work.rows_skipped)} (beyond the border)" if work.rows_skipped else ""),
                   fontsize=8)

    half = kernel_size // 2
    right.set_xlim(-0.5, work.stride - 0.5)
    right.set_ylim(work.positions - 0.5, -0.5)
    right.set_aspect("equal")
    used, padding, rounding = [], [], []
    for o in range(work.positions):
        a, b = divmod(o, kernel_size)
        key_row = row + (a - half) * dilation
        for j in range(work.stride):
            key_col = j + (b - half) * dilation
            if j >= width:
                rounding.append((o, j))
            elif 0 <= key_row < height and 0 <= key_col < width:
                used.append((o, j))
            else:
                padding.append((o, j))
    right.add_collection(_cells(used, "weights-used", inset=0.04, facecolor=_KEY_COLOR, alpha=0.55))
    right.add_collection(_cells(padding, "weights-padding", inset=0.04, facecolor="none",
                                edgecolor=_BEYOND_COLOR, hatch="xxx"))
    right.add_collection(_cells(rounding, "weights-rounding", inset=0.04, facecolor="0.8"))
    right.set_yticks(range(work.positions), [f"line o={o}" for o in range(work.positions)], fontsize=6)
    right.set_xticks([0, width - 1, work.stride - 1], ["j=0", f"j={width - 1}", str(work.stride - 1)], fontsize=6)
    right.set_title(f"its weights: {work.positions} lines of {work.stride} numbers\n"
                    f"({width} queries, rounded up to whole vectors of {lanes})", fontsize=8)
    handles = [Patch(facecolor=_QUERY_COLOR, alpha=0.7), Patch(facecolor=_KEY_COLOR, alpha=0.4),
               Patch(facecolor="none", edgecolor=_BEYOND_COLOR, hatch="xxx"), Patch(facecolor="0.8")]
    labels = ["the row's queries", "keys read / weights of keys on the map",
              "beyond the border: never read (logit 0)", "rounding: computed, never used"]
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.04))
    fig.subplots_adjust(left=0.05, right=0.98, top=0.86, bottom=0.2, wspace=0.2)
    _footer(fig, _call_text("plot_row_work", height=height, width=width, kernel_size=kernel_size,
                            dilation=dilation, row=row, lanes=lanes))
    return fig


# ---------------------------------------------------------------------------
# 3. "triton": a tile of queries, one window offset at a time
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TileLoads:
    """The keys one Triton program loads for one window offset."""

    queries: tuple[tuple[int, int], ...]
    """The tile: pixels tile * block_q ... tile * block_q + block_q - 1 of the map, row-major."""
    offset: int
    shift: tuple[int, int]
    keys: tuple[tuple[int, int], ...]
    masked: tuple[bool, ...]
    """True where the key lies beyond the border: the load is masked and reads 0."""


def tile_loads(
    height: int, width: int, kernel_size: int, dilation: int, block_q: int, tile: int, offset: int
) -> TileLoads:
    """Program ``tile``'s queries and the keys it loads at window position ``offset``."""
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    check_positive_int(block_q, "block_q")
    tiles = -(-height * width // block_q)
    if isinstance(tile, bool) or not isinstance(tile, int) or not 0 <= tile < tiles:
        raise ValueError(f"tile must be an int in [0, {tiles - 1}] ({tiles} tiles of {block_q} pixels), got {tile!r}")
    offsets = window_offsets(kernel_size, dilation)
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < len(offsets):
        raise ValueError(f"offset must be an int in [0, {len(offsets) - 1}] (window positions), got {offset!r}")
    d_row, d_col = offsets[offset]
    pixels = range(tile * block_q, min((tile + 1) * block_q, height * width))
    queries = tuple(divmod(n, width) for n in pixels)
    keys = tuple((r + d_row, c + d_col) for r, c in queries)
    masked = tuple(not (0 <= r < height and 0 <= c < width) for r, c in keys)
    return TileLoads(queries, offset, (d_row, d_col), keys, masked)


def plot_tile_loads(
    height: int = 8, width: int = 8, kernel_size: int = 3, dilation: int = 2, block_q: int = 16,
    tile: int = 1, offsets: Sequence[int] = (0, 4, 8),
) -> Figure:
    """One panel per window offset: the program's tile of queries and the keys it loads there.

    Artists, per panel o: ``"tile"`` (the queries), ``"loads-o"`` (keys on the map) and
    ``"masked-o"`` (loads beyond the border, which read 0).
    """
    _check_small_map(height, width)
    if not offsets:
        raise ValueError("offsets must name at least one window position")
    loads = [tile_loads(height, width, kernel_size, dilation, block_q, tile, o) for o in offsets]
    margin = dilation * (kernel_size // 2)
    fig = Figure(figsize=(2.9 * len(loads) + 0.4, 4.0), dpi=80)
    axes = fig.subplots(1, len(loads), squeeze=False)[0]
    for ax, load in zip(axes, loads):
        _draw_map(ax, height, width, margin)
        o = load.offset
        ax.add_collection(_cells(load.queries, "tile", inset=0.08, facecolor="none", edgecolor=_QUERY_COLOR,
                                 lw=1.8, zorder=5))
        ax.add_collection(_cells([k for k, m in zip(load.keys, load.masked) if not m], f"loads-{o}", inset=0.05,
                                 facecolor=_KEY_COLOR, alpha=0.5, zorder=3))
        ax.add_collection(_cells([k for k, m in zip(load.keys, load.masked) if m], f"masked-{o}", inset=0.05,
                                 facecolor="none", edgecolor=_BEYOND_COLOR, hatch="xxx", zorder=3))
        ax.set_title(f"offset o={o}, shift ({load.shift[0]:+d}, {load.shift[1]:+d}):\n"
                     f"{sum(load.masked)} of {len(load.keys)} loads masked (read 0)", fontsize=8)
    fig.suptitle(f"one program: tile {tile}, {len(loads[0].queries)} consecutive queries (gold); "
                 f"at each offset it loads one key per query", fontsize=9)
    handles = [Patch(facecolor="none", edgecolor=_QUERY_COLOR, lw=1.8), Patch(facecolor=_KEY_COLOR, alpha=0.5),
               Patch(facecolor="none", edgecolor=_BEYOND_COLOR, hatch="xxx")]
    labels = ["the tile's queries", "keys loaded at this offset", "masked load beyond the border: reads 0"]
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.05))
    fig.subplots_adjust(left=0.05, right=0.98, top=0.8, bottom=0.18, wspace=0.25)
    _footer(fig, _call_text("plot_tile_loads", height=height, width=width, kernel_size=kernel_size,
                            dilation=dilation, block_q=block_q, tile=tile, offsets=tuple(offsets)))
    return fig
