"""Lesson 06's exercise: right, wrong and blank answers each get the right feedback.

The right answer here is written for the test, differently from the package
(rolled copies of K and V with an explicit on-map mask, not slices of a padded
tensor), and its values are checked against the independent dense reference
before it is handed to the checker.
"""

import pytest
import torch
import torch.nn.functional as F

from dilate_lab.course.exercises import lesson06
from reference import dense_swda

exercise = lesson06.swda_shift


def assert_incorrect(answer, *fragments):
    feedback = exercise.evaluate(answer)
    assert feedback.status == "incorrect", feedback
    for fragment in fragments:
        assert fragment in feedback.message, feedback.message
    return feedback.message


def offsets(kernel_size, dilation):
    half = kernel_size // 2
    return [(p * dilation, s * dilation) for p in range(-half, half + 1) for s in range(-half, half + 1)]


def on_map(H, W, di, dj, like):
    """(H, W) 1.0 where pixel (i + di, j + dj) lies on the map, else 0.0."""
    rows = torch.arange(H).reshape(H, 1) + di
    cols = torch.arange(W).reshape(1, W) + dj
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    return inside.to(like.dtype)


def rolled_swda(q, k, v, kernel_size, dilation):
    """Copy-free SWDA by rolling K and V (one map-sized copy at a time) and zeroing wrapped keys."""
    B, heads, H, W, d = q.shape
    q = q * d**-0.5
    logits = []
    for di, dj in offsets(kernel_size, dilation):
        keep = on_map(H, W, di, dj, q)[..., None]  # H, W, 1
        shifted = torch.roll(k, shifts=(-di, -dj), dims=(2, 3)) * keep  # B, heads, H, W, d
        logits.append((q * shifted).sum(-1))  # B, heads, H, W
    attn = torch.softmax(torch.stack(logits, dim=-1), dim=-1)  # B, heads, H, W, k*k
    out = torch.zeros_like(q)
    for o, (di, dj) in enumerate(offsets(kernel_size, dilation)):
        keep = on_map(H, W, di, dj, q)[..., None]
        out = out + attn[..., o : o + 1] * torch.roll(v, shifts=(-di, -dj), dims=(2, 3)) * keep
    return out


def test_the_test_answer_is_right():
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 2, 7, 6, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    for kernel_size, dilation in [(3, 1), (3, 2), (5, 1), (3, 3)]:
        torch.testing.assert_close(
            rolled_swda(q, k, v, kernel_size, dilation), dense_swda(q, k, v, kernel_size, dilation)
        )


def test_right_answers_are_confirmed():
    feedback = exercise.evaluate(rolled_swda)
    assert feedback.correct, feedback
    assert "no k*k copy" in feedback.message


def test_the_solution_text_is_a_right_answer(capsys):
    exercise.solution()
    printed = capsys.readouterr().out
    code = printed[printed.index("def swda_shift") :]
    namespace = {"torch": torch, "F": F}
    exec(code, namespace)
    assert exercise.evaluate(namespace["swda_shift"]).correct


def test_blank_answers_are_not_attempted():
    assert exercise.evaluate(None).status == "not attempted"

    def template(q, k, v, kernel_size, dilation):
        raise NotImplementedError

    assert exercise.evaluate(template).status == "not attempted"

    def forgot_return(q, k, v, kernel_size, dilation):
        q * 2

    assert exercise.evaluate(forgot_return).status == "not attempted"


def unfold_windows(x, kernel_size, dilation):
    B, heads, H, W, d = x.shape
    cols = F.unfold(
        x.permute(0, 1, 4, 2, 3).reshape(B * heads, d, H, W),
        kernel_size,
        dilation=dilation,
        padding=dilation * (kernel_size // 2),
    )  # B*heads, d*k*k, H*W
    return cols.reshape(B, heads, d, kernel_size**2, H * W).permute(0, 1, 4, 3, 2)  # B, heads, H*W, k*k, d


def test_unfold_is_refused_although_its_values_are_right():
    def with_unfold(q, k, v, kernel_size, dilation):
        B, heads, H, W, d = q.shape
        rows = q.reshape(B, heads, H * W, 1, d) * d**-0.5
        attn = torch.softmax(rows @ unfold_windows(k, kernel_size, dilation).transpose(-1, -2), -1)
        return (attn @ unfold_windows(v, kernel_size, dilation)).reshape(B, heads, H, W, d)

    assert_incorrect(with_unfold, "F.unfold", "k*k times")


def test_stacked_views_are_a_copy_and_refused():
    def stacked(q, k, v, kernel_size, dilation):
        B, heads, H, W, d = q.shape
        p = dilation * (kernel_size // 2)
        k_pad = F.pad(k, (0, 0, p, p, p, p))
        v_pad = F.pad(v, (0, 0, p, p, p, p))
        corners = [(a * dilation, b * dilation) for a in range(kernel_size) for b in range(kernel_size)]
        keys = torch.stack([k_pad[:, :, t : t + H, s : s + W] for t, s in corners], dim=-2)  # ..., k*k, d
        values = torch.stack([v_pad[:, :, t : t + H, s : s + W] for t, s in corners], dim=-2)
        attn = torch.softmax((q.unsqueeze(-2) * keys).sum(-1) * d**-0.5, dim=-1)  # ..., k*k
        return (attn.unsqueeze(-1) * values).sum(-2)

    # its values are right (so the first part of the check passes) ...
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, 5, 5, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(stacked(q, k, v, 3, 2), dense_swda(q, k, v, 3, 2))
    # ... but it holds a (1, 2, 16, 16, 9, 8) tensor: 9 times K
    assert_incorrect(stacked, "(1, 2, 16, 16, 9, 8) with torch.stack", "9.0 times the size of K")


def test_roll_without_masking_wraps_around():
    def wrapping(q, k, v, kernel_size, dilation):
        B, heads, H, W, d = q.shape
        logits, views = [], []
        for di, dj in offsets(kernel_size, dilation):
            logits.append((q * torch.roll(k, (-di, -dj), (2, 3))).sum(-1) * d**-0.5)
            views.append((di, dj))
        attn = torch.softmax(torch.stack(logits, -1), -1)
        out = 0
        for o, (di, dj) in enumerate(views):
            out = out + attn[..., o : o + 1] * torch.roll(v, (-di, -dj), (2, 3))
        return out

    message = assert_incorrect(wrapping, "border pixels differ", "torch.roll", "wraps around", "F.pad")
    assert "negative indices" not in message  # the roll, not indexing, is the mistake here


def test_masked_border_ignored_dilation_and_detach_get_specific_messages():
    def masked(q, k, v, kernel_size, dilation):
        return dense_swda(q, k, v, kernel_size, dilation, padding="mask")

    def no_dilation(q, k, v, kernel_size, dilation):
        return rolled_swda(q, k, v, kernel_size, 1)

    def detached(q, k, v, kernel_size, dilation):
        return rolled_swda(q.detach(), k.detach(), v.detach(), kernel_size, dilation)

    assert_incorrect(masked, "masking", "zero-pads")
    assert_incorrect(no_dilation, "dilation is ignored")
    assert_incorrect(detached, "does not require grad")


def test_in_place_and_crashing_answers():
    def in_place(q, k, v, kernel_size, dilation):
        with torch.no_grad():
            k.mul_(1.0 + 1e-3)
        return rolled_swda(q, k, v, kernel_size, dilation)

    def crashes(q, k, v, kernel_size, dilation):
        return q @ k  # (…, d) @ (…, d): a shape error

    assert_incorrect(in_place, "modified its input k in place")
    assert_incorrect(crashes, "raised RuntimeError")


def test_padding_by_half_the_kernel_crashes_with_advice():
    """Padding by kernel_size // 2 is right for dilation 1 only: with dilation 2 the views come out short."""

    def padded_too_little(q, k, v, kernel_size, dilation):
        B, heads, H, W, d = q.shape
        p = kernel_size // 2  # the mistake: dilation * (kernel_size // 2) is needed
        k_pad = F.pad(k, (0, 0, p, p, p, p))
        v_pad = F.pad(v, (0, 0, p, p, p, p))
        corners = [(a * dilation, b * dilation) for a in range(kernel_size) for b in range(kernel_size)]
        logits = torch.stack([(q * k_pad[:, :, t : t + H, s : s + W]).sum(-1) for t, s in corners], -1)
        attn = torch.softmax(logits * d**-0.5, dim=-1)
        out = 0
        for o, (t, s) in enumerate(corners):
            out = out + attn[..., o : o + 1] * v_pad[:, :, t : t + H, s : s + W]
        return out

    # the same code with enough padding would be right: at dilation 1 it is
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 1, 5, 6, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(padded_too_little(q, k, v, 3, 1), dense_swda(q, k, v, 3, 1))
    with pytest.raises(RuntimeError):
        padded_too_little(q, k, v, 3, 2)
    assert_incorrect(
        padded_too_little,
        "(kernel_size=3, dilation=2",  # the first case with a dilation, named
        "raised RuntimeError",
        "pad by dilation * (kernel_size // 2), not kernel_size // 2",
    )


def test_other_crashes_get_no_padding_advice():
    def crashes(q, k, v, kernel_size, dilation):
        return q @ k  # (…, d) @ (…, d): a matmul shape error, not a short view

    message = assert_incorrect(crashes, "raised RuntimeError", "(kernel_size=3, dilation=1")
    assert "pad by" not in message


def test_check_hint_and_repr_print(capsys):
    exercise.check(None)
    assert "Not attempted yet" in capsys.readouterr().out
    exercise.hint(3)
    assert "never stack the views" in capsys.readouterr().out
    with pytest.raises(ValueError, match="n must be an int from 1 to 3"):
        exercise.hint(4)
