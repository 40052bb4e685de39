"""The whole-model benchmark: its reference is the same function, its table is complete."""

import pytest
import torch

from dilate_lab.bench import main
from dilate_lab.bench.model import (
    SHARE_CATEGORIES,
    UnfoldMSDA,
    profile_shares,
    reference_model,
    unfold_swda,
)
from dilate_lab.nn import MultiDilateAttention, dilateformer_tiny
from dilate_lab.ops.reference import swda_naive


def _msda_pair(dilation=(1, 2, 3)):
    torch.manual_seed(0)
    fast = MultiDilateAttention(12, 6, dilation=dilation, qkv_bias=True).double()
    with torch.no_grad():
        fast.qkv.bias.normal_()  # the default zero-initialised biases would hide their path
    reference = reference_model(fast)
    assert type(reference) is UnfoldMSDA
    return fast, reference


@pytest.mark.parametrize("dilation", [(1, 2, 3), (2, 2, 3)])
def test_the_unfold_reference_gives_the_outputs_and_gradients_of_msda(dilation):
    fast, reference = _msda_pair(dilation)
    x = torch.randn(2, 7, 6, 12, dtype=torch.float64)
    outputs, grads = [], []
    for module in (fast, reference):
        xi = x.clone().requires_grad_()
        out = module(xi)
        out.pow(2).sum().backward()
        outputs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in module.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-10, atol=1e-12)
    for g_ref, g_fast in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_ref, g_fast, rtol=1e-10, atol=1e-12)


def test_unfold_swda_is_the_windowed_softmax_of_the_naive_loops():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5, 6, 3, dtype=torch.float64) for _ in range(3))  # B, h, H, W, d

    def channels_first(t):  # B, h, H, W, d -> B, h*d, H, W
        return t.permute(0, 1, 4, 2, 3).reshape(1, 6, 5, 6)

    got = unfold_swda(channels_first(q), channels_first(k), channels_first(v), 2, 3, 2, 0.5)
    expected = swda_naive(q, k, v, 3, 2, "zeros", 0.5).permute(0, 2, 3, 1, 4).reshape(1, 5, 6, 6)
    torch.testing.assert_close(got, expected)


def test_the_reference_model_computes_the_models_function_on_the_same_weights():
    """The channels_last layouts of the model against the official layouts and code path:
    the same outputs in eval mode, the same outputs and gradients in training mode."""
    torch.manual_seed(0)
    model = dilateformer_tiny(num_classes=5, drop_path_rate=0.0).double().eval()
    reference = reference_model(model)
    assert reference.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(reference(x), model(x))
    assert model.stages[0].blocks[0].attn.__class__ is MultiDilateAttention  # the original untouched
    model.train(), reference.train()
    outputs = [m(x) for m in (model, reference)]
    torch.testing.assert_close(outputs[1], outputs[0])
    for out in outputs:
        out.pow(2).sum().backward()
    scale = max(p.grad.abs().max() for p in model.parameters())
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12 * scale, msg=name)


def test_profile_shares_add_up_to_the_whole():
    torch.manual_seed(0)
    model = dilateformer_tiny(img_size=32, num_classes=5)
    shares = profile_shares(model, torch.randn(1, 3, 32, 32), passes=1)
    assert list(shares)[: len(SHARE_CATEGORIES)] == list(SHARE_CATEGORIES)
    assert sum(shares[c] for c in SHARE_CATEGORIES) == pytest.approx(100.0, abs=0.01)
    assert all(shares[c] >= 0 for c in SHARE_CATEGORIES)
    assert shares["GEMMs"] > 0 and shares["convolutions"] > 0 and shares["attention"] > 0


def test_model_quick_prints_every_row_of_the_table(capsys):
    assert main(["--model", "--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for row in (
        "| inference, batch 1 (images/s) |",
        "| training step, batch 2 (images/s) |",
        "| inference, bf16 autocast",
        "| inference, torch.compile | not measured",
        "of the sgemm roof",
        "sgemm",
        "GMACs per image",
    ):
        assert row in out, row
    for category in SHARE_CATEGORIES:
        assert f"| {category} |" in out
    assert "- inference >= 2x the reference:" in out and "(quick: not judged)" in out


def test_compile_without_model_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--compile"])
    assert "--compile goes with --model" in capsys.readouterr().err
