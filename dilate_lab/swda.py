"""Sliding Window Dilated Attention (SWDA), DilateFormer eq. (2)-(3), as a function.

One signature, several implementations that give the same output and gradients:

- ``"naive"``: explicit Python loops over pixels and window offsets (lesson 02).
- ``"unfold"``: the paper's ``nn.Unfold`` form, which copies K and V k*k times (lesson 03).
- ``"shift"``: a loop over the k*k offsets with shifted views of K and V; the
  logits (B, heads, H, W, k*k) are the only k*k-sized tensor.
- ``"fused"``: a custom autograd Function with a hand-written backward that
  keeps only q, k, v and the weights, in plain PyTorch (``swda_cpu``).
- ``"cpp"``: the same Function as one compiled C++ pass, CPU only, built on first
  use; the fastest on CPU (``swda_compiled``).
- ``"flex"``: FlexAttention with a dilated-window mask, CUDA only (``swda_cuda``).

``impl="auto"`` picks the fastest exact implementation for the tensors' device:
``"cpp"`` on CPU (``"fused"`` where no C++ compiler is found), ``"flex"`` on CUDA.

Tensors are (B, heads, H, W, head_dim), like ``scaled_dot_product_attention``.
Half-precision inputs are computed in float32 and the result cast back, so every
dtype gets the same, exact semantics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_dilation, check_kernel_size, check_padding, check_qkv, check_scale
from .geometry import inside_mask
from .swda_compiled import MAX_KERNEL_SIZE, compiled_available, plain_tensor, swda_cpp
from .swda_cpu import swda_fused
from .swda_cuda import flex_available, swda_flex
from .tracing import record

__all__ = ["swda", "SWDA_IMPLS", "ALL_IMPLS", "NAIVE_MAX_STEPS", "available_impls"]

NAIVE_MAX_STEPS = 100_000
"""The naive loop refuses a call with more than this many (pixel, offset) steps,
(B and heads do not count: they are vectorised): H * W * k * k, about
1 s of forward on a laptop core at the limit."""


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# ---------------------------------------------------------------------------
# "naive": the definition, one query at a time
# ---------------------------------------------------------------------------
def _swda_naive(q, k, v, kernel_size, dilation, padding, scale):
    B, heads, H, W, d = q.shape
    half = kernel_size // 2
    rows = []
    for i in range(H):
        row = []
        for j in range(W):
            q_ij = q[:, :, i, j, :] * scale  # B, heads, d
            logits, values = [], []
            for p in range(-half, half + 1):
                for s in range(-half, half + 1):
                    ii, jj = i + p * dilation, j + s * dilation
                    if 0 <= ii < H and 0 <= jj < W:
                        logits.append((q_ij * k[:, :, ii, jj, :]).sum(-1))  # B, heads
                        values.append(v[:, :, ii, jj, :])  # B, heads, d
                    elif padding == "zeros":
                        # a zero-padded key: logit q . 0 (0, or NaN if q is not finite,
                        # as with nn.Unfold), value 0, still in the softmax
                        zero = q_ij.new_zeros(B, heads, d)
                        logits.append((q_ij * zero).sum(-1))
                        values.append(zero)
                    # padding == "mask": the position is simply left out
            weights = torch.softmax(torch.stack(logits, dim=-1), dim=-1)  # B, heads, n
            stacked = torch.stack(values, dim=-2)  # B, heads, n, d
            row.append((weights.unsqueeze(-1) * stacked).sum(dim=-2))  # B, heads, d
        rows.append(torch.stack(row, dim=2))  # B, heads, W, d
    return torch.stack(rows, dim=2)  # B, heads, H, W, d


# ---------------------------------------------------------------------------
# "unfold": the paper's form, every window copied out with nn.Unfold
# ---------------------------------------------------------------------------
def _unfold_windows(x, kernel_size, dilation):
    """(B, heads, H, W, d) -> (B, heads, H*W, k*k, d): each pixel's window, zero padded."""
    B, heads, H, W, d = x.shape
    kk = kernel_size * kernel_size
    x = x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W)  # B*heads, d, H, W
    cols = F.unfold(
        x, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2)
    )  # B*heads, d*k*k, H*W
    cols = cols.reshape(B, heads, d, kk, H * W)  # B, heads, d, k*k, H*W
    return cols.permute(0, 1, 4, 3, 2)  # B, heads, H*W, k*k, d


def _swda_unfold(q, k, v, kernel_size, dilation, padding, scale):
    B, heads, H, W, d = q.shape
    k_windows = record("unfolded K", _unfold_windows(k, kernel_size, dilation), "k*k copy of K")
    v_windows = record("unfolded V", _unfold_windows(v, kernel_size, dilation), "k*k copy of V")
    q_rows = q.reshape(B, heads, H * W, 1, d) * scale  # B, heads, H*W, 1, d
    logits = q_rows @ k_windows.transpose(-1, -2)  # B, heads, H*W, 1, k*k
    if padding == "mask":
        inside = inside_mask(H, W, kernel_size, dilation, device=q.device)  # H, W, k*k
        logits = logits.masked_fill(~inside.reshape(H * W, 1, -1), float("-inf"))
    attn = record("attention weights", torch.softmax(logits, dim=-1), "one weight per window position")
    out = attn @ v_windows  # B, heads, H*W, 1, d
    return out.reshape(B, heads, H, W, d)  # B, heads, H, W, d


# ---------------------------------------------------------------------------
# "shift": loop over the k*k offsets, each a shifted view of padded K and V
# ---------------------------------------------------------------------------
def _shifted_views(x, kernel_size, dilation):
    """Yield, for each window offset in unfold order, x shifted so that [.., i, j, :] is that key."""
    B, heads, H, W, d = x.shape
    pad = dilation * (kernel_size // 2)
    x_pad = F.pad(x, (0, 0, pad, pad, pad, pad))  # B, heads, H+2pad, W+2pad, d
    for a in range(kernel_size):
        for b in range(kernel_size):
            top, left = a * dilation, b * dilation
            yield x_pad[:, :, top : top + H, left : left + W, :]  # B, heads, H, W, d (a view)


def _swda_shift(q, k, v, kernel_size, dilation, padding, scale):
    B, heads, H, W, d = q.shape
    q = q * scale
    logits = torch.stack(
        [(q * k_shift).sum(-1) for k_shift in _shifted_views(k, kernel_size, dilation)], dim=-1
    )  # B, heads, H, W, k*k
    if padding == "mask":
        inside = inside_mask(H, W, kernel_size, dilation, device=q.device)  # H, W, k*k
        logits = logits.masked_fill(~inside, float("-inf"))
    attn = record("attention weights", torch.softmax(logits, dim=-1))  # B, heads, H, W, k*k
    out = None
    for o, v_shift in enumerate(_shifted_views(v, kernel_size, dilation)):
        term = attn[..., o : o + 1] * v_shift  # B, heads, H, W, d
        out = term if out is None else out + term
    return out


_IMPLS = {
    "naive": _swda_naive,
    "unfold": _swda_unfold,
    "shift": _swda_shift,
    "fused": swda_fused,
    "cpp": swda_cpp,
    "flex": swda_flex,
}
_IMPL_DEVICE_TYPES = {"cpp": ("cpu",), "flex": ("cuda",)}
"""Implementations that run only on some device types; the others run everywhere."""

SWDA_IMPLS: tuple[str, ...] = tuple(name for name in _IMPLS if name not in _IMPL_DEVICE_TYPES)
"""Names accepted by ``swda(..., impl=...)`` on every device, besides ``"auto"``.
``available_impls(device)`` adds the device-specific ones (``"cpp"`` on CPU,
``"flex"`` on CUDA)."""


ALL_IMPLS: tuple[str, ...] = tuple(_IMPLS)
"""Every name ``impl=`` takes on some device (``available_impls`` says which run where)."""


def available_impls(device) -> tuple[str, ...]:
    """Names ``swda(..., impl=...)`` runs for tensors on ``device`` (besides ``"auto"``).

    ``"cpp"`` is listed on CPU only where the compiled kernel loads; the first call
    may therefore build it (once per machine, about half a minute).
    """
    try:
        device_type = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch.device or a name such as 'cpu' or 'cuda', got {device!r}") from None
    names = [name for name in _IMPLS if device_type in _IMPL_DEVICE_TYPES.get(name, (device_type,))]
    if "cpp" in names and not compiled_available():
        names.remove("cpp")
    return tuple(names)


def check_impl(impl) -> None:
    """impl: "auto", a name in SWDA_IMPLS, or a device-specific one ("cpp", "flex")."""
    if impl != "auto" and impl not in _IMPLS:
        only = ", ".join(f"{name!r} on {'/'.join(kinds).upper()} only" for name, kinds in _IMPL_DEVICE_TYPES.items())
        raise ValueError(f"impl must be 'auto' or one of {SWDA_IMPLS} ({only}), got {impl!r}")


def _auto_impl(device: torch.device) -> str:
    """The C++ kernel on CPU and FlexAttention on CUDA where they can run, else the fused Function."""
    if device.type == "cpu" and compiled_available():
        return "cpp"
    return "flex" if flex_available(device) else "fused"


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
        impl: one of ``SWDA_IMPLS`` or ``"auto"`` (the fastest for the device).

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
    if impl == "naive" and H * W * kernel_size * kernel_size > NAIVE_MAX_STEPS:
        raise ValueError(
            f"impl='naive' loops in Python over H * W * kernel_size**2 = "
            f"{H * W * kernel_size * kernel_size} steps here, more than its limit of "
            f"{NAIVE_MAX_STEPS} (it would take minutes); use a smaller map or "
            f"impl='unfold', 'shift' or 'auto', which compute the same thing"
        )
    # every dilation >= max(H, W) leaves only the centre of the window on the map, so
    # they all give the same result: no padding by huge dilations, no int64 overflow
    dilation = min(dilation, max(H, W))
    name = _auto_impl(q.device) if impl == "auto" else impl
    if impl == "auto" and name in ("cpp", "fused"):
        if not all(plain_tensor(t) for t in (q, k, v)):
            name = "shift"  # forward-mode AD or torch.func: plain PyTorch operators only
        elif name == "cpp" and kernel_size > MAX_KERNEL_SIZE:
            name = "fused"
    scale = d**-0.5 if scale is None else float(scale)
    work = _work_dtype(q.dtype)
    if work != q.dtype:  # half precision: computed in float32, returned in q's dtype
        out = _IMPLS[name](q.to(work), k.to(work), v.to(work), kernel_size, dilation, padding, scale)
        return out.to(q.dtype)
    return _IMPLS[name](q, k, v, kernel_size, dilation, padding, scale)
