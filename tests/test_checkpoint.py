"""load_checkpoint: official file layouts, architecture inferred from the keys, clear errors.

Checkpoints are written here in tmp_path in the layouts that circulate: the
official DeiT-based main.py's training checkpoint (weights under "model" beside
optimizer state, epoch and an argparse.Namespace), a bare state dict, one under
"state_dict", and one saved from DistributedDataParallel ("module." prefixes).
The models are narrow (embed_dim 24) so that saving and loading stay fast; the
released Base layout (embed_dim 96, depths [2, 2, 18, 2]) is checked from the
official key list of tests/official_reference.py without building a 52M model.
"""

import argparse

import pytest
import torch

from dilate_lab import DilateFormer
from dilate_lab.checkpoint import compare_state_dict, infer_config, load_checkpoint, read_state_dict

from official_reference import official_forward, official_keys, random_state_dict

SMALL = dict(embed_dim=24, depths=(1, 1, 3, 1))
IMAGE = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def source_model(seed=3, **overrides):
    """A narrow model whose every weight and BatchNorm statistic differs from a fresh one's."""
    torch.manual_seed(seed)
    model = DilateFormer(img_size=64, **{**SMALL, **overrides}).eval()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.fixture(scope="module")
def source():
    return source_model()


def save(tmp_path, content, name="checkpoint.pth"):
    path = tmp_path / name
    torch.save(content, path)
    return path


def logits(model, image=IMAGE):
    with torch.no_grad():
        return model.eval()(image)


def wrap(state, layout):
    if layout == "training checkpoint":
        return {
            "model": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": [0, 1]}]},
            "epoch": 299,
            "args": argparse.Namespace(model="dilateformer_tiny", lr=5e-4, drop_path=0.1),
            "max_accuracy": 82.1,
        }
    if layout == "state_dict entry":
        return {"state_dict": state, "epoch": 3}
    if layout == "DistributedDataParallel":
        return {"model": {f"module.{k}": v for k, v in state.items()}}
    return state


@pytest.mark.parametrize(
    "layout", ["training checkpoint", "bare", "state_dict entry", "DistributedDataParallel"]
)
def test_builds_the_architecture_from_the_keys_and_reproduces_the_outputs(source, tmp_path, layout):
    path = save(tmp_path, wrap(source.state_dict(), layout))
    loaded = load_checkpoint(None, path, img_size=64)
    assert isinstance(loaded, DilateFormer)
    assert loaded.depths == (1, 1, 3, 1) and loaded.embed_dim == 24
    assert loaded.num_heads == (3, 6, 12, 24)
    assert loaded.dilate_attention == (True, True, False, False)
    assert loaded.num_classes == 1000
    torch.testing.assert_close(logits(loaded), logits(source), rtol=0, atol=0)


def test_loads_into_a_given_model_in_place(source, tmp_path):
    path = save(tmp_path, wrap(source.state_dict(), "training checkpoint"))
    fresh = DilateFormer(img_size=64, **SMALL)
    assert not torch.equal(logits(fresh), logits(source))
    assert load_checkpoint(fresh, path) is fresh
    torch.testing.assert_close(logits(fresh), logits(source), rtol=0, atol=0)


def test_infers_the_released_base_layout_from_the_official_key_list():
    # Shapes only (meta tensors): the released Base file, depths [2, 2, 18, 2], not the code's [4, 8, 10, 3].
    keys = official_keys(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
    state = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    config = infer_config(state)
    assert config["depths"] == (2, 2, 18, 2)
    assert config["embed_dim"] == 96
    assert config["num_heads"] == (3, 6, 12, 24)
    assert config["dilate_attention"] == (True, True, False, False)
    assert config["downsamples"] == (True, True, True, False)
    assert config["num_classes"] == 1000 and config["mlp_ratio"] == 4.0 and config["in_chans"] == 3


def test_depths_2_2_18_2_from_official_keys_match_the_official_forward(tmp_path):
    # Weights laid out by the official key list (not by this package), narrow so the test is fast.
    keys = official_keys(embed_dim=24, depths=(2, 2, 18, 2), num_classes=10)
    saved = {k: v.float() for k, v in random_state_dict(keys, seed=5).items()}
    path = save(tmp_path, {"model": saved, "epoch": 299})
    loaded = load_checkpoint(None, path, img_size=64)
    assert loaded.depths == (2, 2, 18, 2) and loaded.num_classes == 10
    image = IMAGE.double()
    state = {k: v.double() if v.is_floating_point() else v for k, v in saved.items()}
    expected = official_forward(image, state, 24, (2, 2, 18, 2), (3, 6, 12, 24))
    torch.testing.assert_close(logits(loaded.double(), image), expected, rtol=1e-9, atol=1e-9)


def test_a_model_name_checks_the_width_but_takes_the_depths_from_the_file(tmp_path):
    torch.manual_seed(0)
    narrow_tiny = DilateFormer(img_size=64, embed_dim=72, depths=(1, 1, 1, 1), num_classes=4).eval()
    path = save(tmp_path, {"model": narrow_tiny.state_dict()})
    loaded = load_checkpoint("dilateformer_tiny", path, img_size=64)
    assert loaded.depths == (1, 1, 1, 1) and loaded.num_classes == 4
    torch.testing.assert_close(logits(loaded), logits(narrow_tiny), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"'dilateformer_base' \(embed_dim 96\).*embed_dim is 72"):
        load_checkpoint("dilateformer_base", path)


def test_a_missing_key_is_named_with_its_count(source, tmp_path):
    state = source.state_dict()
    del state["stages.2.blocks.1.attn.proj.weight"]
    path = save(tmp_path, {"model": state})
    with pytest.raises(ValueError) as error:
        load_checkpoint(DilateFormer(img_size=64, **SMALL), path)
    message = str(error.value)
    assert "1 key(s) missing from the checkpoint: stages.2.blocks.1.attn.proj.weight" in message
    assert "unexpected" not in message and "strict=False" in message


def test_an_extra_key_is_named(source, tmp_path):
    path = save(tmp_path, {**source.state_dict(), "teacher.head.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match=r"1 key\(s\) unexpected \(not in the model\): teacher.head.weight"):
        load_checkpoint(None, path, img_size=64)


def test_a_deeper_checkpoint_gives_a_short_message_with_counts_and_the_fix(tmp_path):
    deeper = source_model(depths=(1, 2, 3, 1))
    path = save(tmp_path, {"model": deeper.state_dict()})
    with pytest.raises(ValueError) as error:
        load_checkpoint(DilateFormer(img_size=64, **SMALL), path)
    message = str(error.value)
    n_block_keys = len([k for k in deeper.state_dict() if k.startswith("stages.1.blocks.1.")])
    assert f"{n_block_keys} key(s) unexpected" in message
    assert f"({n_block_keys - 5} more)" in message
    assert "depths (1, 2, 3, 1)" in message and "pass None" in message
    assert len(message.splitlines()) <= 4


def test_strict_false_skips_a_head_of_another_size_and_loads_the_rest(source, tmp_path):
    path = save(tmp_path, {"model": source.state_dict()})
    target = DilateFormer(img_size=64, num_classes=10, **SMALL)
    head_before = target.head.weight.detach().clone()
    with pytest.raises(ValueError, match=r"head.weight \(checkpoint \(1000, 192\), model \(10, 192\)\)"):
        load_checkpoint(target, path)
    with pytest.warns(UserWarning, match="2 key\\(s\\) with another shape"):
        load_checkpoint(target, path, strict=False)
    assert torch.equal(target.head.weight, head_before)
    with torch.no_grad():
        torch.testing.assert_close(target.eval().forward_features(IMAGE), source.forward_features(IMAGE),
                                   rtol=0, atol=0)


def test_num_heads_is_not_in_the_weights_and_can_be_given(tmp_path):
    other_heads = (6, 12, 24, 48)
    source = source_model(num_heads=other_heads)
    path = save(tmp_path, source.state_dict())
    by_rule = load_checkpoint(None, path, img_size=64)
    assert by_rule.num_heads == (3, 6, 12, 24)  # loads, but computes something else
    assert not torch.allclose(logits(by_rule), logits(source))
    given = load_checkpoint(None, path, img_size=64, num_heads=other_heads)
    torch.testing.assert_close(logits(given), logits(source), rtol=0, atol=0)


class _Arbitrary:
    """An object that weights_only loading must refuse."""


def test_weights_only_refuses_a_pickled_object(source, tmp_path):
    path = save(tmp_path, {"model": source.state_dict(), "extra": _Arbitrary()})
    with pytest.raises(ValueError, match=r"weights_only=True.*trust"):
        load_checkpoint(None, path)


def test_not_a_dilateformer_file(tmp_path):
    path = save(tmp_path, torch.nn.Linear(3, 2).state_dict())
    with pytest.raises(ValueError, match="not name stages"):
        load_checkpoint(None, path)
    path = save(tmp_path, [torch.zeros(1)], "list.pth")
    with pytest.raises(ValueError, match="holds a list"):
        read_state_dict(path)


def test_bad_arguments(source, tmp_path):
    path = save(tmp_path, source.state_dict())
    with pytest.raises(ValueError, match="model_or_name must be .*dilateformer_base"):
        load_checkpoint("dilateformer_huge", path)
    with pytest.raises(ValueError, match="only apply when building"):
        load_checkpoint(DilateFormer(img_size=64, **SMALL), path, img_size=64)
    with pytest.raises(ValueError, match="path must be a file path"):
        load_checkpoint(None, source.state_dict())


def test_compare_state_dict_reports_nothing_for_a_matching_model(source):
    assert compare_state_dict(source, source.state_dict()).ok
