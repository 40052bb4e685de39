"""The ``"cpp"`` SWDA implementation: a compiled C++ kernel, the fastest on CPU.

Why a compiled kernel: the pure-PyTorch ``"fused"`` Function makes k*k passes over
memory (one per window position, each reading and writing the whole output), so
its forward costs about ten times one pass over q, k, v and the output. The C++
kernel (``csrc/swda_cpu_kernel.cpp``) does one pass: it works on one image row at
a time, whose logits, softmax and output stay in the CPU caches, and it writes only
the output and the (k*k)-per-pixel weights that backward needs. Keys beyond the
border are never read, so NaN and inf reach exactly the pixels that ``nn.Unfold``
sends them to; no finiteness check is needed.

The kernel is built on first use (``cpp_build``); where it cannot be, this
implementation is unavailable and ``impl="auto"`` passes over it.
"""

from __future__ import annotations

import contextlib

import torch

from ..tracing import record, tracing
from .cpp_build import MAX_KERNEL_SIZE, build_error, compiled_available, load_kernel
from .fused import backward_by_recomputing, plain_tensors_only
from .registry import register

__all__ = ["swda_cpp"]


def _profiled(name: str):
    """A named row in the PyTorch profiler while one is recording; no cost otherwise."""
    if torch.autograd.profiler._is_profiler_enabled:
        return torch.profiler.record_function(name)
    return contextlib.nullcontext()


def _forward(q, k, v, kernel_size, dilation, padding, scale, keep):
    """(out, weights) from the kernel; weights is empty unless ``keep``."""
    with _profiled("cpp::swda_forward"):
        return load_kernel().forward(
            q.contiguous(), k.contiguous(), v.contiguous(), kernel_size, dilation,
            padding == "mask", scale, keep,
        )


class _CompiledSWDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kernel_size, dilation, padding, scale, keep):
        # keep: store the weights (for backward, or for a tracer)
        out, weights = _forward(q, k, v, kernel_size, dilation, padding, scale, keep)
        if keep:
            B, heads, H, W, _ = q.shape
            lines = weights.view(B, heads, H, kernel_size * kernel_size, -1)  # B, heads, H, k*k, stride
            record(
                "attention weights",
                lines[..., :W].transpose(-1, -2),  # B, heads, H, W, k*k (a view)
                "one weight per window position",
            )
        # the inputs themselves are saved: unpacked in a create_graph backward they are
        # still nodes of the caller's graph, so second derivatives can flow
        ctx.save_for_backward(q, k, v, weights)
        ctx.geometry = (q.shape, kernel_size, dilation, scale)
        ctx.padding = padding
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            # create_graph=True: the gradient must itself be differentiable, so it is
            # recomputed with autograd through the "shift" path
            return (*backward_by_recomputing(ctx, grad_out), None)  # and none for keep
        q, k, v, weights = ctx.saved_tensors
        _, kernel_size, dilation, scale = ctx.geometry
        with _profiled("cpp::swda_backward"):
            grad_q, grad_k, grad_v = load_kernel().backward(
                q.contiguous(), k.contiguous(), v.contiguous(), weights, grad_out.contiguous(),
                kernel_size, dilation, ctx.padding == "mask", scale,
            )
        needed = ctx.needs_input_grad
        return (
            grad_q if needed[0] else None,
            grad_k if needed[1] else None,
            grad_v if needed[2] else None,
            None, None, None, None, None,
        )


def swda_cpp(q, k, v, kernel_size, dilation, padding, scale):
    """SWDA through the compiled kernel; arguments as in ``swda``, already checked and
    accepted by this implementation's checks (CPU, float32/float64, plain tensors)."""
    if tracing() or (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        return _CompiledSWDA.apply(q, k, v, kernel_size, dilation, padding, scale, True)
    # inference: no graph to record, so no autograd Function, and no weights stored
    return _forward(q, k, v, kernel_size, dilation, padding, scale, keep=False)[0]


def _kernel_missing() -> str | None:
    if compiled_available():
        return None
    return build_error() or "the C++ kernel is not available"


def _window_fits(q, k, v, kernel_size, dilation, padding) -> str | None:
    if kernel_size > MAX_KERNEL_SIZE:
        return f"it takes kernel_size up to {MAX_KERNEL_SIZE}, got {kernel_size}; 'fused' takes any"
    return plain_tensors_only(q, k, v, kernel_size, dilation, padding)


register(
    "cpp", swda_cpp,
    summary="one compiled C++ pass over each image row, a two-pass gather backward",
    device_types=("cpu",),
    available=_kernel_missing,
    can_run=_window_fits,
    auto_rank=0,
)
