"""Lesson 04's exercises: MSDA as a function, then three checks that catch the circulating bugs.

In a notebook::

    from dilate_lab.course.exercises import lesson04
    lesson04.msda.check(my_msda)                   # feedback
    lesson04.backward_runs.check(my_backward_runs)
    lesson04.msda.hint()                           # a nudge
    lesson04.msda.solution()                       # the worked answer

The learner's checks are themselves checked: each runs on the correct
``MultiDilateAttention`` and on the buggy modules of ``course.bugs``, and must
pass the one and fail the others it is meant to catch.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import torch

from ..bugs import (
    DetachedMultiDilateAttention,
    FixedRateMultiDilateAttention,
    InPlaceMultiDilateAttention,
)
from ..checking import Exercise, Incorrect, call_answer, compare
from ...functional import swda
from ...nn import MultiDilateAttention
from ._common import _check_gradients, _check_untouched, _leaf_qkv
from ._disguises import disguised_bug, misleading_name, zero_gradient

__all__ = ["lesson04"]


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
        (q, k, v), originals = _leaf_qkv(shape, seed=10 + case)
        out = call_answer(fn, q, k, v, kernel_size, list(dilations))
        _check_untouched((q, k, v), originals)
        _diagnose_msda(out, q.detach(), k.detach(), v.detach(), kernel_size, dilations)
        _check_gradients(
            out,
            (q, k, v),
            no_grad="your output does not require grad, so no gradient can reach q, k or v (and in a "
            "model, none would reach the qkv projection): did you detach() or build it with "
            "torch.tensor(...)? Assemble it with torch.cat from swda's outputs.",
        )
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


_LOOKS = (
    " A check must judge what the module does (run it, backward, look at the result), never its "
    "class, its name or its attributes: this module's looks say the opposite of what it does."
)
"""Appended to the reason when a check misjudges a module in disguise (``_disguises``)."""

_IN_PLACE_IN_DISGUISE = disguised_bug(InPlaceMultiDilateAttention)
_DETACHED_IN_DISGUISE = disguised_bug(DetachedMultiDilateAttention, "DilateAttention")
_FIXED_RATE_IN_DISGUISE = disguised_bug(FixedRateMultiDilateAttention)
_ZERO_GRADIENT = zero_gradient()
_CLEAN_IN_PLACE = misleading_name(InPlaceMultiDilateAttention)
_CLEAN_DETACHED = misleading_name(DetachedMultiDilateAttention)
_CLEAN_FIXED_RATE = misleading_name(FixedRateMultiDilateAttention)


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
        (lambda: _msda_module(_IN_PLACE_IN_DISGUISE), "a subclass of MultiDilateAttention, named "
         "MultiDilateAttention, that writes its outputs in place", False,
         "its backward() raises the in-place RuntimeError, whatever its class is called." + _LOOKS),
        (lambda: _msda_module(_CLEAN_IN_PLACE), "a class named InPlaceMultiDilateAttention (a subclass "
         "of it) whose forward is correct", True,
         "its forward builds the output out of place, so backward() runs." + _LOOKS),
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
        (lambda: _msda_module(_DETACHED_IN_DISGUISE), "a subclass of MultiDilateAttention, named "
         "DilateAttention, that detaches q, k and v", False,
         "after backward its qkv.weight.grad is None, whatever its class is called." + _LOOKS),
        (lambda: _msda_module(_CLEAN_DETACHED), "a class named DetachedMultiDilateAttention (a subclass "
         "of it) whose forward is correct", True,
         "it detaches nothing: after backward its qkv.weight.grad is not zero." + _LOOKS),
        (lambda: _msda_module(_ZERO_GRADIENT), "a module whose qkv projection gets a gradient of "
         "zeros", False,
         "after backward its qkv.weight.grad is a tensor of zeros, not None: the projection takes part "
         "in the graph, but multiplied by zero, so it learns nothing either. Check for all zeros as "
         "well as for None, as the hint says."),
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
        (lambda: _msda_module(_FIXED_RATE_IN_DISGUISE), "a subclass of MultiDilateAttention, named "
         "MultiDilateAttention, with dilation (1, 2, 3) that attends with dilation 1 in every group", False,
         "it never looks further than 1 pixel, whatever its class is called." + _LOOKS),
        (lambda: _msda_module(_CLEAN_FIXED_RATE), "a class named FixedRateMultiDilateAttention (a "
         "subclass of it) with dilation (1, 2, 3) whose forward is correct", True,
         "its dilation-3 heads see the pixel 3 columns away from the query." + _LOOKS),
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
