"""What the SWDA and MSDA checkers of lessons 02, 03, 04 and 06 share.

Each of those exercises hands a learner's attention function random q, k, v that
require grad, then asks the same questions in the same order: did it crash (and
is there a tip for that crash), did it touch its inputs, is the output right (and
if not, which usual mistake explains it), does a gradient reach q, k and v. The
pieces live here once, so that every lesson words the shared feedback alike.

The SWDA exercises (02, 03, 06) also check that the answer is the learner's own work:
while it runs, ``_FunctionRecorder`` refuses any call into dilate_lab's attention
(the public ``swda``, every implementation, the modules, the ``torch.ops.dilate_lab``
operators), since the library is what the answer is compared with.

The expected SWDA output comes from ``dilate_lab.functional.swda``, which the
package tests check against an independent dense reference.
"""

from __future__ import annotations

import functools
import os
import sys

import torch
import torch.nn.functional as F
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


_ALLOWED_LIBRARY_PARTS = ("geometry.py", "_checks.py", "tracing.py", os.path.join("course", "checking.py"),
                          os.path.join("course", "exercises") + os.sep)
"""Files of dilate_lab a learner's answer may run: window geometry, argument checks, the shape
tracer's ``record``, and the checkers themselves. Everything else in the package computes
attention somewhere (the public ``swda``, every implementation in ``ops``, the modules, the
course's figures and buggy modules), so an answer that runs it has not written its own."""

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))) + os.sep


@functools.lru_cache(maxsize=None)
def _is_library_file(filename: str) -> bool:
    """True for a file of dilate_lab that computes attention (not one of ``_ALLOWED_LIBRARY_PARTS``)."""
    path = os.path.realpath(filename)
    if not path.startswith(_PACKAGE_DIR):
        return False
    return not path[len(_PACKAGE_DIR):].startswith(_ALLOWED_LIBRARY_PARTS)


def _is_library_op(func) -> bool:
    """True for a ``torch.ops.dilate_lab.*`` operator (an overload or its packet), called directly."""
    return getattr(func, "namespace", None) == "dilate_lab" or str(
        getattr(func, "_qualified_op_name", "")
    ).startswith("dilate_lab::")


class LibraryCalled(RuntimeError):
    """Raised inside a learner's answer that calls dilate_lab's own attention."""


class _FunctionRecorder(TorchFunctionMode):
    """Records which torch functions a learner's code calls, how many, and what F.unfold got.

    It also keeps the library out of the answer: a torch call made while a frame of
    dilate_lab's attention code (``swda``, any implementation, a module's forward) is on
    the stack between the learner's function and the checker, or a direct call of a
    ``torch.ops.dilate_lab`` operator, raises ``LibraryCalled`` at once, and ``library``
    keeps the name of what was called, so that the checker refuses the answer even if
    the learner's code caught the error. Looking at the stack (not at module
    attributes) catches every way to reach the code: ``from dilate_lab import swda``,
    ``functools.partial``, an implementation imported from ``dilate_lab.ops``.
    """

    def __enter__(self):
        self.seen = set()
        self.calls = 0
        self.unfolds = []  # (input, output) of every F.unfold call, nn.Unfold's included
        self.library = None
        return super().__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        self.seen.add(func)
        self._refuse_library(func)
        result = func(*args, **(kwargs or {}))
        if func is F.unfold and args:
            self.unfolds.append((args[0], result))
        return result

    def _refuse_library(self, func) -> None:
        name = None
        if _is_library_op(func):
            name = f"torch.ops.{str(getattr(func, '_qualified_op_name', func)).replace('::', '.')}"
        frame, outermost = sys._getframe(2), None
        while frame is not None and frame.f_code is not _ANSWER_CALLER:
            if _is_library_file(frame.f_code.co_filename):
                outermost = frame
            frame = frame.f_back
        if outermost is not None:
            name = _public_name(outermost)
        if name is None:
            return
        if self.library is None:
            self.library = name
        raise LibraryCalled(_library_message(self.library))


def _public_name(frame) -> str:
    """How the learner likely reached the code of ``frame``: ``dilate_lab.swda`` rather than
    ``dilate_lab.functional.swda`` where the package exports it."""
    import dilate_lab  # the package is imported by now; late, to keep the import graph simple

    code = frame.f_code
    public = getattr(dilate_lab, code.co_name, None)
    if getattr(public, "__code__", None) is code:
        return f"dilate_lab.{code.co_name}"
    owner = frame.f_locals.get("self")
    if owner is not None and not isinstance(owner, type):
        return f"{type(owner).__name__}.{code.co_name}"
    return f"{frame.f_globals.get('__name__', 'dilate_lab')}.{code.co_name}"


_ANSWER_CALLER = call_answer.__code__
"""The stack walk of ``_FunctionRecorder`` stops at the frame that called the answer."""


def _library_message(name: str) -> str:
    return (
        f"your function called {name}, dilate_lab's own attention: this exercise asks you to "
        "write SWDA yourself, with torch operations (the library is what your answer is checked "
        "against, so it cannot be part of it)."
    )


def _call_with_advice(fn, calls, q, k, v, kernel_size, dilation, crash_advice=None):
    """``call_answer`` under the recorder ``calls``; a crash names the case, and
    ``crash_advice(message, calls, q)`` may add a tip for it. An answer that called the
    library is refused whether it crashed or not."""
    where = f"(kernel_size={kernel_size}, dilation={dilation}, q of shape {tuple(q.shape)})"
    try:
        with calls:
            out = call_answer(fn, q, k, v, kernel_size, dilation)
    except Incorrect as crash:
        if calls.library is not None:
            raise Incorrect(_library_message(calls.library)) from None
        tip = crash_advice(str(crash), calls, q) if crash_advice else ""
        raise Incorrect(f"{where} {crash}{' ' + tip if tip else ''}") from None
    if calls.library is not None:
        raise Incorrect(_library_message(calls.library))
    return out


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


def _check_swda_function(fn, must_call=None, known_mistakes=(), crash_advice=None, uses=None) -> None:
    """Run a learner's SWDA on every case of ``_SWDA_CASES`` (lessons 02 and 03).

    ``must_call``: (torch functions, message) refuses an answer that calls none of
    them; ``known_mistakes`` goes to ``_diagnose_swda``; ``crash_advice(message,
    recorder, q)`` may add a tip to a crash; ``uses(out, q, k, v, recorder)``, run on
    a right output before the gradient check, may refuse how it was computed.
    """
    for case, (kernel_size, dilation, shape) in enumerate(_SWDA_CASES):
        (q, k, v), originals = _leaf_qkv(shape, seed=case)
        calls = _FunctionRecorder()
        out = _call_with_advice(fn, calls, q, k, v, kernel_size, dilation, crash_advice)
        if must_call is not None and not any(f in calls.seen for f in must_call[0]):
            raise Incorrect(must_call[1])
        _check_untouched((q, k, v), originals)
        _diagnose_swda(out, q.detach(), k.detach(), v.detach(), kernel_size, dilation, known_mistakes)
        if uses is not None and out.requires_grad:
            uses(out, q, k, v, calls)
        _check_gradients(
            out,
            (q, k, v),
            no_grad="the output does not require grad: no gradient can reach q, k or v. Did you "
            "detach(), use .item()/.tolist(), or build the output with torch.tensor(...)? "
            "Assemble it from the inputs with torch operations.",
            leaves="somewhere the computation leaves autograd "
            "(detach, .data, numpy, or copying values with .item()).",
        )
