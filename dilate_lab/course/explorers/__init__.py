"""Browser-native explorers (anywidget): the pictures whose content is window geometry.

A drag on the map answers in the same frame, computed in the browser by the ES
module shipped beside this file; the kernel keeps the settings as traitlets. The
explorers that need tensors (attention weights, gradients, shifted views, block masks) stay in
``dilate_lab.course.widgets``.
"""

from ._base import EXPLORER_MODULES, GeometryExplorer, esm_source
from .explorers import (
    BorderExplorer,
    CoverageExplorer,
    MultiScaleExplorer,
    ReceptiveFieldExplorer,
    ShapeTracerExplorer,
    UnfoldExplorer,
)

__all__ = [
    "EXPLORER_MODULES",
    "GeometryExplorer",
    "esm_source",
    "ReceptiveFieldExplorer",
    "MultiScaleExplorer",
    "BorderExplorer",
    "UnfoldExplorer",
    "ShapeTracerExplorer",
    "CoverageExplorer",
]
