"""DilateFormer registered in timm: create_model, timm's optimizer factory, a training step.

Skipped where timm is not installed. Parameter counts are computed from the
official key list (tests/official_reference.py), not from this package's models.
"""

import importlib.util
import subprocess
import sys

import pytest
import torch

if importlib.util.find_spec("timm") is None:
    pytest.skip("timm is not installed", allow_module_level=True)

import dilate_lab.timm_models as timm_models  # before timm: it makes timm importable when torchvision is not
import timm
import timm.loss
import timm.optim

from dilate_lab import DilateFormer
from dilate_lab.checkpoint import load_checkpoint

from official_reference import official_keys

SMALL = dict(img_size=64, embed_dim=24, depths=(1, 1, 2, 1))


def official_parameter_count(**settings) -> int:
    """Parameters (not BatchNorm buffers) of the official model with these settings."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(
        torch.Size(shape).numel()
        for key, shape in official_keys(**settings).items()
        if not key.endswith(buffers)
    )


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_three_models_are_registered():
    assert timm.list_models("dilateformer*") == ["dilateformer_base", "dilateformer_small", "dilateformer_tiny"]
    cfg = timm.models.get_pretrained_cfg("dilateformer_tiny").to_dict()
    assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert not cfg.get("url") and not cfg.get("hf_hub_id")


def test_create_model_builds_tiny_with_the_official_parameter_count():
    assert round(official_parameter_count(embed_dim=72, depths=(2, 2, 6, 2)) / 1e6, 2) == 17.24  # the paper
    model = timm.create_model("dilateformer_tiny", num_classes=10, img_size=64, drop_path_rate=0.3)
    assert isinstance(model, DilateFormer)
    assert model.depths == (2, 2, 6, 2) and model.embed_dim == 72 and model.num_classes == 10
    assert parameter_count(model) == official_parameter_count(embed_dim=72, depths=(2, 2, 6, 2), num_classes=10)
    assert model.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.3)  # the last block's rate
    assert model.pretrained_cfg["input_size"] == (3, 64, 64)
    assert model.pretrained_cfg["num_classes"] == 10
    assert model.default_cfg is model.pretrained_cfg
    data = timm.data.resolve_data_config({}, model=model)
    assert data["input_size"] == (3, 64, 64) and data["mean"] == (0.485, 0.456, 0.406)


def test_timm_arguments_are_honoured_or_refused_clearly():
    model = timm.create_model(
        "dilateformer_small", in_chans=1, num_classes=3, drop_rate=0.2, global_pool="avg",
        bn_momentum=0.01, pretrained_cfg_overlay=dict(crop_pct=1.0), **{**SMALL, "depths": (1, 1, 1, 1)},
    )
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 3)
    assert model.pretrained_cfg["crop_pct"] == 1.0
    assert model.patch_embed.proj[1].momentum == 0.01
    assert model.stages[0].blocks[0].mlp.drop.p == 0.2
    with pytest.raises(ValueError, match="pretrained=True.*load_checkpoint"):
        timm.create_model("dilateformer_base", pretrained=True)
    with pytest.raises(ValueError, match="global_pool must be 'avg'"):
        timm.create_model("dilateformer_tiny", global_pool="max", **SMALL)


def test_one_training_step_with_timm_optimizer_and_loss():
    torch.manual_seed(0)
    model = timm.create_model("dilateformer_tiny", num_classes=5, **SMALL)
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    groups = {group["weight_decay"]: group["params"] for group in optimizer.param_groups}
    assert set(groups) == {0.0, 0.05}
    by_id = {id(p): name for name, p in model.named_parameters()}
    no_decay = {by_id[id(p)] for p in groups[0.0]}
    assert "stages.0.blocks.0.norm1.weight" in no_decay and "head.bias" in no_decay
    assert "stages.0.blocks.0.attn.qkv.bias" in no_decay
    assert {by_id[id(p)] for p in groups[0.05]} == {n for n, p in model.named_parameters() if p.ndim > 1}

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    images, labels = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    loss = timm.loss.LabelSmoothingCrossEntropy(smoothing=0.1)(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []  # every parameter, the qkv projections included, got a gradient and moved


def test_layer_decay_groups_follow_the_stages():
    model = timm.create_model("dilateformer_tiny", num_classes=5, **SMALL)
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    by_id = {id(p): name for name, p in model.named_parameters()}
    scale = {by_id[id(p)]: g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    stem = scale["patch_embed.proj.0.weight"]
    first, last = scale["stages.0.blocks.0.attn.qkv.weight"], scale["stages.3.blocks.0.attn.qkv.weight"]
    assert stem < first < last < scale["head.weight"] == 1.0


def test_reset_classifier_and_get_classifier():
    model = timm.create_model("dilateformer_tiny", num_classes=5, **SMALL).eval()
    model.reset_classifier(3)
    assert model.get_classifier() is model.head and model.num_classes == 3
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    model.reset_classifier(0)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, model.num_features)
    with pytest.raises(ValueError, match="num_classes must be an int >= 0"):
        model.reset_classifier(-1)


def test_load_checkpoint_into_a_timm_model(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("dilateformer_tiny", num_classes=4, **SMALL).eval()
    torch.save({"model": source.state_dict(), "epoch": 1}, tmp_path / "ck.pth")
    target = load_checkpoint(timm.create_model("dilateformer_tiny", num_classes=4, **SMALL), tmp_path / "ck.pth")
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(image), source(image), rtol=0, atol=0)


def test_import_dilate_lab_does_not_import_timm():
    code = "import sys, dilate_lab; print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_runner_runs_a_script_with_the_models_registered(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("import sys, timm\nprint(timm.is_model('dilateformer_base'), sys.argv[1:])\n")
    timm_models.main([str(script), "--model", "dilateformer_base"])
    assert capsys.readouterr().out.strip() == "True ['--model', 'dilateformer_base']"
    with pytest.raises(SystemExit, match="usage"):
        timm_models.main([])
