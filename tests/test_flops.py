"""count_flops: the paper's 3.18 GFLOPs, fvcore's per-part numbers, and a count by hand."""

import pytest
import torch.nn as nn

from dilate_lab import (
    PAPER_GFLOPS,
    DilateFormer,
    FlopCount,
    count_flops,
    dilateformer_tiny,
    format_flops_table,
)

# fvcore 0.1.5 FlopCountAnalysis (the counter of the official check_model.py), by module, for
# DilateFormer-Tiny on one 224x224 image in eval mode, run once outside this project.
FVCORE_TINY_224 = {
    "stem": 444_760_064,          # patch_embed
    "stage 1": 480_259_584,       # stages.0
    "stage 2": 471_792_384,       # stages.1
    "stage 3": 1_382_919_552,     # stages.2
    "stage 4": 396_772_992,       # stages.3
    "head": 141_120 + 576_000,    # norm + head
}


@pytest.fixture(scope="module")
def tiny_count():
    return count_flops(dilateformer_tiny(), img_size=224)


def test_tiny_matches_the_paper(tiny_count):
    assert abs(tiny_count.total / 3.18e9 - 1) < 0.05
    assert round(tiny_count.total / 1e9, 2) == PAPER_GFLOPS["dilateformer_tiny"] == 3.18


def test_tiny_parts_match_fvcore_and_add_up(tiny_count):
    assert list(tiny_count.by_part) == ["stem", "stage 1", "stage 2", "stage 3", "stage 4", "head"]
    assert tiny_count.by_part == FVCORE_TINY_224
    assert sum(tiny_count.by_part.values()) == tiny_count.total
    assert sum(tiny_count.by_operator.values()) == tiny_count.total
    assert tiny_count.img_size == (224, 224)


def small_model_by_hand():
    """FLOPs of the 2-stage model below on a 32x32 image, layer by layer (MACs)."""
    stem = (
        16 * 3 * 9 * 32 * 32 + 2 * 16 * 32 * 32      # conv 3->16 at 32x32, BN
        + 32 * 16 * 9 * 16 * 16 + 2 * 32 * 16 * 16   # conv 16->32 stride 2, BN
        + 64 * 32 * 9 * 16 * 16 + 2 * 64 * 16 * 16   # conv 32->64, BN
        + 24 * 64 * 9 * 8 * 8                        # conv 64->24 stride 2
    )
    n1, c1 = 8 * 8, 24  # stage 1: multi-scale dilated attention, 3x3 windows
    stage1 = (
        c1 * 9 * n1                      # depthwise position embedding
        + 5 * n1 * c1 * 2                # norm1, norm2
        + n1 * c1 * 3 * c1               # qkv (1x1 conv)
        + 2 * n1 * 9 * c1                # q.K and weights.V over each 9-key window, all heads
        + n1 * c1 * c1                   # proj
        + 2 * n1 * c1 * 4 * c1           # mlp fc1, fc2
        + 48 * 24 * 9 * 4 * 4 + 2 * 48 * 4 * 4  # downsampling conv to 4x4, BN
    )
    n2, c2 = 4 * 4, 48  # stage 2: global attention
    stage2 = (
        c2 * 9 * n2 + 5 * n2 * c2 * 2 + n2 * c2 * 3 * c2
        + 2 * n2 * n2 * c2               # q.K^T and weights.V over all 16 tokens
        + n2 * c2 * c2 + 2 * n2 * c2 * 4 * c2
    )
    head = 5 * n2 * c2 + c2 * 10
    return {"stem": stem, "stage 1": stage1, "stage 2": stage2, "head": head}


def test_small_model_matches_a_count_by_hand():
    model = DilateFormer(img_size=32, num_classes=10, embed_dim=24, depths=(1, 1), num_heads=(3, 6))
    count = count_flops(model)
    assert count.img_size == (32, 32)
    assert count.by_part == small_model_by_hand()


def test_count_does_not_depend_on_impl_and_restores_training_mode():
    counts = []
    for impl in ("unfold", "shift"):
        model = DilateFormer(img_size=64, embed_dim=24, depths=(1, 1), num_heads=(3, 6), impl=impl)
        model.train()
        counts.append(count_flops(model).total)
        assert model.training
    assert counts[0] == counts[1]


def test_other_sizes_and_plain_modules():
    model = DilateFormer(img_size=32, embed_dim=24, depths=(1, 1), num_heads=(3, 6))
    assert count_flops(model, img_size=(64, 32)).img_size == (64, 32)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    count = count_flops(conv)
    assert count.total == 8 * 3 * 9 * 224 * 224
    assert count.by_operator["conv"] == count.total


def test_bad_image_size_names_img_size():
    model = DilateFormer(img_size=32, embed_dim=24, depths=(1, 1), num_heads=(3, 6))
    with pytest.raises(ValueError, match="img_size"):
        count_flops(model, img_size=36)  # not a multiple of the stride, 8
    with pytest.raises(ValueError, match="img_size"):
        count_flops(model, img_size=0)


def test_table_lists_every_part_and_the_paper(tiny_count):
    table = format_flops_table(tiny_count, paper_gflops=3.18)
    for part in ["stem", "stage 1", "stage 2", "stage 3", "stage 4", "head", "total"]:
        assert part in table
    assert "1.383" in table  # stage 3 in GFLOPs
    assert "paper: 3.18" in table
    with pytest.raises(ValueError, match="count"):
        format_flops_table({"total": 1})


def test_flop_count_is_a_plain_record():
    count = FlopCount(img_size=(8, 8), total=10, by_part={"a": 10}, by_operator={"conv": 10})
    assert count.gflops == 1e-8


def test_count_flops_restores_every_submodule_mode():
    """A model training with frozen (eval-mode) norms keeps exactly that state after counting."""
    from dilate_lab import dilateformer_tiny

    model = dilateformer_tiny().train()
    frozen = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for module in frozen:
        module.eval()
    before = {module: module.training for module in model.modules()}
    count_flops(model, 64)
    assert {module: module.training for module in model.modules()} == before
    assert frozen and not any(module.training for module in frozen)
