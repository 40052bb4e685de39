"""What every browser-native explorer shares: its ES module, its checked traits, its static copy.

An explorer is an ``anywidget.AnyWidget``: the picture is drawn in the browser by an
ES module, so a click or a drag answers in the same frame, with no round trip to the
kernel. The kernel keeps the state in traitlets, so a notebook reads and sets it
(``explorer.dilation = 3`` moves the picture; a click on the map lands in
``explorer.row`` and ``explorer.col``).

The module is three files of this folder joined into one: ``geometry.js`` (the
window rules, tested against ``dilate_lab.geometry`` in tests/test_explorers.py),
``draw.js`` (SVG grids, controls, dragging) and the explorer's own file, which
ends in ``export default { render }``. Joined, they are one module with no import
to resolve, which is what anywidget and the static page both load most simply.

A value set from Python is checked: a size, kernel or dilation outside what the
explorer draws raises a ValueError naming the trait and the allowed values; the
query is clamped onto the map (so shrinking the map never strands it).

``_repr_mimebundle_`` adds a ``text/html`` fallback to the widget's output: the
explorer's name and state in a ``<div>``. JupyterLab shows the live widget instead;
the static edition (``dilate_lab.course.static_site``) finds these divs and runs the
same ES module on them with a plain-object model, so the explorer works in a page
with no kernel.
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources
from typing import ClassVar

import anywidget
import ipywidgets
import traitlets

__all__ = ["GeometryExplorer", "esm_source", "EXPLORER_MODULES"]

EXPLORER_MODULES = ("receptive_field", "multi_scale", "border", "unfold", "shape_tracer", "coverage")
"""The explorers' own ES modules (file stems in this folder)."""

_SHARED = ("geometry.js", "draw.js")
_BASE_TRAITS = frozenset(ipywidgets.DOMWidget.class_trait_names())


@cache
def esm_source(module: str) -> str:
    """The one ES module an explorer runs: geometry.js + draw.js + ``<module>.js``."""
    if module not in EXPLORER_MODULES:
        raise ValueError(f"module must be one of {EXPLORER_MODULES}, got {module!r}")
    folder = resources.files(__package__)
    parts = [folder.joinpath(name).read_text(encoding="utf-8") for name in (*_SHARED, f"{module}.js")]
    return "\n".join(parts)


def _int_in(name: str, value, low: int, high: int, odd: bool = False) -> int:
    """``value`` as an int in [low, high] (odd if asked), or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high or (odd and value % 2 == 0):
        kind = "an odd int" if odd else "an int"
        raise ValueError(f"{name} must be {kind} in [{low}, {high}] here, got {value!r}")
    return value


class GeometryExplorer(anywidget.AnyWidget):
    """Base class: checked integer traits, the query kept on the map, a static HTML fallback.

    Subclasses set ``_module`` (their ES module's stem), ``_limits`` (trait name ->
    (low, high, odd)) and ``_extent`` (which traits bound ``row`` and ``col``).
    """

    _module: ClassVar[str] = ""
    _limits: ClassVar[dict[str, tuple[int, int, bool]]] = {}
    _extent: ClassVar[tuple[str, str]] = ("size", "size")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_module" in cls.__dict__:  # not the subclasses ipywidgets' add_traits makes on the fly
            cls._esm = esm_source(cls._module)

    def __init__(self, **values):
        for name, value in values.items():
            if name not in self.state_names():
                raise ValueError(f"{type(self).__name__} has no setting {name!r}; its settings: {self.state_names()}")
            if name in self._limits:
                _int_in(name, value, *self._limits[name])
        query = {name: values.pop(name) for name in ("row", "col") if name in values}
        super().__init__(**values)  # the map's size first: the query is clamped onto it
        for name, value in query.items():
            setattr(self, name, value)

    @classmethod
    def state_names(cls) -> list[str]:
        """The settings the picture depends on (the synced traits a learner may set)."""
        return [n for n in cls.class_trait_names(sync=True) if not n.startswith("_") and n not in _BASE_TRAITS]

    @traitlets.validate(
        "kernel_size", "dilation", "size", "height", "width", "batch", "channels", "num_heads", "dim"
    )
    def _check_limits(self, proposal):
        name = proposal["trait"].name
        return _int_in(name, proposal["value"], *self._limits[name]) if name in self._limits else proposal["value"]

    @traitlets.validate("row", "col")
    def _clamp_to_map(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int (a position on the map), got {value!r}")
        extent = getattr(self, self._extent[0 if name == "row" else 1])
        return min(max(value, 0), extent - 1)

    @traitlets.observe("size", "height", "width")
    def _on_extent(self, change):
        self._clamp_query()

    def _clamp_query(self) -> None:
        if self.has_trait("row"):
            self.row, self.col = self.row, self.col  # re-validated: clamped onto the map

    def state(self) -> dict:
        """The settings as plain JSON values, e.g. for the static page's model."""
        return {name: getattr(self, name) for name in self.state_names()}

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in self.state().items())
        return f"{type(self).__name__}({values})"

    def static_html(self) -> str:
        """A ``<div>`` naming the explorer and its state, for the static edition to bring to life."""
        state = html.escape(json.dumps(self.state()), quote=True)
        return (
            f'<div class="dl-static-explorer" data-explorer="{self._module}" data-state="{state}">'
            f"<em>{html.escape(repr(self))}: a live explorer (JupyterLab, or the course's static edition)</em></div>"
        )

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)  # (data, metadata), or None
        if bundle is not None:
            data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
            return {**data, "text/html": self.static_html()}, metadata
        return bundle
