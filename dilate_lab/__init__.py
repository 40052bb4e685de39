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

__version__ = "0.1.0"
