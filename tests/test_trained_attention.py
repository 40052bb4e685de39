"""collect_attention and the explorer of lesson 05's trained-attention section."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dilate_lab.course.small_models import SmallDilateFormer, build_model
from dilate_lab.course.trained_attention import collect_attention, trained_attention_explorer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("digits")


@pytest.fixture(scope="module")
def images():
    return torch.randn(7, 1, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("block", [0, 1])
def test_collect_attention_is_attention_maps_image_by_image(model, images, block):
    weights, dilations = collect_attention(model, images, block=block, batch_size=3)  # batches of 3, 3 and 1
    assert weights.shape == (7, 3, 8, 8, 9) and weights.dtype == np.float32
    assert dilations == (1, 2, 3)
    for i in range(len(images)):
        one, same_dilations = model.attention_maps(images[i], block=block)
        np.testing.assert_allclose(weights[i], one.numpy(), atol=1e-6)
        assert same_dilations == dilations
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)  # a softmax over each window


def test_collect_attention_gives_the_weights_swda_uses():
    """The first block's weights, recomputed by hand from its q and k (zero padding, scale 1/sqrt(d))."""
    torch.manual_seed(2)
    net = SmallDilateFormer(in_chans=1, num_classes=3, embed_dim=12, depth=1, num_heads=3, dilation=(1, 2, 3))
    image = torch.randn(1, 1, 24, 20)
    weights, _ = collect_attention(net, image, block=0)  # 1, 3, 6, 5, 9
    block = net.blocks[0]
    with torch.no_grad():
        x = net.patch_embed(image)
        x = x + block.pos_embed(x)  # 1, C, H, W
        qkv = block.attn.qkv(block.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))  # 1, 3C, H, W
        q, k, v = qkv.reshape(1, 3, 3, 4, 6, 5).permute(1, 0, 2, 4, 5, 3)  # each 1, heads, H, W, d
    for h, r in enumerate((1, 2, 3)):
        pad = r
        k_pad = torch.nn.functional.pad(k[:, h], (0, 0, pad, pad, pad, pad))  # 1, H+2r, W+2r, d
        logits = torch.stack([(q[:, h] * k_pad[:, a * r : a * r + 6, b * r : b * r + 5]).sum(-1)
                              for a in range(3) for b in range(3)], dim=-1) / 2.0  # d = 4
        np.testing.assert_allclose(weights[0, h], torch.softmax(logits, -1)[0].numpy(), atol=1e-5)


def test_collect_attention_restores_the_training_mode(model, images):
    model.train()
    collect_attention(model, images[:2])
    assert all(m.training for m in model.modules())
    model.eval()
    collect_attention(model, images[:2])
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("kwargs,word", [
    (dict(block=2), "block must be an int in \\[0, 1\\]"),
    (dict(block=True), "block"),
    (dict(batch_size=0), "batch_size"),
])
def test_collect_attention_bad_arguments_name_the_argument(model, images, kwargs, word):
    with pytest.raises(ValueError, match=word):
        collect_attention(model, images, **kwargs)


def test_collect_attention_refuses_what_it_cannot_read(images):
    with pytest.raises(ValueError, match="SmallDilateFormer"):
        collect_attention(torch.nn.Identity(), images)
    with pytest.raises(ValueError, match="global attention"):
        collect_attention(build_model("digits", "global"), images)
    with pytest.raises(ValueError, match="images must be a batch"):
        collect_attention(build_model("digits"), images[0])


def test_the_explorer_redraws_the_comparison_for_each_setting(model, images):
    weights, dilations = collect_attention(model, images)
    sharp = np.zeros_like(weights)
    sharp[..., 4] = 1.0  # every query on itself
    explorer = trained_attention_explorer({"model": weights, "on itself": sharp}, images, dilations)
    assert explorer.error is None
    explorer.controls["image"].value = 6
    explorer.controls["row"].value = 0
    fig = explorer.figure
    assert "image 6, query (0, 4)" in fig._suptitle.get_text()
    drawn = [a for a in fig.findobj() if a.get_gid() == "m1-head-2"][0]
    assert 1.0 in list(drawn.get_array())  # the query's own position, weight 1
    on_map = [a for a in fig.findobj() if a.get_gid() == "m0-head-0"][0]  # dilation 1: row -1 is padding
    np.testing.assert_allclose(on_map.get_array(), weights[6, 0, 0, 4, 3:])
    with pytest.raises(ValueError, match="one shape"):
        trained_attention_explorer({"a": weights, "b": weights[:3]}, images, dilations)
    with pytest.raises(ValueError, match="images must be"):
        trained_attention_explorer({"a": weights}, images[:2], dilations)
