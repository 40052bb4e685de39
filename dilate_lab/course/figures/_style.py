"""What the figure modules share: colours, the map a window is drawn on, the printed call, checks.

Cell (row, col) of a map is the unit square centred on x = col, y = row, with
row 0 at the top, like ``imshow``. Artists that carry a figure's meaning get a
``gid`` so that tests, and curious learners, can find what was drawn.
"""

from __future__ import annotations

import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from ..._checks import check_positive_int

GROUP_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
"""One colour per dilation group, in group order (cycled beyond six groups)."""

_ATTENDED_COLOR = "tab:blue"
_BEYOND_COLOR = "tab:red"
_QUERY_COLOR = "gold"


def _group_color(index: int) -> str:
    """The colour of dilation group ``index`` (``GROUP_COLORS``, cycled)."""
    return GROUP_COLORS[index % len(GROUP_COLORS)]


# ---------------------------------------------------------------------------
# the printed call
# ---------------------------------------------------------------------------
def _call_text(name: str, **kwargs) -> str:
    """The call that produced a figure, printed at its foot (NATTEN's figures do the same)."""
    args = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return f"{name}({args})"


class _Verbatim(str):
    """A string that ``_call_text`` prints without quotes (for arguments too long to print)."""

    def __repr__(self) -> str:
        return str(self)


def _footer(fig, text: str, y: float = 0.01) -> None:
    """``text`` (usually ``_call_text(...)``) in small monospace type, centred at the figure's foot."""
    fig.text(0.5, y, text, ha="center", fontsize=6, family="monospace")


# ---------------------------------------------------------------------------
# drawing a map and its cells
# ---------------------------------------------------------------------------
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


def _no_ticks(ax) -> None:
    """No ticks: positions do not matter on this panel, and tick labels cost a third of a redraw."""
    ax.set_xticks([])
    ax.set_yticks([])


def _star(ax, row: float, col: float, ms: float, zorder: float, **style) -> None:
    """The query's gold star (gid ``"query"``) at cell (row, col)."""
    ax.plot([col], [row], marker="*", ms=ms, color=_QUERY_COLOR, mec="black", zorder=zorder, gid="query",
            ls="none", **style)


def _mark_query(ax, row: int, col: int, corner: bool = False) -> None:
    """The query: a gold outline around its cell and a gold star.

    ``corner=True`` puts a small star in the cell's top-left corner, so that
    what the figure draws or prints in the query's own cell stays visible.
    """
    outline = Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=_QUERY_COLOR, lw=2.2, zorder=6)
    outline.set_gid("query-cell")
    ax.add_patch(outline)
    x, y, size = (col - 0.3, row - 0.3, 7) if corner else (col, row, 12)
    _star(ax, y, x, size, 7, mew=0.6)


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------
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
