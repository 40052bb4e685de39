"""Lessons 02 and 03's exercises: SWDA with explicit loops, then with nn.Unfold.

In a notebook::

    from dilate_lab.course.exercises import lesson02
    lesson02.swda_loop.check(my_swda_loop)   # feedback
    lesson02.swda_loop.hint()                # a nudge
    lesson02.swda_loop.solution()            # the worked answer, one call away

Both answers run on the same cases and get the same diagnoses (``_common``), and
neither may call dilate_lab's own attention. Lesson 03 adds that the windows of K
and V must come from F.unfold (every gradient path from k and v to the output runs
through the columns it returns, so a dummy unfold beside a loop does not count),
and diagnoses the usual unfold mistakes: rows split the wrong way, a reshape without
the permute, too little padding, a wrong permute after the unfold.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ..checking import Exercise, Incorrect
from ._common import _check_swda_function

__all__ = ["lesson02", "lesson03"]


def _check_swda_loop(fn) -> str:
    _check_swda_function(fn)
    return (
        "your loop matches dilate_lab.swda for kernels 3 and 5, dilations 1 to 3, border included, "
        "and gradients reach q, k and v."
    )


def _unfold_rows_as_positions_then_channels(q, k, v, kernel_size, dilation):
    """The typical mistake: splitting unfold's d*k*k rows as (k*k, d) instead of (d, k*k)."""
    B, heads, H, W, d = q.shape
    kk = kernel_size * kernel_size

    def windows(x):
        x = x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W)  # B*heads, d, H, W
        cols = F.unfold(x, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2))
        return cols.reshape(B, heads, kk, d, H * W).permute(0, 1, 4, 2, 3)  # B, heads, H*W, kk, d

    logits = (q.reshape(B, heads, H * W, 1, d) * d**-0.5) @ windows(k).transpose(-1, -2)  # B, heads, H*W, 1, kk
    return (torch.softmax(logits, dim=-1) @ windows(v)).reshape(B, heads, H, W, d)  # B, heads, H, W, d


def _unfold_without_moving_head_dim(q, k, v, kernel_size, dilation):
    """The commonest mistake: ``x.reshape(B * heads, d, H, W)`` straight from (B, heads, H, W, d),
    without the permute that brings head_dim forward (a reshape regroups, it never moves)."""
    B, heads, H, W, d = q.shape
    kk = kernel_size * kernel_size

    def windows(x):
        x = x.reshape(B * heads, d, H, W)  # the mistake: channels are now a mix of pixels and features
        cols = F.unfold(x, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2))
        return cols.reshape(B, heads, d, kk, H * W).permute(0, 1, 4, 3, 2)  # B, heads, H*W, kk, d

    logits = (q.reshape(B, heads, H * W, 1, d) * d**-0.5) @ windows(k).transpose(-1, -2)  # B, heads, H*W, 1, kk
    return (torch.softmax(logits, dim=-1) @ windows(v)).reshape(B, heads, H, W, d)  # B, heads, H, W, d


_AFTER_UNFOLD = (
    "Its (B*heads, d*k*k, H*W) columns reshape to (B, heads, d, k*k, H*W), then permute to "
    "(B, heads, H*W, k*k, d), so that each query row (..., 1, d) meets its window (..., k*k, d)."
)


def _unfold_crash_advice(message: str, calls, q) -> str:
    """A tip for a crash, from what F.unfold was given and returned (not from the error's words)."""
    if "Error" not in message or F.unfold not in calls.seen:
        return ""
    H, W = q.shape[2], q.shape[3]
    if not calls.unfolds:  # F.unfold itself raised
        return (
            "F.unfold takes (N, C, H, W): move head_dim next to the batch first, "
            "x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W)."
        )
    columns = [out.shape[-1] for _, out in calls.unfolds if isinstance(out, torch.Tensor)]
    wrong = [n for n in columns if n != H * W]
    if wrong:
        return (
            f"Your F.unfold made {wrong[0]} columns, not one per pixel (H*W = {H * W}): pad by "
            "dilation * (kernel_size // 2), not kernel_size // 2, so that every pixel gets "
            "exactly one window."
        )
    return (
        f"F.unfold gave one column per pixel (H*W = {H * W}), so the shapes go wrong after it, "
        f"in a reshape, permute or product that follows. {_AFTER_UNFOLD}"
    )


def _check_unfold_feeds_output(out, q, k, v, calls) -> None:
    """Refuse a right output unless every path from k and v to it runs through F.unfold's columns.

    The gradient of ``(out * R).sum()`` with respect to k (R random) is compared with
    the part of it that flows back through the outputs of the recorded F.unfold calls:
    equal when K's and V's windows are unfolded, zero for an unfold of some other
    tensor (or of k whose result is thrown away), in between when only part is.
    """
    R = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    total = torch.autograd.grad(out, (k, v), R, retain_graph=True, allow_unused=True)
    through = (None, None)
    columns = [cols for _, cols in calls.unfolds if isinstance(cols, torch.Tensor) and cols.requires_grad]
    if columns:
        back = torch.autograd.grad(out, columns, R, retain_graph=True, allow_unused=True)
        used = [(cols, g) for cols, g in zip(columns, back) if g is not None]
        if used:
            through = torch.autograd.grad(
                [cols for cols, _ in used], (k, v), [g for _, g in used], retain_graph=True, allow_unused=True
            )
    missed = [
        name for name, t, u in zip("kv", total, through)
        if t is not None and (u is None or not torch.allclose(u, t, rtol=1e-6, atol=1e-9))
    ]
    if missed:
        which = " and ".join(missed)
        raise Incorrect(
            f"your function calls F.unfold, but {which} reach{'es' if len(missed) == 1 else ''} "
            "the output some other way: this exercise builds the windows of K and V with F.unfold, "
            f"so every path from {which} to the output must run through the columns F.unfold "
            "returns (an unfold of another tensor, or one whose result is not used, does not count)."
        )


def _check_swda_unfold(fn) -> str:
    _check_swda_function(
        fn,
        must_call=(
            {F.unfold},
            "your function never calls F.unfold (or nn.Unfold): this exercise is about the "
            "vectorised form. Unfold K and V into (B*heads, d*k*k, H*W) columns.",
        ),
        known_mistakes=[
            (
                _unfold_rows_as_positions_then_channels,
                "you split unfold's d*k*k rows as (k*k, d); they are ordered (channel, window "
                "position): reshape to (B, heads, d, k*k, H*W), then permute the pixels first.",
            ),
            (
                _unfold_without_moving_head_dim,
                "you reshaped (B, heads, H, W, d) straight to (B*heads, d, H, W). A reshape regroups "
                "the numbers in memory order, it does not move head_dim: F.unfold's 'channels' were "
                "a mix of pixels and features. Permute first: x.permute(0, 1, 4, 2, 3).reshape(B * "
                "heads, d, H, W).",
            ),
        ],
        crash_advice=_unfold_crash_advice,
        uses=_check_unfold_feeds_output,
    )
    return "your unfold version matches the loop's semantics exactly, border and gradients included."


_LOOP_SOLUTION = '''
def swda_loop(q, k, v, kernel_size, dilation):
    B, heads, H, W, d = q.shape
    half = kernel_size // 2
    rows = []
    for i in range(H):
        row = []
        for j in range(W):
            q_ij = q[:, :, i, j, :] * d ** -0.5                   # B, heads, d
            logits, values = [], []
            for p in range(-half, half + 1):
                for s in range(-half, half + 1):
                    ii, jj = i + p * dilation, j + s * dilation
                    if 0 <= ii < H and 0 <= jj < W:
                        logits.append((q_ij * k[:, :, ii, jj, :]).sum(-1))   # B, heads
                        values.append(v[:, :, ii, jj, :])                    # B, heads, d
                    else:                                          # zero padding: logit 0, value 0
                        logits.append(q_ij.new_zeros(B, heads))
                        values.append(q_ij.new_zeros(B, heads, d))
            weights = torch.softmax(torch.stack(logits, -1), -1)              # B, heads, k*k
            row.append((weights[..., None] * torch.stack(values, -2)).sum(-2))  # B, heads, d
        rows.append(torch.stack(row, dim=2))                                  # B, heads, W, d
    return torch.stack(rows, dim=2)                                           # B, heads, H, W, d
'''

_UNFOLD_SOLUTION = '''
def swda_unfold(q, k, v, kernel_size, dilation):
    B, heads, H, W, d = q.shape
    kk = kernel_size * kernel_size

    def windows(x):                                        # B, heads, H, W, d
        x = x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W)
        cols = F.unfold(x, kernel_size, dilation=dilation,
                        padding=dilation * (kernel_size // 2))   # B*heads, d*kk, H*W
        cols = cols.reshape(B, heads, d, kk, H * W)
        return cols.permute(0, 1, 4, 3, 2)                 # B, heads, H*W, kk, d

    q_rows = q.reshape(B, heads, H * W, 1, d) * d ** -0.5  # B, heads, H*W, 1, d
    attn = torch.softmax(q_rows @ windows(k).transpose(-1, -2), dim=-1)  # B, heads, H*W, 1, kk
    out = attn @ windows(v)                                # B, heads, H*W, 1, d
    return out.reshape(B, heads, H, W, d)
'''

lesson02 = SimpleNamespace(
    swda_loop=Exercise(
        "SWDA with explicit loops",
        _check_swda_loop,
        hints=[
            "Loop over pixels (i, j), then over window offsets p, s in range(-(k//2), k//2 + 1); "
            "the key sits at (i + p * dilation, j + s * dilation).",
            "Outside the map, append a zero logit and a zero value rather than skipping the position: "
            "that is the paper's zero padding.",
            "Scale q by head_dim ** -0.5, softmax over the k*k logits, then sum weight * value. Use "
            "torch.stack to assemble results, so that gradients flow.",
        ],
        solution=_LOOP_SOLUTION,
    )
)

lesson03 = SimpleNamespace(
    swda_unfold=Exercise(
        "SWDA with nn.Unfold",
        _check_swda_unfold,
        hints=[
            "F.unfold wants (N, C, H, W): move head_dim next to the batch, "
            "x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W).",
            "With padding = dilation * (kernel_size // 2) the output has H*W columns, one window "
            "per pixel, rows ordered (channel, window position): reshape to (B, heads, d, k*k, H*W).",
            "Then each query row (1, d) times its window (k*k, d) transposed gives (1, k*k) logits.",
        ],
        solution=_UNFOLD_SOLUTION,
    )
)
