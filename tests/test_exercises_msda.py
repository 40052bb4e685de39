"""Lesson 04 and 05 exercises: right, wrong and blank answers each get the right feedback.

The right answers here are written for the tests from the definitions (the
dense reference, a real model's feature maps), not taken from the checkers.
"""

import functools

import numpy as np
import pytest
import torch

from dilate_lab import DilateFormer, swda
from dilate_lab.course.exercises import lesson04, lesson05
from reference import dense_swda


def status(exercise, answer):
    return exercise.evaluate(answer)


def assert_incorrect(exercise, answer, *fragments):
    feedback = exercise.evaluate(answer)
    assert feedback.status == "incorrect", feedback
    for fragment in fragments:
        assert fragment in feedback.message, feedback.message


# --------------------------------------------------------------------------- functional MSDA
def right_msda(q, k, v, kernel_size, dilations):
    """Per contiguous block of heads, the dense reference with that block's dilation."""
    n = q.shape[1] // len(dilations)
    blocks = [
        dense_swda(q[:, i * n : (i + 1) * n], k[:, i * n : (i + 1) * n], v[:, i * n : (i + 1) * n], kernel_size, r)
        for i, r in enumerate(dilations)
    ]
    return torch.cat(blocks, dim=1)


def per_head(q, k, v, kernel_size, dilation_of_head):
    return torch.cat(
        [swda(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], kernel_size, dilation_of_head(h))
         for h in range(q.shape[1])],
        dim=1,
    )


def test_msda_right_blank_and_not_implemented():
    feedback = status(lesson04.msda, right_msda)
    assert feedback.correct
    assert "eq. (4) and the Concat of eq. (5)" in feedback.message
    assert status(lesson04.msda, None).status == "not attempted"

    def template(q, k, v, kernel_size, dilations):
        raise NotImplementedError

    assert status(lesson04.msda, template).status == "not attempted"


def test_msda_same_dilation_everywhere():
    def first_only(q, k, v, ks, d):
        return swda(q, k, v, ks, d[0])

    def widest_only(q, k, v, ks, d):
        return swda(q, k, v, ks, max(d))

    assert_incorrect(lesson04.msda, first_only, "every group used the same dilation, 1")
    assert_incorrect(lesson04.msda, widest_only, "every group used the same dilation, 3")


def test_msda_round_robin_heads():
    def round_robin(q, k, v, ks, d):
        return per_head(q, k, v, ks, lambda h: d[h % len(d)])

    assert_incorrect(lesson04.msda, round_robin, "in turn", "contiguous")


def test_msda_sorted_dilations_are_a_wrong_order():
    def sorted_groups(q, k, v, ks, d):
        return right_msda(q, k, v, ks, sorted(d))

    # (1, 2, 3) is already sorted, so the first case passes; (2, 1) reveals it
    assert_incorrect(lesson04.msda, sorted_groups, "dilations=(2, 1)", "in the order (1, 2)")


@pytest.mark.parametrize(
    "answer, fragment",
    [
        (lambda q, k, v, ks, d: right_msda(q, k, v, ks, d).permute(0, 2, 3, 1, 4).flatten(3), "channels-last"),
        (lambda q, k, v, ks, d: right_msda(q, k, v, ks, d)[:, : q.shape[1] // len(d)], "shape of one group"),
        (lambda q, k, v, ks, d: right_msda(q, k, v, ks, d)[..., :-1], "has shape"),
        (lambda q, k, v, ks, d: right_msda(q, k, v, ks, d).tolist(), "is a list"),
    ],
)
def test_msda_wrong_shapes_and_types(answer, fragment):
    assert_incorrect(lesson04.msda, answer, fragment)


def test_msda_without_gradient_and_with_modified_inputs():
    assert_incorrect(lesson04.msda, lambda q, k, v, ks, d: right_msda(q, k, v, ks, d).detach(), "does not require grad")

    def v_detached(q, k, v, ks, d):
        return right_msda(q, k, v.detach(), ks, d)

    assert_incorrect(lesson04.msda, v_detached, "no gradient reaches v")

    def scribbles(q, k, v, ks, d):
        out = right_msda(q, k, v, ks, d)
        with torch.no_grad():
            k.mul_(2)
        return out

    assert_incorrect(lesson04.msda, scribbles, "modified its input k")


def test_msda_unscaled_falls_back_to_the_first_difference():
    def unscaled(q, k, v, ks, d):
        n = q.shape[1] // len(d)
        return torch.cat([swda(q[:, i * n : (i + 1) * n], k[:, i * n : (i + 1) * n], v[:, i * n : (i + 1) * n],
                               ks, r, scale=1.0) for i, r in enumerate(d)], dim=1)

    assert_incorrect(lesson04.msda, unscaled, "differs first at index")


# --------------------------------------------------------------------------- the bug checks
def channels_last_input(module, size=9, requires_grad=False):
    torch.manual_seed(0)
    return torch.randn(1, size, size, module.dim, requires_grad=requires_grad)


def right_backward_runs(module):
    try:
        module(channels_last_input(module)).sum().backward()
    except RuntimeError:
        return False
    return True


def right_qkv_gets_gradient(module):
    for p in module.parameters():
        p.grad = None
    module(channels_last_input(module)).square().mean().backward()
    grad = module.qkv.weight.grad
    return grad is not None and bool(grad.abs().max() > 0)


def right_dilation_matters(module):
    """Perturb the input pixel max(dilation) * (k // 2) columns right of the centre; does the centre change?"""
    reach = max(module.dilation) * (module.kernel_size // 2)
    size = 2 * reach + 3
    x = channels_last_input(module, size)
    centre = size // 2
    with torch.no_grad():
        before = module(x)[0, centre, centre]
        x[0, centre, centre + reach] += 10.0
        after = module(x)[0, centre, centre]
    return not torch.equal(before, after)


def test_right_checks_are_confirmed_and_blanks_not_attempted():
    for exercise, answer in [
        (lesson04.backward_runs, right_backward_runs),
        (lesson04.qkv_gets_gradient, right_qkv_gets_gradient),
        (lesson04.dilation_matters, right_dilation_matters),
    ]:
        assert status(exercise, answer).correct, status(exercise, answer)
        assert status(exercise, None).status == "not attempted"
        assert status(exercise, lambda module: None).status == "not attempted"


def test_backward_check_that_does_not_catch_the_error():
    def crashes(module):
        module(channels_last_input(module)).sum().backward()
        return True

    assert_incorrect(lesson04.backward_runs, crashes, "crashed with the very error it should detect", "try/except")


def test_backward_check_that_only_runs_forward():
    def forward_only(module):
        try:
            module(channels_last_input(module))
        except RuntimeError:
            return False
        return True

    assert_incorrect(lesson04.backward_runs, forward_only, "returned True for InPlaceMultiDilateAttention", "backward")


def test_backward_check_that_also_flags_the_detached_module():
    def gradient_check_instead(module):
        return right_backward_runs(module) and right_qkv_gets_gradient(module)

    assert_incorrect(lesson04.backward_runs, gradient_check_instead, "returned False for DetachedMultiDilateAttention")


def test_qkv_check_that_looks_at_the_wrong_parameter():
    def proj_instead(module):
        module.zero_grad()
        module(channels_last_input(module)).sum().backward()
        return module.proj.weight.grad is not None

    assert_incorrect(lesson04.qkv_gets_gradient, proj_instead, "DetachedMultiDilateAttention", "still None")


def test_qkv_check_fooled_by_stale_gradients():
    def no_zero_grad(module):
        module(channels_last_input(module)).sum().backward()
        grad = module.qkv.weight.grad
        return grad is not None and bool(grad.abs().sum() > 0)

    assert_incorrect(lesson04.qkv_gets_gradient, no_zero_grad, "earlier step", "zero_grad")


def test_qkv_check_that_confuses_bugs():
    def also_checks_dilation(module):
        return right_qkv_gets_gradient(module) and right_dilation_matters(module)

    assert_incorrect(lesson04.qkv_gets_gradient, also_checks_dilation, "FixedRateMultiDilateAttention", "elsewhere")


def test_dilation_check_with_a_fixed_reach():
    def one_pixel(module):
        x = channels_last_input(module, 7)
        with torch.no_grad():
            before = module(x)[0, 3, 3]
            x[0, 3, 4] += 10.0
            return not torch.equal(before, module(x)[0, 3, 3])

    assert_incorrect(lesson04.dilation_matters, one_pixel, "returned True for FixedRateMultiDilateAttention")


def test_dilation_check_that_forgets_the_kernel_size():
    def reach_is_max_dilation(module):
        reach = max(module.dilation)
        x = channels_last_input(module, 2 * reach + 1, requires_grad=True)
        module(x)[0, reach, reach].sum().backward()
        return bool(x.grad[0, reach, 2 * reach].abs().sum() > 0)

    assert_incorrect(lesson04.dilation_matters, reach_is_max_dilation, "kernel_size 5", "module.kernel_size")


@pytest.mark.parametrize(
    "value, accepted", [(np.True_, True), (torch.tensor(True), True), (1.0, False), ("yes", False)]
)
def test_check_results_must_be_booleans(value, accepted):
    def answer(module):
        verdict = right_backward_runs(module)
        if isinstance(value, str):
            return value
        return type(value)(verdict) if not isinstance(value, torch.Tensor) else torch.tensor(verdict)

    feedback = status(lesson04.backward_runs, answer)
    if accepted:
        assert feedback.correct, feedback
    else:
        assert feedback.status == "incorrect" and "return True or False" in feedback.message


def test_msda_hint_slices_the_heads_the_way_it_says():
    """The hint's slice, with per_group heads per dilation, cuts exactly group i's contiguous heads."""
    hint = lesson04.msda._hints[0]
    assert "per_group = heads // len(dilations)" in hint
    expression = hint[hint.index("q[:, i * per_group"):].rstrip(".")
    q = torch.arange(6).reshape(1, 6)  # B, heads: the head indices
    per_group = 2
    blocks = [eval(expression, {"q": q, "i": i, "per_group": per_group}).tolist() for i in range(3)]
    assert blocks == [[[0, 1]], [[2, 3]], [[4, 5]]]


def test_solutions_are_right_answers():
    for name in ("msda", "backward_runs", "qkv_gets_gradient", "dilation_matters"):
        namespace = {"torch": torch, "swda": swda}
        exec(getattr(lesson04, name)._solution, namespace)
        assert status(getattr(lesson04, name), namespace[name]).correct, name
    namespace = {}
    exec(lesson05.stage_shapes._solution, namespace)
    assert status(lesson05.stage_shapes, namespace["stage_shapes"]).correct


def test_checks_leave_the_callers_random_stream_alone():
    """The checkers build seeded modules without moving the learner's random stream."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for exercise in (lesson04.backward_runs, lesson04.qkv_gets_gradient, lesson04.dilation_matters):
        status(exercise, lambda module: True)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- stage shapes
@functools.lru_cache(maxsize=None)
def measured_stage_shapes(image_size, embed_dim, device="meta"):
    """(C, H, W) entering the first block of every stage of a real (shallow) DilateFormer.

    The stem and the stages are run directly: DilateFormer.forward insists on multiples
    of 32, but its convolutions (like the official model's) take any side. By default on
    the meta device (every module computes its output's shape, nothing else).
    """
    torch.manual_seed(0)
    model = DilateFormer(embed_dim=embed_dim, depths=(1, 1, 1, 1), num_classes=0).to(device).eval()
    shapes = []
    hooks = [
        stage.blocks[0].register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape[1:])))
        for stage in model.stages
    ]
    with torch.no_grad():
        x = model.patch_embed(torch.zeros(1, 3, image_size, image_size, device=device))
        for stage in model.stages:
            x = stage(x)
    for hook in hooks:
        hook.remove()
    return shapes


def test_stage_shapes_measured_on_a_real_model_are_right():
    assert status(lesson05.stage_shapes, measured_stage_shapes).correct
    assert status(lesson05.stage_shapes, None).status == "not attempted"


def test_meta_shapes_are_those_of_a_run_on_the_cpu():
    assert measured_stage_shapes(72, 24, device="cpu") == measured_stage_shapes(72, 24)


def test_odd_sides_round_up_by_hand():
    # 3x3 conv, stride 2, padding 1: out = floor((n + 2 - 3) / 2) + 1. 200: 100, 50 | 25 | 13 | 7
    assert measured_stage_shapes(200, 72) == [(72, 50, 50), (144, 25, 25), (288, 13, 13), (576, 7, 7)]
    # 240: 120, 60 | 30 | 15 | 8
    assert measured_stage_shapes(240, 96) == [(96, 60, 60), (192, 30, 30), (384, 15, 15), (768, 8, 8)]


def test_stage_shapes_that_round_down_are_told_about_the_stride_two_convolution():
    def rounds_down(s, c):
        return [(c * 2**i, s // (4 * 2**i), s // (4 * 2**i)) for i in range(4)]

    # right for every multiple of 32; at 200 stage 3 is 13x13, not 12x12
    assert_incorrect(lesson05.stage_shapes, rounds_down, "stage_shapes(200, 72)", "(n + 1) // 2", "25 becomes 13")


def test_stage_shapes_hints_and_solution_round_up():
    hints = " ".join(lesson05.stage_shapes._hints)
    assert "(side + 1) // 2" in hints and "image_size // (4 * 2**i)" not in hints
    namespace = {}
    exec(lesson05.stage_shapes._solution, namespace)
    assert namespace["stage_shapes"](200, 72) == measured_stage_shapes(200, 72)
    assert namespace["stage_shapes"](240, 96) == measured_stage_shapes(240, 96)


@pytest.mark.parametrize(
    "answer, fragment",
    [
        (lambda s, c: [(c * 2**i, s // 2**i, s // 2**i) for i in range(4)], "stem"),
        (lambda s, c: [(c, s // (4 * 2**i), s // (4 * 2**i)) for i in range(4)], "channels double"),
        (lambda s, c: [(c * 2 ** (i + 1), s // (8 * 2**i), s // (8 * 2**i)) for i in range(4)], "downsampling"),
        (lambda s, c: [(s // (4 * 2**i), s // (4 * 2**i), c * 2**i) for i in range(4)], "(channels, height, width)"),
        (lambda s, c: [(c * 2**i, s // (4 * 2**i), s // (4 * 2**i)) for i in range(3)], "4 stages"),
        (lambda s, c: 42, "list of four"),
    ],
)
def test_stage_shapes_wrong_answers(answer, fragment):
    assert_incorrect(lesson05.stage_shapes, answer, fragment)


def test_stage_shapes_accepts_lists_and_torch_sizes():
    def as_lists(s, c):
        return [list(shape) for shape in measured_stage_shapes(s, c)]

    def as_sizes(s, c):
        return [torch.Size(shape) for shape in measured_stage_shapes(s, c)]

    assert status(lesson05.stage_shapes, as_lists).correct
    assert status(lesson05.stage_shapes, as_sizes).correct
