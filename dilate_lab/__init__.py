"""dilate-lab: DilateFormer's sliding window dilated attention, from a loop to the GPU.

The public names the lessons and a practitioner use::

    from dilate_lab import swda, SWDA_IMPLS, dilated_window
"""

from .geometry import (
    Window,
    dilated_window,
    inside_mask,
    padding_counts,
    window_offsets,
    window_span,
)
from .flops import PAPER_GFLOPS, FlopCount, count_flops, format_flops_table
from .models import (
    DilateBlock,
    DilateFormer,
    GlobalAttention,
    GlobalBlock,
    dilateformer_base,
    dilateformer_small,
    dilateformer_tiny,
)
from .msda import MultiDilateAttention
from .swda import NAIVE_MAX_STEPS, SWDA_IMPLS, available_impls, swda
from .tracing import TracedTensor, record, trace_tensors
from .figures import (
    border_attention,
    effective_receptive_field,
    head_groups,
    neighbour_correlation,
    plot_attention_cost,
    plot_attention_heads,
    plot_border_modes,
    plot_dilateformer_architecture,
    dilateformer_stage_shapes,
    plot_effective_receptive_field,
    plot_multi_scale,
    plot_receptive_field,
    plot_neighbour_correlation,
    plot_shape_trace,
    plot_unfold_columns,
    plot_window_coverage,
    shifted_window,
    theoretical_span,
    unfold_integer_map,
)
from .images import load_sample_image, sample_image_tensor
from .data import (
    ImageSet,
    display_array,
    load_digits_data,
    make_longrange_data,
    plot_examples,
)
from .small_models import SmallDilateFormer, build_model, receptive_radius

# The training helpers live in dilate_lab.train (fit, evaluate, run_ablation, ...),
# not imported here so that `python -m dilate_lab.train` runs it cleanly.
from .shapes import ShapeRow, block_attention, normalize_imagenet, trace_msda_shapes
from .speed_figures import (
    BlockUsage,
    plot_block_mask,
    plot_shifted_views,
    plot_time_breakdown,
    window_block_usage,
)

# The explorers need ipywidgets (the "course" extra): imported on first use only.
_WIDGET_NAMES = (
    "receptive_field_explorer",
    "multi_scale_explorer",
    "shape_tracer",
    "attention_viewer",
    "erf_explorer",
    "border_explorer",
    "coverage_explorer",
    "unfold_explorer",
    "shifted_views_explorer",
    "block_mask_explorer",
)


def __getattr__(name):
    if name in _WIDGET_NAMES:
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_WIDGET_NAMES))

__version__ = "0.1.0"
