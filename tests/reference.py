"""An independent dense reference for sliding window dilated attention.

It shares no code with ``dilate_lab``: every query attends to all H*W keys
through ``scaled_dot_product_attention``, with an additive mask that allows
exactly the dilated window, built here from pixel coordinates.

Zero padding is reproduced with one extra key/value that is all zeros: a
zero key has logit 0, and n_pad of them contribute n_pad * exp(0) to the
softmax denominator and nothing to the numerator. One zero key with the
additive score log(n_pad) contributes exactly the same, so the extra column
carries log(n_pad) where n_pad > 0 window positions fall beyond the border
(and -inf elsewhere, or everywhere with padding="mask").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_allowed(height: int, width: int, kernel_size: int, dilation: int) -> torch.Tensor:
    """Bool (H*W, H*W): may query n see key m? Built from coordinates."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)  # H*W
    d_row = rows[None, :] - rows[:, None]  # query n (dim 0) to key m (dim 1)
    d_col = cols[None, :] - cols[:, None]
    reach = dilation * (kernel_size // 2)
    return (
        (d_row.abs() <= reach)
        & (d_col.abs() <= reach)
        & (d_row % dilation == 0)
        & (d_col % dilation == 0)
    )


def dense_swda(q, k, v, kernel_size=3, dilation=1, padding="zeros", scale=None):
    """Reference SWDA over (B, heads, H, W, d) tensors."""
    B, heads, H, W, d = q.shape
    n = H * W
    allowed = window_allowed(H, W, kernel_size, dilation).to(q.device)  # N, N
    n_pad = kernel_size * kernel_size - allowed.sum(dim=1)  # N
    bias = torch.full((n, n + 1), float("-inf"), dtype=q.dtype, device=q.device)
    bias[:, :n] = torch.where(allowed, 0.0, float("-inf")).to(q.dtype)
    if padding == "zeros":
        log_pad = torch.log(n_pad.to(q.dtype))  # -inf where n_pad == 0
        bias[:, n] = log_pad
    zero = q.new_zeros(B, heads, 1, d)
    keys = torch.cat([k.reshape(B, heads, n, d), zero], dim=2)  # B, heads, N+1, d
    values = torch.cat([v.reshape(B, heads, n, d), zero], dim=2)  # B, heads, N+1, d
    out = F.scaled_dot_product_attention(
        q.reshape(B, heads, n, d),
        keys,
        values,
        attn_mask=bias,
        scale=d**-0.5 if scale is None else scale,
    )  # B, heads, N, d
    return out.reshape(B, heads, H, W, d)


def border_fraction(height, width, kernel_size, dilation, row, col):
    """Fraction of a query's window on the map, counted by hand (for q = k = 0, v = 1)."""
    half = kernel_size // 2
    inside = sum(
        0 <= row + p * dilation < height and 0 <= col + s * dilation < width
        for p in range(-half, half + 1)
        for s in range(-half, half + 1)
    )
    return inside / kernel_size**2

