"""Sliding Window Dilated Attention (SWDA), DilateFormer eq. (2)-(3), as a function.

``swda()`` does three things: check the arguments, choose an implementation from
the registry (``dilate_lab.ops``), call it. Every implementation gives the same
output and gradients:

- ``"naive"``: explicit Python loops over pixels and window offsets (lesson 02).
- ``"unfold"``: the paper's ``nn.Unfold`` form, which copies K and V k*k times (lesson 03).
- ``"shift"``: a loop over the k*k offsets with shifted views of K and V.
- ``"fused"``: a PyTorch operator with a hand-written backward, plain PyTorch.
- ``"cpp"``: a compiled C++ kernel, CPU only, built on first use; the fastest on CPU.
- ``"flex"``: FlexAttention with a dilated-window mask, CUDA only.

``impl="auto"`` picks the fastest one that runs the arguments (``explain_impl``
says which, and why): ``"cpp"`` on CPU, ``"flex"`` on CUDA, ``"fused"`` where
neither runs, ``"shift"`` under ``torch.func`` transforms and forward-mode AD.

Tensors are (B, heads, H, W, head_dim), like ``scaled_dot_product_attention``.
Half-precision inputs are computed in float32 (unless an implementation computes
them natively) and the result cast back, so every dtype gets the same semantics.
Under ``torch.autocast``, q, k and v may differ in dtype: they are brought to the
widest of theirs first.

``"cpp"``, ``"fused"`` and ``"triton"`` are PyTorch operators (``torch.ops.dilate_lab``)
with fake kernels and autograd rules, and the choice among implementations is plain
Python that ``torch.compile(fullgraph=True)`` traces: ``swda``, and the modules built
on it, compile, export and ``torch.jit.trace`` as one node per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_head_dilations, check_kernel_size, check_padding, check_qkv, check_scale
from .ops import choose_impl, impl_names
from .ops.registry import ImplChoice, explain_choice, get_impl
from .ops.reference import NAIVE_MAX_STEPS, head_runs

__all__ = ["swda", "explain_impl", "SWDA_IMPLS", "ALL_IMPLS", "NAIVE_MAX_STEPS", "check_impl"]

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


def _checked(q, k, v, kernel_size, dilation, padding, scale, impl):
    """Check every argument of ``swda``; return the dilation to use (an int, or a tuple
    with one entry per head when the heads differ)."""
    check_qkv(q, k, v)
    check_kernel_size(kernel_size)
    dilation = check_head_dilations(dilation, q.shape[1])
    check_padding(padding)
    check_scale(scale)
    check_impl(impl)
    # every dilation >= max(H, W) leaves only the centre of the window on the map, so
    # they all give the same result: no padding by huge dilations, no int64 overflow
    reach = max(q.shape[2], q.shape[3])
    if isinstance(dilation, tuple):
        return tuple(min(r, reach) for r in dilation)
    return min(dilation, reach)


def _autocast_inputs(q, k, v):
    """Under ``torch.autocast``, q, k and v in one dtype: the widest of theirs.

    Autocast hands attention its inputs from different layers (a bfloat16 Linear's
    output next to a float32 tensor); SWDA then runs like autocast's "promote" ops.
    The implementations compute halves in float32 anyway, and the result comes back
    in that common dtype. Outside autocast, different dtypes are a ValueError.
    """
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        return q, k, v  # check_qkv names the culprit
    if q.dtype == k.dtype == v.dtype or not torch.is_autocast_enabled(q.device.type):
        return q, k, v
    common = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    return q.to(common), k.to(common), v.to(common)


def swda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int = 3,
    dilation: int | Sequence[int] = 1,
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
            float16 or bfloat16) and device. Any strides (views are fine).
        kernel_size: odd window side k (3 in DilateFormer).
        dilation: gap r between window positions, >= 1; or one per head (a list or
            tuple of ``heads`` ints), as multi-scale dilated attention uses: the
            heads of group i with dilation ``dilations[i]``, all in one call.
        padding: ``"zeros"`` (the paper): positions beyond the border are zero
            keys and values that still take softmax mass, exactly as the zero
            padding of ``nn.Unfold``. ``"mask"``: they are left out of the softmax.
        scale: logit scale, ``head_dim ** -0.5`` when None.
        impl: ``"auto"`` (the fastest that runs these arguments; ``explain_impl``
            says which) or a name in ``ALL_IMPLS``; ``available_impls(device)``
            lists those that run on a device.

    Returns:
        (B, heads, H, W, head_dim), the dtype and device of q.
    """
    q, k, v = _autocast_inputs(q, k, v)
    dilation = _checked(q, k, v, kernel_size, dilation, padding, scale, impl)
    chosen = choose_impl(q, k, v, kernel_size, dilation, padding, impl)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    dtype = q.dtype
    work = chosen.compute_dtype(dtype)
    if work != dtype:  # e.g. half precision computed in float32, returned in q's dtype
        q, k, v = q.to(work), k.to(work), v.to(work)
    if isinstance(dilation, int) or chosen.per_head_dilation:
        out = chosen.forward(q, k, v, kernel_size, dilation, padding, scale)
    else:  # one call per run of heads that share a dilation; each a view of the heads
        runs = head_runs(dilation)
        sizes = [b - a for a, b, _ in runs]
        # split, not q[:, a:b]: its backward is one concatenation, where each slice's
        # would be a zero-filled tensor the size of q, summed
        out = torch.cat(
            [
                chosen.forward(q_run, k_run, v_run, kernel_size, r, padding, scale)
                for q_run, k_run, v_run, (_, _, r) in zip(
                    q.split(sizes, dim=1), k.split(sizes, dim=1), v.split(sizes, dim=1), runs
                )
            ],
            dim=1,
        )  # B, heads, H, W, d
    return out.to(dtype) if out.dtype != dtype else out


def explain_impl(
    q: torch.Tensor,
    k: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    kernel_size: int = 3,
    dilation: int | Sequence[int] = 1,
    *,
    padding: str = "zeros",
    impl: str = "auto",
) -> ImplChoice:
    """Which implementation ``swda(q, k, v, kernel_size, dilation, padding=..., impl=...)``
    runs, and why each one ``impl="auto"`` prefers to it was passed over.

    ``k`` and ``v`` default to ``q`` (only shapes, dtypes and devices matter).
    ``print(explain_impl(q))`` gives, e.g.::

        swda runs 'fused' (chosen by impl='auto') on cpu float32
          passed over 'cpp': the compiled SWDA kernel is turned off (DILATE_LAB_NO_COMPILE is set)

    The same text is logged at DEBUG level by the ``dilate_lab`` logger on every
    ``impl="auto"`` call (``logging.getLogger("dilate_lab").setLevel("DEBUG")``).
    """
    k = q if k is None else k
    v = q if v is None else v
    dilation = _checked(q, k, v, kernel_size, dilation, padding, None, impl)
    return explain_choice(q, k, v, kernel_size, dilation, padding, impl)
