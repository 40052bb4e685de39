"""The browser-native explorers: one class per picture, its settings as traitlets.

Each class is thin: its traits (the settings the ES module reads), their limits,
and a docstring. The drawing and the geometry live in the ES module
(``<name>.js`` + the shared ``geometry.js`` and ``draw.js``); the checks and the
static fallback in ``_base.GeometryExplorer``. Every number these pictures show
is computed by ``geometry.js``, whose functions tests/test_explorers.py runs in
node and compares with ``dilate_lab.geometry`` and the course's figure functions.
"""

from __future__ import annotations

import traitlets
from traitlets import Bool, Int, List, Unicode

from ..._checks import check_dilations, check_head_split
from ._base import GeometryExplorer

__all__ = [
    "ReceptiveFieldExplorer",
    "MultiScaleExplorer",
    "BorderExplorer",
    "UnfoldExplorer",
    "ShapeTracerExplorer",
    "CoverageExplorer",
]

_MAP = {"kernel_size": (1, 9, True), "dilation": (1, 8, False), "size": (3, 32, False)}


def _check_dilation_list(name: str, value, max_count: int = 8) -> list[int]:
    """1 to ``max_count`` dilations, each an int in [1, 8] (what the pictures can draw)."""
    values = list(value) if isinstance(value, (list, tuple)) else None
    if not values or len(values) > max_count or any(
        isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 8 for r in values
    ):
        raise ValueError(
            f"{name} must be a list of 1 to {max_count} ints, each in [1, 8] here, e.g. [1, 2, 3]; got {value!r}"
        )
    return values


class ReceptiveFieldExplorer(GeometryExplorer):
    """Which positions one query attends to (DilateFormer eq. 3), for any kernel size and dilation.

    Click or drag the query on the map; blue cells are its window on the map,
    red dashed cells the zero padding beyond the border; the caption counts both.
    ``compare=True`` draws dilations 1, 2 and 3 side by side for the same query.
    """

    _module = "receptive_field"
    _limits = _MAP
    kernel_size = Int(3).tag(sync=True)
    dilation = Int(2).tag(sync=True)
    size = Int(9).tag(sync=True)
    row = Int(1).tag(sync=True)
    col = Int(2).tag(sync=True)
    compare = Bool(False).tag(sync=True)


class MultiScaleExplorer(GeometryExplorer):
    """The paper's Figure 4: every dilation group of MSDA around one query, and its heads.

    Settings MSDA refuses (say 6 heads over 4 dilations) show MSDA's own message
    in the picture; ``error`` holds it in Python (None when the setting is fine).
    """

    _module = "multi_scale"
    _limits = {**_MAP, "num_heads": (1, 24, False), "dim": (1, 2048, False)}
    dilations = List(Int(), default_value=[1, 2, 3]).tag(sync=True)
    kernel_size = Int(3).tag(sync=True)
    num_heads = Int(6).tag(sync=True)
    dim = Int(144).tag(sync=True)
    size = Int(15).tag(sync=True)
    row = Int(7).tag(sync=True)
    col = Int(7).tag(sync=True)

    @traitlets.validate("dilations")
    def _check_dilations(self, proposal):
        return _check_dilation_list("dilations", proposal["value"])

    @property
    def error(self) -> str | None:
        """MSDA's message for the current heads, channels and dilations, or None."""
        try:
            check_head_split(self.dim, self.num_heads, check_dilations(tuple(self.dilations), "dilations"), "dilations")
        except ValueError as message:
            return str(message)
        return None


class BorderExplorer(GeometryExplorer):
    """The border three ways (zero padding, masking, NATTEN's shifted window) and the padded counts."""

    _module = "border"
    _limits = _MAP
    kernel_size = Int(3).tag(sync=True)
    dilation = Int(2).tag(sync=True)
    size = Int(10).tag(sync=True)
    row = Int(0).tag(sync=True)
    col = Int(1).tag(sync=True)


class UnfoldExplorer(GeometryExplorer):
    """nn.Unfold column by column: a query's window on the map 1..H*W, and its column of F.unfold."""

    _module = "unfold"
    _limits = {"kernel_size": (1, 5, True), "dilation": (1, 3, False), "height": (2, 6, False), "width": (2, 6, False)}
    _extent = ("height", "width")
    kernel_size = Int(3).tag(sync=True)
    dilation = Int(1).tag(sync=True)
    height = Int(4).tag(sync=True)
    width = Int(4).tag(sync=True)
    row = Int(1).tag(sync=True)
    col = Int(1).tag(sync=True)


class ShapeTracerExplorer(GeometryExplorer):
    """Every tensor of one MSDA forward pass, its shape and memory; the k*k copies stand out.

    The same rows as ``dilate_lab.course.shapes.trace_msda_shapes`` (which traces a
    real forward pass on the meta device), computed in the browser.
    """

    _module = "shape_tracer"
    _limits = {
        "batch": (1, 16, False), "channels": (1, 2048, False), "num_heads": (1, 24, False),
        "height": (1, 224, False), "width": (1, 224, False), "kernel_size": (1, 9, True),
    }
    batch = Int(1).tag(sync=True)
    channels = Int(72).tag(sync=True)
    num_heads = Int(3).tag(sync=True)
    height = Int(14).tag(sync=True)
    width = Int(14).tag(sync=True)
    kernel_size = Int(3).tag(sync=True)
    dilations = List(Int(), default_value=[1, 2, 3]).tag(sync=True)
    impl = Unicode("unfold").tag(sync=True)

    @traitlets.validate("dilations")
    def _check_dilations(self, proposal):
        return _check_dilation_list("dilations", proposal["value"])

    @traitlets.validate("impl")
    def _check_impl(self, proposal):
        if proposal["value"] not in ("unfold", "shift"):
            raise ValueError(f"impl must be 'unfold' or 'shift', got {proposal['value']!r}")
        return proposal["value"]

    @property
    def error(self) -> str | None:
        """MSDA's message for the current heads, channels and dilations, or None."""
        try:
            check_head_split(self.channels, self.num_heads, check_dilations(tuple(self.dilations)))
        except ValueError as message:
            return str(message)
        return None


class CoverageExplorer(GeometryExplorer):
    """How much of each query's window lies on the map under zero padding, one map per dilation.

    Every cell of a map is a query, shaded by how many of its k*k keys are zero
    padding and labelled with how many lie on the map (``figures.window_coverage``);
    click or drag a query to see its window on every map, and the caption's counts:
    its keys on the map and in the padding, and over the whole map the padded keys
    and the queries that see their whole window. With all logits equal and all
    values 1, zero-padded SWDA outputs exactly the share on the map. A schedule
    typed in the widget that the rules refuse (more than 4 dilations, a 0, a word)
    shows ``parse_dilations``'s message there and leaves ``dilations`` as it was.
    """

    _module = "coverage"
    _limits = {"kernel_size": (1, 9, True), "size": (3, 24, False)}
    kernel_size = Int(3).tag(sync=True)
    size = Int(8).tag(sync=True)
    dilations = List(Int(), default_value=[1, 2, 3]).tag(sync=True)
    row = Int(0).tag(sync=True)
    col = Int(0).tag(sync=True)

    @traitlets.validate("dilations")
    def _check_dilations(self, proposal):
        return _check_dilation_list("dilations", proposal["value"], max_count=4)
