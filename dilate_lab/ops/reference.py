"""The reference SWDA implementations, in plain PyTorch: the definition made runnable.

- ``"naive"``: explicit Python loops over pixels and window offsets (lesson 02).
- ``"unfold"``: the paper's ``nn.Unfold`` form, which copies K and V k*k times (lesson 03).
- ``"shift"``: a loop over the k*k offsets with shifted views of K and V; the
  logits (B, heads, H, W, k*k) are the only k*k-sized tensor. Every operation is an
  ordinary PyTorch operator, so it differentiates to any order and runs under
  ``torch.func`` transforms, forward-mode AD, ``torch.jit`` and ``torch.export``.

Each function takes arguments already checked by ``dilate_lab.swda``:
q, k, v (B, heads, H, W, head_dim), ``kernel_size``, ``dilation``, ``padding``, ``scale``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import inside_mask
from ..tracing import record
from .registry import register

__all__ = [
    "swda_naive", "swda_unfold", "swda_shift", "swda_shift_heads", "shifted_views", "unfold_windows",
    "head_runs", "NAIVE_MAX_STEPS",
]

NAIVE_MAX_STEPS = 100_000
"""The naive loop refuses a call with more than this many (pixel, offset) steps,
(B and heads do not count: they are vectorised): H * W * k * k, about
1 s of forward on a laptop core at the limit."""


# ---------------------------------------------------------------------------
# "naive": the definition, one query at a time
# ---------------------------------------------------------------------------
def swda_naive(q, k, v, kernel_size, dilation, padding, scale):
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
def unfold_windows(x, kernel_size, dilation):
    """(B, heads, H, W, d) -> (B, heads, H*W, k*k, d): each pixel's window, zero padded."""
    B, heads, H, W, d = x.shape
    kk = kernel_size * kernel_size
    x = x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W)  # B*heads, d, H, W
    cols = F.unfold(
        x, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2)
    )  # B*heads, d*k*k, H*W
    cols = cols.reshape(B, heads, d, kk, H * W)  # B, heads, d, k*k, H*W
    return cols.permute(0, 1, 4, 3, 2)  # B, heads, H*W, k*k, d


def swda_unfold(q, k, v, kernel_size, dilation, padding, scale):
    B, heads, H, W, d = q.shape
    k_windows = record("unfolded K", unfold_windows(k, kernel_size, dilation), "k*k copy of K")
    v_windows = record("unfolded V", unfold_windows(v, kernel_size, dilation), "k*k copy of V")
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
def shifted_views(x, kernel_size, dilation):
    """Yield, for each window offset in unfold order, x shifted so that [.., i, j, :] is that key."""
    B, heads, H, W, d = x.shape
    pad = dilation * (kernel_size // 2)
    x_pad = F.pad(x, (0, 0, pad, pad, pad, pad))  # B, heads, H+2pad, W+2pad, d
    for a in range(kernel_size):
        for b in range(kernel_size):
            top, left = a * dilation, b * dilation
            yield x_pad[:, :, top : top + H, left : left + W, :]  # B, heads, H, W, d (a view)


def swda_shift(q, k, v, kernel_size, dilation, padding, scale, dropout=None):
    """SWDA as k*k shifted views; ``dropout``, if given, is applied to the attention
    weights (MultiDilateAttention's attention dropout in training)."""
    B, heads, H, W, d = q.shape
    q = q * scale
    logits = torch.stack(
        [(q * k_shift).sum(-1) for k_shift in shifted_views(k, kernel_size, dilation)], dim=-1
    )  # B, heads, H, W, k*k
    if padding == "mask":
        inside = inside_mask(H, W, kernel_size, dilation, device=q.device)  # H, W, k*k
        logits = logits.masked_fill(~inside, float("-inf"))
    attn = torch.softmax(logits, dim=-1)  # B, heads, H, W, k*k
    if dropout is not None:
        attn = dropout(attn)
    record("attention weights", attn, "" if dropout is None else "after attention dropout")
    out = None
    for o, v_shift in enumerate(shifted_views(v, kernel_size, dilation)):
        term = attn[..., o : o + 1] * v_shift  # B, heads, H, W, d
        out = term if out is None else out + term
    return out


def head_runs(dilations) -> list[tuple[int, int, int]]:
    """(first head, end head, dilation) of each run of consecutive heads with one dilation."""
    runs = []
    for head, r in enumerate(dilations):
        if runs and runs[-1][2] == r:
            runs[-1] = (runs[-1][0], head + 1, r)
        else:
            runs.append((head, head + 1, r))
    return runs


def swda_shift_heads(q, k, v, kernel_size, dilations, padding, scale):
    """``swda_shift`` with one dilation per head: one call per run of heads that share one.

    The heads are taken apart with ``split`` (whose backward is one concatenation), not
    by slicing (each slice's backward would be a zero-filled tensor the size of q)."""
    runs = head_runs(dilations)
    sizes = [b - a for a, b, _ in runs]
    parts = zip(q.split(sizes, dim=1), k.split(sizes, dim=1), v.split(sizes, dim=1), runs)
    return torch.cat(
        [swda_shift(qr, kr, vr, kernel_size, r, padding, scale) for qr, kr, vr, (_, _, r) in parts], dim=1
    )  # B, heads, H, W, d


def _naive_can_run(q, k, v, kernel_size, dilation, padding):
    H, W = q.shape[2], q.shape[3]
    steps = H * W * kernel_size * kernel_size
    if steps > NAIVE_MAX_STEPS:
        return (
            f"it loops in Python over H * W * kernel_size**2 = {steps} steps here, more than its "
            f"limit of {NAIVE_MAX_STEPS} (it would take minutes); use a smaller map or "
            "impl='unfold', 'shift' or 'auto', which compute the same thing"
        )
    return None


register(
    "naive", swda_naive,
    summary="explicit Python loops over pixels and window offsets (the definition)",
    can_run=_naive_can_run,
)
register(
    "unfold", swda_unfold,
    summary="the paper's nn.Unfold form: K and V copied k*k times",
)
register(
    "shift", swda_shift,
    summary="a loop over the k*k offsets with shifted views; plain operators, so every "
    "autograd and torch.func transform works",
    auto_rank=30,
)
