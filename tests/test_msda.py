"""MultiDilateAttention: against swda by hand, the dense reference and the official forward."""

import pytest
import torch
import torch.nn.functional as F

from dilate_lab import SWDA_IMPLS, MultiDilateAttention, swda, trace_tensors
from dilate_lab.ops.reference import swda_shift
from official_reference import official_msda
from reference import dense_swda


def make_msda(dim=12, num_heads=6, seed=0, **kwargs):
    torch.manual_seed(seed)
    msda = MultiDilateAttention(dim, num_heads, **kwargs).double()
    with torch.no_grad():  # non-trivial biases, so that every parameter matters
        for p in msda.parameters():
            p.normal_(0.0, 0.3)
    return msda


def random_map(shape, seed=1, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_(requires_grad)


def group_qkv(msda, x, group):
    """q, k, v of one group, (B, heads/groups, H, W, head_dim), computed here by hand."""
    B, H, W, C = x.shape
    qkv = F.conv2d(x.permute(0, 3, 1, 2), msda.qkv.weight, msda.qkv.bias)  # B, 3C, H, W
    groups = len(msda.dilation)
    width = C // groups
    heads = msda.num_heads // groups
    parts = []
    for t in range(3):  # q, k, v blocks of C channels, each split into contiguous groups
        block = qkv[:, t * C + group * width : t * C + (group + 1) * width]  # B, width, H, W
        block = block.reshape(B, heads, width // heads, H, W)
        parts.append(block.permute(0, 1, 3, 4, 2))  # B, heads, H, W, d
    return parts


def test_one_group_equals_swda_by_hand():
    for r in (1, 2, 3):
        msda = make_msda(dim=8, num_heads=2, dilation=(r,), qkv_bias=True)
        x = random_map((2, 6, 7, 8))
        q, k, v = group_qkv(msda, x, 0)
        attended = swda(q, k, v, 3, r)  # B, heads, H, W, d
        merged = attended.permute(0, 2, 3, 1, 4).reshape(2, 6, 7, 8)
        expected = F.linear(merged, msda.proj.weight, msda.proj.bias)
        torch.testing.assert_close(msda(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dilation", [(1, 2, 3), (3, 1), (2, 2, 4)])
def test_every_group_uses_its_own_dilation(dilation):
    """Each group's output is SWDA with that group's dilation (dense reference)."""
    heads = 2 * len(dilation)
    msda = make_msda(dim=4 * heads, num_heads=heads, dilation=dilation, impl="unfold")
    x = random_map((1, 9, 8, 4 * heads))
    with trace_tensors(keep=True) as steps:
        msda(x)
    recorded = {s.name: s.tensor for s in steps}
    for i, r in enumerate(dilation):
        q, k, v = group_qkv(msda, x, i)
        expected = dense_swda(q, k, v, 3, r)  # B, heads, H, W, d
        expected = expected.permute(0, 2, 3, 1, 4).reshape(1, 9, 8, -1)
        torch.testing.assert_close(recorded[f"group {i} output (dilation {r})"], expected)


def test_changing_one_dilation_changes_only_that_group():
    x = random_map((1, 8, 8, 12))
    a, b = make_msda(dilation=(1, 2, 3)), make_msda(dilation=(1, 2, 1))
    b.load_state_dict(a.state_dict())
    with trace_tensors(keep=True) as steps_a:
        out_a = a(x)
    with trace_tensors(keep=True) as steps_b:
        out_b = b(x)
    ta = {s.name: s.tensor for s in steps_a}
    tb = {s.name: s.tensor for s in steps_b}
    torch.testing.assert_close(ta["group 0 output (dilation 1)"], tb["group 0 output (dilation 1)"])
    torch.testing.assert_close(ta["group 1 output (dilation 2)"], tb["group 1 output (dilation 2)"])
    assert (ta["group 2 output (dilation 3)"] - tb["group 2 output (dilation 1)"]).abs().max() > 1e-3
    assert (out_a - out_b).abs().max() > 1e-3


@pytest.mark.parametrize(
    "dim, heads, kernel_size, dilation, qkv_bias, qk_scale, size",
    [
        (12, 3, 3, (1, 2, 3), True, None, (7, 9)),
        (12, 6, 3, (1, 2, 3), False, None, (8, 8)),
        (16, 4, 5, (2, 3), True, 0.3, (6, 5)),
        (8, 2, 3, (4,), True, None, (3, 11)),
    ],
)
def test_matches_official_forward_and_gradients(dim, heads, kernel_size, dilation, qkv_bias, qk_scale, size):
    msda = make_msda(dim, heads, kernel_size=kernel_size, dilation=dilation, qkv_bias=qkv_bias,
                     qk_scale=qk_scale)
    state = {k: v.detach().clone().requires_grad_(True) for k, v in msda.state_dict().items()}
    x = random_map((2, *size, dim), requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    weight = random_map((2, *size, dim), seed=5)

    out = msda(x)
    (out * weight).sum().backward()
    expected = official_msda(x_ref, state, "", heads, kernel_size, dilation, qk_scale)
    (expected * weight).sum().backward()

    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    for name, p in msda.named_parameters():
        torch.testing.assert_close(p.grad, state[name].grad, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("impl", list(SWDA_IMPLS) + ["auto"])
def test_every_impl_gives_the_same_output(impl):
    reference = make_msda(impl="unfold")
    msda = make_msda(impl=impl)
    x = random_map((1, 5, 6, 12))
    torch.testing.assert_close(msda(x), reference(x), rtol=1e-12, atol=1e-12)


def test_mask_padding_follows_the_dense_reference():
    msda = make_msda(dim=8, num_heads=2, dilation=(2,), padding="mask")
    x = random_map((1, 5, 5, 8))
    q, k, v = group_qkv(msda, x, 0)
    merged = dense_swda(q, k, v, 3, 2, padding="mask").permute(0, 2, 3, 1, 4).reshape(1, 5, 5, 8)
    expected = F.linear(merged, msda.proj.weight, msda.proj.bias)
    torch.testing.assert_close(msda(x), expected)


def test_gradients_reach_qkv_and_input_is_untouched():
    """The circulating bugs: an in-place write breaks backward, a detach starves qkv."""
    msda = make_msda()
    x = random_map((2, 6, 6, 12), requires_grad=True)
    before = x.detach().clone()
    msda(x).square().sum().backward()
    assert torch.equal(x.detach(), before)
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in msda.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_trace_names_follow_the_forward():
    msda = MultiDilateAttention(12, 6, dilation=(1, 2, 3), impl="shift")
    with trace_tensors() as steps:
        msda(torch.zeros(2, 5, 4, 12))
    names = [s.name for s in steps if s.name != "attention weights"]
    expected = ["input (B, H, W, C)", "qkv"]
    for i, r in enumerate((1, 2, 3)):
        expected += [f"group {i} q (dilation {r})", f"group {i} k (dilation {r})",
                     f"group {i} v (dilation {r})", f"group {i} output (dilation {r})"]
    expected += ["heads concatenated", "output (after proj)"]
    assert names == expected
    shapes = {s.name: s.shape for s in steps}
    assert shapes["qkv"] == (2, 36, 5, 4)
    assert shapes["group 1 k (dilation 2)"] == (2, 2, 5, 4, 2)
    assert shapes["group 2 output (dilation 3)"] == (2, 5, 4, 4)
    assert shapes["output (after proj)"] == (2, 5, 4, 12)

    with trace_tensors() as steps:
        MultiDilateAttention(12, 6, impl="unfold")(torch.zeros(1, 5, 4, 12))
    names = [s.name for s in steps]
    assert names.count("unfolded K") == 3 and names.count("unfolded V") == 3
    k_windows = [s for s in steps if s.name == "unfolded K"][0]
    assert k_windows.shape == (1, 2, 20, 9, 2)  # B, heads per group, H*W, k*k, d


def test_attention_dropout():
    x = random_map((1, 5, 5, 12))
    msda = make_msda(attn_drop=1.0)
    plain = make_msda(attn_drop=0.0)
    plain.load_state_dict(msda.state_dict())
    msda.eval()  # no dropout in eval mode
    torch.testing.assert_close(msda(x), plain(x))
    msda.train()  # every attention weight dropped: each group's output is 0, only proj's bias is left
    torch.testing.assert_close(msda(x), msda.proj.bias.expand(1, 5, 5, 12))


@pytest.mark.parametrize("padding", ["zeros", "mask"])
def test_dropout_path_without_dropout_is_swda(padding):
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 6, 5, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    got = swda_shift(q, k, v, 3, 2, padding, 0.4, dropout=torch.nn.Dropout(0.0))
    torch.testing.assert_close(got, dense_swda(q, k, v, 3, 2, padding=padding, scale=0.4))


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(dim=10, num_heads=3), "dim"),
        (dict(dim=12, num_heads=4), "num_heads"),
        (dict(dim=12, num_heads=6, dilation=()), "dilation"),
        (dict(dim=12, num_heads=6, dilation=2), "dilation"),
        (dict(dim=12, num_heads=6, dilation=(1, 0, 3)), "dilation[1]"),
        (dict(dim=12, num_heads=6, dilation=(1, 2.0, 3)), "dilation[1]"),
        (dict(dim=12, num_heads=6, kernel_size=3.0), "kernel_size"),
        (dict(dim=12, num_heads=6, kernel_size=4), "kernel_size"),
        (dict(dim=12, num_heads=6, padding="same"), "padding"),
        (dict(dim=12, num_heads=6, impl="fast"), "impl"),
        (dict(dim=12, num_heads=6, attn_drop=1.5), "attn_drop"),
        (dict(dim=12, num_heads=6, proj_drop=-0.1), "proj_drop"),
        (dict(dim=12, num_heads=6, qk_scale=float("nan")), "scale"),
        (dict(dim=0, num_heads=6), "dim"),
        (dict(dim=12, num_heads=0), "num_heads"),
    ],
)
def test_bad_configuration_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument.replace("[", r"\[").replace("]", r"\]")):
        MultiDilateAttention(**kwargs)


def test_wrong_input_shape():
    msda = MultiDilateAttention(12, 6)
    with pytest.raises(ValueError, match="channels-last"):
        msda(torch.zeros(1, 12, 5, 5))


@pytest.mark.parametrize(
    "make_input,message",
    [
        (lambda: torch.zeros(1, 12, 4, 4), "channels-first"),
        (lambda: [[0.0] * 12], "must be a torch.Tensor"),
        (lambda: torch.zeros(4, 12), "channels-last"),
    ],
)
def test_bad_inputs_to_the_attention_modules(make_input, message):
    from dilate_lab import GlobalAttention

    for module in (MultiDilateAttention(12, 3), GlobalAttention(12, 3)):
        with pytest.raises(ValueError, match=message):
            module(make_input())


def test_a_dtype_mismatch_is_left_to_the_first_layer():
    """The modules check shapes only (so that autocast works): a float64 input into a
    float32 module gets PyTorch's own error from the first projection."""
    from dilate_lab import GlobalAttention

    for module in (MultiDilateAttention(12, 3), GlobalAttention(12, 3)):
        with pytest.raises(RuntimeError, match="dtype|Double|Float"):
            module(torch.zeros(1, 4, 4, 12, dtype=torch.float64))
