"""Figures of lesson 06 (GPU and speed): pure matplotlib functions that each return a ``Figure``.

- ``plot_shifted_views``: the idea behind the copy-free implementations. Pad K
  once; window position ``o`` of *every* query is then one H x W slice of the
  padded K, shifted by that position's offset. The k*k slices line up with the
  queries: element [i, j] of slice o is key o of query (i, j).
- ``window_block_usage`` and ``plot_block_mask``: what a block-sparse GPU kernel
  such as FlexAttention computes for SWDA. It flattens the map row by row,
  cuts queries and keys into blocks of ``block_size`` and computes every
  (query block, key block) tile that holds at least one window pair, whole.
- ``plot_time_breakdown``: where the time goes, from ``dilate_lab.bench.profile_ops``.

Like ``dilate_lab.figures``, these draw on ``matplotlib.figure.Figure`` (never
pyplot), give the artists that carry meaning a ``gid``, and print the call that
produced a map figure at its foot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..._checks import check_dilation, check_kernel_size, check_positive_int
from ._all import _ATTENDED_COLOR, _BEYOND_COLOR, _QUERY_COLOR, _call_text, _cells, _check_query, _draw_map
from ...geometry import window_offsets

__all__ = [
    "BlockUsage",
    "window_block_usage",
    "plot_shifted_views",
    "plot_block_mask",
    "plot_time_breakdown",
]

_VIEW_COLOR = "tab:blue"
_BLOCK_COLOR = "tab:orange"
_BAND_COLORS = ("0.97", "0.82")  # key blocks on the map: even blocks, odd blocks
_MAX_VIEW_KERNEL = 5
_MAX_VIEW_MAP = 16
_MAX_DENSE_PIXELS = 1024


# ---------------------------------------------------------------------------
# 1. the k*k shifted views of the zero-padded K
# ---------------------------------------------------------------------------
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
    _check_query(row, col, height, width)
    check_kernel_size(kernel_size)
    check_dilation(dilation)
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
    pad = dilation * (kernel_size // 2)
    side = max(height, width) + 2 * pad
    panel = min(2.3, 0.6 + 0.17 * side)
    fig_height = panel * kernel_size + 2.2  # panels, the title, the legend and the call
    fig = Figure(figsize=(max(6.0, panel * kernel_size + 0.4), fig_height), dpi=80)
    axes = fig.subplots(kernel_size, kernel_size, squeeze=False)
    for o, (d_row, d_col) in enumerate(window_offsets(kernel_size, dilation)):
        a, b = divmod(o, kernel_size)
        ax = axes[a][b]
        _draw_map(ax, height, width, pad)
        padded = Rectangle(
            (-pad - 0.5, -pad - 0.5), width + 2 * pad, height + 2 * pad,
            facecolor="white", edgecolor="0.6", hatch="..", lw=0.5, zorder=-1, gid="padded-K",
        )
        ax.add_patch(padded)
        view = Rectangle(
            (d_col - 0.5, d_row - 0.5), width, height,
            facecolor=_VIEW_COLOR, edgecolor=_VIEW_COLOR, alpha=0.25, lw=1.5, zorder=3, gid=f"view-{o}",
        )
        ax.add_patch(view)
        key = (row + d_row, col + d_col)
        on_map = 0 <= key[0] < height and 0 <= key[1] < width
        style = (
            dict(facecolor="none", edgecolor=_QUERY_COLOR, lw=2.0)
            if on_map
            else dict(facecolor="none", edgecolor=_BEYOND_COLOR, hatch="xxx", lw=1.2)
        )
        ax.add_collection(_cells([key], f"key-{o}", inset=0.05, zorder=5, **style))
        if (d_row, d_col) != (0, 0):
            arrow = ax.annotate(
                "", xy=(key[1], key[0]), xytext=(col, row), zorder=6,
                arrowprops=dict(arrowstyle="->", color="black", lw=1.0, shrinkA=3, shrinkB=3),
            )
            arrow.set_gid(f"shift-{o}")
        ax.plot([col], [row], marker="*", ms=9, color=_QUERY_COLOR, mec="black", ls="none", zorder=7,
                gid="query")
        ax.set_xlim(-pad - 0.5, width + pad - 0.5)
        ax.set_ylim(height + pad - 0.5, -pad - 0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"o={o}: shift ({d_row:+d}, {d_col:+d})\nK_pad[{a * dilation}:{a * dilation + height}, "
            f"{b * dilation}:{b * dilation + width}]",
            fontsize=7,
        )
    fig.suptitle(
        f"{kernel_size * kernel_size} views of K zero-padded to {height + 2 * pad} x {width + 2 * pad}. "
        f"Blue: the {height} x {width} slice of padded K that forms view o;\n"
        f"its element under the star's index [{row}, {col}] is the key at the arrow's head: "
        f"key o of the query {(row, col)}",
        fontsize=8,
    )
    handles = [
        Line2D([], [], marker="*", ms=9, color=_QUERY_COLOR, mec="black", ls="none"),
        Patch(facecolor=to_rgba(_VIEW_COLOR, 0.25), edgecolor=_VIEW_COLOR),
        Patch(facecolor="none", edgecolor=_QUERY_COLOR, lw=2.0),
        Patch(facecolor="none", edgecolor=_BEYOND_COLOR, hatch="xxx"),
        Patch(facecolor="white", edgecolor="0.6", hatch=".."),
        Patch(facecolor="0.95", edgecolor="black", lw=1.5),
    ]
    labels = [
        f"the query {(row, col)}",
        f"view o: a {height} x {width} slice of padded K",
        "key o of the query, on the map",
        "key o of the query, a zero of the padding",
        "zero padding of K (logit 0, value 0)",
        f"the {height} x {width} map",
    ]
    legend = fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False,
                        bbox_to_anchor=(0.5, 0.4 / fig_height))
    legend.set_gid("legend")
    call = _call_text(
        "plot_shifted_views", height=height, width=width, kernel_size=kernel_size,
        dilation=dilation, row=row, col=col,
    )
    fig.text(0.5, 0.01, call, ha="center", fontsize=6, family="monospace")
    fig.subplots_adjust(left=0.03, right=0.97, bottom=1.15 / fig_height, top=1 - 0.95 / fig_height,
                        wspace=0.12, hspace=0.45)
    return fig


# ---------------------------------------------------------------------------
# 2. the tiles a block-sparse kernel (FlexAttention) computes
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockUsage:
    """Which (query block, key block) tiles hold window pairs, on a map flattened row by row."""

    height: int
    width: int
    kernel_size: int
    dilation: int
    block_size: int
    blocks: np.ndarray
    """(query blocks, key blocks) bool: True where the tile holds at least one window pair."""
    window_pairs: int
    """(query, key) pairs with the key in the query's window and on the map."""
    computed_pairs: int
    """(query, key) pairs inside the True tiles: what a block-sparse kernel scores."""

    @property
    def total_blocks(self) -> int:
        return int(self.blocks.size)

    @property
    def computed_blocks(self) -> int:
        return int(self.blocks.sum())

    @property
    def block_fraction(self) -> float:
        """Share of all tiles that are computed (1.0 would be dense attention)."""
        return self.computed_blocks / self.total_blocks

    @property
    def useful_fraction(self) -> float:
        """Share of the computed scores that belong to a window (the rest are masked out)."""
        return self.window_pairs / self.computed_pairs


def window_block_usage(
    height: int, width: int, kernel_size: int = 3, dilation: int = 1, block_size: int = 128
) -> BlockUsage:
    """The tiles FlexAttention-style kernels compute for SWDA (keys on the map; no extra padding key).

    Pixel (i, j) is query and key number ``i * width + j``; block ``n // block_size``.
    """
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    check_positive_int(block_size, "block_size")
    n = height * width
    offsets = np.array(window_offsets(kernel_size, dilation))  # k*k, 2
    rows, cols = np.divmod(np.arange(n), width)  # N
    key_rows = rows[:, None] + offsets[None, :, 0]  # N, k*k
    key_cols = cols[:, None] + offsets[None, :, 1]  # N, k*k
    on_map = (key_rows >= 0) & (key_rows < height) & (key_cols >= 0) & (key_cols < width)
    keys = key_rows * width + key_cols  # N, k*k
    query_block = np.broadcast_to((np.arange(n) // block_size)[:, None], keys.shape)  # N, k*k
    n_blocks = -(-n // block_size)
    blocks = np.zeros((n_blocks, n_blocks), dtype=bool)
    blocks[query_block[on_map], keys[on_map] // block_size] = True
    sizes = np.minimum(block_size, n - np.arange(n_blocks) * block_size)  # the last block may be short
    computed = int((sizes[:, None] * sizes[None, :])[blocks].sum())
    return BlockUsage(height, width, kernel_size, dilation, block_size, blocks, int(on_map.sum()), computed)


def plot_block_mask(
    height: int = 16,
    width: int = 16,
    kernel_size: int = 3,
    dilation: int = 2,
    block_size: int = 32,
    row: int | None = None,
    col: int | None = None,
) -> Figure:
    """SWDA as a block-sparse attention mask: the tiles a FlexAttention-style kernel computes.

    Left: the (H*W) x (H*W) mask, one dot per (query, key) pair in a window (for
    maps up to 1024 pixels), with the computed tiles shaded. Right: the map; each
    key block is a band of ``block_size`` consecutive pixels, white and grey in
    turn. The queries in the block of (row, col) (default: the centre) are
    outlined in gold, the keys their windows read in blue, and the key blocks
    those fall in, which the kernel loads and scores whole, in orange. A legend
    under the panels names every colour.

    Artists: ``"window-pairs"`` (the dots), ``"computed-blocks"`` (the shaded
    tiles), ``"key-bands"`` (the map image), ``"query-block"``, ``"read-keys"``,
    ``"loaded-blocks"``, and the legends ``"legend-mask"`` and ``"legend-map"``.
    """
    usage = window_block_usage(height, width, kernel_size, dilation, block_size)
    row = height // 2 if row is None else row
    col = width // 2 if col is None else col
    _check_query(row, col, height, width)
    n = height * width
    fig = Figure(figsize=(9.6, 5.6), dpi=80)
    ax_mask, ax_map = fig.subplots(1, 2)

    # left: the mask and its tiles
    offsets = np.array(window_offsets(kernel_size, dilation))  # k*k, 2
    rows, cols = np.divmod(np.arange(n), width)  # N
    key_rows = rows[:, None] + offsets[None, :, 0]  # N, k*k
    key_cols = cols[:, None] + offsets[None, :, 1]  # N, k*k
    on_map = (key_rows >= 0) & (key_rows < height) & (key_cols >= 0) & (key_cols < width)
    keys = key_rows * width + key_cols  # N, k*k
    if n <= _MAX_DENSE_PIXELS:
        queries = np.broadcast_to(np.arange(n)[:, None], keys.shape)  # N, k*k
        ax_mask.plot(keys[on_map], queries[on_map], ls="none", marker="s", ms=max(0.5, 300 / n),
                     color=_VIEW_COLOR, gid="window-pairs")
    tiles = [
        Rectangle((kb * block_size - 0.5, qb * block_size - 0.5), block_size, block_size)
        for qb, kb in zip(*np.nonzero(usage.blocks))
    ]
    shaded = PatchCollection(tiles, facecolor=_BLOCK_COLOR, edgecolor=_BLOCK_COLOR, alpha=0.3, lw=0.8)
    shaded.set_gid("computed-blocks")
    ax_mask.add_collection(shaded)
    edges = np.arange(0, n + 1, block_size) - 0.5
    ax_mask.vlines(edges, -0.5, n - 0.5, colors="0.6", lw=0.4)
    ax_mask.hlines(edges, -0.5, n - 0.5, colors="0.6", lw=0.4)
    ax_mask.set_xlim(-0.5, n - 0.5)
    ax_mask.set_ylim(n - 0.5, -0.5)
    ax_mask.set_aspect("equal")
    ax_mask.set_xlabel("key = pixel row * W + col", fontsize=8)
    ax_mask.set_ylabel("query = pixel row * W + col", fontsize=8)
    ax_mask.tick_params(labelsize=7)
    ax_mask.set_title(
        f"{usage.computed_blocks} of {usage.total_blocks} tiles of {block_size}x{block_size} computed "
        f"({usage.block_fraction:.0%})\n{usage.useful_fraction:.1%} of the scores they hold are in a window",
        fontsize=9,
    )

    # right: the map, key blocks as bands of pixels
    pixel_block = (np.arange(n) // block_size).reshape(height, width)  # H, W
    bands = np.array([to_rgba(c) for c in _BAND_COLORS])[pixel_block % 2]  # H, W, 4
    ax_map.imshow(bands, interpolation="nearest", extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                  gid="key-bands")
    query_block = (row * width + col) // block_size
    members = np.arange(query_block * block_size, min(n, (query_block + 1) * block_size))
    read = np.unique(keys[members][on_map[members]])  # pixel numbers
    loaded_blocks = np.nonzero(usage.blocks[query_block])[0]
    loaded = np.concatenate([np.arange(b * block_size, min(n, (b + 1) * block_size)) for b in loaded_blocks])

    def cells_of(pixels):
        return [divmod(int(p), width) for p in pixels]

    ax_map.add_collection(
        _cells(cells_of(loaded), "loaded-blocks", facecolor=_BLOCK_COLOR, alpha=0.35, edgecolor="none")
    )
    ax_map.add_collection(_cells(cells_of(read), "read-keys", inset=0.25,
                                 facecolor=_VIEW_COLOR, edgecolor="none"))
    ax_map.add_collection(_cells(cells_of(members), "query-block", inset=0.05,
                                 facecolor="none", edgecolor=_QUERY_COLOR, lw=1.2))
    ax_map.set_xlim(-0.5, width - 0.5)
    ax_map.set_ylim(height - 0.5, -0.5)
    ax_map.set_aspect("equal")
    ax_map.tick_params(labelsize=7)
    ax_map.set_title(
        f"query block {query_block} ({len(members)} queries, gold) reads {len(read)} keys (blue)\n"
        f"in {len(loaded_blocks)} key blocks of {block_size} pixels (orange), loaded whole",
        fontsize=9,
    )
    mask_handles = [
        Patch(facecolor=to_rgba(_BLOCK_COLOR, 0.3), edgecolor=_BLOCK_COLOR),
        Line2D([], [], color="0.6", lw=0.8),
    ]
    mask_labels = ["a tile the kernel computes whole", f"tile borders, every {block_size} queries or keys"]
    if n <= _MAX_DENSE_PIXELS:  # the dots are drawn
        mask_handles.insert(0, Line2D([], [], marker="s", ms=4, color=_VIEW_COLOR, ls="none"))
        mask_labels.insert(0, "a (query, key) pair in a window")
    mask_legend = ax_mask.legend(
        mask_handles,
        mask_labels,
        loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=7, frameon=False,
    )
    mask_legend.set_gid("legend-mask")
    map_legend = ax_map.legend(
        [
            (Patch(facecolor=_BAND_COLORS[0], edgecolor="0.6"), Patch(facecolor=_BAND_COLORS[1], edgecolor="0.6")),
            Patch(facecolor="none", edgecolor=_QUERY_COLOR, lw=1.2),
            Patch(facecolor=_VIEW_COLOR, edgecolor="none"),
            Patch(facecolor=to_rgba(_BLOCK_COLOR, 0.35), edgecolor="none"),
        ],
        [
            f"key blocks: bands of {block_size} consecutive pixels, white and grey in turn",
            f"the {len(members)} queries of block {query_block}",
            "the keys their windows read",
            "the key blocks holding those keys, loaded whole",
        ],
        loc="upper center", bbox_to_anchor=(0.5, -0.06), fontsize=7, frameon=False,
        handler_map={tuple: HandlerTuple(ndivide=None)},
    )
    map_legend.set_gid("legend-map")
    call = _call_text(
        "plot_block_mask", height=height, width=width, kernel_size=kernel_size, dilation=dilation,
        block_size=block_size, row=row, col=col,
    )
    fig.text(0.5, 0.01, call, ha="center", fontsize=6, family="monospace")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.27, top=0.88, wspace=0.25)
    return fig


# ---------------------------------------------------------------------------
# 3. where the time goes
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
