"""What the SWDA and MSDA checkers of lessons 02, 03, 04 and 06 share.

Each of those exercises hands a learner's attention function random q, k, v that
require grad, then asks the same questions in the same order: did it crash (and
is there a tip for that crash), did it touch its inputs, is the output right (and
if not, which usual mistake explains it), does a gradient reach q, k and v. The
pieces live here once, so that every lesson words the shared feedback alike.

The expected SWDA output comes from ``dilate_lab.functional.swda``, which the
package tests check against an independent dense reference.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from ..checking import Incorrect, call_answer, compare
from ...functional import swda
from ...geometry import padding_counts

_SWDA_CASES = [  # (kernel_size, dilation, (B, heads, H, W, head_dim))
    (3, 1, (1, 2, 5, 6, 3)),
    (3, 2, (2, 1, 6, 5, 4)),
    (5, 1, (1, 1, 4, 7, 2)),
    (3, 3, (1, 2, 7, 7, 3)),
]

_LEAVES_AUTOGRAD = "somewhere the computation leaves autograd."


def _random_qkv(shape, seed):
    """Three float64 tensors from one seeded generator, so that every run checks the same numbers."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3)]


def _leaf_qkv(shape, seed):
    """q, k, v that require grad, and copies of their values to catch an answer that edits them."""
    inputs = _random_qkv(shape, seed)
    for t in inputs:
        t.requires_grad_(True)
    return inputs, [t.detach().clone() for t in inputs]


def _check_untouched(inputs, originals) -> None:
    """Refuse an answer that changed q, k or v in place: the caller's tensors are not its to edit."""
    for name, t, before in zip("qkv", inputs, originals):
        if not torch.equal(t.detach(), before):
            raise Incorrect(f"your function modified its input {name} in place; leave inputs untouched.")


def _check_gradients(out, inputs, no_grad: str, leaves: str = _LEAVES_AUTOGRAD) -> None:
    """Backward from ``out.sum()``; ``no_grad`` explains an output cut from the graph, ``leaves``
    a gradient that stops before q, k or v (each lesson words these for its own answers)."""
    if not out.requires_grad:
        raise Incorrect(no_grad)
    out.sum().backward()
    for name, t in zip("qkv", inputs):
        if t.grad is None or not bool(t.grad.abs().sum() > 0):
            raise Incorrect(f"no gradient reaches {name}: {leaves}")


class _FunctionRecorder(TorchFunctionMode):
    """Records which torch functions a learner's code calls."""

    def __enter__(self):
        self.seen = set()
        return super().__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.add(func)
        return func(*args, **(kwargs or {}))


def _call_with_advice(fn, calls, q, k, v, kernel_size, dilation, crash_advice=None):
    """``call_answer`` under the recorder ``calls``; a crash names the case, and
    ``crash_advice(message)`` may add a tip for it."""
    where = f"(kernel_size={kernel_size}, dilation={dilation}, q of shape {tuple(q.shape)})"
    try:
        with calls:
            return call_answer(fn, q, k, v, kernel_size, dilation)
    except Incorrect as crash:
        tip = crash_advice(str(crash)) if crash_advice else ""
        raise Incorrect(f"{where} {crash}{' ' + tip if tip else ''}") from None


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
    """Run a learner's SWDA on every case of ``_SWDA_CASES`` (lessons 02 and 03).

    ``must_call``: (torch functions, message) refuses an answer that calls none of
    them; ``known_mistakes`` goes to ``_diagnose_swda``; ``crash_advice(message)``
    may add a tip to a crash.
    """
    for case, (kernel_size, dilation, shape) in enumerate(_SWDA_CASES):
        (q, k, v), originals = _leaf_qkv(shape, seed=case)
        calls = _FunctionRecorder()
        out = _call_with_advice(fn, calls, q, k, v, kernel_size, dilation, crash_advice)
        if must_call is not None and not any(f in calls.seen for f in must_call[0]):
            raise Incorrect(must_call[1])
        _check_untouched((q, k, v), originals)
        _diagnose_swda(out, q.detach(), k.detach(), v.detach(), kernel_size, dilation, known_mistakes)
        _check_gradients(
            out,
            (q, k, v),
            no_grad="the output does not require grad: no gradient can reach q, k or v. Did you "
            "detach(), use .item()/.tolist(), or build the output with torch.tensor(...)? "
            "Assemble it from the inputs with torch operations.",
            leaves="somewhere the computation leaves autograd "
            "(detach, .data, numpy, or copying values with .item()).",
        )
