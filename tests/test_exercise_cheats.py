"""The exercise checkers check the learner's work, not only its output.

Each shortcut a learner found (calling the library, a dummy unfold, a bug check that
reads the class name, a gradient check that only tests for None) is marked incorrect
with a message that says why; each usual mistake gets a message that names it; the
printed solutions still pass, and every check stays fast.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dilate_lab
from dilate_lab import MultiDilateAttention, swda
from dilate_lab.course.bugs import (
    DetachedMultiDilateAttention,
    FixedRateMultiDilateAttention,
    InPlaceMultiDilateAttention,
)
from dilate_lab.course.exercises import lesson00, lesson01, lesson02, lesson03, lesson04, lesson05, lesson06
from dilate_lab.course.exercises._disguises import disguised_bug, misleading_name, zero_gradient
from dilate_lab.ops import reference
from reference import dense_swda

SWDA_EXERCISES = [
    pytest.param(lesson02.swda_loop, id="lesson02"),
    pytest.param(lesson03.swda_unfold, id="lesson03"),
    pytest.param(lesson06.swda_shift, id="lesson06"),
]


def incorrect(exercise, answer, *fragments) -> str:
    feedback = exercise.evaluate(answer)
    assert feedback.status == "incorrect", feedback
    for fragment in fragments:
        assert fragment in feedback.message, feedback.message
    return feedback.message


def solution_of(exercise, name):
    """The function defined by the code that ``exercise.solution()`` prints."""
    text = exercise._solution
    namespace = {"torch": torch, "F": F, "swda": swda}
    exec(text, namespace)
    return namespace[name]


# --------------------------------------------------------------------------- answers written here
def unfold_windows(x, kernel_size, dilation, padding=None):
    """(B, heads, H, W, d) -> (B, heads, H*W, k*k, d) through F.unfold."""
    B, heads, H, W, d = x.shape
    padding = dilation * (kernel_size // 2) if padding is None else padding
    cols = F.unfold(x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W), kernel_size, dilation=dilation,
                    padding=padding)  # B*heads, d*k*k, H*W
    return cols.reshape(B, heads, d, kernel_size**2, -1).permute(0, 1, 4, 3, 2)


def attend_windows(q, keys, values):
    """q (B, heads, H, W, d), windows (B, heads, H*W, k*k, d) -> (B, heads, H, W, d)."""
    B, heads, H, W, d = q.shape
    logits = (q.reshape(B, heads, H * W, 1, d) * d**-0.5) @ keys.transpose(-1, -2)  # B, heads, H*W, 1, k*k
    return (torch.softmax(logits, -1) @ values).reshape(B, heads, H, W, d)


def shift_views(x, kernel_size, dilation):
    H, W = x.shape[2], x.shape[3]
    p = dilation * (kernel_size // 2)
    x_pad = F.pad(x, (0, 0, p, p, p, p))
    return [x_pad[:, :, a * dilation : a * dilation + H, b * dilation : b * dilation + W]
            for a in range(kernel_size) for b in range(kernel_size)]


def shift_swda(q, k, v, kernel_size, dilation):
    d = q.shape[-1]
    logits = torch.stack([(q * view).sum(-1) for view in shift_views(k, kernel_size, dilation)], -1)
    attn = torch.softmax(logits * d**-0.5, -1)  # B, heads, H, W, k*k
    return sum(attn[..., o : o + 1] * view for o, view in enumerate(shift_views(v, kernel_size, dilation)))


def loop_swda(q, k, v, kernel_size, dilation):
    return solution_of(lesson02.swda_loop, "swda_loop")(q, k, v, kernel_size, dilation)


def scale_of(q):
    return q.shape[-1] ** -0.5


# --------------------------------------------------------------------------- the library, refused
LIBRARY_ANSWERS = {
    **{f"swda impl={name}": (lambda name: lambda q, k, v, ks, r: swda(q, k, v, ks, r, impl=name))(name)
       for name in ("auto", "naive", "unfold", "shift", "fused", "cpp")},
    "dilate_lab.functional.swda": lambda q, k, v, ks, r: dilate_lab.functional.swda(q, k, v, ks, r),
    "a partial of swda": functools.partial(swda, impl="shift"),
    "reference.swda_naive": lambda q, k, v, ks, r: reference.swda_naive(q, k, v, ks, r, "zeros", scale_of(q)),
    "reference.swda_unfold": lambda q, k, v, ks, r: reference.swda_unfold(q, k, v, ks, r, "zeros", scale_of(q)),
    "reference.swda_shift": lambda q, k, v, ks, r: reference.swda_shift(q, k, v, ks, r, "zeros", scale_of(q)),
    "fused.swda_fused": lambda q, k, v, ks, r: dilate_lab.ops.fused.swda_fused(q, k, v, ks, r, "zeros", scale_of(q)),
    "cpp.swda_cpp": lambda q, k, v, ks, r: dilate_lab.ops.cpp.swda_cpp(q, k, v, ks, r, "zeros", scale_of(q)),
    "the operator torch.ops.dilate_lab.swda_fused":
        lambda q, k, v, ks, r: torch.ops.dilate_lab.swda_fused(q, k, v, ks, r, False, scale_of(q))[0],
    "the library's shifted views": lambda q, k, v, ks, r: sum(
        reference.shifted_views(v, ks, r)) * 0 + shift_swda(q, k, v, ks, r),
}


@pytest.mark.parametrize("exercise", SWDA_EXERCISES)
@pytest.mark.parametrize("how", list(LIBRARY_ANSWERS))
def test_an_answer_that_calls_the_library_is_refused(exercise, how):
    message = incorrect(exercise, LIBRARY_ANSWERS[how], "your function called ", "write SWDA yourself")
    assert "dilate_lab" in message


@pytest.mark.parametrize("exercise", SWDA_EXERCISES)
def test_the_refusal_names_what_was_called(exercise):
    incorrect(exercise, LIBRARY_ANSWERS["swda impl=unfold"], "called dilate_lab.swda,")
    incorrect(exercise, LIBRARY_ANSWERS["reference.swda_shift"], "called dilate_lab.ops.reference.swda_shift,")
    incorrect(exercise, LIBRARY_ANSWERS["the operator torch.ops.dilate_lab.swda_fused"],
              "called torch.ops.dilate_lab.swda_fused,")


@pytest.mark.parametrize("exercise", SWDA_EXERCISES)
def test_a_library_call_whose_error_is_caught_is_still_refused(exercise):
    def falls_back(q, k, v, kernel_size, dilation):
        try:
            return swda(q, k, v, kernel_size, dilation)
        except Exception:
            return shift_swda(q, k, v, kernel_size, dilation)

    incorrect(exercise, falls_back, "called dilate_lab.swda", "write SWDA yourself")


@pytest.mark.parametrize("exercise", SWDA_EXERCISES)
def test_running_a_module_of_the_library_is_refused(exercise):
    module = MultiDilateAttention(4, 2, dilation=(1, 2))

    def through_a_module(q, k, v, kernel_size, dilation):
        module(torch.zeros(1, 3, 3, 4))
        return shift_swda(q, k, v, kernel_size, dilation)

    incorrect(exercise, through_a_module, "called MultiDilateAttention.forward", "write SWDA yourself")


def test_the_library_works_again_after_a_refusal():
    incorrect(lesson02.swda_loop, LIBRARY_ANSWERS["swda impl=auto"], "called dilate_lab.swda")
    q, k, v = (torch.randn(1, 1, 5, 5, 2, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(swda(q, k, v, 3, 2), dense_swda(q, k, v, 3, 2))
    assert not torch.overrides._get_current_function_mode_stack()
    assert torch.get_num_threads() >= 1


# --------------------------------------------------------------------------- lesson 03: unfold K and V
def test_a_dummy_unfold_beside_a_loop_is_refused():
    def dummy_unfold(q, k, v, kernel_size, dilation):
        F.unfold(torch.zeros(1, 1, 3, 3), 3)  # satisfies "calls F.unfold", unfolds nothing of K or V
        return loop_swda(q, k, v, kernel_size, dilation)

    incorrect(lesson03.swda_unfold, dummy_unfold, "calls F.unfold, but k and v reach the output some other way")


def test_an_unfold_of_k_whose_result_is_thrown_away_is_refused():
    def unused(q, k, v, kernel_size, dilation):
        unfold_windows(k, kernel_size, dilation)
        unfold_windows(v, kernel_size, dilation)
        return shift_swda(q, k, v, kernel_size, dilation)

    incorrect(lesson03.swda_unfold, unused, "k and v reach the output some other way")


def test_unfolding_k_only_names_v():
    def k_only(q, k, v, kernel_size, dilation):
        B, heads, H, W, d = q.shape
        values = torch.stack(shift_views(v, kernel_size, dilation), -2).reshape(B, heads, H * W, -1, d)
        return attend_windows(q, unfold_windows(k, kernel_size, dilation), values)

    message = incorrect(lesson03.swda_unfold, k_only, "but v reaches the output some other way")
    assert "k and v" not in message


@pytest.mark.parametrize("variant", ["nn.Unfold", "k and v in one call", "k scaled first", "padded first"])
def test_honest_unfold_variants_pass(variant):
    def answer(q, k, v, kernel_size, dilation):
        B, heads, H, W, d = q.shape
        p = dilation * (kernel_size // 2)
        if variant == "nn.Unfold":
            unfold = torch.nn.Unfold(kernel_size, dilation=dilation, padding=p)
            cols = [unfold(x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W)) for x in (k, v)]
            keys, values = (c.reshape(B, heads, d, kernel_size**2, H * W).permute(0, 1, 4, 3, 2) for c in cols)
            return attend_windows(q, keys, values)
        if variant == "k and v in one call":
            both = unfold_windows(torch.cat([k, v], dim=-1), kernel_size, dilation)  # ..., k*k, 2d
            return attend_windows(q, both[..., :d], both[..., d:])
        if variant == "k scaled first":
            keys = unfold_windows(k * d**-0.5, kernel_size, dilation)
            logits = q.reshape(B, heads, H * W, 1, d) @ keys.transpose(-1, -2)
            out = torch.softmax(logits, -1) @ unfold_windows(v, kernel_size, dilation)
            return out.reshape(B, heads, H, W, d)
        padded = [F.pad(x, (0, 0, p, p, p, p)) for x in (k, v)]
        return attend_windows(q, *(unfold_windows(x, kernel_size, dilation, padding=0) for x in padded))

    feedback = lesson03.swda_unfold.evaluate(answer)
    assert feedback.correct, feedback


def test_reshaping_without_the_permute_is_named():
    def no_permute(q, k, v, kernel_size, dilation):
        B, heads, H, W, d = q.shape

        def windows(x):
            cols = F.unfold(x.reshape(B * heads, d, H, W), kernel_size, dilation=dilation,
                            padding=dilation * (kernel_size // 2))
            return cols.reshape(B, heads, d, kernel_size**2, H * W).permute(0, 1, 4, 3, 2)

        return attend_windows(q, windows(k), windows(v))

    incorrect(lesson03.swda_unfold, no_permute, "straight to (B*heads, d, H, W)", "x.permute(0, 1, 4, 2, 3)")


def test_a_wrong_permute_after_unfold_gets_no_padding_tip():
    def wrong_permute(q, k, v, kernel_size, dilation):
        B, heads, H, W, d = q.shape

        def windows(x):
            cols = F.unfold(x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W), kernel_size,
                            dilation=dilation, padding=dilation * (kernel_size // 2))
            return cols.reshape(B, heads, d, kernel_size**2, H * W).permute(0, 1, 4, 2, 3)  # ..., d, k*k

        return attend_windows(q, windows(k), windows(v))

    message = incorrect(lesson03.swda_unfold, wrong_permute, "raised RuntimeError",
                        "one column per pixel", "shapes go wrong after it", "(B, heads, H*W, k*k, d)")
    assert "pad by" not in message


def test_too_little_padding_gets_the_padding_tip_with_the_column_count():
    def half_kernel_padding(q, k, v, kernel_size, dilation):
        keys = unfold_windows(k, kernel_size, dilation, padding=kernel_size // 2)
        return attend_windows(q, keys, unfold_windows(v, kernel_size, dilation, padding=kernel_size // 2))

    incorrect(lesson03.swda_unfold, half_kernel_padding, "dilation=2", "columns, not one per pixel (H*W = 30)",
              "pad by dilation * (kernel_size // 2)")


# --------------------------------------------------------------------------- lesson 06: no loop, no copy
def test_a_pixel_loop_is_refused_in_the_shift_exercise():
    incorrect(lesson06.swda_shift, loop_swda, "torch calls on a 5x5 map", "loops over pixels")


def test_a_row_loop_is_refused_in_the_shift_exercise():
    def by_rows(q, k, v, kernel_size, dilation):
        H = q.shape[2]
        p = dilation * (kernel_size // 2)
        k_pad, v_pad = (F.pad(x, (0, 0, 0, 0, p, p)) for x in (k, v))  # rows padded; each row on its own
        rows = [shift_swda(q[:, :, i : i + 1], k_pad[:, :, i : i + 2 * p + 1], v_pad[:, :, i : i + 2 * p + 1],
                           kernel_size, dilation)[:, :, p : p + 1] for i in range(H)]
        return torch.cat(rows, dim=2)

    incorrect(lesson06.swda_shift, by_rows, "grows with the map", "pixels (or rows)")


def test_a_copy_made_inside_one_call_is_seen():
    def strided_einsum(q, k, v, kernel_size, dilation):
        B, heads, H, W, d = q.shape
        p = dilation * (kernel_size // 2)

        def windows(x):  # B, heads, H, W, k, k, d: a view, no copy yet
            x = F.pad(x, (0, 0, p, p, p, p))
            s = x.stride()
            return x.as_strided((B, heads, H, W, kernel_size, kernel_size, d),
                                (s[0], s[1], s[2], s[3], dilation * s[2], dilation * s[3], s[4]))

        logits = torch.einsum("nhijd,nhijabd->nhijab", q * d**-0.5, windows(k))
        attn = torch.softmax(logits.flatten(-2), -1).unflatten(-1, (kernel_size, kernel_size))
        return torch.einsum("nhijab,nhijabd->nhijd", attn, windows(v))

    incorrect(lesson06.swda_shift, strided_einsum, "torch.einsum", "inside it", "times the size of K")


# --------------------------------------------------------------------------- lesson 04: behaviour, not looks
def not_in_place_by_class(module):
    return not isinstance(module, InPlaceMultiDilateAttention)


def not_in_place_by_name(module):
    return "InPlace" not in type(module).__name__


def qkv_by_class(module):
    return not isinstance(module, DetachedMultiDilateAttention)


def qkv_grad_not_none(module):
    module.zero_grad()
    module(torch.randn(1, 9, 9, module.dim)).sum().backward()
    return module.qkv.weight.grad is not None  # the hint says: and not all zeros


def dilation_by_class(module):
    return not isinstance(module, FixedRateMultiDilateAttention)


def dilation_by_attribute(module):
    return not hasattr(module, "unfold")


def dilation_by_repr(module):
    return "BUGGY" not in repr(module)


@pytest.mark.parametrize(
    "exercise,cheat",
    [
        (lesson04.backward_runs, not_in_place_by_class),
        (lesson04.backward_runs, not_in_place_by_name),
        (lesson04.qkv_gets_gradient, qkv_by_class),
        (lesson04.dilation_matters, dilation_by_class),
        (lesson04.dilation_matters, dilation_by_attribute),
        (lesson04.dilation_matters, dilation_by_repr),
    ],
)
def test_bug_checks_that_look_at_the_class_are_refused(exercise, cheat):
    incorrect(exercise, cheat, "never its class, its name or its attributes")


def test_a_gradient_check_for_none_only_is_told_about_zeros():
    incorrect(lesson04.qkv_gets_gradient, qkv_grad_not_none, "a tensor of zeros, not None",
              "Check for all zeros as well as for None")


def seeded(cls, **kwargs):
    torch.manual_seed(0)
    module = cls(12, 6, kernel_size=3, dilation=(1, 2, 3), qkv_bias=True, **kwargs)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)
    return module


@pytest.mark.parametrize("bug", [InPlaceMultiDilateAttention, DetachedMultiDilateAttention,
                                 FixedRateMultiDilateAttention])
def test_the_disguises_are_what_they_claim(bug):
    """A bug in disguise behaves like the bug and looks correct; a misleading name is correct."""
    correct = seeded(MultiDilateAttention)
    x = torch.randn(1, 9, 9, 12)
    in_disguise, clean = seeded(disguised_bug(bug)), seeded(misleading_name(bug))
    assert isinstance(in_disguise, MultiDilateAttention) and not isinstance(in_disguise, bug)
    assert "BUGGY" not in repr(in_disguise) and not hasattr(in_disguise, "bug")
    assert isinstance(clean, bug) and type(clean).__name__ == bug.__name__
    for module in (in_disguise, clean):
        module.load_state_dict(correct.state_dict())
    torch.testing.assert_close(clean(x.clone()), correct(x))
    if bug is FixedRateMultiDilateAttention:
        assert not hasattr(in_disguise, "unfold")
        undilated = seeded(MultiDilateAttention, impl="shift")
        undilated.dilation, undilated.head_dilations = (1, 1, 1), (1,) * 6
        undilated.load_state_dict(correct.state_dict())
        torch.testing.assert_close(in_disguise(x), undilated(x))
    else:
        torch.testing.assert_close(in_disguise(x.clone()), correct(x))


def test_the_zero_gradient_module_gets_zeros_not_none():
    module = seeded(zero_gradient())
    module(torch.randn(1, 9, 9, 12)).sum().backward()
    grad = module.qkv.weight.grad
    assert grad is not None and not grad.any()


# --------------------------------------------------------------------------- lesson 05: each mistake named
SPAN_MISTAKES = {
    "spans added": (lambda k, rs: sum((k - 1) * r + 1 for r in rs), "you added the layers' spans"),
    "widest layer": (lambda k, rs: (k - 1) * max(rs) + 1, "the widest layer alone"),
    "no plus one": (lambda k, rs: sum((k - 1) * r for r in rs), "off by one"),
    "k times r": (lambda k, rs: sum(k * r for r in rs), "does not span k * r pixels"),
    "one side": (lambda k, rs: 1 + sum((k // 2) * r for r in rs), "one side only"),
    "product": (lambda k, rs: int(np.prod([(k - 1) * r + 1 for r in rs])), "spans do not multiply"),
}


@pytest.mark.parametrize("name", list(SPAN_MISTAKES))
def test_each_wrong_span_formula_gets_its_own_message(name):
    formula, phrase = SPAN_MISTAKES[name]
    incorrect(lesson05.stacked_span, formula, phrase)


def test_the_span_messages_all_differ():
    messages = {lesson05.stacked_span.evaluate(f).message.split(": ", 1)[1] for f, _ in SPAN_MISTAKES.values()}
    assert len(messages) == len(SPAN_MISTAKES)


# --------------------------------------------------------------------------- lessons 00 and 01: numbers alike
NINE = [9, 9.0, np.int64(9), np.float32(9.0), np.array(9), torch.tensor(9), torch.tensor(9.0)]


@pytest.mark.parametrize("nine", NINE, ids=repr)
def test_every_numeric_type_is_a_number(nine):
    assert lesson00.span.evaluate(nine).correct
    cost = lesson01.attention_cost.evaluate(
        lambda H, W, kernel_size=None: type(nine)((H * W) ** 2 if kernel_size is None else H * W * kernel_size**2)
        if not isinstance(nine, (np.ndarray, torch.Tensor))
        else torch.tensor((H * W) ** 2 if kernel_size is None else H * W * kernel_size**2, dtype=torch.float64)
    )
    assert cost.correct, cost


@pytest.mark.parametrize("exercise,answer", [
    (lesson00.span, 9.5),
    (lesson00.span, np.float64(8.5)),
    (lesson01.attention_cost, lambda H, W, kernel_size=None: (H * W) ** 2 / 3),
])
def test_a_fraction_is_told_it_is_not_a_whole_number(exercise, answer):
    incorrect(exercise, answer, "not a whole number")


@pytest.mark.parametrize("exercise,answer", [(lesson00.span, "9"), (lesson00.span, True),
                                             (lesson01.attention_cost, lambda H, W, kernel_size=None: "16")])
def test_what_is_not_a_number_is_told_so(exercise, answer):
    incorrect(exercise, answer, "expected a number")


def test_a_wrong_count_keeps_its_message_in_any_type():
    assert lesson00.span.evaluate(np.int64(5)).message == lesson00.span.evaluate(5).message
    assert lesson00.span.evaluate(torch.tensor(10.0)).message == lesson00.span.evaluate(10).message


# --------------------------------------------------------------------------- solutions pass, quickly
SOLUTIONS = [
    (lesson02.swda_loop, "swda_loop"),
    (lesson03.swda_unfold, "swda_unfold"),
    (lesson06.swda_shift, "swda_shift"),
    (lesson04.msda, "msda"),
    (lesson04.backward_runs, "backward_runs"),
    (lesson04.qkv_gets_gradient, "qkv_gets_gradient"),
    (lesson04.dilation_matters, "dilation_matters"),
    (lesson05.stacked_span, "stacked_span"),
    (lesson01.attention_cost, "attention_cost"),
]


@pytest.mark.parametrize("exercise,name", SOLUTIONS, ids=[name for _, name in SOLUTIONS])
def test_printed_solutions_pass_within_two_seconds(exercise, name):
    answer = solution_of(exercise, name)
    start = time.process_time()  # CPU time: other processes on the machine do not count
    feedback = exercise.evaluate(answer)
    assert feedback.correct, feedback
    assert time.process_time() - start < 2.0


@pytest.mark.parametrize("exercise,answer", [
    (lesson06.swda_shift, loop_swda),
    (lesson03.swda_unfold, loop_swda),
    (lesson02.swda_loop, LIBRARY_ANSWERS["swda impl=naive"]),
])
def test_refusals_are_quick_too(exercise, answer):
    start = time.process_time()
    assert exercise.evaluate(answer).status == "incorrect"
    assert time.process_time() - start < 2.0
