"""Benchmark the SWDA implementations: time and peak memory, forward and forward+backward.

Run it as a program::

    python -m dilate_lab.bench                    # every device here, default implementations
    python -m dilate_lab.bench --quick            # tiny sizes, a few seconds (used by the tests)
    python -m dilate_lab.bench --impls unfold,fused --json bench.json --plot scaling.png

or from Python: ``rows = run_benchmark(device="cpu")``; and where the time goes, operator
by operator: ``print(format_profile(profile_ops("fused")))``.

The package's modules: ``measure`` (time and peak memory of one call), ``cases``
(the layouts and their inputs), ``benchmark`` (the round robin, the rows, the
targets, the table), ``profiling`` (operators by self time), ``figure`` (the
scaling figure; matplotlib is loaded only there, when it is drawn) and ``cli``.

What one case measures. A *layout* is the attention part of one DilateFormer-Tiny
MSDA layer: its channels split into three dilation groups (r = 1, 2, 3), each a
``swda`` call on (B, heads, H, W, 24) tensors with a 3x3 window. One case runs
all three calls, as the layer does.

- **Time**: the median over ``repeats`` runs, the implementations taking turns
  (round robin), so that a burst of load elsewhere on a shared machine hits them
  all alike. Each timed call follows three untimed calls of the same thing, so
  that none inherits the state another implementation left behind (unfold's
  large tensors evict q, k and v from the caches and churn the allocator; the
  first call after them was up to 2x slower than the next ones). "Forward" runs under ``torch.no_grad()``; "forward+backward" computes
  the gradients of q, k and v with ``torch.autograd.grad``.
- **The memory-traffic floor**: one ``torch.addcmul(q, k, v, out=out)`` per group
  reads q, k and v and writes an output, the least any SWDA forward must move;
  it is timed in the same round robin.
- **Peak memory**: the most bytes held at once by tensors allocated during the
  call (inputs excluded). On CUDA, ``torch.cuda.max_memory_allocated`` after a
  reset. On CPU there is no such counter, and process-level numbers (RSS, psutil)
  are too coarse: the C library keeps freed pages, and short-lived temporaries
  come and go between two samples. So the call runs under the PyTorch profiler
  with ``profile_memory=True``: PyTorch's CPU allocator then reports every
  allocation and free, each with the running total of bytes it has handed out
  since profiling started. The peak of that running total is exact to the byte
  for every tensor PyTorch allocates, temporaries inside operators included
  (buffers a library such as MKL allocates by itself are not seen).
"""

from .benchmark import TARGETS, check_targets, fast_impl, format_table, run_benchmark, run_scaling
from .cases import LAYOUTS, QUICK_LAYOUTS, Layout
from .cli import main
from .figure import scaling_figure
from .measure import peak_memory_bytes
from .profiling import PROFILE_LAYOUT, OpTime, format_profile, profile_ops

__all__ = [
    "Layout",
    "LAYOUTS",
    "QUICK_LAYOUTS",
    "TARGETS",
    "fast_impl",
    "run_benchmark",
    "run_scaling",
    "scaling_figure",
    "peak_memory_bytes",
    "format_table",
    "check_targets",
    "PROFILE_LAYOUT",
    "OpTime",
    "profile_ops",
    "format_profile",
    "main",
]
