"""DilateFormer in timm: ``import dilate_lab.timm_models`` registers the three models.

    import dilate_lab.timm_models  # noqa: F401  (registers; needs timm installed)
    import timm

    model = timm.create_model("dilateformer_tiny", num_classes=10, drop_path_rate=0.1)

Registered: ``dilateformer_tiny``, ``dilateformer_small``, ``dilateformer_base``.
They take timm's usual arguments (``num_classes``, ``in_chans``, ``drop_rate``,
``drop_path_rate``, ``global_pool="avg"``, ``bn_momentum``, ``bn_eps``, ``device``,
``dtype``) and every ``DilateFormer`` argument (``img_size``, ``depths``, ``impl``...).
Their pretrained cfg has ImageNet's input size, mean and std and no URL: the
released weights are not downloadable from anywhere timm looks, so
``pretrained=True`` says to download them by hand and use
``dilate_lab.checkpoint.load_checkpoint``.

timm's own ``train.py`` does not import this package, so running this module
registers the models and then runs a script given by path, with its arguments::

    torchrun --nproc_per_node=8 -m dilate_lab.timm_models path/to/train.py --model dilateformer_tiny ...

This module is not imported by ``import dilate_lab``: importing timm takes
seconds, and the library must load fast and without timm.
"""

from __future__ import annotations

import runpy
import sys
import warnings

import torch
import torch.nn as nn

from .nn.dilateformer import DilateFormer

__all__ = [
    "DilateFormerTimm",
    "default_cfgs",
    "dilateformer_base",
    "dilateformer_small",
    "dilateformer_tiny",
]

_TORCHVISION_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_torchvision_fragment = None  # kept alive: a torch.library.Library drops its ops when collected


def _import_timm():
    """Import timm, working around a torchvision whose compiled ops do not load beside this torch.

    timm imports torchvision. A torchvision built for another torch build (the
    CUDA wheel beside a CPU-only torch) cannot load its C++ extension, and then
    fails at import with "operator torchvision::nms does not exist" because its
    Python side registers a fake kernel for that op unconditionally. Declaring
    the op schemas ourselves lets torchvision's pure-Python parts (transforms,
    which timm's data pipeline uses) import; only its compiled ops (nms,
    roi_align...), which nothing here uses, stay unavailable.
    """
    global _torchvision_fragment
    try:
        import timm
        return timm
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        failure = str(error)
    for name in [m for m in sys.modules if m.split(".")[0] in ("timm", "torchvision")]:
        del sys.modules[name]  # half-imported: import again from scratch
    _torchvision_fragment = torch.library.Library("torchvision", "FRAGMENT")
    for op, schema in _TORCHVISION_SCHEMAS.items():
        if not _op_exists(op):
            _torchvision_fragment.define(schema)
    warnings.warn(
        f"torchvision's compiled ops do not load beside torch {torch.__version__} ({failure}); "
        "declared their schemas so that timm imports. torchvision.ops (nms, roi_align) will not "
        "work: install the torchvision build made for this torch to have them.",
        RuntimeWarning,
        stacklevel=3,
    )
    import timm
    return timm


def _op_exists(op: str) -> bool:
    try:
        getattr(torch.ops.torchvision, op)
        return True
    except (AttributeError, RuntimeError):
        return False


timm = _import_timm()
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402
from timm.models import generate_default_cfgs, register_model  # noqa: E402


def _cfg(**overrides) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        # the official training is DeiT's: resize to 256 then centre-crop 224
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj.0",
        "classifier": "head",
        "paper_ids": "arXiv:2302.01791",
        "paper_name": "DilateFormer: Multi-Scale Dilated Transformer for Visual Recognition",
        "origin_url": "https://github.com/JIAOJIAYUASD/dilateformer",
        **overrides,
    }


default_cfgs = generate_default_cfgs({
    "dilateformer_tiny": _cfg(),
    "dilateformer_small": _cfg(),
    "dilateformer_base": _cfg(),
})


class DilateFormerTimm(DilateFormer):
    """DilateFormer with the methods timm's training utilities look for.

    ``get_classifier``/``reset_classifier`` (fine-tuning to another number of
    classes), ``no_weight_decay`` (nothing beyond timm's own rule, which already
    exempts norms and biases: every 1-D parameter), ``group_matcher`` (stem,
    blocks in order, final norm: for layer-wise learning-rate decay).
    """

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for ``num_classes`` classes (0: none, the model returns features)."""
        _check_global_pool(global_pool)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0: no head), got {num_classes!r}")
        self.num_classes = num_classes
        device = self.norm.weight.device
        dtype = self.norm.weight.dtype
        self.head = (nn.Linear(self.num_features, num_classes, device=device, dtype=dtype)
                     if num_classes > 0 else nn.Identity())
        self._init_weights(self.head)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {
            "stem": r"^patch_embed",
            "blocks": r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^norm", (99999,)),
            ],
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError(
                "DilateFormer has no gradient checkpointing yet: train without --grad-checkpointing"
            )


def _check_global_pool(global_pool) -> None:
    if global_pool not in (None, "", "avg"):
        raise ValueError(
            f"global_pool must be 'avg' (DilateFormer averages its tokens), got {global_pool!r}"
        )


# timm's create_model passes these; None values are pruned by timm before the call.
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "scriptable", "exportable",
              "no_jit", "pretrained_strict")


def _create(name: str, defaults: dict, pretrained: bool, kwargs: dict) -> DilateFormerTimm:
    """Build one registered model from timm's arguments."""
    if pretrained:
        raise ValueError(
            f"pretrained=True: there are no {name} weights that timm can download. Download the "
            "released checkpoint by hand (official repository JIAOJIAYUASD/dilateformer), build "
            "with pretrained=False and load it with dilate_lab.checkpoint.load_checkpoint(model, "
            "path), or with load_checkpoint(None, path) to take the depths from the file."
        )
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    for key in _TIMM_ONLY:
        kwargs.pop(key, None)
    if kwargs.pop("features_only", False):
        raise ValueError("features_only=True is not supported by DilateFormer: use forward_features")
    if kwargs.pop("drop_block_rate", None):
        raise ValueError("drop_block_rate is not supported by DilateFormer (it has no DropBlock)")
    _check_global_pool(kwargs.pop("global_pool", None))
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    bn_momentum, bn_eps = kwargs.pop("bn_momentum", None), kwargs.pop("bn_eps", None)

    model = DilateFormerTimm(**{**defaults, **kwargs})
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = module.momentum if bn_momentum is None else bn_momentum
            module.eps = module.eps if bn_eps is None else bn_eps
    cfg = dict(default_cfgs[name].default.to_dict(), architecture=name, **overlay)
    cfg.update(num_classes=model.num_classes, input_size=(model.in_chans, *model.img_size),
               pool_size=tuple(side // model.stride for side in model.img_size))
    model.pretrained_cfg = model.default_cfg = cfg
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def dilateformer_tiny(pretrained: bool = False, **kwargs) -> DilateFormerTimm:
    """DilateFormer-Tiny: depths (2, 2, 6, 2), embed_dim 72; 17.24M parameters."""
    defaults = dict(depths=(2, 2, 6, 2), embed_dim=72, num_heads=(3, 6, 12, 24))
    return _create("dilateformer_tiny", defaults, pretrained, kwargs)


def dilateformer_small(pretrained: bool = False, **kwargs) -> DilateFormerTimm:
    """DilateFormer-Small: depths (3, 5, 8, 3), embed_dim 72; 24.06M parameters."""
    defaults = dict(depths=(3, 5, 8, 3), embed_dim=72, num_heads=(3, 6, 12, 24))
    return _create("dilateformer_small", defaults, pretrained, kwargs)


def dilateformer_base(pretrained: bool = False, **kwargs) -> DilateFormerTimm:
    """DilateFormer-Base: depths (4, 8, 10, 3), embed_dim 96 (the released weights: (2, 2, 18, 2))."""
    defaults = dict(depths=(4, 8, 10, 3), embed_dim=96, num_heads=(3, 6, 12, 24))
    return _create("dilateformer_base", defaults, pretrained, kwargs)


if __name__ != "__main__":  # run as a script, the importable module below registers them
    for _entry in (dilateformer_tiny, dilateformer_small, dilateformer_base):
        register_model(_entry)


def main(argv: list[str] | None = None) -> None:
    """Run a training script (timm's train.py) by path with these models registered."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].endswith(".py"):
        raise SystemExit(
            "usage: python -m dilate_lab.timm_models path/to/train.py [its arguments...]\n"
            "(timm's train.py is in the pytorch-image-models repository, not in the timm package)"
        )
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    from dilate_lab.timm_models import main as _main  # registers under the module's own name

    _main()
