"""Load DilateFormer weights: the official release files or anything saved from this package.

    from dilate_lab.checkpoint import load_checkpoint

    model = load_checkpoint(None, "dilateformer-base.pth")            # architecture from the keys
    model = load_checkpoint("dilateformer_tiny", "tiny.pth", img_size=256)
    model = load_checkpoint(my_model, "finetuned.pth")               # into a model you built

Why infer the architecture instead of trusting a name: the released Base
checkpoint has depths [2, 2, 18, 2] while the official code's ``dilateformer_base``
says [4, 8, 10, 3] (official issue #15), so building from the name cannot load
it. The state dict says everything structural (blocks per stage, widths, which
stages are dilated, classes, MLP ratio); only the number of heads is not stored
in any tensor, see ``infer_config``.

Files are read with ``torch.load(weights_only=True)``, which refuses arbitrary
pickled objects: a checkpoint can run code when unpickled, and a released file
is somebody else's. ``argparse.Namespace`` (the ``args`` entry that the official
DeiT-based ``main.py`` saves beside the weights) is allowed.

Every mismatch is reported as one ValueError naming the first few missing,
unexpected and wrongly shaped keys with their counts and what to do, rather
than torch's own message, which for a wrong depth lists hundreds of keys.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .nn.dilateformer import DilateFormer, dilateformer_base, dilateformer_small, dilateformer_tiny

__all__ = [
    "MODEL_NAMES",
    "KeyReport",
    "compare_state_dict",
    "infer_config",
    "load_checkpoint",
    "read_state_dict",
]

MODEL_NAMES = {
    "dilateformer_tiny": dilateformer_tiny,
    "dilateformer_small": dilateformer_small,
    "dilateformer_base": dilateformer_base,
}
# Prefixes that wrappers add to every key: DataParallel / DistributedDataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Where training scripts put the weights, in the order they are looked for.
_WEIGHT_ENTRIES = ("model", "state_dict", "model_ema", "state_dict_ema")
_SHOWN = 5  # keys listed per kind in an error message


def _unwrap(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def read_state_dict(path, map_location="cpu") -> dict[str, torch.Tensor]:
    """The weights in a checkpoint file, with wrapper prefixes (``module.``) removed.

    Accepts a training checkpoint (the weights under ``"model"``, ``"state_dict"``
    or ``"model_ema"``, beside optimizer state, epoch, args...) or a bare state dict.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            content = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{os.fspath(path)} holds Python objects that torch.load(weights_only=True) refuses "
                "to unpickle. Unpickling can run arbitrary code: if, and only if, you trust where the "
                "file came from, load it with torch.load(path, weights_only=False) and pass "
                f"checkpoint['model'] to model.load_state_dict. ({str(error).splitlines()[0]})"
            ) from None
    if not isinstance(content, Mapping):
        raise ValueError(
            f"{os.fspath(path)} holds a {type(content).__name__}, not a state dict or a dict with "
            f"one under any of {_WEIGHT_ENTRIES}"
        )
    for entry in _WEIGHT_ENTRIES:
        if isinstance(content.get(entry), Mapping):
            content = content[entry]
            break
    state = {_unwrap(str(k)): v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(
            f"{os.fspath(path)} has no tensors: expected a state dict or a dict with one under "
            f"any of {_WEIGHT_ENTRIES}; its top-level keys are {sorted(map(str, content))[:10]}"
        )
    return state


def _need(state: Mapping, key: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(
            f"the checkpoint has no {key!r}, so it is not a DilateFormer state dict "
            f"(its first keys: {list(state)[:_SHOWN]})"
        )
    return state[key]


def infer_config(state: Mapping[str, torch.Tensor]) -> dict:
    """DilateFormer constructor arguments that build a model matching these weights.

    Read from the keys and shapes: ``depths`` (blocks ``stages.{i}.blocks.{j}``
    per stage), ``embed_dim`` and ``in_chans`` and ``stem_hidden_dim`` (the stem's
    convolutions), ``dilate_attention`` (a dilated block's qkv is a 1x1 Conv2d,
    4-D; a global block's a Linear, 2-D), ``downsamples`` and ``merging_way``
    (the downsampling convolution, its kernel 3 or 2), ``mlp_ratio``, ``qkv_bias``
    and ``num_classes`` (0 when there is no head).

    ``num_heads`` is in no tensor (the qkv weight has the same shape for any
    split into heads). The rule used is the official one: three heads in the
    first stage, the head width ``embed_dim / 3`` kept in every stage, so heads
    grow with the width: (3, 6, 12, 24) for four doubling stages. Pass
    ``num_heads=`` to ``load_checkpoint`` for a model trained otherwise: outputs
    would differ silently, which no loader can detect.
    """
    stage_blocks: dict[int, set[int]] = {}
    for key in state:
        match = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.", key)
        if match:
            stage_blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    n = len(stage_blocks)
    if n == 0 or sorted(stage_blocks) != list(range(n)):
        raise ValueError(
            "the checkpoint's keys do not name stages 0, 1, ... with blocks "
            f"('stages.{{i}}.blocks.{{j}}.'): found stages {sorted(stage_blocks)}"
        )
    depths = []
    for i in range(n):
        blocks = sorted(stage_blocks[i])
        if blocks != list(range(len(blocks))):
            raise ValueError(f"stage {i}'s blocks are not numbered 0, 1, ...: found {blocks}")
        depths.append(len(blocks))

    stem_in = _need(state, "patch_embed.proj.0.weight")  # hidden, in_chans, 3, 3
    embed_dim = int(_need(state, "patch_embed.proj.9.weight").shape[0])
    dims = [int(_need(state, f"stages.{i}.blocks.0.norm1.weight").shape[0]) for i in range(n)]
    dilate = [_need(state, f"stages.{i}.blocks.0.attn.qkv.weight").dim() == 4 for i in range(n)]
    downsamples = [f"stages.{i}.downsample.proj.0.weight" in state for i in range(n)]
    merging = [state[f"stages.{i}.downsample.proj.0.weight"].shape[-1] for i in range(n) if downsamples[i]]
    hidden = int(_need(state, "stages.0.blocks.0.mlp.fc1.weight").shape[0])
    head = state.get("head.weight")
    return dict(
        in_chans=int(stem_in.shape[1]),
        stem_hidden_dim=int(stem_in.shape[0]),
        embed_dim=embed_dim,
        depths=tuple(depths),
        # None where the rule does not divide: the caller must say (load_checkpoint asks)
        num_heads=tuple(3 * dim // embed_dim for dim in dims) if embed_dim % 3 == 0 else None,
        dilate_attention=tuple(dilate),
        downsamples=tuple(downsamples),
        merging_way="conv2_2" if merging and merging[0] == 2 else "conv3_2",
        mlp_ratio=hidden / dims[0],
        qkv_bias="stages.0.blocks.0.attn.qkv.bias" in state,
        num_classes=0 if head is None else int(head.shape[0]),
    )


@dataclass
class KeyReport:
    """How a state dict fits a model: keys only one of them has, and shapes that differ."""

    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, checkpoint, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line per kind of problem: the count and the first few keys."""
        lines = []
        for label, items in (("missing from the checkpoint", self.missing),
                             ("unexpected (not in the model)", self.unexpected)):
            if items:
                more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
                lines.append(f"{len(items)} key(s) {label}: {', '.join(items[:_SHOWN])}{more}")
        if self.mismatched:
            shown = ", ".join(f"{k} (checkpoint {tuple(a)}, model {tuple(b)})"
                              for k, a, b in self.mismatched[:_SHOWN])
            more = f", ... ({len(self.mismatched) - _SHOWN} more)" if len(self.mismatched) > _SHOWN else ""
            lines.append(f"{len(self.mismatched)} key(s) with another shape: {shown}{more}")
        return "\n".join(lines)


def compare_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> KeyReport:
    """Compare key names and shapes, without loading anything."""
    own = model.state_dict()
    report = KeyReport()
    report.missing = [k for k in own if k not in state]
    report.unexpected = [k for k in state if k not in own]
    report.mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape))
                         for k in own if k in state and state[k].shape != own[k].shape]
    return report


def _describe(model: torch.nn.Module) -> str:
    if isinstance(model, DilateFormer):
        return (f"the model (depths {model.depths}, embed_dim {model.embed_dim}, "
                f"num_classes {model.num_classes})")
    return f"the model ({type(model).__name__})"


def _held(state: Mapping) -> str:
    """' (depths ..., embed_dim ...)' as inferred from the weights, or '' if they are too odd."""
    try:
        config = infer_config(state)
    except ValueError:
        return ""
    return (f" (depths {config['depths']}, embed_dim {config['embed_dim']}, "
            f"num_classes {config['num_classes']})")


def _build(name, state: Mapping, model_kwargs: dict) -> DilateFormer:
    config = {**infer_config(state), **model_kwargs}
    if config["num_heads"] is None:
        raise ValueError(
            f"embed_dim {config['embed_dim']} is not a multiple of 3, so the official head rule "
            "(3 heads in the first stage, the same head width after) does not apply, and the "
            "number of heads is stored in no tensor: pass num_heads=(...) to load_checkpoint"
        )
    if name is not None:
        # the family's width, from its own factory; one short stage keeps this cheap
        expected = MODEL_NAMES[name](depths=(1,), num_heads=(3,), num_classes=0).embed_dim
        if expected != config["embed_dim"]:
            raise ValueError(
                f"model_or_name is {name!r} (embed_dim {expected}) but the checkpoint's embed_dim "
                f"is {config['embed_dim']}: pass None to build whatever the checkpoint holds"
            )
    return DilateFormer(**config)


def load_checkpoint(model_or_name, path, *, strict: bool = True, map_location="cpu",
                    **model_kwargs) -> torch.nn.Module:
    """Load a DilateFormer checkpoint; build the model from its keys unless you pass one.

    Args:
        model_or_name: a model to load into (returned, in place); or one of
            ``MODEL_NAMES`` or None, to build a ``DilateFormer`` whose depths,
            widths, dilated stages and classes are read from the checkpoint (a
            name only checks that the checkpoint is of that family's width: the
            released Base weights have depths (2, 2, 18, 2), not the code's).
        path: the file; a training checkpoint or a bare state dict (see ``read_state_dict``).
        strict: True: every key and shape must match, else a ValueError says
            which. False: load what fits, skip the rest with a warning (e.g. an
            ImageNet checkpoint into a 10-class model: the head is skipped).
        map_location: passed to ``torch.load``.
        **model_kwargs: when building, constructor arguments that override the
            inferred ones or are not in the weights (``img_size``, ``impl``,
            ``drop_path_rate``, ``num_heads``, ``num_classes`` with strict=False...).

    Returns the model, in the mode it had: a model built here is in training
    mode, as every new module is; call ``.eval()`` before inference.
    """
    if isinstance(model_or_name, torch.nn.Module):
        if model_kwargs:
            raise ValueError(
                f"model_kwargs {sorted(model_kwargs)} only apply when building a model; "
                "model_or_name is already a model"
            )
        model = model_or_name
    elif model_or_name is None or (isinstance(model_or_name, str) and model_or_name in MODEL_NAMES):
        model = None
    else:
        raise ValueError(
            f"model_or_name must be a torch.nn.Module, None or one of {sorted(MODEL_NAMES)}, "
            f"got {model_or_name!r}"
        )
    state = read_state_dict(path, map_location)
    if model is None:
        model = _build(model_or_name, state, model_kwargs)
    report = compare_state_dict(model, state)
    if not report.ok:
        where = f"{os.fspath(path)} does not fit {_describe(model)}"
        if strict:
            hint = (f"pass None as model_or_name to build the architecture it holds{_held(state)}"
                    if isinstance(model_or_name, torch.nn.Module) else
                    "is it a DilateFormer checkpoint? constructor arguments given to "
                    "load_checkpoint (num_classes, depths...) must match the file")
            raise ValueError(
                f"{where}:\n{report.summary()}\nTo load anyway what fits, pass strict=False; "
                f"or {hint}."
            )
        warnings.warn(f"{where}; loading the rest, skipping:\n{report.summary()}", stacklevel=2)
        bad = {k for k, _, _ in report.mismatched}
        state = {k: v for k, v in state.items() if k not in bad}
    model.load_state_dict(state, strict=strict)
    return model
