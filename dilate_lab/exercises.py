"""The course's exercises, one namespace per lesson.

In a notebook::

    from dilate_lab.exercises import lesson02
    lesson02.swda_loop.check(my_swda_loop)   # feedback
    lesson02.swda_loop.hint()                # a nudge
    lesson02.swda_loop.solution()            # the worked answer, one call away

The expected answers come from ``dilate_lab.swda`` and ``dilate_lab.geometry``,
which the package tests check against an independent dense reference.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .checking import Exercise, Incorrect, NotAttempted, call_answer, compare, is_blank
from .geometry import padding_counts, window_offsets
from .swda import swda

__all__ = ["lesson00", "lesson01", "lesson02", "lesson03", "lesson05"]


def _random_qkv(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3)]


# --------------------------------------------------------------------------- integers
def _check_int(answer, expected: int, what: str, wrong_guesses: dict[int, str]) -> None:
    if is_blank(answer):
        raise NotAttempted("the answer is still empty.")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise Incorrect(f"expected an int ({what}), got {type(answer).__name__} {answer!r}.")
    if answer != expected:
        reason = wrong_guesses.get(answer, "")
        raise Incorrect(f"{answer} is not {what}. {reason}".strip())


# --------------------------------------------------------------------------- lesson 00
def _check_span(answer) -> str:
    _check_int(
        answer,
        expected=(3 - 1) * 2 + 1,
        what="the span of a 3x3 window with dilation 2",
        wrong_guesses={
            3: "That is the kernel size: dilation spreads the same 3 positions further apart.",
            6: "That is 3 * 2: count the pixels from the first window position to the last, "
            "both included, and do not count past the last one.",
            4: "Off by one: count both the first and the last window position.",
            7: "That would be a 3x3 window with dilation 3.",
        },
    )
    return "a 3x3 window with dilation 2 covers pixels -2, 0 and +2: 5 pixels from end to end."


lesson00 = SimpleNamespace(
    span=Exercise(
        "the span of a dilated window",
        _check_span,
        hints=[
            "Draw one row of the window: with dilation 2 the positions are -2, 0, +2 around the query.",
            "The span counts every pixel from the leftmost position to the rightmost, both included: "
            "(kernel_size - 1) * dilation + 1.",
        ],
        solution="span = (3 - 1) * 2 + 1   # = 5: positions -2, 0, +2 and the pixels between them",
    )
)


# --------------------------------------------------------------------------- lesson 01
def _check_attention_cost(fn) -> str:
    cases = [(4, 4, None), (7, 5, None), (56, 56, None), (4, 4, 3), (7, 5, 3), (56, 56, 3), (14, 9, 7)]
    for H, W, kernel_size in cases:
        got = call_answer(fn, H, W, kernel_size)
        n = H * W
        expected = n * n if kernel_size is None else n * kernel_size**2
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        if got != expected:
            if kernel_size is None:
                detail = (
                    "global attention scores every query against every key: N = H * W queries, "
                    "N keys each."
                )
            else:
                detail = (
                    "a sliding window scores every query against k * k keys, whatever the dilation "
                    "(zero-padded positions count: they are scored too)."
                )
            raise Incorrect(
                f"attention_cost({H}, {W}, kernel_size={kernel_size}) returned {got!r}, "
                f"expected {expected}: {detail}"
            )
    return (
        "global attention grows as N^2, a sliding window as N * k^2: at 56x56 that is "
        f"{(56 * 56) ** 2:,} scores against {56 * 56 * 9:,}."
    )


lesson01 = SimpleNamespace(
    attention_cost=Exercise(
        "count the attention scores",
        _check_attention_cost,
        hints=[
            "With N = H * W pixels, global attention compares every query with every key.",
            "A k x k window gives each of the N queries exactly k * k scores (border positions "
            "included: the paper zero-pads, so they are computed too).",
        ],
        solution='''
def attention_cost(H, W, kernel_size=None):
    n = H * W
    if kernel_size is None:
        return n * n               # every query against every key
    return n * kernel_size ** 2    # every query against its k x k window
''',
    )
)


# --------------------------------------------------------------------------- lessons 02 and 03
_SWDA_CASES = [  # (kernel_size, dilation, (B, heads, H, W, head_dim))
    (3, 1, (1, 2, 5, 6, 3)),
    (3, 2, (2, 1, 6, 5, 4)),
    (5, 1, (1, 1, 4, 7, 2)),
    (3, 3, (1, 2, 7, 7, 3)),
]


def _diagnose_swda(out, q, k, v, kernel_size, dilation) -> None:
    """Explain the most likely mistake behind a wrong SWDA output, then fall back to a diff."""
    expected = swda(q, k, v, kernel_size, dilation, impl="shift")
    try:
        compare(out, expected)
        return
    except Incorrect as mismatch:
        generic = mismatch
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        raise generic
    out = out.detach().to(expected.dtype)

    def same(other):
        return torch.allclose(out, other, atol=1e-5, rtol=1e-4)

    where = f"(kernel_size={kernel_size}, dilation={dilation})"
    if same(swda(q, k, v, kernel_size, dilation, padding="mask", impl="shift")):
        raise Incorrect(
            f"{where} your border leaves padded positions out of the softmax (masking). The paper "
            "zero-pads: a padded key is a zero vector, its logit is 0 (not -inf), so it still takes "
            "softmax mass, and its value is zero."
        )
    if dilation > 1 and same(swda(q, k, v, kernel_size, 1, impl="shift")):
        raise Incorrect(
            f"{where} your output equals the dilation-1 result: the dilation is ignored. The window "
            "positions are i + p * dilation, not i + p."
        )
    if same(swda(q, k, v, kernel_size, dilation, scale=1.0, impl="shift")):
        raise Incorrect(
            f"{where} your logits are not scaled: multiply q . k by head_dim ** -0.5 before the softmax."
        )
    interior = padding_counts(q.shape[2], q.shape[3], kernel_size, dilation) == 0  # H, W
    if interior.any() and torch.allclose(
        out[:, :, interior], expected[:, :, interior], atol=1e-5, rtol=1e-4
    ):
        raise Incorrect(
            f"{where} pixels whose window lies on the map are right, but border pixels differ: "
            f"check the border. {generic}"
        )
    raise Incorrect(f"{where} {generic}")


def _check_swda_function(fn, must_call=None) -> None:
    for case, (kernel_size, dilation, shape) in enumerate(_SWDA_CASES):
        q, k, v = _random_qkv(shape, seed=case)
        q.requires_grad_(True)
        k.requires_grad_(True)
        v.requires_grad_(True)
        originals = [t.detach().clone() for t in (q, k, v)]
        with _FunctionRecorder() as calls:
            out = call_answer(fn, q, k, v, kernel_size, dilation)
        if must_call is not None and not any(f in calls.seen for f in must_call[0]):
            raise Incorrect(must_call[1])
        for name, t, before in zip("qkv", (q, k, v), originals):
            if not torch.equal(t.detach(), before):
                raise Incorrect(f"your function modified its input {name} in place; leave inputs untouched.")
        _diagnose_swda(out, q.detach(), k.detach(), v.detach(), kernel_size, dilation)
        if not out.requires_grad:
            raise Incorrect(
                "the output does not require grad: no gradient can reach q, k or v. Did you "
                "detach(), use .item()/.tolist(), or build the output with torch.tensor(...)? "
                "Assemble it from the inputs with torch operations."
            )
        out.sum().backward()
        for name, t in zip("qkv", (q, k, v)):
            if t.grad is None or not bool(t.grad.abs().sum() > 0):
                raise Incorrect(
                    f"no gradient reaches {name}: somewhere the computation leaves autograd "
                    "(detach, .data, numpy, or copying values with .item())."
                )


class _FunctionRecorder(TorchFunctionMode):
    """Records which torch functions a learner's code calls."""

    def __enter__(self):
        self.seen = set()
        return super().__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.add(func)
        return func(*args, **(kwargs or {}))


def _check_swda_loop(fn) -> str:
    _check_swda_function(fn)
    return (
        "your loop matches dilate_lab.swda for kernels 3 and 5, dilations 1 to 3, border included, "
        "and gradients reach q, k and v."
    )


def _check_swda_unfold(fn) -> str:
    _check_swda_function(
        fn,
        must_call=(
            {F.unfold},
            "your function never calls F.unfold (or nn.Unfold): this exercise is about the "
            "vectorised form. Unfold K and V into (B*heads, d*k*k, H*W) columns.",
        ),
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


# --------------------------------------------------------------------------- lesson 05
def _span_by_growing(kernel_size: int, dilations) -> int:
    """Receptive field of a stack, by growing the set of reachable offsets layer by layer."""
    reach = {0}
    for dilation in dilations:
        reach = {x + dr for x in reach for dr, _ in window_offsets(kernel_size, dilation)}
    return max(reach) - min(reach) + 1


def _check_stacked_span(fn) -> str:
    for kernel_size, dilations in [(3, [1]), (3, [1, 1, 1]), (3, [1, 2, 3]), (5, [2, 2]), (3, [3, 1])]:
        got = call_answer(fn, kernel_size, dilations)
        expected = _span_by_growing(kernel_size, dilations)
        if got != expected:
            raise Incorrect(
                f"stacked_span({kernel_size}, {dilations}) returned {got!r}, expected {expected}: "
                "each layer widens the reach by (kernel_size - 1) * dilation pixels in all."
            )
    return "spans add: 1 + sum((k - 1) * r). Three 3x3 layers with dilations [1, 2, 3] reach 13 pixels."


lesson05 = SimpleNamespace(
    stacked_span=Exercise(
        "the receptive field of stacked windows",
        _check_stacked_span,
        hints=[
            "One layer with kernel k and dilation r reaches (k - 1) * r // 2 pixels on each side.",
            "Each further layer adds its own reach to every position already reached.",
        ],
        solution='''
def stacked_span(kernel_size, dilations):
    return 1 + sum((kernel_size - 1) * r for r in dilations)
''',
    )
)
