"""The course's tensor explorers: ipywidgets controls wired to the pure figure functions.

These are the explorers whose picture needs tensors computed in Python: the
attention weights of a DilateBlock on a photograph, the gradient of a stack of
layers, the shifted views of padded K, the tiles of a block-sparse kernel. The
explorers whose content is window geometry (receptive field, multi-scale heads,
border, unfold, shape tracer, coverage) are browser-native and live in
``dilate_lab.course.explorers``.

Each explorer here is an ``ipywidgets.VBox``: its controls on top, a message
line, and the picture, a PNG of the figure of ``dilate_lab.course.figures`` for
the current setting. Nothing is computed here that a figure function or
``dilate_lab.course.shapes`` does not already compute, so what a learner sees in
a widget is exactly the static figure of the lesson with other arguments. To
answer a change quickly, an explorer keeps one figure of that function's picture
class (``AttentionPicture``, ``ErfPicture``, ``ShiftedViewsPicture``,
``BlockMaskPicture``) and on a change only gives its artists new data, instead of
building a new figure (its axes, ticks and patches, and the garbage they leave).

For tests and for curious learners every explorer keeps:

- ``explorer.controls``: the control widgets by argument name;
- ``explorer.figure``: the ``matplotlib.figure.Figure`` of the picture shown, drawn
  by the figure function when first asked for after a change: a figure of its own,
  which the next change leaves as it is (not closed: figures made with ``Figure()``
  are not registered with pyplot, so dropping the reference frees them);
- ``explorer.error``: the message of the ValueError the last setting raised
  (shown in the widget instead of a traceback), or None;
- ``explorer.render_seconds``: how long the last redraw took.

Stable CSS classes (``dl-explorer``, ``dl-<explorer name>``, ``dl-<control>``,
``dl-figure``, ``dl-message``, ``dl-error``) let a browser test find the parts.
"""

from __future__ import annotations

import contextlib
import html
import io
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import ipywidgets as widgets
from matplotlib.figure import Figure

from . import figures
from .figures.attention_heads import AttentionPicture
from .figures.blocks import BlockMaskPicture
from .figures.erf import ErfPicture
from .figures.speed import ShiftedViewsPicture
from ._controls import _slider, _styled, _text, _toggle, parse_dilations
from .shapes import block_attention

__all__ = [
    "Explorer",
    "parse_dilations",
    "attention_viewer",
    "erf_explorer",
    "shifted_views_explorer",
    "block_mask_explorer",
]

_PNG_DPI = 96


@dataclass(frozen=True)
class RenderedFigure:
    """A figure whose PNG its picture already made (e.g. ``figures.speed.ShiftedViewsPicture``,
    which draws only what a query changes); ``draw`` may return one instead of a Figure."""

    figure: Figure
    png: bytes


@dataclass(frozen=True)
class _CachedPicture:
    """A recent setting's picture as the page shows it: the PNG and its width in pixels."""

    png: bytes
    width: str


def _width(figure: Figure) -> str:
    return str(round(figure.get_figwidth() * _PNG_DPI))


def _png(figure: Figure) -> bytes:
    """The figure as PNG; compression level 1, not 6: a third of the encoding time for a
    slightly larger picture, which stays in the kernel's memory and the local page."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_PNG_DPI, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


class Explorer(widgets.VBox):
    """Controls, a message line and a picture that ``draw(**values)`` redraws on every change.

    ``draw`` returns a ``Figure`` (shown as a PNG), a ``RenderedFigure`` or, for
    table-like views, an HTML string. ``cache`` > 0 keeps the PNGs of that many
    recent settings, so that a slider dragged back and forth answers at once. It
    keeps the PNG bytes only, not the figures: a figure is some ten thousand Python
    objects, and 256 of them alive would make every full garbage collection of the
    kernel take seconds. After a setting shown from the cache, ``explorer.figure``
    draws its figure again when first asked for it. A ValueError from ``draw`` is
    shown as its message, with the class ``dl-error``; the picture is hidden until a
    valid setting returns.
    ``convert`` (optional) turns the raw control values into ``draw``'s
    arguments, e.g. parsing a dilation text box; ``sync`` (optional) adjusts
    dependent controls (e.g. a slider's range) before a redraw.

    ``static_figure`` (optional, with a ``draw`` that returns the ``RenderedFigure`` of a
    reused picture): the figure function that draws the same picture as a new figure,
    with ``draw``'s arguments. ``explorer.figure`` is then that new figure, drawn when
    first asked for after a change, never the picture's own, which the next change
    redraws: a figure a learner keeps stays as it was.
    """

    def __init__(
        self,
        name: str,
        controls: dict[str, widgets.Widget],
        draw: Callable[..., Figure | str],
        *,
        convert: Callable[[dict], dict] | None = None,
        sync: Callable[[Explorer, str], None] | None = None,
        note: str = "",
        cache: int = 0,
        static_figure: Callable[..., Figure] | None = None,
    ):
        super().__init__()
        self.name = name
        self.controls = controls
        self.cache_size = cache
        """How many recent settings' PNGs are kept (0: every change draws)."""
        self._static_figure = static_figure
        self._pictures: OrderedDict[tuple, _CachedPicture] = OrderedDict()  # the last ``cache`` settings drawn
        self._draw = draw
        self._convert = convert
        self._sync = sync
        self._adjusting = False
        self._holding = False
        self.render_png = True
        """False skips the PNG (the figure is still built): for fast sweeps in tests."""
        self._figure: Figure | None = None
        self._figure_values: dict | None = None  # the setting shown, its figure not drawn yet
        self.html: str | None = None
        self.error: str | None = None
        self.render_seconds: float | None = None
        self.image = _styled(widgets.Image(format="png"), "dl-figure")
        self.table = _styled(widgets.HTML(), "dl-table")
        self.message = _styled(widgets.HTML(), "dl-message")
        self.message.layout.display = "none"
        note_widget = widgets.HTML(f"<small>{html.escape(note)}</small>") if note else None
        rows = [widgets.HBox(list(controls.values())[i : i + 3]) for i in range(0, len(controls), 3)]
        self.children = tuple(rows + ([note_widget] if note_widget else []) + [self.message, self.image, self.table])
        self.add_class("dl-explorer")
        self.add_class(f"dl-{name}")
        for key, control in controls.items():
            control.observe(lambda change, key=key: self._on_change(key), names="value")
        self.redraw()

    def __repr__(self) -> str:
        values = ", ".join(f"{key}={value!r}" for key, value in self.values().items())
        return f"{type(self).__name__}({self.name}: {values})"

    def values(self) -> dict:
        """The controls' current values, by argument name."""
        return {key: control.value for key, control in self.controls.items()}

    @property
    def figure(self) -> Figure | None:
        """The figure of the picture shown (None for an HTML view or an impossible setting).

        With a ``static_figure``, and after a setting shown from the cache of PNGs, it is
        drawn here, once per change."""
        if self._figure_values is not None:
            values, self._figure_values = self._figure_values, None
            arguments = self._convert(values) if self._convert else values
            if self._static_figure is not None:
                self._figure = self._static_figure(**arguments)
            else:
                result = self._draw(**arguments)
                self._figure = result.figure if isinstance(result, RenderedFigure) else result
        return self._figure

    def release(self) -> None:
        """Drop the cached PNGs and the figure (the picture shown stays on the page)."""
        self._pictures.clear()
        self._figure = self._figure_values = None

    @contextlib.contextmanager
    def hold_redraw(self):
        """Change several controls inside ``with explorer.hold_redraw():``; one redraw at the end."""
        self._holding = True
        try:
            yield self
        finally:
            self._holding = False
            self.redraw()

    def _on_change(self, key: str) -> None:
        if self._adjusting:  # a sync that moves other controls triggers one redraw, not several
            return
        if self._sync is not None:
            self._adjusting = True
            try:
                self._sync(self, key)
            finally:
                self._adjusting = False
        if not self._holding:
            self.redraw()

    def redraw(self) -> None:
        """Draw the current setting; show the ValueError message instead when it is impossible."""
        start = time.perf_counter()
        try:
            values = self.values()
            key = tuple(values.items())
            result = self._pictures.get(key)
            if result is None:
                arguments = self._convert(values) if self._convert else values
                result = self._draw(**arguments)
                if self.cache_size and self.render_png and isinstance(result, (Figure, RenderedFigure)):
                    figure = result.figure if isinstance(result, RenderedFigure) else result
                    png = result.png if isinstance(result, RenderedFigure) else _png(figure)
                    self._pictures[key] = _CachedPicture(png, _width(figure))
                    if len(self._pictures) > self.cache_size:
                        self._pictures.popitem(last=False)
                    result = RenderedFigure(figure, png)
            else:
                self._pictures.move_to_end(key)
        except ValueError as error:
            self._figure = self._figure_values = None
            self.error = str(error)
            self.message.value = f"<b>Not possible:</b> {html.escape(self.error)}"
            self.message.layout.display = ""
            self.message.add_class("dl-error")
            self.image.layout.display = "none"
            self.table.layout.display = "none"
        else:
            self.error = None
            self.message.value = ""
            self.message.layout.display = "none"
            self.message.remove_class("dl-error")
            if isinstance(result, (Figure, RenderedFigure, _CachedPicture)):
                if isinstance(result, _CachedPicture):  # the figure is drawn again if someone asks for it
                    self._figure, self._figure_values, png, width = None, values, result.png, result.width
                else:
                    figure = result.figure if isinstance(result, RenderedFigure) else result
                    if self._static_figure is not None:  # the picture's figure stays the explorer's own
                        self._figure, self._figure_values = None, values
                    else:
                        self._figure, self._figure_values = figure, None
                    width = _width(figure)
                    png = (result.png if isinstance(result, RenderedFigure) else _png(figure)) if self.render_png else None
                self.html = None
                if png is not None:
                    self.image.value = png
                    # the picture's own size: a VBox would otherwise stretch it, blurred, to full width
                    self.image.width = width
                self.image.layout.display = ""
                self.table.layout.display = "none"
            else:
                self._figure, self._figure_values, self.html = None, None, result
                self.table.value = result
                self.table.layout.display = ""
                self.image.layout.display = "none"
        self.render_seconds = time.perf_counter() - start


# ---------------------------------------------------------------------------
# 1. attention of each head on a photograph
# ---------------------------------------------------------------------------
def attention_viewer(model=None, image_size: int = 112, row: int = 1, col: int = 13, seed: int = 0) -> Explorer:
    """Slide to a query pixel; see each head's attention weights over its dilated window, zoomed in.

    The weights come from one forward pass (``shapes.block_attention``) of the
    sample photograph, normalised with ImageNet's statistics, through a
    DilateFormer stem and first DilateBlock: by default stage 1 of
    DilateFormer-Tiny with seeded random, untrained weights (pass a trained
    ``DilateFormer`` as ``model`` to see what it learned). The default query
    sits next to the top border, where the dilated heads' windows run into
    the zero padding.
    """
    attention = block_attention(model, image_size, seed)
    height, width = attention.map_size
    origin = "seeded random weights, untrained" if model is None else "weights of the given model"
    controls = {
        "row": _slider(min(row, height - 1), 0, height - 1, "query row", "dl-row"),
        "col": _slider(min(col, width - 1), 0, width - 1, "query col", "dl-col"),
    }
    # plot_attention_heads built once: a move of the query only moves the zoom and updates the squares and labels
    picture = AttentionPicture(attention.image, attention.weights, attention.kernel_size, attention.dilations,
                               dpi=_PNG_DPI)

    def title(row, col):
        return f"DilateBlock attention for query ({row}, {col}) of a {height}x{width} map ({origin})"

    def draw(row, col):
        return RenderedFigure(picture.figure, picture.png(row, col, title(row, col)))

    def static_figure(row, col):
        return figures.plot_attention_heads(attention.image, attention.weights, row, col, attention.kernel_size,
                                            attention.dilations, title=title(row, col))

    explorer = Explorer(
        "attention-viewer", controls, draw, cache=256, static_figure=static_figure,
        note=(
            f"One cell = {attention.stride}x{attention.stride} pixels of the photograph (the stem's stride). "
            "One colour scale for every head (0 to 1); hatched cells are zero padding."
        ),
    )
    explorer.attention = attention
    return explorer


# ---------------------------------------------------------------------------
# 2. effective receptive field of a stack of layers
# ---------------------------------------------------------------------------
def erf_explorer(left: str = "1, 1, 1", right: str = "1, 2, 3", kernel_size: int = 3) -> Explorer:
    """Two dilation schedules side by side: the gradient of one output pixel over the input.

    Wraps ``figures.plot_effective_receptive_field``; try 2, 2, 2 for the holes of
    stacked equal dilations, or the hybrid dilated convolution schedules 1, 2, 5
    and 1, 3, 9 (dilations up to 9 are accepted here). Where the gradient would be
    slow (``figures.erf.GRADIENT_COST_LIMIT``, e.g. eight layers of dilation 9 at
    kernel 7) the panels count window chains instead, and the title says so.
    """
    controls = {
        "left": _text(left, "left", "dl-left"),
        "right": _text(right, "right", "dl-right"),
        "kernel_size": _toggle((3, 5, 7), kernel_size, "kernel k", "dl-kernel"),
    }

    picture = ErfPicture(2, dpi=_PNG_DPI)  # plot_effective_receptive_field built once, its artists given new data

    def convert(values):
        schedules = [parse_dilations(values["left"], "left", max_dilation=9),
                     parse_dilations(values["right"], "right", max_dilation=9)]
        return {"schedules": schedules, "kernel_size": values["kernel_size"]}

    # "auto": the gradient where it is quick, exact window-chain counts (same reach) where it is not
    def draw(schedules, kernel_size):
        return RenderedFigure(picture.figure, picture.png(schedules, kernel_size, measure="auto"))

    def static_figure(schedules, kernel_size):
        return figures.plot_effective_receptive_field(schedules, kernel_size, measure="auto")

    return Explorer("erf", controls, draw, convert=convert, cache=64, static_figure=static_figure)


# ---------------------------------------------------------------------------
# 3. the k*k shifted views of padded K, lesson 06
# ---------------------------------------------------------------------------
def shifted_views_explorer(kernel_size: int = 3, dilation: int = 2, row: int = 1, col: int = 4) -> Explorer:
    """Move the query: each window position's key is the same pixel of one shifted view of padded K."""
    controls = {
        "dilation": _toggle((1, 2, 3), dilation, "dilation r", "dl-dilation"),
        "kernel_size": _toggle((3, 5), kernel_size, "kernel k", "dl-kernel"),
        "row": _slider(row, 0, 5, "query row", "dl-row"),
        "col": _slider(col, 0, 5, "query col", "dl-col"),
    }

    # every (kernel, dilation) picture drawn once, now: a move then redraws only what the query changes
    pictures = {(k, r): ShiftedViewsPicture(6, 6, k, r, dpi=_PNG_DPI).prepare() for k in (3, 5) for r in (1, 2, 3)}

    def draw(dilation, kernel_size, row, col):
        picture = pictures[(kernel_size, dilation)]
        return RenderedFigure(picture.figure, picture.png(row, col))

    def static_figure(dilation, kernel_size, row, col):
        return figures.plot_shifted_views(6, 6, kernel_size, dilation, row, col)

    return Explorer("shifted-views", controls, draw, static_figure=static_figure)


# ---------------------------------------------------------------------------
# 4. which tiles a block-sparse kernel computes, lesson 06
# ---------------------------------------------------------------------------
def block_mask_explorer(side: int = 16, dilation: int = 2, block_size: int = 32) -> Explorer:
    """Change the dilation and the tile size: the query-by-key tiles a FlexAttention-style kernel computes."""
    controls = {
        "dilation": _toggle((1, 2, 3), dilation, "dilation r", "dl-dilation"),
        "block_size": _toggle((16, 32, 64, 128), block_size, "block", "dl-block"),
        "side": widgets.IntSlider(
            value=side, min=8, max=32, step=4, description="map side", style={"description_width": "80px"}
        ),
    }
    controls["side"].add_class("dl-size")
    picture = BlockMaskPicture(dpi=_PNG_DPI)  # plot_block_mask built once, its artists given new data

    def draw(dilation, block_size, side):
        return RenderedFigure(picture.figure, picture.png(height=side, width=side, dilation=dilation,
                                                          block_size=block_size))

    def static_figure(dilation, block_size, side):
        return figures.plot_block_mask(height=side, width=side, dilation=dilation, block_size=block_size)

    # 84 settings in all, some 60 kB of PNG each: every one drawn is kept
    return Explorer("block-mask", controls, draw, cache=84, static_figure=static_figure)
