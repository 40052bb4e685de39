"""What the explorers' reusable pictures share: squares drawn from arrays, and the PNG of a canvas.

A tensor explorer redraws its picture on every change of a control. A new
matplotlib ``Figure`` each time costs tens of milliseconds to build (axes, ticks,
patches) and leaves some ten thousand Python objects behind, so that Python's full
garbage collection runs every few changes. The pictures of the figure modules
(``AttentionPicture``, ``ErfPicture``, ``BlockMaskPicture``, ``ShiftedViewsPicture``)
build their figure once and on a change only give their artists new data; their
``plot_*`` function is one such picture drawn once, so that a picture and the static
figure of the lesson cannot drift apart.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from PIL import Image

_UNIT_SQUARE = np.array([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)])  # corners, counter-clockwise


def square_vertices(positions, inset: float = 0.0, size: float = 1.0) -> np.ndarray:
    """The corners of one square per (row, col) centre, inset from its edges by ``inset``: (n, 4, 2) as (x, y).

    Cell (row, col) is the unit square centred on x = col, y = row (``size`` > 1: a tile of
    that many cells centred there); the corners run as a ``Rectangle``'s do, so the squares
    draw exactly as ``Rectangle`` patches would.
    """
    centres = np.asarray(positions, dtype=float).reshape(-1, 2)  # n, (row, col)
    side = size - 2.0 * inset
    corners = centres[:, None, ::-1] - size / 2 + inset  # n, 1, (x, y): each square's lower-left corner
    return corners + side * _UNIT_SQUARE[None]  # n, 4, 2


def square_cells(positions, gid: str, inset: float = 0.0, size: float = 1.0, **style) -> PolyCollection:
    """One square per (row, col) cell as a single collection (no patch object per cell)."""
    collection = PolyCollection(square_vertices(positions, inset, size), **style)
    collection.set_gid(gid)
    return collection


def set_square_cells(collection: PolyCollection, positions, inset: float = 0.0, size: float = 1.0) -> None:
    """Give a ``square_cells`` collection new cells (any number, none included)."""
    collection.set_verts(square_vertices(positions, inset, size))


def figure_png(figure: Figure) -> bytes:
    """The figure at its own dpi as PNG bytes, drawn on its Agg canvas.

    PNG compression level 1 rather than 6: a third of the encoding time for a slightly
    larger picture, which stays in the kernel's memory and the local page.
    """
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return canvas_png(canvas)


def canvas_png(canvas: FigureCanvasAgg) -> bytes:
    """What the canvas holds now (after ``draw`` or a partial redraw) as PNG bytes."""
    buffer = canvas.buffer_rgba()  # rows, cols, 4
    out = io.BytesIO()
    Image.frombuffer("RGBA", (buffer.shape[1], buffer.shape[0]), buffer, "raw", "RGBA", 0, 1).save(
        out, format="png", compress_level=1
    )
    return out.getvalue()
