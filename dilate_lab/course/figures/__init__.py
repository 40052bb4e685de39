"""Every figure of the course: a function that computes (tested on numbers) and a
function that draws it (``plot_*``, returning a matplotlib ``Figure``).

The drawing functions take plain arguments, draw on ``matplotlib.figure.Figure``
(not pyplot, so nothing is kept in a global registry and nothing leaks when a
widget redraws), and return the figure. The explorers in ``dilate_lab.course.widgets``
only wire controls to them, so a lesson can show the static figure first and the
widget over the very same function next. Artists that carry a figure's meaning
have a ``gid`` (``"attended"``, ``"beyond-border"``, ``"query"``, ...), and the map
figures print, at their foot, the call that produced them.

One module a topic:

- ``windows``: the receptive field of one query, MSDA's dilation groups, window coverage;
- ``borders``: zero padding vs masking vs NATTEN's shifted window;
- ``erf``: the effective receptive field of a stack of layers;
- ``attention_heads``: each head's weights on a photograph;
- ``tensor_shapes``: memory of every tensor of MSDA;
- ``architecture``: a DilateBlock and the four-stage pyramid;
- ``unfold``: ``F.unfold`` column by column;
- ``cost``: global attention against a window, and neighbour correlation;
- ``speed`` and ``blocks``: shifted views, time per operator, block-sparse tiles;
- ``timeline``, ``kernels``, ``traffic``: GPU launches, inside the fused and compiled kernels,
  the memory-traffic count (lessons 06 and 06b);
- ``head_attention``: one query's weights in every head of a small trained model (lesson 00).
"""

from ._style import GROUP_COLORS
from .architecture import (
    PyramidLayout,
    StageShape,
    block_branches,
    dilateformer_stage_shapes,
    plot_dilateformer_architecture,
    pyramid_layout,
)
from .attention_heads import AttentionHeads, HeadWindow, attention_heads, plot_attention_heads
from .blocks import BlockReads, BlockUsage, block_reads, plot_block_mask, window_block_usage, window_pairs
from .borders import BORDER_MODES, BorderAttention, border_attention, border_modes, plot_border_modes, shifted_window
from .cost import neighbour_correlation, plot_attention_cost, plot_neighbour_correlation
from .erf import ErfPanels, effective_receptive_field, erf_panels, plot_effective_receptive_field, theoretical_span
from .speed import ShiftedView, plot_shifted_views, plot_time_breakdown, shifted_views
from .tensor_shapes import (
    MemoryTotals,
    format_bytes,
    memory_ticks,
    memory_totals,
    plot_shape_trace,
    shape_table_html,
)
from .unfold import plot_unfold_columns, unfold_integer_map
from .windows import (
    HeadGroup,
    MultiScaleView,
    ReceptiveField,
    head_groups,
    multi_scale_view,
    plot_multi_scale,
    plot_receptive_field,
    plot_window_coverage,
    receptive_field,
    window_coverage,
)
