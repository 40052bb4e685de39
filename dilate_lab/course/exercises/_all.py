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

import functools
import itertools
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..bugs import (
    DetachedMultiDilateAttention,
    FixedRateMultiDilateAttention,
    InPlaceMultiDilateAttention,
)
from ..checking import Exercise, Incorrect, NotAttempted, call_answer, compare, is_blank
from ...functional import swda
from ...geometry import padding_counts, window_offsets
from ...nn import DilateFormer, MultiDilateAttention

__all__ = ["lesson00", "lesson01", "lesson02", "lesson03", "lesson04", "lesson05"]


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
        expected=(5 - 1) * 2 + 1,
        what="the span of a 5x5 window with dilation 2",
        wrong_guesses={
            5: "That is the kernel size: dilation spreads the same 5 positions further apart.",
            10: "That is 5 * 2: count the pixels from the first window position to the last, "
            "both included, and do not count past the last one.",
            8: "Off by one: count both the first and the last window position.",
            11: "One gap too many: 5 positions have 4 gaps between them, each 2 pixels wide.",
            13: "That would be a 5x5 window with dilation 3.",
            5 * 5: "That is the number of positions in the window (k * k), not its width.",
        },
    )
    return "a 5x5 window with dilation 2 covers pixels -4, -2, 0, +2, +4: 9 pixels from end to end."


lesson00 = SimpleNamespace(
    span=Exercise(
        "the span of a dilated window",
        _check_span,
        hints=[
            "Draw one row of the window: with dilation 2 the positions are -4, -2, 0, +2, +4 around the query.",
            "The span counts every pixel from the leftmost position to the rightmost, both included: "
            "(kernel_size - 1) gaps of dilation pixels, plus one.",
        ],
        solution="span = (5 - 1) * 2 + 1   # = 9: positions -4 ... +4 and the pixels between them",
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


def _diagnose_swda(out, q, k, v, kernel_size, dilation, known_mistakes=()) -> None:
    """Explain the most likely mistake behind a wrong SWDA output, then fall back to a diff.

    ``known_mistakes``: (function, message) pairs; a function computes what a
    typical wrong answer returns, and the message explains that mistake.
    """
    expected = swda(q, k, v, kernel_size, dilation, impl="shift")
    try:
        compare(out, expected)
        return
    except Incorrect as mismatch:
        generic = mismatch
    where = f"(kernel_size={kernel_size}, dilation={dilation})"
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        raise Incorrect(f"{where} {generic}")
    out = out.detach().to(expected.dtype)

    def same(other):
        return torch.allclose(out, other, atol=1e-5, rtol=1e-4)

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
    for mistake, message in known_mistakes:
        if same(mistake(q, k, v, kernel_size, dilation)):
            raise Incorrect(f"{where} {message}")
    interior = padding_counts(q.shape[2], q.shape[3], kernel_size, dilation) == 0  # H, W
    if interior.any() and torch.allclose(
        out[:, :, interior], expected[:, :, interior], atol=1e-5, rtol=1e-4
    ):
        raise Incorrect(
            f"{where} pixels whose window lies on the map are right, but border pixels differ: "
            "check the border (careful: Python's negative indices wrap around, so k[:, :, -1] is "
            f"the last row, not padding; test 0 <= row < H as well as row < H). {generic}"
        )
    raise Incorrect(f"{where} {generic}")


def _check_swda_function(fn, must_call=None, known_mistakes=(), crash_advice=None) -> None:
    """Run a learner's SWDA on every case; ``crash_advice(message)`` may add a tip to a crash."""
    for case, (kernel_size, dilation, shape) in enumerate(_SWDA_CASES):
        where = f"(kernel_size={kernel_size}, dilation={dilation}, q of shape {shape})"
        q, k, v = _random_qkv(shape, seed=case)
        q.requires_grad_(True)
        k.requires_grad_(True)
        v.requires_grad_(True)
        originals = [t.detach().clone() for t in (q, k, v)]
        try:
            with _FunctionRecorder() as calls:
                out = call_answer(fn, q, k, v, kernel_size, dilation)
        except Incorrect as crash:
            tip = crash_advice(str(crash)) if crash_advice else ""
            raise Incorrect(f"{where} {crash}{' ' + tip if tip else ''}") from None
        if must_call is not None and not any(f in calls.seen for f in must_call[0]):
            raise Incorrect(must_call[1])
        for name, t, before in zip("qkv", (q, k, v), originals):
            if not torch.equal(t.detach(), before):
                raise Incorrect(f"your function modified its input {name} in place; leave inputs untouched.")
        _diagnose_swda(out, q.detach(), k.detach(), v.detach(), kernel_size, dilation, known_mistakes)
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


def _unfold_rows_as_positions_then_channels(q, k, v, kernel_size, dilation):
    """The typical mistake: splitting unfold's d*k*k rows as (k*k, d) instead of (d, k*k)."""
    B, heads, H, W, d = q.shape
    kk = kernel_size * kernel_size

    def windows(x):
        x = x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W)  # B*heads, d, H, W
        cols = F.unfold(x, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2))
        return cols.reshape(B, heads, kk, d, H * W).permute(0, 1, 4, 2, 3)  # B, heads, H*W, kk, d

    logits = (q.reshape(B, heads, H * W, 1, d) * d**-0.5) @ windows(k).transpose(-1, -2)
    return (torch.softmax(logits, dim=-1) @ windows(v)).reshape(B, heads, H, W, d)


def _unfold_crash_advice(message: str) -> str:
    if "RuntimeError" in message and ("invalid" in message or "size" in message):
        return (
            "A shape error after F.unfold usually means the number of columns is not H*W: "
            "pad by dilation * (kernel_size // 2), not kernel_size // 2, so that every pixel gets "
            "exactly one window."
        )
    return ""


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
            )
        ],
        crash_advice=_unfold_crash_advice,
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


# --------------------------------------------------------------------------- lesson 04
def _seeded(build, seed: int = 0):
    """Build a module with seeded weights, leaving the caller's random stream alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build()
        with torch.no_grad():  # non-trivial weights and biases, so every parameter matters
            for p in module.parameters():
                p.normal_(0.0, 0.3)
    return module


def _msda_by_groups(q, k, v, kernel_size, dilations, group_of_head=None):
    """MSDA on (B, heads, H, W, d): head h attends with dilations[group_of_head(h)].

    By default the heads are split into contiguous groups (the paper's and the
    official code's layout); other assignments produce the outputs of common mistakes.
    """
    heads = q.shape[1]
    per_group = heads // len(dilations)

    def contiguous(h):
        return h // per_group

    group_of_head = group_of_head or contiguous
    outputs = [
        swda(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], kernel_size,
             dilations[group_of_head(h)], impl="shift")  # B, 1, H, W, d
        for h in range(heads)
    ]
    return torch.cat(outputs, dim=1)  # B, heads, H, W, d


_MSDA_CASES = [  # (kernel_size, dilations, (B, heads, H, W, head_dim))
    (3, (1, 2, 3), (1, 6, 9, 9, 4)),
    (3, (2, 1), (2, 4, 7, 6, 3)),
    (5, (1, 3), (1, 2, 9, 8, 2)),
    (3, (3,), (1, 2, 7, 7, 2)),
]


def _diagnose_msda(out, q, k, v, kernel_size, dilations) -> None:
    """Explain the most likely mistake behind a wrong MSDA output, then fall back to a diff."""
    where = f"(kernel_size={kernel_size}, dilations={dilations}, q of shape {tuple(q.shape)})"
    expected = _msda_by_groups(q, k, v, kernel_size, dilations)
    B, heads, H, W, d = q.shape
    n = len(dilations)
    if isinstance(out, torch.Tensor) and out.shape != expected.shape:
        if tuple(out.shape) == (B, H, W, heads * d):
            raise Incorrect(
                f"{where} your output is channels-last {tuple(out.shape)}: this exercise keeps the "
                f"heads apart, (B, heads, H, W, head_dim) = {tuple(expected.shape)}; merging them "
                "into channels is MultiDilateAttention's job."
            )
        if n > 1 and tuple(out.shape) == (B, heads // n, H, W, d):
            raise Incorrect(
                f"{where} your output has the shape of one group, {tuple(out.shape)}: concatenate "
                f"the {n} groups' outputs along the heads (dim=1) to get {tuple(expected.shape)}."
            )
    try:
        compare(out, expected)
        return
    except Incorrect as mismatch:
        generic = mismatch
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        raise Incorrect(f"{where} {generic}")
    out = out.detach().to(expected.dtype)

    def same(other):
        return torch.allclose(out, other, atol=1e-5, rtol=1e-4)

    for r in dict.fromkeys(dilations):
        if n > 1 and same(swda(q, k, v, kernel_size, r, impl="shift")):
            raise Incorrect(
                f"{where} every group used the same dilation, {r}: group i must run swda with "
                "dilations[i], on its own heads only."
            )
    if n > 1 and heads > n and same(_msda_by_groups(q, k, v, kernel_size, dilations, lambda h: h % n)):
        raise Incorrect(
            f"{where} you gave the heads their dilations in turn (head h gets dilations[h % {n}]). "
            f"MSDA splits the heads into {n} contiguous blocks: heads 0 to {heads // n - 1} get "
            f"dilations[0], the next {heads // n} get dilations[1], and so on."
        )
    for order in itertools.permutations(dilations):
        if order != tuple(dilations) and same(_msda_by_groups(q, k, v, kernel_size, order)):
            raise Incorrect(
                f"{where} your groups used the dilations in the order {order}: the first block of "
                "heads goes with dilations[0], the second with dilations[1] ... (do not sort or "
                "reverse them)."
            )
    raise Incorrect(f"{where} {generic}")


def _check_msda(fn) -> str:
    for case, (kernel_size, dilations, shape) in enumerate(_MSDA_CASES):
        q, k, v = _random_qkv(shape, seed=10 + case)
        for t in (q, k, v):
            t.requires_grad_(True)
        originals = [t.detach().clone() for t in (q, k, v)]
        out = call_answer(fn, q, k, v, kernel_size, list(dilations))
        for name, t, before in zip("qkv", (q, k, v), originals):
            if not torch.equal(t.detach(), before):
                raise Incorrect(f"your function modified its input {name} in place; leave inputs untouched.")
        _diagnose_msda(out, q.detach(), k.detach(), v.detach(), kernel_size, dilations)
        if not out.requires_grad:
            raise Incorrect(
                "your output does not require grad, so no gradient can reach q, k or v (and in a "
                "model, none would reach the qkv projection): did you detach() or build it with "
                "torch.tensor(...)? Assemble it with torch.cat from swda's outputs."
            )
        out.sum().backward()
        for name, t in zip("qkv", (q, k, v)):
            if t.grad is None or not bool(t.grad.abs().sum() > 0):
                raise Incorrect(f"no gradient reaches {name}: somewhere the computation leaves autograd.")
    return (
        "your MSDA gives each contiguous block of heads its own dilation, in order, with "
        "gradients flowing: exactly eq. (4) and the Concat of eq. (5) of the paper (the Linear "
        "projection of eq. (5) stays in the module)."
    )


def _as_verdict(result, who: str) -> bool:
    """A learner's check result as a bool: True/False, a numpy bool or a one-element tensor."""
    if isinstance(result, torch.Tensor) and result.numel() == 1 and result.dtype == torch.bool:
        return bool(result.item())
    if isinstance(result, (bool, np.bool_)):
        return bool(result)
    raise Incorrect(f"your check returned {result!r} for {who}: return True or False.")


def _run_check(fn, module, who: str) -> bool:
    try:
        return _as_verdict(call_answer(fn, module), who)
    except Incorrect as error:
        message = str(error)
        if "modified by an inplace operation" in message:
            raise Incorrect(
                f"for {who} your check crashed with the very error it should detect: RuntimeError "
                "'one of the variables needed for gradient computation has been modified by an "
                "inplace operation'. Wrap the forward and backward pass in try/except RuntimeError "
                "and return False when it is raised."
            ) from None
        raise Incorrect(f"for {who}: {message}") from None


def _msda_module(kind=MultiDilateAttention, dim=12, num_heads=6, dilation=(1, 2, 3), kernel_size=3, seed=0):
    """A correct or buggy MSDA module (float32, CPU) with seeded weights, for a learner's check."""
    return _seeded(lambda: kind(dim, num_heads, kernel_size=kernel_size, dilation=dilation, qkv_bias=True), seed)


def _expect(fn, cases) -> None:
    """cases: (build a module, a name for it, expected verdict, message when the verdict is wrong)."""
    for build, who, expected, why in cases:
        if _run_check(fn, build(), who) != expected:
            raise Incorrect(f"your check returned {not expected} for {who}, expected {expected}: {why}")


def _check_backward_runs(fn) -> str:
    _expect(fn, [
        (lambda: _msda_module(), "the correct MultiDilateAttention", True,
         "a forward pass then out.sum().backward() runs without an error there."),
        (lambda: _msda_module(InPlaceMultiDilateAttention), "InPlaceMultiDilateAttention", False,
         "its backward() raises a RuntimeError. Did your check run backward()?"),
        (lambda: _msda_module(DetachedMultiDilateAttention), "DetachedMultiDilateAttention", True,
         "its backward() runs (that is what makes the 'fix' tempting). This check answers one question only: "
         "does backward raise?"),
    ])
    return (
        "your check catches the in-place bug. Notice that it passes the detached version: a check that "
        "backward runs says nothing about where the gradient goes."
    )


def _check_qkv_gets_gradient(fn) -> str:
    def stale():
        module = _msda_module(DetachedMultiDilateAttention)
        for p in module.parameters():  # as if an earlier step had left its gradients behind
            p.grad = torch.ones_like(p)
        return module

    _expect(fn, [
        (lambda: _msda_module(), "the correct MultiDilateAttention", True,
         "after out.sum().backward(), module.qkv.weight.grad is not None and not all zero."),
        (lambda: _msda_module(DetachedMultiDilateAttention), "DetachedMultiDilateAttention", False,
         "after backward its qkv.weight.grad is still None. Check for None, and for all zeros."),
        (lambda: _msda_module(FixedRateMultiDilateAttention), "FixedRateMultiDilateAttention", True,
         "its qkv does receive a gradient (its bug is elsewhere): test the gradient itself, nothing else."),
        (stale, "a DetachedMultiDilateAttention whose gradients still hold an earlier step's values", False,
         "clear the gradients first (module.zero_grad()), so that you only see this backward pass."),
    ])
    return (
        "your check catches the detach 'fix': the model trains, the loss goes down, and the qkv "
        "projection stays exactly as it was initialised."
    )


def _check_dilation_matters(fn) -> str:
    _expect(fn, [
        (lambda: _msda_module(), "the correct MultiDilateAttention with dilation (1, 2, 3)", True,
         "its dilation-3 heads see the pixel 3 columns away from the query."),
        (lambda: _msda_module(FixedRateMultiDilateAttention), "FixedRateMultiDilateAttention with "
         "dilation (1, 2, 3)", False,
         "it never looks further than 1 pixel: an input pixel 3 columns away does not change the output."),
        (lambda: _msda_module(dim=8, num_heads=2, dilation=(3,)), "the correct MultiDilateAttention "
         "with dilation (3,)", True, "its only group reaches 3 pixels away."),
        (lambda: _msda_module(FixedRateMultiDilateAttention, dim=8, num_heads=4, dilation=(1, 2), kernel_size=5),
         "FixedRateMultiDilateAttention with kernel_size 5 and dilation (1, 2)", False,
         "it reaches 2 pixels, not 2 * (5 // 2) = 4: use module.kernel_size as well as module.dilation."),
        (lambda: _msda_module(dilation=(1, 1, 1)), "the correct MultiDilateAttention with dilation "
         "(1, 1, 1)", True, "its windows reach max(dilation) * (kernel_size // 2) = 1 pixel, as they should."),
    ])
    return (
        "your check catches the ignored dilation: a port that reuses one fixed-rate unfold reaches "
        "only kernel_size // 2 pixels, whatever its dilation says."
    )


_CHECK_SETUP = """\
import torch

def {name}(module):
    torch.manual_seed(0)
    x = torch.randn(1, 9, 9, module.dim)        # B, H, W, C: channels-last, like the official code
"""

lesson04 = SimpleNamespace(
    msda=Exercise(
        "multi-scale dilated attention, functional",
        _check_msda,
        hints=[
            "Split the heads (dim 1) into len(dilations) contiguous blocks of "
            "per_group = heads // len(dilations) heads: block i is "
            "q[:, i * per_group : (i + 1) * per_group].",
            "Run swda(q_i, k_i, v_i, kernel_size, dilations[i]) on each block, then torch.cat the "
            "outputs along dim 1.",
        ],
        solution='''
def msda(q, k, v, kernel_size, dilations):
    per_group = q.shape[1] // len(dilations)                 # heads per dilation
    outputs = []
    for i, r in enumerate(dilations):
        heads = slice(i * per_group, (i + 1) * per_group)     # a contiguous block of heads
        outputs.append(swda(q[:, heads], k[:, heads], v[:, heads], kernel_size, r))  # B, per_group, H, W, d
    return torch.cat(outputs, dim=1)                          # B, heads, H, W, d
''',
    ),
    backward_runs=Exercise(
        "a check that catches the in-place bug",
        _check_backward_runs,
        hints=[
            "Make a random channels-last input (1, 9, 9, module.dim), run the module, and call "
            ".sum().backward() on the output.",
            "Put the forward and backward pass inside try: ... except RuntimeError: return False.",
        ],
        solution=_CHECK_SETUP.format(name="backward_runs") + '''\
    try:
        module(x).sum().backward()
    except RuntimeError:                              # "... modified by an inplace operation"
        return False
    return True
''',
    ),
    qkv_gets_gradient=Exercise(
        "a check that catches the detach 'fix'",
        _check_qkv_gets_gradient,
        hints=[
            "Clear old gradients with module.zero_grad(), run forward and out.sum().backward(), "
            "then look at module.qkv.weight.grad.",
            "A parameter that took no part in the graph keeps grad None; one that did but had no "
            "influence gets zeros. Return False in both cases.",
        ],
        solution=_CHECK_SETUP.format(name="qkv_gets_gradient") + '''\
    module.zero_grad()                                # forget gradients of earlier steps
    module(x).sum().backward()
    grad = module.qkv.weight.grad
    return grad is not None and bool(grad.abs().sum() > 0)
''',
    ),
    dilation_matters=Exercise(
        "a check that catches an ignored dilation",
        _check_dilation_matters,
        hints=[
            "The widest group should reach R = max(module.dilation) * (module.kernel_size // 2) "
            "pixels from its query. Does the output at the centre depend on the input R columns away?",
            "Either change that one input pixel and compare the centre output before and after, or "
            "backward from the centre output and look at x.grad there. Make the map wide enough: "
            "2 * R + 1 pixels at least.",
        ],
        solution='''
import torch

def dilation_matters(module):
    reach = max(module.dilation) * (module.kernel_size // 2)    # how far the widest group should see
    size = 2 * reach + 1
    x = torch.randn(1, size, size, module.dim, requires_grad=True)  # B, H, W, C
    module(x)[0, reach, reach].sum().backward()                # the centre pixel's output
    return bool(x.grad[0, reach, size - 1].abs().sum() > 0)     # the input pixel `reach` columns away
''',
    ),
)


# --------------------------------------------------------------------------- lesson 05, continued
_STAGES = 4
_STAGE_CASES = [(224, 72), (256, 96), (64, 72), (384, 96), (200, 72), (240, 96)]
"""(image_size, embed_dim): multiples of 32 first, then 200 and 240, where a stride-2
convolution meets an odd side (25 -> 13, 15 -> 8) and rounds up."""


def _halve(side: int) -> int:
    """A 3x3 convolution with stride 2 and padding 1: floor((n + 2 - 3) / 2) + 1 = ceil(n / 2)."""
    return (side + 1) // 2


@functools.lru_cache(maxsize=16)
def _stage_shapes(image_size: int, embed_dim: int) -> tuple[tuple[int, int, int], ...]:
    """(channels, height, width) entering the first block of each stage, measured on a real model.

    A DilateFormer with ``embed_dim`` (one block per stage: depth changes no shape)
    runs on PyTorch's meta device (shapes only, no memory or time). Its stem and
    stages are called directly, because ``DilateFormer.forward`` insists on sides
    that are multiples of 32 while the convolutions take any size.
    """
    model = DilateFormer(embed_dim=embed_dim, depths=(1,) * _STAGES, num_classes=0, drop_path_rate=0.0)
    model = model.to("meta").eval()
    x = torch.zeros(1, 3, image_size, image_size, device="meta")  # B, 3, H, W
    shapes = []
    with torch.no_grad():
        x = model.patch_embed(x)  # B, embed_dim, H/4, W/4 (rounded up)
        for stage in model.stages:
            shapes.append(tuple(int(n) for n in x.shape[1:]))  # C, H, W
            x = stage(x)
    return tuple(shapes)


def _pyramid(image_size: int, channels: int, divisor: int) -> list[tuple[int, int, int]]:
    """Four (channels, side, side) maps from (channels, image_size // divisor), halving (rounding
    down) and doubling: the answers of common mistakes."""
    return [
        (channels * 2**i, image_size // (divisor * 2**i), image_size // (divisor * 2**i))
        for i in range(_STAGES)
    ]


def _check_stage_shapes(fn) -> str:
    for image_size, embed_dim in _STAGE_CASES:
        got = call_answer(fn, image_size, embed_dim)
        try:
            got = [tuple(int(n) for n in shape) for shape in got]
        except (TypeError, ValueError):
            raise Incorrect(
                f"stage_shapes({image_size}, {embed_dim}) returned {got!r}: return a list of four "
                "(channels, height, width) tuples."
            ) from None
        expected = list(_stage_shapes(image_size, embed_dim))
        if got == expected:
            continue
        call = f"stage_shapes({image_size}, {embed_dim}) returned {got}, expected {expected}"
        if len(got) != _STAGES:
            raise Incorrect(f"{call}: DilateFormer has {_STAGES} stages, one shape each.")
        if got == [(h, w, c) for c, h, w in expected]:
            raise Incorrect(f"{call}: order each shape (channels, height, width), like PyTorch's (B, C, H, W).")
        if got == _pyramid(image_size, embed_dim, 1):
            raise Incorrect(
                f"{call}: the stem has two stride-2 convolutions, so stage 1 already works at 1/4 "
                "of the image side."
            )
        if [shape[1:] for shape in got] == [shape[1:] for shape in expected]:
            raise Incorrect(f"{call}: the channels double at every downsampling (embed_dim, 2x, 4x, 8x).")
        if got == _pyramid(image_size, 2 * embed_dim, 8):
            raise Incorrect(
                f"{call}: those are the maps after each stage's downsampling. The blocks of stage 1 work "
                "on the stem's output; the last stage does not downsample."
            )
        if got == _pyramid(image_size, embed_dim, 4):
            odd = next(side for _, side, _ in expected if side % 2)
            raise Incorrect(
                f"{call}: a 3x3 convolution with stride 2 and padding 1 turns n pixels into "
                f"ceil(n / 2) = (n + 1) // 2, not n // 2; a side of {odd} becomes {_halve(odd)}. "
                "Halve step by step, rounding up, rather than dividing the image side once."
            )
        raise Incorrect(f"{call}.")
    return (
        "each stride-2 convolution halves the side (rounding up) and each downsampling doubles the "
        "channels: the attention works on 56x56, 28x28, 14x14 and 7x7 maps of a 224x224 image (13x13 "
        "and 7x7 in the last two stages at 200), and only the first two (the large ones) use dilated windows."
    )


lesson05.stage_shapes = Exercise(
    "feature-map sizes through the stages",
    _check_stage_shapes,
    hints=[
        "The stem divides the side by 4 (two stride-2 convolutions); every downsampling between "
        "stages halves it and doubles the channels. Stage i (from 0) has embed_dim * 2**i channels.",
        "A 3x3 convolution with stride 2 and padding 1 turns a side of n into (n + 1) // 2 (it rounds "
        "up: 25 becomes 13). Apply that twice for the stem, then once between stages: "
        "side = (side + 1) // 2.",
    ],
    solution='''
def stage_shapes(image_size, embed_dim):
    side = image_size
    for _ in range(2):                    # the stem's two stride-2 convolutions
        side = (side + 1) // 2            # 3x3, stride 2, padding 1: ceil(side / 2)
    shapes = []
    for i in range(4):
        shapes.append((embed_dim * 2**i, side, side))
        side = (side + 1) // 2            # the downsampling after the stage
    return shapes
''',
)
