"""dilate-lab: DilateFormer's sliding window dilated attention, from a loop to the GPU.

The library (imports torch only)::

    from dilate_lab import swda, MultiDilateAttention, dilateformer_tiny, count_flops

- ``functional``: ``swda()``: check the arguments, choose an implementation, call it;
  ``explain_impl()`` says which one ``impl="auto"`` picks, and why.
- ``ops``: one module per implementation and the registry that chooses.
- ``nn``: ``MultiDilateAttention``, the blocks and the DilateFormer models.
- ``geometry``, ``flops``, ``tracing``, ``checkpoint`` (``load_checkpoint``);
  ``bench`` and ``build_kernel`` are command lines; ``timm_models`` registers the
  models with timm (imported on request: it needs timm).

The course (``dilate_lab.course``: figures, explorers, exercises, data, training)
needs matplotlib and, for the explorers, ipywidgets. Its public names can be
imported from here too (``from dilate_lab import plot_receptive_field``): they are
loaded on first use, so ``import dilate_lab`` alone never imports matplotlib.
"""

from importlib import import_module

from .functional import ALL_IMPLS, NAIVE_MAX_STEPS, SWDA_IMPLS, explain_impl, swda
from .ops import available_impls
from .geometry import (
    Window,
    dilated_window,
    inside_mask,
    padding_counts,
    window_offsets,
    window_span,
)
from .nn import (
    DilateBlock,
    DilateFormer,
    GlobalAttention,
    GlobalBlock,
    MultiDilateAttention,
    dilateformer_base,
    dilateformer_small,
    dilateformer_tiny,
)
from .flops import PAPER_GFLOPS, FlopCount, count_flops, format_flops_table
from .checkpoint import load_checkpoint
from .tracing import TracedTensor, record, trace_tensors

__version__ = "0.1.0"

_COURSE_NAMES = {
    "dilate_lab.course.figures": (
        "border_attention", "effective_receptive_field", "head_groups", "neighbour_correlation",
        "plot_attention_cost", "plot_attention_heads", "plot_border_modes",
        "plot_dilateformer_architecture", "dilateformer_stage_shapes",
        "plot_effective_receptive_field", "plot_multi_scale", "plot_receptive_field",
        "plot_neighbour_correlation", "plot_shape_trace", "plot_unfold_columns",
        "plot_window_coverage", "shifted_window", "theoretical_span", "unfold_integer_map",
        "BlockUsage", "plot_block_mask", "plot_shifted_views", "plot_time_breakdown",
        "window_block_usage",
    ),
    "dilate_lab.course.images": ("load_sample_image", "sample_image_tensor"),
    "dilate_lab.course.data": (
        "ImageSet", "display_array", "load_digits_data", "make_longrange_data", "plot_examples",
    ),
    "dilate_lab.course.small_models": ("SmallDilateFormer", "build_model", "receptive_radius"),
    "dilate_lab.course.shapes": (
        "ShapeRow", "block_attention", "normalize_imagenet", "trace_msda_shapes",
    ),
    "dilate_lab.course.widgets": (
        "attention_viewer", "erf_explorer", "shifted_views_explorer", "block_mask_explorer",
    ),
}
_COURSE_MODULE_OF = {name: module for module, names in _COURSE_NAMES.items() for name in names}


def __getattr__(name):
    """Course names (figures, data, explorers), imported on first use."""
    module = _COURSE_MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + list(_COURSE_MODULE_OF))
