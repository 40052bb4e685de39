"""Sliding Window Dilated Attention (SWDA), DilateFormer eq. (2)-(3), as a function.

``swda()`` does three things: check the arguments, choose an implementation from
the registry (``dilate_lab.ops``), call it. Every implementation gives the same
output and gradients:

- ``"naive"``: explicit Python loops over pixels and window offsets (lesson 02).
- ``"unfold"``: the paper's ``nn.Unfold`` form, which copies K and V k*k times (lesson 03).
- ``"shift"``: a loop over the k*k offsets with shifted views of K and V.
- ``"fused"``: a custom autograd Function with a hand-written backward, plain PyTorch.
- ``"cpp"``: a compiled C++ kernel, CPU only, built on first use; the fastest on CPU.
- ``"flex"``: FlexAttention with a dilated-window mask, CUDA only.

``impl="auto"`` picks the fastest one that runs the arguments (``explain_impl``
says which, and why): ``"cpp"`` on CPU, ``"flex"`` on CUDA, ``"fused"`` where
neither runs, ``"shift"`` under ``torch.func`` transforms and forward-mode AD.

Tensors are (B, heads, H, W, head_dim), like ``scaled_dot_product_attention``.
Half-precision inputs are computed in float32 (unless an implementation computes
them natively) and the result cast back, so every dtype gets the same semantics.
"""

from __future__ import annotations

import torch

from ._checks import check_dilation, check_kernel_size, check_padding, check_qkv, check_scale
from .ops import choose_impl, impl_names
from .ops.registry import get_impl
from .ops.reference import NAIVE_MAX_STEPS

__all__ = ["swda", "SWDA_IMPLS", "ALL_IMPLS", "NAIVE_MAX_STEPS", "check_impl"]

ALL_IMPLS: tuple[str, ...] = impl_names()
"""Every name ``impl=`` takes on some device (``available_impls`` says which run where)."""

SWDA_IMPLS: tuple[str, ...] = tuple(name for name in ALL_IMPLS if get_impl(name).device_types is None)
"""Names accepted by ``swda(..., impl=...)`` on every device, besides ``"auto"``.
``available_impls(device)`` adds the device-specific ones (``"cpp"`` on CPU,
``"flex"`` on CUDA)."""


def check_impl(impl) -> None:
    """impl: "auto", or a registered name (``ALL_IMPLS``)."""
    if impl != "auto" and impl not in ALL_IMPLS:
        only = ", ".join(
            f"{name!r} on {'/'.join(get_impl(name).device_types).upper()} only"
            for name in ALL_IMPLS
            if get_impl(name).device_types is not None
        )
        raise ValueError(f"impl must be 'auto' or one of {SWDA_IMPLS} ({only}), got {impl!r}")


def swda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int = 3,
    dilation: int = 1,
    *,
    padding: str = "zeros",
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Sliding window dilated attention.

    Each query at (i, j) attends to the k x k keys at (i + p*r, j + q*r),
    p, q in [-(k//2), k//2], r = ``dilation``:
    ``out_ij = softmax(scale * q_ij . K_r^T) V_r``.

    Args:
        q, k, v: (B, heads, H, W, head_dim), same shape, dtype (float32, float64,
            float16 or bfloat16) and device.
        kernel_size: odd window side k (3 in DilateFormer).
        dilation: gap r between window positions, >= 1.
        padding: ``"zeros"`` (the paper): positions beyond the border are zero
            keys and values that still take softmax mass, exactly as the zero
            padding of ``nn.Unfold``. ``"mask"``: they are left out of the softmax.
        scale: logit scale, ``head_dim ** -0.5`` when None.
        impl: ``"auto"`` (the fastest that runs these arguments) or a name in
            ``ALL_IMPLS``; ``available_impls(device)`` lists those that run on a device.

    Returns:
        (B, heads, H, W, head_dim), the dtype and device of q.
    """
    check_qkv(q, k, v)
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    check_padding(padding)
    check_scale(scale)
    check_impl(impl)
    B, heads, H, W, d = q.shape
    # every dilation >= max(H, W) leaves only the centre of the window on the map, so
    # they all give the same result: no padding by huge dilations, no int64 overflow
    dilation = min(dilation, max(H, W))
    chosen = choose_impl(q, k, v, kernel_size, dilation, padding, impl)
    scale = d**-0.5 if scale is None else float(scale)
    work = chosen.compute_dtype(q.dtype)
    if work != q.dtype:  # e.g. half precision computed in float32, returned in q's dtype
        out = chosen.forward(q.to(work), k.to(work), v.to(work), kernel_size, dilation, padding, scale)
        return out.to(q.dtype)
    return chosen.forward(q, k, v, kernel_size, dilation, padding, scale)
