"""The exercise checkers: right, wrong and blank answers each get the right feedback."""

import re

import pytest
import torch
import torch.nn.functional as F

from dilate_lab.course.exercises import lesson00, lesson01, lesson02, lesson03, lesson04, lesson05, lesson06
from reference import dense_swda


def status(exercise, answer):
    return exercise.evaluate(answer)


# --------------------------------------------------------------------------- shared answers
def right_loop(q, k, v, kernel_size, dilation):
    """A loop written for this test from the definition (zero padding)."""
    B, heads, H, W, d = q.shape
    half = kernel_size // 2
    out = []
    for i in range(H):
        for j in range(W):
            logits, values = [], []
            for p in range(-half, half + 1):
                for s in range(-half, half + 1):
                    a, b = i + p * dilation, j + s * dilation
                    inside = 0 <= a < H and 0 <= b < W
                    key = k[:, :, a, b] if inside else torch.zeros_like(k[:, :, 0, 0])
                    val = v[:, :, a, b] if inside else torch.zeros_like(v[:, :, 0, 0])
                    logits.append((q[:, :, i, j] * key).sum(-1) / d**0.5)
                    values.append(val)
            w = torch.softmax(torch.stack(logits, -1), -1)
            out.append((w.unsqueeze(-1) * torch.stack(values, -2)).sum(-2))
    return torch.stack(out, 2).reshape(B, heads, H, W, d)


def masked_loop(q, k, v, kernel_size, dilation):
    return dense_swda(q, k, v, kernel_size, dilation, padding="mask")


def undilated(q, k, v, kernel_size, dilation):
    return dense_swda(q, k, v, kernel_size, 1)


def unscaled(q, k, v, kernel_size, dilation):
    return dense_swda(q, k, v, kernel_size, dilation, scale=1.0)


def detached(q, k, v, kernel_size, dilation):
    return dense_swda(q.detach(), k.detach(), v.detach(), kernel_size, dilation)


def detached_v_only(q, k, v, kernel_size, dilation):
    return dense_swda(q, k, v.detach(), kernel_size, dilation)


def wrong_shape(q, k, v, kernel_size, dilation):
    return dense_swda(q, k, v, kernel_size, dilation)[..., :-1]


def crashes(q, k, v, kernel_size, dilation):
    return q[99]


def blank_none(q, k, v, kernel_size, dilation):
    pass


def blank_raises(q, k, v, kernel_size, dilation):
    raise NotImplementedError


def in_place(q, k, v, kernel_size, dilation):
    out = dense_swda(q, k, v, kernel_size, dilation)
    with torch.no_grad():
        q.add_(1)
    return out


def right_unfold(q, k, v, kernel_size, dilation):
    B, heads, H, W, d = q.shape
    kk = kernel_size**2

    def windows(x):
        cols = F.unfold(
            x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W),
            kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2),
        )
        return cols.reshape(B, heads, d, kk, H * W).permute(0, 1, 4, 3, 2)

    logits = (q.reshape(B, heads, H * W, 1, d) / d**0.5) @ windows(k).transpose(-1, -2)
    return (torch.softmax(logits, -1) @ windows(v)).reshape(B, heads, H, W, d)


# --------------------------------------------------------------------------- lesson 02
@pytest.mark.parametrize(
    "answer,kind,phrase",
    [
        (right_loop, "correct", "matches"),
        (None, "not attempted", "empty"),
        (..., "not attempted", "empty"),
        (blank_none, "not attempted", "returns None"),
        (blank_raises, "not attempted", "NotImplementedError"),
        (masked_loop, "incorrect", "masking"),
        (undilated, "incorrect", "dilation is ignored"),
        (unscaled, "incorrect", "not scaled"),
        (detached, "incorrect", "does not require grad"),
        (detached_v_only, "incorrect", "no gradient reaches v"),
        (wrong_shape, "incorrect", r"shape \(1, 2, 5, 6, 2\), expected \(1, 2, 5, 6, 3\)"),
        (crashes, "incorrect", "raised IndexError"),
        (in_place, "incorrect", "modified its input q"),
        (42, "incorrect", "expected a function"),
    ],
)
def test_swda_loop_feedback(answer, kind, phrase):
    feedback = lesson02.swda_loop.evaluate(answer)
    assert feedback.status == kind, feedback
    assert re.search(phrase, feedback.message), feedback.message


def test_swda_mismatch_reports_position_and_values():
    def off_by_a_bit(q, k, v, kernel_size, dilation):
        out = dense_swda(q, k, v, kernel_size, dilation)
        bump = torch.zeros_like(out)
        bump[0, 1, 2, 3, 0] = 0.5
        return out + bump

    feedback = lesson02.swda_loop.evaluate(off_by_a_bit)
    assert feedback.status == "incorrect"
    assert "index (0, 1, 2, 3, 0)" in feedback.message
    assert "yours" in feedback.message and "expected" in feedback.message


def test_border_only_mistake_is_named():
    def wrong_at_corner(q, k, v, kernel_size, dilation):
        out = dense_swda(q, k, v, kernel_size, dilation)
        return out + torch.nn.functional.pad(torch.ones(1, 1, 1, 1, 1, dtype=out.dtype),
                                             (0, out.shape[4] - 1, 0, out.shape[3] - 1,
                                              0, out.shape[2] - 1, 0, out.shape[1] - 1,
                                              0, out.shape[0] - 1))

    feedback = lesson02.swda_loop.evaluate(wrong_at_corner)
    assert feedback.status == "incorrect"
    assert "border pixels differ" in feedback.message


def test_check_prints_and_hint_solution_print(capsys):
    lesson02.swda_loop.check(None)
    assert "Not attempted yet" in capsys.readouterr().out
    lesson02.swda_loop.hint()
    assert "Hint 1/3" in capsys.readouterr().out
    lesson02.swda_loop.solution()
    assert "def swda_loop" in capsys.readouterr().out
    with pytest.raises(ValueError, match="n must be an int from 1 to 3"):
        lesson02.swda_loop.hint(4)


def test_printed_solutions_are_right():
    """The code printed by .solution() passes its own check."""
    for exercise, name in [
        (lesson02.swda_loop, "swda_loop"),
        (lesson03.swda_unfold, "swda_unfold"),
        (lesson01.attention_cost, "attention_cost"),
        (lesson05.stacked_span, "stacked_span"),
    ]:
        namespace = {"torch": torch, "F": F}
        exec(exercise._solution, namespace)
        assert exercise.evaluate(namespace[name]).correct, name


# --------------------------------------------------------------------------- lesson 03
def rows_split_wrong(q, k, v, kernel_size, dilation):
    """Unfold's rows read as (window position, channel): the classic reshape mistake."""
    B, heads, H, W, d = q.shape
    kk = kernel_size**2

    def windows(x):
        cols = F.unfold(
            x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W),
            kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2),
        )
        return cols.reshape(B, heads, kk, d, H * W).permute(0, 1, 4, 2, 3)

    logits = (q.reshape(B, heads, H * W, 1, d) / d**0.5) @ windows(k).transpose(-1, -2)
    return (torch.softmax(logits, -1) @ windows(v)).reshape(B, heads, H, W, d)


def padded_without_dilation(q, k, v, kernel_size, dilation):
    """A full unfold answer that pads by kernel_size // 2, forgetting the dilation."""
    B, heads, H, W, d = q.shape
    kk = kernel_size**2

    def windows(x):
        cols = F.unfold(x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W), kernel_size,
                        dilation=dilation, padding=kernel_size // 2)
        return cols.reshape(B, heads, d, kk, H * W).permute(0, 1, 4, 3, 2)

    logits = (q.reshape(B, heads, H * W, 1, d) / d**0.5) @ windows(k).transpose(-1, -2)
    return (torch.softmax(logits, -1) @ windows(v)).reshape(B, heads, H, W, d)


def wraps_around(q, k, v, kernel_size, dilation):
    """Checks only the upper bound, so k[:, :, -1] silently reads the last row."""
    B, heads, H, W, d = q.shape
    half = kernel_size // 2
    out = []
    for i in range(H):
        for j in range(W):
            logits, values = [], []
            for p in range(-half, half + 1):
                for s in range(-half, half + 1):
                    a, b = i + p * dilation, j + s * dilation
                    inside = a < H and b < W
                    logits.append((q[:, :, i, j] * (k[:, :, a, b] if inside else 0 * k[:, :, 0, 0])).sum(-1) / d**0.5)
                    values.append(v[:, :, a, b] if inside else 0 * v[:, :, 0, 0])
            w = torch.softmax(torch.stack(logits, -1), -1)
            out.append((w.unsqueeze(-1) * torch.stack(values, -2)).sum(-2))
    return torch.stack(out, 2).reshape(B, heads, H, W, d)


def test_wrap_around_border_mistake_is_explained():
    feedback = lesson02.swda_loop.evaluate(wraps_around)
    assert feedback.status == "incorrect"
    assert "negative indices wrap around" in feedback.message


def test_unfold_specific_mistakes():
    wrong_split = lesson03.swda_unfold.evaluate(rows_split_wrong)
    assert wrong_split.status == "incorrect" and "(channel, window position)" in wrong_split.message
    bad_padding = lesson03.swda_unfold.evaluate(padded_without_dilation)
    assert bad_padding.status == "incorrect"
    assert "dilation=2" in bad_padding.message and "dilation * (kernel_size // 2)" in bad_padding.message


def test_unfold_feedback():
    assert lesson03.swda_unfold.evaluate(right_unfold).correct
    loop_feedback = lesson03.swda_unfold.evaluate(right_loop)
    assert loop_feedback.status == "incorrect"
    assert "never calls F.unfold" in loop_feedback.message
    assert lesson03.swda_unfold.evaluate(blank_none).status == "not attempted"


# --------------------------------------------------------------------------- small exercises
@pytest.mark.parametrize(
    "answer,kind,phrase",
    [(9, "correct", "9 pixels"), (None, "not attempted", "empty"), (5, "incorrect", "kernel size"),
     (10, "incorrect", "both included"), (25, "incorrect", "k * k"), (9.0, "correct", "9 pixels"),
     (9.5, "incorrect", "not a whole number"),
     (7, "incorrect", "7 is not")],
)
def test_span_feedback(answer, kind, phrase):
    feedback = lesson00.span.evaluate(answer)
    assert feedback.status == kind and phrase in feedback.message


def test_attention_cost_feedback():
    assert lesson01.attention_cost.evaluate(
        lambda H, W, kernel_size=None: (H * W) ** 2 if kernel_size is None else H * W * kernel_size**2
    ).correct
    wrong = lesson01.attention_cost.evaluate(lambda H, W, kernel_size=None: H * W)
    assert wrong.status == "incorrect" and "expected 256" in wrong.message
    ignores_border = lesson01.attention_cost.evaluate(
        lambda H, W, kernel_size=None: (H * W) ** 2 if kernel_size is None
        else (H - 2) * (W - 2) * kernel_size**2
    )
    assert ignores_border.status == "incorrect" and "k * k keys" in ignores_border.message


def test_stacked_span_feedback():
    assert lesson05.stacked_span.evaluate(lambda k, rs: 1 + sum((k - 1) * r for r in rs)).correct
    wrong = lesson05.stacked_span.evaluate(lambda k, rs: sum((k - 1) * r for r in rs))
    assert wrong.status == "incorrect" and "expected 3" in wrong.message
    assert lesson05.stacked_span.evaluate(None).status == "not attempted"


# --------------------------------------------------------------------------- shared by lessons 02, 04, 06
def by_groups(attend):
    """An MSDA answer from an SWDA one: contiguous blocks of heads, one dilation each."""

    def msda(q, k, v, kernel_size, dilations):
        n = q.shape[1] // len(dilations)
        return torch.cat(
            [attend(q[:, i * n : (i + 1) * n], k[:, i * n : (i + 1) * n], v[:, i * n : (i + 1) * n],
                    kernel_size, r) for i, r in enumerate(dilations)],
            dim=1,
        )  # B, heads, H, W, d

    return msda


def shift_swda(q, k, v, kernel_size, dilation):
    """SWDA over k*k shifted views, written here (the checkers refuse answers that call the library)."""
    H, W, d = q.shape[2], q.shape[3], q.shape[4]
    p = dilation * (kernel_size // 2)
    k_pad, v_pad = F.pad(k, (0, 0, p, p, p, p)), F.pad(v, (0, 0, p, p, p, p))
    corners = [(a * dilation, b * dilation) for a in range(kernel_size) for b in range(kernel_size)]
    logits = torch.stack([(q * k_pad[:, :, t : t + H, s : s + W]).sum(-1) for t, s in corners], -1)
    attn = torch.softmax(logits * d**-0.5, dim=-1)  # B, heads, H, W, k*k
    return sum(attn[..., o : o + 1] * v_pad[:, :, t : t + H, s : s + W] for o, (t, s) in enumerate(corners))


def edits_k(q, k, v, kernel_size, dilation):
    with torch.no_grad():
        k.mul_(2.0)
    return shift_swda(q, k, v, kernel_size, dilation)


def cuts_k(q, k, v, kernel_size, dilation):
    return shift_swda(q, k.detach(), v, kernel_size, dilation)


ATTENTION_EXERCISES = [
    pytest.param(lesson02.swda_loop, lambda answer: answer, id="lesson02"),
    pytest.param(lesson04.msda, by_groups, id="lesson04"),
    pytest.param(lesson06.swda_shift, lambda answer: answer, id="lesson06"),
]


@pytest.mark.parametrize("exercise,wrap", ATTENTION_EXERCISES)
def test_every_attention_exercise_refuses_an_answer_that_edits_its_input(exercise, wrap):
    feedback = exercise.evaluate(wrap(edits_k))
    assert feedback.status == "incorrect"
    assert feedback.message == "your function modified its input k in place; leave inputs untouched."


@pytest.mark.parametrize("exercise,wrap", ATTENTION_EXERCISES)
def test_every_attention_exercise_names_the_input_no_gradient_reaches(exercise, wrap):
    right = exercise.evaluate(wrap(shift_swda))
    assert right.correct, right.message
    feedback = exercise.evaluate(wrap(cuts_k))
    assert feedback.status == "incorrect"
    assert feedback.message.startswith("no gradient reaches k: somewhere the computation leaves autograd")
