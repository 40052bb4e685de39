"""Every figure of the course: a function that computes (tested on numbers) and a
function that draws it (``plot_*``, returning a matplotlib ``Figure``)."""

from ._all import (
    BORDER_MODES,
    GROUP_COLORS,
    BorderAttention,
    HeadGroup,
    StageShape,
    border_attention,
    dilateformer_stage_shapes,
    effective_receptive_field,
    format_bytes,
    head_groups,
    neighbour_correlation,
    plot_attention_cost,
    plot_attention_heads,
    plot_border_modes,
    plot_dilateformer_architecture,
    plot_effective_receptive_field,
    plot_multi_scale,
    plot_neighbour_correlation,
    plot_receptive_field,
    plot_shape_trace,
    plot_unfold_columns,
    plot_window_coverage,
    shifted_window,
    theoretical_span,
    unfold_integer_map,
)
from .speed import BlockUsage, plot_block_mask, plot_shifted_views, plot_time_breakdown, window_block_usage
