"""What a block-sparse GPU kernel such as FlexAttention computes for SWDA (the optional lesson 06b).

It flattens the map row by row (pixel (i, j) is query and key number
``i * width + j``), cuts queries and keys into blocks of ``block_size`` and
computes every (query block, key block) tile that holds at least one window
pair, whole.

- ``window_pairs``: every query's k*k keys as flat pixel numbers, and which are on the map.
- ``window_block_usage``: which tiles are computed, and how much of them is useful.
- ``block_reads`` : for one query block, the keys its windows read and the key blocks loaded.
- ``plot_block_mask``: the mask with its tiles, and the map with one query block's reads;
  ``BlockMaskPicture`` redraws it quickly for other arguments (the explorer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..._checks import check_dilation, check_kernel_size, check_positive_int
from ...geometry import window_offsets
from ._pictures import figure_png, set_square_cells, square_cells
from ._style import _QUERY_COLOR, _call_text, _check_query, _footer

__all__ = [
    "window_pairs",
    "BlockUsage",
    "window_block_usage",
    "BlockReads",
    "block_reads",
    "plot_block_mask",
    "BlockMaskPicture",
]

_VIEW_COLOR = "tab:blue"
_BLOCK_COLOR = "tab:orange"
_BAND_COLORS = ("0.97", "0.82")  # key blocks on the map: even blocks, odd blocks
_MAX_DENSE_PIXELS = 1024


def window_pairs(height: int, width: int, kernel_size: int, dilation: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, on_map), both (H*W, k*k): key o of query n as a flat pixel number, and whether it is on the map.

    Query n is pixel (n // width, n % width); its key o is that pixel moved by
    window offset o. Keys beyond the border get a number too (meaningless):
    ``on_map`` says which to keep.
    """
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    offsets = np.array(window_offsets(kernel_size, dilation))  # k*k, 2
    rows, cols = np.divmod(np.arange(height * width), width)  # N
    key_rows = rows[:, None] + offsets[None, :, 0]  # N, k*k
    key_cols = cols[:, None] + offsets[None, :, 1]  # N, k*k
    on_map = (key_rows >= 0) & (key_rows < height) & (key_cols >= 0) & (key_cols < width)
    return key_rows * width + key_cols, on_map  # N, k*k each


# ---------------------------------------------------------------------------
# the tiles a block-sparse kernel (FlexAttention) computes
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
    keys, on_map = window_pairs(height, width, kernel_size, dilation)  # N, k*k
    query_block = np.broadcast_to((np.arange(n) // block_size)[:, None], keys.shape)  # N, k*k
    n_blocks = -(-n // block_size)
    blocks = np.zeros((n_blocks, n_blocks), dtype=bool)
    blocks[query_block[on_map], keys[on_map] // block_size] = True
    sizes = np.minimum(block_size, n - np.arange(n_blocks) * block_size)  # the last block may be short
    computed = int((sizes[:, None] * sizes[None, :])[blocks].sum())
    return BlockUsage(height, width, kernel_size, dilation, block_size, blocks, int(on_map.sum()), computed)


@dataclass(frozen=True)
class BlockReads:
    """What one query block of a block-sparse kernel reads, as flat pixel numbers."""

    query_block: int
    members: np.ndarray
    """The queries of the block: block_size consecutive pixels (fewer in the last block)."""
    read: np.ndarray
    """The keys their windows hold, on the map, each once, ascending."""
    loaded_blocks: np.ndarray
    """The key blocks holding those keys, which the kernel loads and scores whole."""
    loaded: np.ndarray
    """Every pixel of those key blocks."""


def _block_pixels(block: int, block_size: int, n: int) -> np.ndarray:
    """The pixels of block ``block``: block_size consecutive numbers, cut at n."""
    return np.arange(block * block_size, min(n, (block + 1) * block_size))


def block_reads(usage: BlockUsage, row: int, col: int) -> BlockReads:
    """The block of the query at (row, col) in ``usage``, the keys its windows read and the key blocks loaded."""
    _check_query(row, col, usage.height, usage.width)
    n, size = usage.height * usage.width, usage.block_size
    keys, on_map = window_pairs(usage.height, usage.width, usage.kernel_size, usage.dilation)  # N, k*k
    query_block = (row * usage.width + col) // size
    members = _block_pixels(query_block, size, n)
    read = np.unique(keys[members][on_map[members]])  # pixel numbers
    loaded_blocks = np.nonzero(usage.blocks[query_block])[0]
    loaded = np.concatenate([_block_pixels(b, size, n) for b in loaded_blocks])
    return BlockReads(int(query_block), members, read, loaded_blocks, loaded)


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
    ``BlockMaskPicture`` redraws it for other arguments.
    """
    return BlockMaskPicture().draw(height, width, kernel_size, dilation, block_size, row, col)


class BlockMaskPicture:
    """``plot_block_mask`` built once and redrawn for any map, kernel, dilation, tile size and query.

    The two panels, their legends and the footer are made once; ``draw`` gives the
    dots, the tiles, the tile grid, the key bands and the three sets of cells their
    new data, the axes their limits and the texts their words (a new figure costs
    its axes and ticks again, and leaves them to the garbage collector).
    """

    def __init__(self, dpi: int = 80):
        self.figure = fig = Figure(figsize=(9.6, 5.6), dpi=dpi)
        self._mask, self._map = fig.subplots(1, 2)
        self._build_mask(self._mask)
        self._build_map(self._map)
        _footer(fig, "")
        self._footer = fig.texts[-1]
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.27, top=0.88, wspace=0.25)

    def _build_mask(self, ax) -> None:
        # zorder 1.9: over the tiles (1), under the tile grid (2), also after the dots leave and come back
        (self._dots,) = ax.plot([], [], ls="none", marker="s", color=_VIEW_COLOR, gid="window-pairs", zorder=1.9)
        self._tiles = ax.add_collection(square_cells([], "computed-blocks", facecolor=_BLOCK_COLOR,
                                                     edgecolor=_BLOCK_COLOR, alpha=0.3, lw=0.8), autolim=False)
        self._tile_columns = ax.add_collection(LineCollection([], colors="0.6", lw=0.4), autolim=False)
        self._tile_rows = ax.add_collection(LineCollection([], colors="0.6", lw=0.4), autolim=False)
        ax.set_aspect("equal")
        ax.set_xlabel("key = pixel row * W + col", fontsize=8)
        ax.set_ylabel("query = pixel row * W + col", fontsize=8)
        ax.tick_params(labelsize=7)
        self._mask_legend_dots = None  # whether the legend has the dots' entry: made at the first draw

    def _build_map(self, ax) -> None:
        self._bands = ax.imshow(np.zeros((1, 1, 4)), interpolation="nearest", gid="key-bands")
        self._loaded = ax.add_collection(square_cells([], "loaded-blocks", facecolor=_BLOCK_COLOR, alpha=0.35,
                                                      edgecolor="none"), autolim=False)
        self._read = ax.add_collection(square_cells([], "read-keys", inset=0.25, facecolor=_VIEW_COLOR,
                                                    edgecolor="none"), autolim=False)
        self._members = ax.add_collection(square_cells([], "query-block", inset=0.05, facecolor="none",
                                                       edgecolor=_QUERY_COLOR, lw=1.2), autolim=False)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        legend = ax.legend(
            [
                (Patch(facecolor=_BAND_COLORS[0], edgecolor="0.6"), Patch(facecolor=_BAND_COLORS[1], edgecolor="0.6")),
                Patch(facecolor="none", edgecolor=_QUERY_COLOR, lw=1.2),
                Patch(facecolor=_VIEW_COLOR, edgecolor="none"),
                Patch(facecolor=to_rgba(_BLOCK_COLOR, 0.35), edgecolor="none"),
            ],
            ["", "", "the keys their windows read", "the key blocks holding those keys, loaded whole"],
            loc="upper center", bbox_to_anchor=(0.5, -0.06), fontsize=7, frameon=False,
            handler_map={tuple: HandlerTuple(ndivide=None)},
        )
        legend.set_gid("legend-map")
        self._map_legend = legend

    def draw(
        self,
        height: int = 16,
        width: int = 16,
        kernel_size: int = 3,
        dilation: int = 2,
        block_size: int = 32,
        row: int | None = None,
        col: int | None = None,
    ) -> Figure:
        """The figure for these arguments (as ``plot_block_mask`` takes them)."""
        usage = window_block_usage(height, width, kernel_size, dilation, block_size)
        row = height // 2 if row is None else row
        col = width // 2 if col is None else col
        reads = block_reads(usage, row, col)
        self._draw_mask(usage)
        self._draw_reads(usage, reads)
        self._footer.set_text(_call_text(
            "plot_block_mask", height=height, width=width, kernel_size=kernel_size, dilation=dilation,
            block_size=block_size, row=row, col=col,
        ))
        return self.figure

    def png(self, *args, **kwargs) -> bytes:
        """``draw`` and the picture as PNG bytes at the figure's dpi."""
        return figure_png(self.draw(*args, **kwargs))

    def _draw_mask(self, usage: BlockUsage) -> None:
        """The (N, N) mask: a dot per window pair (small maps), the computed tiles shaded, the tile grid."""
        ax, n, block_size = self._mask, usage.height * usage.width, usage.block_size
        dots = n <= _MAX_DENSE_PIXELS
        if dots:
            keys, on_map = window_pairs(usage.height, usage.width, usage.kernel_size, usage.dilation)  # N, k*k
            queries = np.broadcast_to(np.arange(n)[:, None], keys.shape)  # N, k*k
            self._dots.set_data(keys[on_map], queries[on_map])
            self._dots.set_markersize(max(0.5, 300 / n))
            if self._dots.axes is None:
                ax.add_line(self._dots)
        elif self._dots.axes is not None:  # too many to see: not drawn at all
            self._dots.remove()
        set_square_cells(self._tiles, np.argwhere(usage.blocks) * block_size + (block_size - 1) / 2, size=block_size)
        edges = np.arange(0, n + 1, block_size) - 0.5
        ends = np.broadcast_to([-0.5, n - 0.5], (len(edges), 2))  # edges, 2
        self._tile_columns.set_segments(np.stack([np.stack([edges, edges], 1), ends], -1))  # edges, 2 points, (x, y)
        self._tile_rows.set_segments(np.stack([ends, np.stack([edges, edges], 1)], -1))  # edges, 2 points, (x, y)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_title(
            f"{usage.computed_blocks} of {usage.total_blocks} tiles of {block_size}x{block_size} computed "
            f"({usage.block_fraction:.0%})\n{usage.useful_fraction:.1%} of the scores they hold are in a window",
            fontsize=9,
        )
        if dots != self._mask_legend_dots:  # the dots' entry comes or goes: a new legend
            handles = [Patch(facecolor=to_rgba(_BLOCK_COLOR, 0.3), edgecolor=_BLOCK_COLOR),
                       Line2D([], [], color="0.6", lw=0.8)]
            labels = ["a tile the kernel computes whole", ""]
            if dots:
                handles.insert(0, Line2D([], [], marker="s", ms=4, color=_VIEW_COLOR, ls="none"))
                labels.insert(0, "a (query, key) pair in a window")
            legend = ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=7,
                               frameon=False)
            legend.set_gid("legend-mask")
            self._mask_legend_dots = dots
        ax.get_legend().get_texts()[-1].set_text(f"tile borders, every {block_size} queries or keys")

    def _draw_reads(self, usage: BlockUsage, reads: BlockReads) -> None:
        """The map as bands of key blocks; one query block, the keys it reads and the key blocks it loads."""
        ax, (height, width, block_size) = self._map, (usage.height, usage.width, usage.block_size)
        pixel_block = (np.arange(height * width) // block_size).reshape(height, width)  # H, W
        self._bands.set_data(np.array([to_rgba(c) for c in _BAND_COLORS])[pixel_block % 2])  # H, W, 4
        self._bands.set_extent((-0.5, width - 0.5, height - 0.5, -0.5))

        def cells_of(pixels):
            return np.stack(np.divmod(pixels, width), axis=-1)  # n, (row, col)

        set_square_cells(self._loaded, cells_of(reads.loaded))
        set_square_cells(self._read, cells_of(reads.read), inset=0.25)
        set_square_cells(self._members, cells_of(reads.members), inset=0.05)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        members, query_block = len(reads.members), reads.query_block
        ax.set_title(
            f"query block {query_block} ({members} queries, gold) reads {len(reads.read)} keys (blue)\n"
            f"in {len(reads.loaded_blocks)} key blocks of {block_size} pixels (orange), loaded whole",
            fontsize=9,
        )
        texts = self._map_legend.get_texts()
        texts[0].set_text(f"key blocks: bands of {block_size} consecutive pixels, white and grey in turn")
        texts[1].set_text(f"the {members} queries of block {query_block}")
