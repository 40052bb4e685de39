"""The ``"triton"`` SWDA implementation: one fused Triton kernel, forward and backward, for CUDA.

What it adds to ``"flex"``: the window is computed, not masked out of a dense
attention, so each query reads exactly its k*k keys; the zero padding of the
paper comes for free from masked loads (see ``triton_kernels``); every head may
have its own dilation, so the dilation groups of an MSDA layer run in one launch;
and q, k, v may be any strided views (the heads of a qkv conv output, say).

- Forward reads q, k, v once and writes the output and one float32 log-sum-exp per
  query (base 2), not the k*k weights: backward recomputes them from q, k and the
  LSE, as FlashAttention does, so training keeps ``4 bytes`` per query instead of
  ``4 k^2``.
- Backward is two launches: dq (and ``Delta = dO . out``) per query, then dk, dv per
  key, each key gathering the k*k queries whose window holds it: every gradient row
  is written by one program, so no atomics and a deterministic result.
- Both are PyTorch operators, ``torch.ops.dilate_lab.swda_triton`` and
  ``swda_triton_backward`` (``torch.library.custom_op``) with shape-only fake
  implementations and an autograd rule, so ``torch.compile(fullgraph=True)`` and
  ``torch.export`` see one opaque node instead of tracing into Triton. Under
  ``torch.autocast`` the inputs are cast to the autocast dtype, as
  ``scaled_dot_product_attention`` does; the kernel accumulates in float32 always.
- The backward is not itself differentiable (no second derivatives).

Triton compiles for CUDA; with ``TRITON_INTERPRET=1`` set before this module is
imported it runs the same kernels on CPU tensors through Triton's interpreter
(slowly: that is how the tests check it without a GPU), and the implementation is
then registered for CPU too.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Sequence

import torch

from .fused import plain_tensors_only
from .registry import register

__all__ = ["swda_triton", "head_dilations", "triton_interpreted", "MAX_GRID_IMAGES"]

_LOG2E = 1.4426950408889634
MAX_GRID_IMAGES = 65535
"""B * heads is the second grid axis of every launch, which CUDA limits to 65535."""


def triton_interpreted() -> bool:
    """True when ``TRITON_INTERPRET`` is on (Triton then runs kernels on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def head_dilations(dilation, heads: int, height: int, width: int) -> tuple[int, ...]:
    """One dilation per head, from an int (every head) or a tuple of ``heads`` ints.

    Each is clamped to max(H, W): every larger dilation leaves only the window's centre
    on the map, so the result is the same and the index arithmetic cannot overflow.
    """
    if isinstance(dilation, Sequence):
        if len(dilation) != heads:
            raise ValueError(
                f"dilation must be an int or a tuple with one entry per head ({heads}), "
                f"got {tuple(dilation)!r}"
            )
        dilation = list(dilation)
    else:
        dilation = [dilation] * heads
    return tuple(min(int(r), max(height, width)) for r in dilation)


@functools.lru_cache(maxsize=64)
def _dilation_tensor(dilations: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(heads,) int32 on ``device``: the kernels read their head's dilation from it."""
    return torch.tensor(dilations, dtype=torch.int32, device=device)


def _blocks(pixels: int, head_dim: int) -> tuple[int, int]:
    """(BLOCK_Q, BLOCK_D): the head dim padded to a power of two, and as many queries
    per program as keep a (BLOCK_Q, BLOCK_D) tile near 1024 elements (8 a thread at 4
    warps). Every tile of a gather also holds one 64-bit address per element: ptxas
    (sm_90) gives these kernels 110-180 registers a thread at 1024 elements, none
    spilled, but 254 at 2048, which halves the warps an SM can keep in flight.
    The interpreter runs one program at a time in Python, so there larger tiles only
    save time."""
    import triton

    block_d = triton.next_power_of_2(head_dim)
    budget = 16384 if triton_interpreted() else 1024
    block_q = max(8, min(128, budget // block_d))
    return min(block_q, triton.next_power_of_2(pixels)), block_d


def _launch_setup(q, dilations):
    """Grid (query tiles, B * heads), the two block sizes, the per-head dilation tensor."""
    B, heads, H, W, d = q.shape
    block_q, block_d = _blocks(H * W, d)
    grid = (-(-H * W // block_q), B * heads)
    return grid, block_q, block_d, _dilation_tensor(tuple(dilations), q.device)


def _device_guard(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensors' one."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()  # CPU tensors: the interpreter


@torch.library.custom_op("dilate_lab::swda_triton", mutates_args=())
def _forward_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    dilations: list[int], kernel_size: int, mask: bool, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, heads, H, W, d) in q's dtype, lse2 (B, heads, H, W) float32)."""
    from .triton_kernels import swda_fwd_kernel

    B, heads, H, W, d = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # B, heads, H, W, d
    lse = torch.empty((B, heads, H, W), dtype=torch.float32, device=q.device)
    grid, block_q, block_d, dil = _launch_setup(q, dilations)
    with _device_guard(q):
        swda_fwd_kernel[grid](
            q, k, v, out, lse, dil,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            heads, H, W, d, scale * _LOG2E,
            KS=kernel_size, MASK=mask, BLOCK_Q=block_q, BLOCK_D=block_d,
        )
    return out, lse


@_forward_op.register_fake
def _(q, k, v, dilations, kernel_size, mask, scale):
    B, heads, H, W, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((B, heads, H, W), dtype=torch.float32)


@torch.library.custom_op("dilate_lab::swda_triton_backward", mutates_args=())
def _backward_op(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    out: torch.Tensor, lse: torch.Tensor, dilations: list[int], kernel_size: int, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), contiguous, in q's dtype; ``out`` and ``lse`` from the forward op."""
    from .triton_kernels import swda_bwd_dkdv_kernel, swda_bwd_dq_kernel

    B, heads, H, W, d = q.shape
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # B, heads, H, W, d
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    delta = torch.empty_like(lse)  # B, heads, H, W: dO . out per query
    grid, block_q, block_d, dil = _launch_setup(q, dilations)
    # dq, dk, dv are laid out like out (contiguous); the kernels write them with out's strides
    strides = (*q.stride(), *k.stride(), *v.stride(), *dq.stride(), *grad_out.stride())
    out = out if out.stride() == dq.stride() else out.contiguous()
    with _device_guard(q):
        swda_bwd_dq_kernel[grid](
            q, k, v, out, grad_out, lse, delta, dq, dil, *strides,
            heads, H, W, d, scale * _LOG2E, scale,
            KS=kernel_size, BLOCK_Q=block_q, BLOCK_D=block_d,
        )
        swda_bwd_dkdv_kernel[grid](
            q, k, v, grad_out, lse, delta, dk, dv, dil, *strides,
            heads, H, W, d, scale * _LOG2E, scale,
            KS=kernel_size, BLOCK_Q=block_q, BLOCK_D=block_d,
        )
    return dq, dk, dv


@_backward_op.register_fake
def _(grad_out, q, k, v, out, lse, dilations, kernel_size, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, dilations, kernel_size, _mask, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.window = (list(dilations), kernel_size, scale)


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    dilations, kernel_size, scale = ctx.window
    dq, dk, dv = _backward_op(grad_out, q, k, v, out, lse, dilations, kernel_size, scale)
    return dq, dk, dv, None, None, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def swda_triton(q, k, v, kernel_size, dilation, padding, scale):
    """SWDA through the Triton kernels, for ``swda(impl="triton")``; arguments already
    checked by ``swda``. ``dilation``: an int, or a tuple of one int per group of heads."""
    B, heads, H, W, d = q.shape
    dilations = list(head_dilations(dilation, heads, H, W))
    device_type = q.device.type
    if torch.is_autocast_enabled(device_type):
        work = torch.get_autocast_dtype(device_type)
        q, k, v = q.to(work), k.to(work), v.to(work)  # no copy where already in it
    out, _ = torch.ops.dilate_lab.swda_triton(
        q, k, v, dilations, kernel_size, padding == "mask", float(scale)
    )
    return out


def _triton_missing() -> str | None:
    if not _triton_installed():
        return "Triton is not installed (pip install triton; it compiles the CUDA kernel)"
    return None


def _takes(q, k, v, kernel_size, dilation, padding) -> str | None:
    B, heads, H, W, _ = q.shape
    if B * heads > MAX_GRID_IMAGES:
        return f"its grid takes B * heads up to {MAX_GRID_IMAGES}, got {B * heads}"
    try:
        head_dilations(dilation, heads, H, W)
    except ValueError as error:
        return str(error)
    return plain_tensors_only(q, k, v, kernel_size, dilation, padding)


register(
    "triton", swda_triton,
    summary="one fused Triton kernel: online softmax over the window, per-head dilations, "
    "an LSE-recomputing gather backward",
    device_types=("cuda", "cpu") if triton_interpreted() else ("cuda",),
    dtypes=(torch.float32, torch.float16, torch.bfloat16),
    available=_triton_missing,
    can_run=_takes,
    auto_rank=5,
    per_head_dilation=True,
    auto_device_types=("cuda",),
)
