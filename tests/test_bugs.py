"""The deliberately buggy modules really show their bug, and the correct module does not.

Each buggy module is compared with ``MultiDilateAttention`` (itself tested
against the dense reference and the official forward) holding the same
weights: the forward passes agree except where the bug is, and the bug shows
exactly where the lesson says it does.
"""

import pytest
import torch

from dilate_lab import DilateBlock, MultiDilateAttention
from dilate_lab.course.bugs import (
    CIRCULATING_BUGS,
    DetachedMultiDilateAttention,
    FixedRateMultiDilateAttention,
    InPlaceMultiDilateAttention,
)
from reference import dense_swda

INPLACE_MESSAGE = "one of the variables needed for gradient computation has been modified by an inplace operation"


def seeded(module, seed=0):
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():  # non-trivial biases, so that every parameter matters
        for p in module.parameters():
            p.normal_(0.0, 0.3)
    return module


def correct(dim=12, num_heads=6, dilation=(1, 2, 3), kernel_size=3, seed=0):
    return seeded(MultiDilateAttention(dim, num_heads, kernel_size, dilation, qkv_bias=True), seed)


def buggy(cls, dim=12, num_heads=6, dilation=(1, 2, 3), kernel_size=3, seed=0):
    """A buggy module holding the same weights as ``correct(...)`` with the same seed."""
    module = cls(dim, num_heads, kernel_size, dilation, qkv_bias=True).double()
    module.load_state_dict(correct(dim, num_heads, dilation, kernel_size, seed).state_dict())
    return module


def random_map(shape, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def msda_by_hand(module, x, dilations):
    """MSDA computed here from the module's weights and the dense reference, per contiguous group."""
    B, H, W, C = x.shape
    qkv = torch.einsum("bhwc,oc->bhwo", x, module.qkv.weight[:, :, 0, 0]) + module.qkv.bias  # B, H, W, 3C
    heads, d = module.num_heads, C // module.num_heads
    q, k, v = qkv.reshape(B, H, W, 3, heads, d).permute(3, 0, 4, 1, 2, 5)  # each B, heads, H, W, d
    per_group = heads // len(dilations)
    out = torch.cat(
        [
            dense_swda(q[:, g * per_group : (g + 1) * per_group], k[:, g * per_group : (g + 1) * per_group],
                       v[:, g * per_group : (g + 1) * per_group], module.kernel_size, r)
            for g, r in enumerate(dilations)
        ],
        dim=1,
    )  # B, heads, H, W, d
    merged = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)  # B, H, W, C
    return merged @ module.proj.weight.T + module.proj.bias


def test_registry_names_the_three_bugs():
    assert CIRCULATING_BUGS == {
        "in-place": InPlaceMultiDilateAttention,
        "detach": DetachedMultiDilateAttention,
        "fixed-rate": FixedRateMultiDilateAttention,
    }
    for cls in CIRCULATING_BUGS.values():
        assert "DELIBERATELY" in cls.__doc__
        assert "DELIBERATELY BUGGY" in repr(cls(12, 6))


def test_buggy_modules_load_the_correct_modules_weights_key_for_key():
    reference = correct()
    for cls in CIRCULATING_BUGS.values():
        module = cls(12, 6, qkv_bias=True)
        assert module.load_state_dict(reference.state_dict(), strict=True)  # no missing/unexpected keys
        assert set(module.state_dict()) == set(reference.state_dict())


# --------------------------------------------------------------------------- 1. in place
def test_in_place_forward_is_right_but_backward_raises():
    module = buggy(InPlaceMultiDilateAttention)
    x = random_map((2, 9, 8, 12))
    expected = msda_by_hand(module, x, (1, 2, 3))
    out = module(x.clone().requires_grad_(True) * 1.0)  # a non-leaf input, like norm1's output
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    with pytest.raises(RuntimeError, match=INPLACE_MESSAGE):
        out.sum().backward()


def test_in_place_raises_even_when_the_input_needs_no_gradient():
    module = buggy(InPlaceMultiDilateAttention)
    out = module(random_map((1, 7, 7, 12)))
    with pytest.raises(RuntimeError, match=INPLACE_MESSAGE):
        out.sum().backward()


def test_in_place_overwrites_its_callers_input():
    module = buggy(InPlaceMultiDilateAttention)
    x = random_map((1, 7, 7, 12))
    before = x.clone()
    with torch.no_grad():
        module(x)
    assert not torch.equal(x, before)


def test_in_place_breaks_a_training_step_of_a_dilate_block():
    torch.manual_seed(0)
    block = DilateBlock(12, 6, qkv_bias=True).double()
    block.attn = buggy(InPlaceMultiDilateAttention)
    loss = block(random_map((1, 12, 8, 8))).square().mean()
    with pytest.raises(RuntimeError, match=INPLACE_MESSAGE):
        loss.backward()


def test_issue_13_workaround_clone_before_qkv_makes_backward_right():
    """Issue #13's fix, qkv(x.clone()): the writes no longer touch what the convolution saved.

    Inside a DilateBlock (the in-place module's input is norm1's output) the gradients
    then equal those of the out-of-place MultiDilateAttention, computed independently.
    """

    class ClonedBeforeQkv(InPlaceMultiDilateAttention):
        def _qkv_groups(self, x_channels_first):
            return super()._qkv_groups(x_channels_first.clone())

    grads = []
    for make in (lambda: buggy(ClonedBeforeQkv), correct):
        torch.manual_seed(0)
        block = DilateBlock(12, 6, qkv_bias=True).double()
        block.attn = make()
        x = random_map((1, 12, 8, 8)).requires_grad_(True)
        block(x).square().mean().backward()  # no RuntimeError with the workaround
        grads.append((x.grad, block.attn.qkv.weight.grad))
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


def test_correct_module_backward_runs_and_leaves_its_input_alone():
    module = correct()
    x = random_map((2, 9, 8, 12)).requires_grad_(True)
    before = x.detach().clone()
    module(x).sum().backward()
    assert torch.equal(x.detach(), before)
    assert x.grad.abs().sum() > 0


# --------------------------------------------------------------------------- 2. detach
def test_detach_forward_is_right_backward_runs_but_qkv_gets_nothing():
    module = buggy(DetachedMultiDilateAttention)
    x = random_map((2, 9, 8, 12)).requires_grad_(True)
    out = module(x * 1.0)
    torch.testing.assert_close(out, msda_by_hand(module, x.detach(), (1, 2, 3)), rtol=1e-10, atol=1e-10)
    out.sum().backward()  # no error: that is what makes the "fix" tempting
    assert module.qkv.weight.grad is None
    assert module.qkv.bias.grad is None
    assert module.proj.weight.grad is not None and module.proj.weight.grad.abs().sum() > 0
    assert x.grad is not None and torch.all(x.grad == 0)  # nothing reaches the input through attention


def test_detach_leaves_qkv_unchanged_by_an_optimiser_step():
    module = buggy(DetachedMultiDilateAttention)
    qkv_before = module.qkv.weight.detach().clone()
    proj_before = module.proj.weight.detach().clone()
    optimiser = torch.optim.SGD(module.parameters(), lr=0.1)
    for _ in range(3):
        optimiser.zero_grad()
        module(random_map((1, 7, 7, 12))).square().mean().backward()
        optimiser.step()
    assert torch.equal(module.qkv.weight, qkv_before)
    assert not torch.equal(module.proj.weight, proj_before)


def test_correct_module_gives_qkv_a_gradient():
    module = correct()
    module(random_map((2, 9, 8, 12))).sum().backward()
    assert module.qkv.weight.grad is not None and module.qkv.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- 3. fixed rate
@pytest.mark.parametrize("dilation", [(1, 2, 3), (3, 2, 1), (2, 2, 2)])
def test_fixed_rate_gives_the_same_output_whatever_the_dilation(dilation):
    x = random_map((2, 11, 10, 12))
    out = buggy(FixedRateMultiDilateAttention, dilation=dilation)(x)
    undilated = buggy(FixedRateMultiDilateAttention, dilation=(1, 1, 1))(x)
    torch.testing.assert_close(out, undilated, rtol=0, atol=0)
    # and that is the correct module with every dilation set to 1
    torch.testing.assert_close(out, msda_by_hand(correct(), x, (1, 1, 1)), rtol=1e-10, atol=1e-10)


def test_correct_module_output_changes_with_the_dilation():
    x = random_map((2, 11, 10, 12))
    dilated = correct(dilation=(1, 2, 3))(x)
    undilated = correct(dilation=(1, 1, 1))(x)
    assert (dilated - undilated).abs().max() > 1e-3
    torch.testing.assert_close(dilated, msda_by_hand(correct(), x, (1, 2, 3)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls, reaches", [(MultiDilateAttention, True), (FixedRateMultiDilateAttention, False)])
def test_gradient_check_sees_whether_the_dilated_pixel_is_reached(cls, reaches):
    """d output[centre] / d input at 3 columns away: nonzero only if dilation 3 is honoured."""
    module = correct() if cls is MultiDilateAttention else buggy(cls)
    x = random_map((1, 7, 7, 12)).requires_grad_(True)
    module(x)[0, 3, 3].sum().backward()
    assert bool(x.grad[0, 3, 6].abs().sum() > 0) is reaches
    assert x.grad[0, 3, 4].abs().sum() > 0  # the neighbour is reached by both


def test_fixed_rate_gradients_flow():
    module = buggy(FixedRateMultiDilateAttention)
    x = random_map((1, 7, 7, 12)).requires_grad_(True)
    module(x).sum().backward()
    assert module.qkv.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("cls", list(CIRCULATING_BUGS.values()))
@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(dim=0, num_heads=3), "dim"),
        (dict(dim=12, num_heads=5), "num_heads"),
        (dict(dim=12, num_heads=4), "num_heads"),
        (dict(dim=12, num_heads=6, kernel_size=4), "kernel_size"),
        (dict(dim=12, num_heads=6, dilation=(1, 0, 3)), "dilation"),
    ],
)
def test_bad_arguments_name_the_argument(cls, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        cls(**kwargs)


@pytest.mark.parametrize("cls", list(CIRCULATING_BUGS.values()))
def test_wrong_input_shape_is_a_value_error(cls):
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        cls(12, 6)(torch.zeros(1, 12, 5, 5))
