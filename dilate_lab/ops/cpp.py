"""The ``"cpp"`` SWDA implementation: a compiled C++ kernel, the fastest on CPU.

Why a compiled kernel: the pure-PyTorch ``"fused"`` Function makes k*k passes over
memory (one per window position, each reading and writing the whole output), so
its forward costs about ten times one pass over q, k, v and the output. The C++
kernel (``csrc/swda_cpu_kernel.cpp``) does one pass: it works on one image row at
a time, whose logits, softmax and output stay in the CPU caches, and it writes only
the output and the (k*k)-per-pixel weights that backward needs. Keys beyond the
border are never read, so NaN and inf reach exactly the pixels that ``nn.Unfold``
sends them to; no finiteness check is needed.

Both directions are PyTorch operators, ``torch.ops.dilate_lab.swda_cpp`` and
``swda_cpp_backward`` (``torch.library.custom_op``), with shape-only fake kernels and
an autograd rule: ``torch.compile(fullgraph=True)``, ``torch.export`` and
``torch.jit.trace`` see one node, not the kernel's raw memory. Halves are computed
in float32 inside the operator, and come back in the input's dtype.

Each head may have its own dilation, and q, k, v may be any views whose channels are
side by side: MSDA passes all its groups in one call, read where its channels-last
qkv projection put them, and gets its output back channels-last, with no copy.

The kernel is built on first use (``cpp_build``); where it cannot be, this
implementation is unavailable and ``impl="auto"`` passes over it.
"""

from __future__ import annotations

import contextlib

import torch

from ..tracing import record, tracing
from .cpp_build import MAX_KERNEL_SIZE, build_error, compiled_available, load_kernel
from .fused import (
    in_compute_dtype,
    backward_by_recomputing,
    compute_dtype,
    eager_without_graph,
    plain_tensors_only,
    setup_context,
)
from .registry import register

__all__ = ["swda_cpp"]


def _profiled(name: str):
    """A named row in the PyTorch profiler while one is recording; no cost otherwise."""
    if torch.autograd.profiler._is_profiler_enabled:
        return torch.profiler.record_function(name)
    return contextlib.nullcontext()


def _side_by_side(t: torch.Tensor) -> torch.Tensor:
    """t itself where its channels are side by side (the kernel reads any other strides)."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _heads_inside_pixels(t: torch.Tensor) -> bool:
    """Whether the kernel lays its results for t out (B, H, W, heads, d): t's heads sit inside
    its pixels (a head's q, k or v read from a channels-last projection). A t whose channels
    are not side by side reaches the kernel as a contiguous copy, so it does not."""
    side_by_side = t.stride(-1) == 1 or t.shape[-1] == 1
    return t.shape[1] > 1 and side_by_side and t.stride(1) < t.stride(3)


def _like_layout(t: torch.Tensor) -> torch.Tensor:
    """A new tensor like t, its pixels in t's order: (B, H, W, heads, d) in memory where
    ``_heads_inside_pixels(t)``, else contiguous. The C++ kernel allocates out and the
    gradients by the same rule (``empty_in_layout_of``), so MSDA's output is channels-last
    with no copy."""
    B, heads, H, W, d = t.shape
    if _heads_inside_pixels(t):
        return t.new_empty((B, H, W, heads, d)).permute(0, 3, 1, 2, 4)  # B, heads, H, W, d (a view)
    return t.new_empty(t.shape)


def _in_layout_of(t: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """value with t's dtype and layout (``_like_layout``); the operators' fake kernels
    promise that layout, so a half-precision result converted back gets it too."""
    B, heads, H, W, d = t.shape
    if _heads_inside_pixels(t):
        strides = (H * W * heads * d, d, W * heads * d, heads * d, 1)  # of (B, H, W, heads, d) permuted
    else:
        strides = (heads * H * W * d, H * W * d, W * d, d, 1)  # contiguous
    if value.dtype == t.dtype and value.stride() == strides:
        return value
    return _like_layout(t).copy_(value)


def _per_head(q: torch.Tensor, dilation) -> list[int]:
    """One dilation per head: the kernel takes a list (MSDA's groups in one call)."""
    if isinstance(dilation, (list, tuple)):
        return [int(r) for r in dilation]
    return [int(dilation)] * q.shape[1]


def _forward(q, k, v, kernel_size, dilations, mask, scale, keep):
    """(out, weights) from the kernel; weights is empty unless ``keep``."""
    with _profiled("cpp::swda_forward"):
        return load_kernel().forward(
            _side_by_side(q), _side_by_side(k), _side_by_side(v), kernel_size, dilations, mask, scale, keep,
        )


_LANES = 8
"""kLanes of the C++ source: each weight line is W rounded up to a multiple of it."""


def _forward_impl(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    kernel_size: int, dilations: list[int], mask: bool, scale: float, keep: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out in q's dtype and layout, weights (B, heads, H, k*k, stride) in the compute
    dtype, or an empty tensor unless ``keep``: for backward, or for the shape tracer).

    q, k, v may be any views whose channels are side by side: the kernel reads them
    where they are. ``dilations``: one per head. Halves are computed in float32 (the
    kernel takes float32 and float64): any float inputs in, q's dtype out, which is
    what ``torch.autocast`` needs of an operator.
    """
    qc, kc, vc = in_compute_dtype(q, k, v)
    out, weights = _forward(qc, kc, vc, kernel_size, dilations, mask, scale, keep)
    if keep:
        B, heads, H, W, _ = q.shape
        lines = weights.view(B, heads, H, kernel_size * kernel_size, -1)  # B, heads, H, k*k, stride
        record(
            "attention weights",
            lines[..., :W].transpose(-1, -2),  # B, heads, H, W, k*k (a view)
            "one weight per window position",
        )
    return _in_layout_of(q, out), weights


_forward_op = torch.library.custom_op("dilate_lab::swda_cpp", mutates_args=())(_forward_impl)


@_forward_op.register_fake
def _(q, k, v, kernel_size, dilations, mask, scale, keep):
    B, heads, H, W, _ = q.shape
    stride = -(-W // _LANES) * _LANES
    shape = (B, heads, H, kernel_size * kernel_size, stride) if keep else (0,)
    return _like_layout(q), q.new_empty(shape, dtype=compute_dtype(q))


@torch.library.custom_op("dilate_lab::swda_cpp_backward", mutates_args=())
def _backward_op(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, weights: torch.Tensor,
    kernel_size: int, dilations: list[int], mask: bool, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) in the dtypes and layouts of q, k, v, from the kernel's two-pass gather backward."""
    gc, qc, kc, vc = in_compute_dtype(grad_out, q, k, v)
    with _profiled("cpp::swda_backward"):
        grads = load_kernel().backward(
            _side_by_side(qc), _side_by_side(kc), _side_by_side(vc), weights, _side_by_side(gc),
            kernel_size, dilations, mask, scale,
        )
    return tuple(_in_layout_of(t, g) for g, t in zip(grads, (q, k, v)))


@_backward_op.register_fake
def _(grad_out, q, k, v, weights, kernel_size, dilations, mask, scale):
    return _like_layout(q), _like_layout(k), _like_layout(v)


def _backward(ctx, grad_out, _grad_weights):
    if torch.is_grad_enabled():
        # create_graph=True: the gradient must itself be differentiable, so it is
        # recomputed with autograd through the "shift" path
        return (*backward_by_recomputing(ctx, grad_out), None)  # and none for keep
    q, k, v, weights = ctx.saved_tensors
    _, kernel_size, dilations, scale = ctx.geometry
    grads = torch.ops.dilate_lab.swda_cpp_backward(
        grad_out, q, k, v, weights, kernel_size, dilations, ctx.padding == "mask", scale
    )
    return (*grads, None, None, None, None, None)


_forward_op.register_autograd(_backward, setup_context=setup_context)


def swda_cpp(q, k, v, kernel_size, dilation, padding, scale):
    """SWDA through the ``dilate_lab::swda_cpp`` operator; arguments as in ``swda``, already
    checked and accepted by this implementation's checks (CPU, plain tensors). ``dilation``:
    an int, or one per head (all heads in one call, read where they are).

    Inference in eager mode calls the kernel directly (no dispatch, no weights stored);
    a call that records a graph (autograd, compile, export, jit.trace) goes through
    the operator, keeping the weights for backward.
    """
    mask, scale, dilations = padding == "mask", float(scale), _per_head(q, dilation)
    if eager_without_graph(q, k, v):
        if tracing():  # the shape tracer wants the weights
            return _forward_impl(q, k, v, kernel_size, dilations, mask, scale, True)[0]
        qc, kc, vc = in_compute_dtype(q, k, v)
        return _in_layout_of(q, _forward(qc, kc, vc, kernel_size, dilations, mask, scale, keep=False)[0])
    out, _ = torch.ops.dilate_lab.swda_cpp(q, k, v, kernel_size, dilations, mask, scale, True)
    return out


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
    per_head_dilation=True,
)
