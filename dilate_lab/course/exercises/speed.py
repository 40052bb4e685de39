"""Lesson 06's exercise: SWDA without a k*k copy of K and V, checked with the course's machinery.

In a notebook::

    from dilate_lab.course.exercises import lesson06
    lesson06.swda_shift.check(my_swda_shift)   # feedback
    lesson06.swda_shift.hint()                 # a nudge
    lesson06.swda_shift.solution()             # the worked answer

The check has three parts. First the loop: the answer runs on a 5x5 and a 15x15
map and the torch calls it makes are counted; the shift form makes the same calls
at any size, a Python loop over pixels (or rows) makes more on the larger map and is
refused (and stopped early). Then the output and the gradients, exactly as for
lessons 02 and 03 (same cases, same diagnoses of the usual mistakes). Then the
memory: the answer runs once more on a larger map under a ``TorchFunctionMode``
that sees every torch call the learner's code makes and the storage of every
tensor those calls return, and a ``TorchDispatchMode`` that sees the tensors made
inside each call. A copy-free answer holds nothing bigger than the zero-padded K
or V and the (..., k*k) logits; ``F.unfold``, a ``torch.stack`` of the k*k shifted
views, or an ``einsum`` over overlapping windows makes a tensor k*k times the size
of K, and is refused with the call that made it.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ..checking import Exercise, Incorrect, NotAttempted
from ._common import (
    _SWDA_CASES,
    _call_with_advice,
    _check_gradients,
    _check_untouched,
    _diagnose_swda,
    _FunctionRecorder,
    _leaf_qkv,
    _random_qkv,
)

__all__ = ["lesson06"]

_MEMORY_CASE = (3, 2, (1, 2, 16, 16, 8))
"""(kernel_size, dilation, (B, heads, H, W, head_dim)) of the memory check. Padded K
is (20 * 20) / (16 * 16) = 1.6 times K, the logits 9 / 8 = 1.1 times: both far
below the k*k = 9 times of an unfolded copy."""

_COPY_LIMIT = 0.5
"""A tensor whose storage holds more than this share of a k*k copy of K is refused."""

_COUNT_SIDES = (5, 15)
"""Map sides of the two runs that count torch calls: 9 times the pixels, 3 times the rows.
The shift form makes the same calls at any size; a loop over pixels (or rows) does not."""

_COUNT_GROWTH = (1.5, 50)
"""The larger run may make at most 1.5 times the smaller run's calls, plus 50."""


class _TooManyCalls(RuntimeError):
    """Raised inside an answer once it has made more torch calls than its map size allows."""


class _CallRecorder(_FunctionRecorder):
    """Records the torch functions called and the largest tensor storage any of them returned;
    past ``limit`` calls it stops the answer (a loop over pixels need not run to its end)."""

    def __init__(self, limit=None):
        super().__init__()
        self.limit = limit

    def __enter__(self):
        self.largest = (0, None, ())  # (bytes, function, shape)
        self.current = None  # the torch function running now, for _AllocationRecorder
        self.over = False
        return super().__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.limit is not None and self.calls >= self.limit:
            self.over = True
            raise _TooManyCalls(f"more than {self.limit} torch calls")
        self.current = func
        result = super().__torch_function__(func, types, args, kwargs)
        for tensor in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(tensor, torch.Tensor):
                size = tensor.untyped_storage().nbytes()
                if size > self.largest[0]:
                    self.largest = (size, func, tuple(tensor.shape))
        return result


class _AllocationRecorder(TorchDispatchMode):
    """The largest storage any ATen operator made, and the torch function it ran inside.

    ``_CallRecorder`` sees what each torch function returns; this sees what happens
    inside one (an ``einsum`` or a ``matmul`` that copies its operands), so that a
    k*k copy made and dropped within a single call is seen too.
    """

    def __init__(self, functions: _CallRecorder):
        super().__init__()
        self.functions = functions
        self.largest = (0, None, ())  # (bytes, torch function, shape)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for tensor in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(tensor, torch.Tensor):
                size = tensor.untyped_storage().nbytes()
                if size > self.largest[0]:
                    self.largest = (size, self.functions.current, tuple(tensor.shape))
        return result


def _function_name(func) -> str:
    name = getattr(func, "__name__", repr(func))
    owner = getattr(func, "__objclass__", None) or getattr(func, "__self__", None)
    if owner is torch.Tensor or (isinstance(owner, type) and issubclass(owner, torch.Tensor)):
        return f"Tensor.{name}"
    module = getattr(func, "__module__", "") or ""
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    return f"torch.{name}"


def _refuse_unfold(seen) -> None:
    if F.unfold in seen:
        raise Incorrect(
            "your function calls F.unfold (or nn.Unfold), which copies every window: K and V k*k "
            "times over, lesson 03's cost. Pad K and V once with F.pad and loop over the k*k window "
            "positions, slicing one shifted H x W view of the padded tensor for each."
        )


def _shift_crash_advice(message: str, calls=None, q=None) -> str:
    """A tip for the usual crash of a shift answer: views shorter than the map, from too little padding."""
    if "RuntimeError" in message and "must match the size of tensor" in message:  # a broadcast error
        return (
            "A size mismatch between q and a view of the padded K or V usually means the padding is "
            "too small: pad by dilation * (kernel_size // 2), not kernel_size // 2, so that every view "
            "k_pad[:, :, a*dilation : a*dilation + H, b*dilation : b*dilation + W] is a whole H x W map."
        )
    return ""


def _roll_advice(mismatch: Incorrect, kernel_size: int, dilation: int) -> Incorrect:
    """A wrong output from an answer that calls torch.roll: the wrap-around is the likely cause."""
    roll = (
        "You call torch.roll: it wraps around, so the key beyond the right border comes back "
        "from the left border instead of being a zero. Pad with zeros (F.pad) and slice instead."
    )
    if "border pixels differ" in str(mismatch):
        return Incorrect(
            f"(kernel_size={kernel_size}, dilation={dilation}) pixels whose window lies on the "
            f"map are right, but border pixels differ. {roll}"
        )
    return Incorrect(f"{mismatch} {roll}")


def _check_values_and_gradients(fn) -> None:
    """Lessons 02-03's cases: output, inputs untouched, gradients; torch.roll gets its own message."""
    for case, (kernel_size, dilation, shape) in enumerate(_SWDA_CASES):
        (q, k, v), originals = _leaf_qkv(shape, seed=case)
        calls = _CallRecorder()
        out = _call_with_advice(fn, calls, q, k, v, kernel_size, dilation, _shift_crash_advice)
        _refuse_unfold(calls.seen)
        _check_untouched((q, k, v), originals)
        try:
            _diagnose_swda(out, q.detach(), k.detach(), v.detach(), kernel_size, dilation)
        except Incorrect as mismatch:
            if torch.roll not in calls.seen:
                raise
            raise _roll_advice(mismatch, kernel_size, dilation) from None
        _check_gradients(
            out,
            (q, k, v),
            no_grad="the output does not require grad: no gradient can reach q, k or v. Did you detach(), "
            "use .item(), or build the output with torch.tensor(...)? Assemble it with torch "
            "operations from the inputs.",
        )


def _calls_at(fn, side: int, limit=None) -> _CallRecorder | None:
    """The recorder of one run on a side x side map, or None where the answer failed there
    (the values check reports a crash, a library call or a blank answer, on its own cases)."""
    kernel_size, dilation, (B, heads, _, _, d) = _MEMORY_CASE
    q, k, v = _random_qkv((B, heads, side, side, d), seed=side)
    calls = _CallRecorder(limit)
    try:
        _call_with_advice(fn, calls, q, k, v, kernel_size, dilation)
    except (Incorrect, NotAttempted):
        return calls if calls.over else None
    return calls


def _check_no_pixel_loop(fn) -> None:
    """Refuse an answer whose number of torch calls grows with the map: a Python loop over pixels."""
    small_side, large_side = _COUNT_SIDES
    small = _calls_at(fn, small_side)
    if small is None:
        return
    growth, slack = _COUNT_GROWTH
    large = _calls_at(fn, large_side, limit=int(growth * small.calls) + slack)
    if large is None or not large.over:
        return
    raise Incorrect(
        f"your function makes {small.calls} torch calls on a {small_side}x{small_side} map and more "
        f"than {large.limit} on a {large_side}x{large_side} one: the number of calls grows with the "
        "map, so it loops over pixels (or rows) in Python, lesson 02's loop. The shift form loops over "
        "the k*k window positions only, each one a whole H x W view, so its torch calls do not depend "
        "on H and W."
    )


def _check_no_window_copy(fn) -> None:
    """Run once on a larger map; refuse any tensor with more than half a k*k copy of K."""
    kernel_size, dilation, shape = _MEMORY_CASE
    q, k, v = _random_qkv(shape, seed=99)
    calls = _CallRecorder()
    inside = _AllocationRecorder(calls)
    with inside:
        _call_with_advice(fn, calls, q, k, v, kernel_size, dilation, _shift_crash_advice)
    _refuse_unfold(calls.seen)
    kk = kernel_size * kernel_size
    k_bytes = k.numel() * k.element_size()
    size, func, made_shape = calls.largest
    where = f"on q, k, v of shape {shape} (kernel_size={kernel_size}, dilation={dilation}) your function"
    keep_views = (
        "Keep the shifted views as views: compute each one's logits (or its share of the output) and let "
        "it go, instead of stacking the views of K or V into one tensor."
    )
    if size > _COPY_LIMIT * kk * k_bytes:
        raise Incorrect(
            f"{where} made a tensor of shape {made_shape} with {_function_name(func)}: {size / k_bytes:.1f} "
            f"times the size of K, close to the k*k = {kk} copies this lesson avoids. {keep_views}"
        )
    size, func, made_shape = inside.largest
    if size > _COPY_LIMIT * kk * k_bytes:
        raise Incorrect(
            f"{where} called {_function_name(func)}, which made a tensor of shape {made_shape} inside it: "
            f"{size / k_bytes:.1f} times the size of K, close to the k*k = {kk} copies this lesson avoids "
            "(an einsum or matmul over overlapping windows copies them first). "
            f"{keep_views}"
        )


def _check_swda_shift(fn) -> str:
    _check_no_pixel_loop(fn)  # first: a loop over pixels is slow, and this stops it early
    _check_values_and_gradients(fn)
    _check_no_window_copy(fn)
    return (
        "your shift version matches the loop and unfold exactly, border and gradients included, and "
        "never holds more than the padded K and V and the (..., k*k) logits: no k*k copy."
    )


_SHIFT_SOLUTION = '''
def swda_shift(q, k, v, kernel_size, dilation):
    B, heads, H, W, d = q.shape
    pad = dilation * (kernel_size // 2)
    k_pad = F.pad(k, (0, 0, pad, pad, pad, pad))             # B, heads, H+2pad, W+2pad, d
    v_pad = F.pad(v, (0, 0, pad, pad, pad, pad))             # B, heads, H+2pad, W+2pad, d
    corners = [(a * dilation, b * dilation)                  # top-left corner of each view
               for a in range(kernel_size) for b in range(kernel_size)]

    q = q * d ** -0.5
    logits = torch.stack(
        [(q * k_pad[:, :, t : t + H, l : l + W]).sum(-1) for t, l in corners], dim=-1
    )                                                        # B, heads, H, W, k*k
    attn = torch.softmax(logits, dim=-1)                     # padded keys: logit 0, kept
    out = 0
    for o, (t, l) in enumerate(corners):
        out = out + attn[..., o : o + 1] * v_pad[:, :, t : t + H, l : l + W]   # B, heads, H, W, d
    return out
'''

lesson06 = SimpleNamespace(
    swda_shift=Exercise(
        "SWDA over shifted views, without a k*k copy",
        _check_swda_shift,
        hints=[
            "Pad K and V once by p = dilation * (kernel_size // 2) on both sides of H and W: "
            "F.pad(k, (0, 0, p, p, p, p)) pads the last three dims (d, W, H) of (B, heads, H, W, d).",
            "Window position o = (a, b) of every query is the view k_pad[:, :, a*r : a*r + H, "
            "b*r : b*r + W]: element [i, j] of it is key o of query (i, j). Its logit is "
            "(q * view).sum(-1), shape (B, heads, H, W).",
            "torch.stack the k*k logits on a new last dim, softmax over it, then add up "
            "attn[..., o:o+1] * (view o of v_pad), one view at a time: never stack the views themselves.",
        ],
        solution=_SHIFT_SOLUTION,
    )
)
