"""The checkpoint cells of lesson 05 really load released-style DilateFormer weights.

The code under test is the notebook's own: its setup, loader and use cells are
read from the stored notebook and run here, with ``CHECKPOINT`` pointing at
files saved in a temporary folder in the formats the official repository
produces: its DeiT-based ``main.py`` saves ``{"model": state_dict,
"optimizer": ..., "lr_scheduler": ..., "epoch": ..., "model_ema": ...,
"scaler": ..., "args": argparse.Namespace, "max_accuracy": ...}``; a bare
state_dict and one saved from DistributedDataParallel (keys prefixed
``module.``) are covered too.
"""

import argparse
import json
import pathlib

import pytest
import torch

from dilate_lab import DilateFormer, dilateformer_tiny

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "05_dilateformer.ipynb"


def cell_source(marker: str) -> str:
    """Source of the one code cell containing ``marker``, without IPython magics."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    found = [
        "".join(cell["source"]) for cell in cells
        if cell["cell_type"] == "code" and marker in "".join(cell["source"])
    ]
    assert len(found) == 1, f"expected one cell with {marker!r}, found {len(found)}"
    return "\n".join(line for line in found[0].splitlines() if not line.lstrip().startswith("%"))


@pytest.fixture(scope="module")
def notebook():
    """The namespace after the notebook's setup and loader cells."""
    namespace = {}
    exec(cell_source("from dilate_lab import ("), namespace)
    exec(cell_source("def load_official_checkpoint"), namespace)
    namespace["device"] = "cpu"
    return namespace


def shallow_model(depths=(1, 1, 2, 1), seed=0):
    """A narrow, shallow DilateFormer: the same layout and key names as Tiny, cheap to save and load."""
    torch.manual_seed(seed)
    return DilateFormer(img_size=64, embed_dim=24, depths=depths, num_heads=(3, 6, 12, 24)).eval()


def with_batchnorm_statistics(model):
    """BatchNorm statistics that differ from a fresh model's, so that buffers must load too."""
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def source_model():
    return with_batchnorm_statistics(shallow_model(seed=3))


@pytest.fixture(scope="module")
def source_tiny():
    torch.manual_seed(3)
    return with_batchnorm_statistics(dilateformer_tiny().eval())


def training_checkpoint(model):
    """What the official main.py writes: the weights under "model", among other entries."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": {"t_initial": 300, "lr_min": 1e-5, "base_values": [5e-4]},
        "epoch": 299,
        "model_ema": model.state_dict(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "args": argparse.Namespace(model="dilateformer_tiny", lr=5e-4, epochs=300, drop_path=0.1, data_set="IMNET"),
        "max_accuracy": 82.1,
    }


def assert_same_weights(model, reference):
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("wrapping", ["training checkpoint", "bare state_dict", "DistributedDataParallel"])
def test_loader_restores_every_weight(notebook, source_model, tmp_path, wrapping):
    if wrapping == "training checkpoint":
        content = training_checkpoint(source_model)
    elif wrapping == "bare state_dict":
        content = source_model.state_dict()
    else:
        content = {"model": {f"module.{k}": v for k, v in source_model.state_dict().items()}}
    path = tmp_path / "dilateformer-tiny.pth"
    torch.save(content, path)
    fresh = shallow_model(seed=99)
    loaded = notebook["load_official_checkpoint"](fresh, str(path))
    assert loaded is fresh
    assert_same_weights(loaded, source_model)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), source_model(image), rtol=0, atol=0)


def test_loader_refuses_a_checkpoint_of_another_size(notebook, tmp_path):
    path = tmp_path / "deeper.pth"
    torch.save({"model": shallow_model(depths=(1, 2, 2, 1)).state_dict()}, path)
    with pytest.raises(ValueError, match="does not fit this model"):
        notebook["load_official_checkpoint"](shallow_model(), str(path))


class _Arbitrary:
    """An object weights_only loading must refuse."""


def test_loader_refuses_arbitrary_objects(notebook, source_model, tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": source_model.state_dict(), "extra": _Arbitrary()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        notebook["load_official_checkpoint"](shallow_model(), str(path))


def test_use_cell_skips_without_a_checkpoint(notebook, capsys):
    exec(cell_source("if CHECKPOINT is None"), {**notebook, "CHECKPOINT": None})
    assert "skipping" in capsys.readouterr().out


def test_use_cell_classifies_with_the_loaded_weights(notebook, source_tiny, tmp_path, capsys):
    path = tmp_path / "dilateformer-tiny.pth"
    torch.save(training_checkpoint(source_tiny), path)
    shown = []
    namespace = {**notebook, "CHECKPOINT": str(path), "display": shown.append}
    exec(cell_source("if CHECKPOINT is None"), namespace)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("class")]
    assert len(lines) == 5
    # the top class printed is the source model's top class on the normalised photograph
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    photo = (namespace["sample_image_tensor"](224) - mean) / std
    with torch.no_grad():
        expected_top = int(source_tiny(photo).argmax())
    assert lines[0].split(":")[0].split()[-1] == str(expected_top)
    assert_same_weights(namespace["trained"], source_tiny)
    assert len(shown) == 1 and shown[0].name == "attention-viewer"
