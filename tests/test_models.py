"""DilateBlock, GlobalBlock and DilateFormer: official layout, official forward, gradients, checks."""

import pytest
import torch

from dilate_lab import (
    DilateBlock,
    DilateFormer,
    GlobalAttention,
    GlobalBlock,
    MultiDilateAttention,
    dilateformer_base,
    dilateformer_small,
    dilateformer_tiny,
)
from dilate_lab.nn import DropPath
from official_reference import TINY, official_forward, official_keys, random_state_dict


# factory, the paper's parameter count, the official configuration
RELEASED = [
    (dilateformer_tiny, 17.24, TINY),
    (dilateformer_small, 24.06, dict(embed_dim=72, depths=(3, 5, 8, 3))),
    (dilateformer_base, 47.43, dict(embed_dim=96, depths=(4, 8, 10, 3))),
]


@pytest.mark.parametrize("factory, millions, config", RELEASED, ids=lambda v: getattr(v, "__name__", ""))
def test_parameter_count_and_state_dict_are_the_official_ones(factory, millions, config):
    model = factory()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_keys(**config)


def test_official_weights_load_strictly_and_give_the_official_output():
    """A checkpoint with the official layout loads with strict=True; the forward agrees."""
    state = random_state_dict(official_keys(**TINY), seed=0)
    model = dilateformer_tiny().double().eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
        expected = official_forward(x, state, **TINY)
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("block_cls", [DilateBlock, GlobalBlock])
def test_block_gradients_reach_every_parameter_and_input_is_untouched(block_cls):
    torch.manual_seed(0)
    block = block_cls(12, 6, qkv_bias=True, drop_path=0.0).double()
    x = torch.randn(2, 12, 7, 6, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    out = block(x)
    assert out.shape == x.shape
    (out * torch.randn_like(out)).sum().backward()
    assert torch.equal(x.detach(), before)
    assert x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert block.attn.qkv.weight.grad.abs().sum() > 0


def test_block_is_residual_around_position_attention_and_mlp():
    """With zeroed branches (pos_embed, attn.proj, mlp.fc2) a block is the identity."""
    block = DilateBlock(12, 6).double()
    with torch.no_grad():
        for layer in (block.pos_embed, block.attn.proj, block.mlp.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
    x = torch.randn(1, 12, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(block(x), x)


def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    drop = DropPath(0.5)
    x = torch.ones(400, 3, 2, 2)
    y = drop(x)
    per_sample = y.reshape(400, -1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # all or nothing within a sample
    assert 120 < (per_sample[:, 0] == 0).sum() < 280
    drop.eval()
    assert torch.equal(drop(x), x)


def test_tiny_forward_backward_at_224_and_forward_at_160():
    torch.manual_seed(0)
    model = dilateformer_tiny(num_classes=10)
    x = torch.randn(2, 3, 224, 224)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.stages[0].blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 160, 160)).shape == (1, 10)


def test_small_two_stage_model_for_32x32():
    model = DilateFormer(img_size=32, num_classes=10, embed_dim=36, depths=(2, 1),
                         num_heads=(3, 6), drop_path_rate=0.0)
    assert model.stride == 8
    assert model.dilate_attention == (True, False)
    assert model.num_features == 72  # doubled by stage 1's downsampling
    kinds = [type(b) for stage in model.stages for b in stage.blocks]
    assert kinds == [DilateBlock, DilateBlock, GlobalBlock]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model(torch.randn(1, 3, 64, 40)).shape == (1, 10)


@pytest.mark.parametrize(
    "dilate_attention, dilation, msda_dilations, n_global",
    [
        ((True, True), (1, 2, 3), [(1, 2, 3)] * 2, 0),
        ((True, True), (1, 1, 1), [(1, 1, 1)] * 2, 0),
        ((False, False), (1, 2, 3), [], 2),
    ],
)
def test_ablation_configurations(dilate_attention, dilation, msda_dilations, n_global):
    model = DilateFormer(img_size=64, num_classes=10, embed_dim=24, depths=(1, 1), num_heads=(3, 6),
                         dilate_attention=dilate_attention, dilation=dilation)
    msda = [m.dilation for m in model.modules() if isinstance(m, MultiDilateAttention)]
    assert msda == msda_dilations
    assert sum(isinstance(m, GlobalAttention) for m in model.modules()) == n_global
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_stage_widths_follow_downsampling():
    model = DilateFormer(embed_dim=24, depths=(1, 1, 1), num_heads=(3, 6, 6),
                         downsamples=(True, False, False), num_classes=0)
    widths = [stage.blocks[0].dim for stage in model.stages]
    assert widths == [24, 48, 48]
    assert model.stride == 8
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 48)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(img_size=100), "img_size"),
        (dict(img_size=(224, 200)), "img_size"),
        (dict(img_size=0), "img_size"),
        (dict(num_heads=(3, 9, 12, 24)), r"num_heads\[1\]"),
        (dict(num_heads=(3, 6, 12)), "num_heads"),
        (dict(num_heads=(2, 4, 8, 16)), r"num_heads\[0\].*len\(dilation\)"),
        (dict(dilation=()), "dilation"),
        (dict(dilation=(1, 0, 3)), r"dilation\[1\]"),
        (dict(kernel_size=2), "kernel_size"),
        (dict(kernel_size="3"), "kernel_size"),
        (dict(depths=()), "depths"),
        (dict(depths=(2, 0, 6, 2)), r"depths\[1\]"),
        (dict(dilate_attention=(True, False)), "dilate_attention"),
        (dict(downsamples=(True, True, True)), "downsamples"),
        (dict(merging_way="avgpool3_2"), "merging_way"),
        (dict(drop_path_rate=2.0), "drop_path_rate"),
        (dict(mlp_ratio=0), "mlp_ratio"),
        (dict(num_classes=-1), "num_classes"),
        (dict(padding="reflect"), "padding"),
        (dict(impl="cuda"), "impl"),
    ],
)
def test_bad_configuration_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        DilateFormer(**{"embed_dim": 24, **kwargs})


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(dim=12, num_heads=5), "dim"),
        (dict(dim=12, num_heads=4), "num_heads"),
        (dict(dim=12, num_heads=6, dilation=[]), "dilation"),
        (dict(dim=12, num_heads=6, kernel_size=3.5), "kernel_size"),
        (dict(dim=12, num_heads=6, drop_path=-1), "drop_path"),
    ],
)
def test_bad_block_configuration_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        DilateBlock(**kwargs)


def test_global_block_checks_heads():
    with pytest.raises(ValueError, match="num_heads"):
        GlobalBlock(12, 5)


def test_input_size_it_cannot_take():
    model = DilateFormer(img_size=32, embed_dim=12, depths=(1, 1), num_heads=(3, 6), num_classes=2)
    with pytest.raises(ValueError, match="height and width must be multiples of 8"):
        model(torch.zeros(1, 3, 36, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 32, 32))


def test_configuration_is_normalised_before_building():
    """Three stages: the first two (half, rounded up) dilated, downsampling after all but the
    last; lists become tuples; widths 24 -> 48 -> 96, and no downsampling after the last."""
    from dilate_lab.nn.dilateformer import DilateFormerConfig

    cfg = DilateFormerConfig(img_size=[32, 64], embed_dim=24, depths=[1, 2, 1], num_heads=[3, 6, 6])
    assert cfg.dilate_attention == (True, True, False)
    assert cfg.downsamples == (True, True, False)
    assert cfg.depths == (1, 2, 1) and cfg.img_size == (32, 64)
    assert cfg.dims == [24, 48, 96] and cfg.num_features == 96 and cfg.stride == 16
    model = DilateFormer(img_size=32, num_classes=0, embed_dim=24, depths=[1, 2, 1], num_heads=[3, 6, 6])
    assert [len(stage.blocks) for stage in model.stages] == [1, 2, 1]
    assert model.num_features == 96 and model.config.dims == cfg.dims
    with pytest.raises(ValueError, match="img_size must be a multiple of the model's total stride 16"):
        DilateFormerConfig(img_size=40, embed_dim=24, depths=[1, 2, 1], num_heads=[3, 6, 6])
