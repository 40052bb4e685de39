"""The annotated official forward (lesson 04) computes MSDA, and every step has the stated shape.

The annotated forward is compared with ``MultiDilateAttention`` holding the same weights
(itself tested against the dense reference and the official forward), with the official
forward re-stated in ``official_reference``, and, one group at a time, with the dense
reference SWDA, which shares no code with dilate_lab. The shapes are checked against a
list worked out by hand for one setting.
"""

import pytest
import torch

from dilate_lab import MultiDilateAttention
from dilate_lab.course.annotated_msda import (
    BUG_NOTES,
    ShapeCheck,
    annotated_dilate_attention,
    annotated_msda,
    dims_to_shape,
    format_steps,
    symbol_sizes,
)
from official_reference import official_msda
from reference import dense_swda


def seeded_module(dim, num_heads, dilation, kernel_size=3, qkv_bias=True, seed=0):
    torch.manual_seed(seed)
    module = MultiDilateAttention(dim, num_heads, kernel_size, dilation, qkv_bias=qkv_bias).double().eval()
    with torch.no_grad():  # non-trivial biases, so that every parameter matters
        for p in module.parameters():
            p.normal_(0.0, 0.3)
    return module


def random_map(shape, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64)


SETTINGS = [
    # dim, heads, dilation, kernel_size, (B, H, W)
    (12, 6, (1, 2, 3), 3, (2, 9, 9)),
    (24, 6, (1, 2, 3), 3, (1, 5, 7)),
    (8, 2, (3, 1), 3, (2, 8, 6)),
    (16, 4, (2,), 5, (1, 11, 10)),
    (18, 3, (1, 1, 1), 3, (1, 4, 4)),
]


@pytest.mark.parametrize("dim, heads, dilation, kernel_size, bhw", SETTINGS)
def test_annotated_forward_equals_the_package_module(dim, heads, dilation, kernel_size, bhw):
    module = seeded_module(dim, heads, dilation, kernel_size)
    x = random_map((*bhw, dim))
    ours, _ = annotated_msda(module, x)
    torch.testing.assert_close(ours, module(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dim, heads, dilation, kernel_size, bhw", SETTINGS)
def test_annotated_forward_equals_the_official_forward_restated(dim, heads, dilation, kernel_size, bhw):
    module = seeded_module(dim, heads, dilation, kernel_size)
    x = random_map((*bhw, dim))
    ours, _ = annotated_msda(module, x)
    official = official_msda(x, module.state_dict(), "", heads, kernel_size, dilation)
    torch.testing.assert_close(ours, official, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (3, 2), (3, 4), (5, 2), (1, 3)])
def test_one_group_is_swda_of_the_dense_reference(kernel_size, dilation):
    B, heads, d, H, W = 2, 3, 4, 7, 9
    q, k, v = (random_map((B, heads * d, H, W), seed) for seed in (1, 2, 3))  # B, C/n, H, W
    ours = annotated_dilate_attention(q, k, v, d, kernel_size, dilation, d**-0.5)  # B, H, W, C/n
    as_heads = [t.reshape(B, heads, d, H, W).permute(0, 1, 3, 4, 2) for t in (q, k, v)]  # B, h, H, W, d
    expected = dense_swda(*as_heads, kernel_size=kernel_size, dilation=dilation)  # B, h, H, W, d
    expected = expected.permute(0, 2, 3, 1, 4).reshape(B, H, W, heads * d)  # B, H, W, C/n
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)


def test_gradients_reach_every_parameter_as_in_the_package():
    """No detach, no in-place write: backward runs and gives the package's gradients."""
    module = seeded_module(12, 6, (1, 2, 3))
    x = random_map((2, 7, 8, 12))
    weight = random_map((2, 7, 8, 12), seed=5)
    grads = []
    for forward in (lambda t: annotated_msda(module, t)[0], module):
        module.zero_grad(set_to_none=True)
        x_in = x.clone().requires_grad_(True)
        (forward(x_in) * weight).sum().backward()
        grads.append([x_in.grad] + [p.grad for p in module.parameters()])
    ours, package = grads
    assert all(g is not None and g.abs().sum() > 0 for g in ours)
    for a, b in zip(ours, package):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_every_step_has_the_shape_worked_out_by_hand():
    # B=2, H=5, W=7 (N=35), C=24, 6 heads over 3 dilations: h=2 heads of d=4 per group,
    # C/n=8 channels per group, k=3 (k*k=9): unfold gives C/n*k*k = 72 rows.
    module = seeded_module(24, 6, (1, 2, 3))
    _, steps = annotated_msda(module, random_map((2, 5, 7, 24)))
    group = [
        (2, 8, 5, 7),  # the group's q (k, v alike)
        (2, 2, 35, 1, 4),  # queries
        (2, 72, 35),  # unfolded K
        (2, 2, 35, 4, 9),  # keys per query
        (2, 2, 35, 1, 9),  # logits
        (2, 2, 35, 1, 9),  # softmax
        (2, 72, 35),  # unfolded V
        (2, 2, 35, 9, 4),  # values per query
        (2, 2, 35, 1, 4),  # weighted sum
        (2, 5, 7, 8),  # the group's output, channels last
    ]
    expected = [(2, 24, 5, 7), (2, 72, 5, 7), (3, 3, 2, 8, 5, 7)] + group * 3 + [
        (3, 2, 5, 7, 8),  # stacked
        (2, 5, 7, 24),  # concatenated
        (2, 5, 7, 24),  # projected
    ]
    assert [step.shape for step in steps] == expected
    assert [step.group for step in steps[3:-3]] == [g for g in range(3) for _ in group]
    assert [step.dilation for step in steps[3:-3]] == [r for r in (1, 2, 3) for _ in group]


def test_steps_name_the_equations_and_where_each_bug_sits():
    module = seeded_module(12, 6, (1, 2, 3))
    _, steps = annotated_msda(module, random_map((1, 6, 6, 12)))
    at = {bug: [s.what for s in steps if s.bug == bug] for bug in BUG_NOTES}
    assert len(at[1]) == 1 and "new tensor" in at[1][0]  # the merge, done out of place
    assert len(at[2]) == 3 and all("q, k, v" in what for what in at[2])  # once per group, on entry
    assert len(at[3]) == 6 and all(what.startswith("unfold") for what in at[3])  # K and V per group
    papers = " ".join(s.paper for s in steps)
    for equation in ("eq. (3)", "eq. (4)", "eq. (5)"):
        assert equation in papers
    assert [s.paper for s in steps if s.paper.startswith("h_") and "eq. (4)" in s.paper] == [
        "h_1, eq. (4)", "h_2, eq. (4)", "h_3, eq. (4)"
    ]


def test_format_steps_lists_shown_groups_and_explains_the_bugs():
    module = seeded_module(12, 6, (1, 2, 3))
    _, steps = annotated_msda(module, random_map((1, 6, 6, 12)))
    short = format_steps(steps, groups=(0,))
    assert "group 0 (dilation 1)" in short and "group 1 (dilation 2)" not in short
    assert "(groups 1, 2: the same steps, dilations 2, 3)" in short
    for bug in BUG_NOTES:
        assert f"<- bug {bug}" in short and f"  {bug}. " in short
    full = format_steps(steps)
    assert all(f"group {g} (dilation {g + 1})" in full for g in range(3))
    assert full.count("<- bug 3") == 6 and "the same steps" not in full


def test_a_wrong_shape_claim_fails_loudly():
    sizes = symbol_sizes(torch.zeros(2, 5, 7, 24), num_heads=6, kernel_size=3, dilation=(1, 2, 3))
    assert sizes == {"B": 2, "H": 5, "W": 7, "N": 35, "C": 24, "n": 3, "h": 2, "d": 4, "k": 3}
    check = ShapeCheck(sizes)
    assert check(torch.zeros(2, 72, 35), "B, C/n*k*k, N", "unfold").shape == (2, 72, 35)
    with pytest.raises(AssertionError, match=r"unfold: shape \(2, 35, 72\), but \(B, C/n\*k\*k, N\)"):
        check(torch.zeros(2, 35, 72), "B, C/n*k*k, N", "unfold")
    assert len(check.steps) == 1


@pytest.mark.parametrize("dims", ["B, Q", "B, C+1", "", "B, C/", "B, C/0", "B, W/n"])
def test_bad_dims_name_the_argument(dims):
    with pytest.raises(ValueError, match="dims"):
        dims_to_shape(dims, {"B": 2, "C": 24, "W": 7, "n": 3})


def test_bad_inputs_name_the_argument():
    module = seeded_module(12, 6, (1, 2, 3))
    with pytest.raises(ValueError, match="x must"):
        annotated_msda(module, torch.zeros(1, 6, 6, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must"):
        annotated_msda(module, torch.zeros(6, 6, 12, dtype=torch.float64))
    masked = MultiDilateAttention(12, 6, padding="mask")
    with pytest.raises(ValueError, match="module must zero-pad"):
        annotated_msda(masked, torch.zeros(1, 6, 6, 12))
    with pytest.raises(ValueError, match="bug"):
        ShapeCheck({"B": 1})(torch.zeros(1), "B", bug=4)
