"""The shape tracer reports the shapes of a real forward pass; the attention viewer's weights are real."""

from __future__ import annotations

import math
import random

import pytest
import torch

from dilate_lab.geometry import dilated_window
from dilate_lab.nn import DilateFormer
from dilate_lab.nn import MultiDilateAttention
from dilate_lab.course.shapes import IMAGENET_MEAN, IMAGENET_STD, block_attention, normalize_imagenet, trace_msda_shapes
from dilate_lab.tracing import trace_tensors


def random_configs(n: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(n):
        dilations = tuple(rng.choice([1, 2, 3, 4]) for _ in range(rng.choice([1, 2, 3])))
        heads = len(dilations) * rng.choice([1, 2])
        head_dim = rng.choice([1, 2, 4])
        yield dict(
            batch=rng.choice([1, 2, 3]),
            channels=heads * head_dim,
            height=rng.randint(1, 9),
            width=rng.randint(1, 9),
            num_heads=heads,
            kernel_size=rng.choice([1, 3, 5]),
            dilations=dilations,
        )


@pytest.mark.parametrize("config", list(random_configs(12)), ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("impl", ["unfold", "shift"])
def test_traced_shapes_equal_a_real_forward_pass(config, impl):
    B, C, H, W = config["batch"], config["channels"], config["height"], config["width"]
    heads, k, dilations = config["num_heads"], config["kernel_size"], config["dilations"]
    groups, kk = len(dilations), k * k
    head_dim, heads_per_group = C // heads, heads // groups

    rows = trace_msda_shapes(**config, impl=impl)  # meta device: no values

    # the same module run for real on the CPU, its tensors caught by hooks and the tracer
    torch.manual_seed(0)
    module = MultiDilateAttention(C, heads, k, dilations, impl=impl)
    seen = {}

    def remember(name):
        def hook(module, inputs, output):
            seen[name] = output.shape  # returns None: the output is left alone

        return hook

    module.qkv.register_forward_hook(remember("qkv"))
    module.proj.register_forward_hook(remember("proj"))
    x = torch.randn(B, H, W, C)
    with trace_tensors() as real_steps:
        out = module(x)
    assert len(rows) == len(real_steps)
    for row, real in zip(rows, real_steps):
        assert real.name in row.step  # the tracer only adds the group to swda's own names
        assert (row.shape, row.nbytes) == (real.shape, real.nbytes)

    by_step = {r.step: r for r in rows}
    assert by_step["input (B, H, W, C)"].shape == tuple(x.shape)
    assert by_step["qkv"].shape == tuple(seen["qkv"]) == (B, 3 * C, H, W)
    assert rows[-1].step == "output (after proj)"
    assert rows[-1].shape == tuple(out.shape) == tuple(seen["proj"]) == (B, H, W, C)
    for i, r in enumerate(dilations):
        for name in "qkv":
            assert by_step[f"group {i} {name} (dilation {r})"].shape == (B, heads_per_group, H, W, head_dim)
        assert by_step[f"group {i} output (dilation {r})"].shape == (B, H, W, C // groups)
        if impl == "unfold":
            for name in ("unfolded K", "unfolded V"):
                row = by_step[f"group {i} {name} (dilation {r})"]
                assert row.shape == (B, heads_per_group, H * W, kk, head_dim)
                assert row.nbytes == 4 * B * heads_per_group * H * W * kk * head_dim
                assert row.kk_copy == (kk > 1)
    # flagged: the unfolded K and V (unfold only), and the attention weights when head_dim is 1
    # (then they, too, are k*k numbers per entry of K); nothing when k = 1
    expected = set()
    if kk > 1:
        for i, r in enumerate(dilations):
            if impl == "unfold":
                expected |= {f"group {i} unfolded K (dilation {r})", f"group {i} unfolded V (dilation {r})"}
            if head_dim == 1:
                expected.add(f"group {i} attention weights (dilation {r})")
    assert {r.step for r in rows if r.kk_copy} == expected
    assert all(r.nbytes == 4 * math.prod(r.shape) for r in rows)
    assert all(r.vs_input == r.nbytes / (4 * B * H * W * C) for r in rows)


def test_meta_tracing_handles_sizes_too_large_to_run():
    # 8 x 224 x 224 x 576 with 7x7 windows: the unfolded K alone would take 4 * 8*3*50176*49*96 bytes
    rows = trace_msda_shapes(8, 576, 224, 224, 6, 7, (1, 2, 3))
    unfolded = [r for r in rows if r.step.startswith("group 0 unfolded K")][0]
    assert unfolded.shape == (8, 2, 224 * 224, 49, 96)
    assert unfolded.nbytes == 4 * 8 * 2 * 224 * 224 * 49 * 96


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(channels=70, num_heads=3), ("dim (70)", "num_heads (3)")),
        (dict(num_heads=4, channels=72), ("num_heads (4)", "len(dilation)")),
        (dict(kernel_size=4), ("kernel_size",)),
        (dict(dilations=(1, 0)), ("dilations[1]",)),
        (dict(batch=0), ("batch",)),
        (dict(height=0), ("height",)),
    ],
)
def test_impossible_settings_raise_the_library_message(kwargs, words):
    with pytest.raises(ValueError) as error:
        trace_msda_shapes(**kwargs)
    for word in words:
        assert word in str(error.value)


def test_block_attention_defaults_are_stage_one_of_tiny():
    attention = block_attention(image_size=48, seed=0)
    assert attention.weights.shape == (3, 12, 12, 9)
    assert attention.dilations == (1, 2, 3)
    assert attention.image.shape == (48, 48, 3)
    torch.testing.assert_close(torch.from_numpy(attention.weights.sum(-1)), torch.ones(3, 12, 12))
    again = block_attention(image_size=48, seed=0)
    assert (again.weights == attention.weights).all()  # seeded
    assert not (block_attention(image_size=48, seed=1).weights == attention.weights).all()


def test_block_attention_weights_are_softmax_of_the_block_queries_and_keys():
    """Recompute one query's weights by hand from the q and k the block made (zero padding)."""
    torch.manual_seed(0)
    model = DilateFormer(
        img_size=32, num_classes=0, embed_dim=24, depths=(1, 1), num_heads=(6, 6),
        dilation=(1, 2, 3), impl="shift",
    ).eval()
    attention = block_attention(model, image_size=32)
    assert attention.weights.shape == (6, 8, 8, 9)
    assert attention.dilations == (1, 1, 2, 2, 3, 3)

    from dilate_lab.course.images import sample_image_tensor

    # the photograph as the model was trained to see it: ImageNet mean and std per channel
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad(), trace_tensors(keep=True) as steps:
        model.stages[0].blocks[0](model.patch_embed((sample_image_tensor(32) - mean) / std))
    traced = {s.name: s.tensor for s in steps}
    scale = 4**-0.5  # head_dim = 24 / 6
    for row, col in [(0, 0), (3, 5), (7, 2)]:
        for head, r in enumerate(attention.dilations):
            group, h = divmod(head, 2)
            q = traced[f"group {group} q (dilation {r})"][0, h]  # H, W, d
            k = traced[f"group {group} k (dilation {r})"][0, h]
            window = dilated_window(row, col, 3, r, 8, 8)
            logits = torch.stack([
                torch.tensor(0.0) if out else (q[row, col] * k[i, j]).sum() * scale
                for (i, j), out in zip(window.positions, window.outside)
            ])
            expected = torch.softmax(logits, 0)
            torch.testing.assert_close(torch.from_numpy(attention.weights[head, row, col]), expected)


def test_normalize_imagenet_by_hand():
    image = torch.zeros(2, 3, 1, 2)
    image[:, :, 0, 0] = torch.tensor([0.485, 0.456, 0.406])  # the mean itself -> 0
    image[:, :, 0, 1] = 1.0  # white -> (1 - mean) / std
    out = normalize_imagenet(image)
    torch.testing.assert_close(out[:, :, 0, 0], torch.zeros(2, 3))
    torch.testing.assert_close(out[0, :, 0, 1], torch.tensor([0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225]))
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    with pytest.raises(ValueError, match="images"):
        normalize_imagenet(torch.zeros(3, 4, 4))


def test_block_attention_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        block_attention(image_size=30)
    with pytest.raises(ValueError, match="model"):
        block_attention(model=torch.nn.Linear(2, 2))
