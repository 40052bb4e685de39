"""DilateFormer: the blocks, the stages and the whole classifier.

The layout follows the official code (JIAOJIAYUASD/dilateformer,
``models/dilateformer.py``), and every module and parameter has the official
name, so that ``state_dict()`` matches the released checkpoints key for key and
shape for shape (``model.load_state_dict(checkpoint, strict=True)``):

- ``patch_embed``: an overlapping convolutional stem, four 3x3 convolutions
  (strides 1, 2, 1, 2) with BatchNorm and GELU: (B, 3, H, W) -> (B, C, H/4, W/4).
- ``stages[i]``: ``depths[i]`` blocks, then ``downsample`` (a 3x3 stride-2
  convolution that doubles the channels, and BatchNorm) unless it is the last stage.
  The first stages use ``DilateBlock`` (multi-scale dilated attention), the later
  ones ``GlobalBlock`` (ordinary global self-attention).
- ``norm`` (LayerNorm over every token), mean over the tokens, ``head`` (Linear).

Every block: ``x = x + pos_embed(x)`` (a depthwise 3x3 convolution, the
conditional position embedding), ``x = x + drop_path(attn(norm1(x)))``,
``x = x + drop_path(mlp(norm2(x)))``. Blocks, stages and the stem pass
channels-first maps (B, C, H, W) between them, as the official code does, but
stored in ``torch.channels_last`` memory format: the attention modules inside work
channels-last (B, H, W, C), and the permutes to and from it are views, not copies.

The same classes build small models for experiments: the number of stages is
``len(depths)``, ``dilate_attention`` picks which stages use DilateBlock.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

from .._checks import (
    check_dilations,
    check_kernel_size,
    check_padding,
    check_positive_int,
    check_positive_real,
    check_probability,
    check_scale,
)
from ..functional import check_impl
from .blocks import DilateBlock, GlobalBlock
from .layers import MERGING_WAYS, PatchEmbed, PatchMerging

__all__ = [
    "DilateFormerStage",
    "DilateFormer",
    "dilateformer_tiny",
    "dilateformer_small",
    "dilateformer_base",
]


class DilateFormerStage(nn.Module):
    """One stage: its blocks in order, then ``downsample`` (PatchMerging or Identity)."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


def _as_list(value, name: str, length: int | None = None, item=None) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list or tuple, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(
            f"{name} must have one entry per stage (len(depths) = {length}), "
            f"got {len(value)}: {value!r}"
        )
    if item is not None:
        for i, v in enumerate(value):
            item(v, f"{name}[{i}]")
    return list(value)


def _check_bool(value, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _image_size(img_size, stride: int) -> tuple[int, int]:
    size = (img_size, img_size) if isinstance(img_size, numbers.Integral) else img_size
    if (
        isinstance(img_size, bool)
        or not isinstance(size, Sequence)
        or len(size) != 2
        or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in size)
    ):
        raise ValueError(
            f"img_size must be a positive int or a (height, width) pair of them, got {img_size!r}"
        )
    if size[0] % stride or size[1] % stride:
        raise ValueError(
            f"img_size must be a multiple of the model's total stride {stride} "
            f"(4 for the stem times 2 per downsampling), e.g. {stride * max(1, size[0] // stride)}; "
            f"got {img_size!r}"
        )
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class DilateFormerConfig:
    """A DilateFormer's configuration, checked and normalised as it is created.

    ``DilateFormer.__init__`` takes the official keyword arguments; they land
    here first, so that every one is checked (a ValueError naming it) before any
    layer is built, and the defaults that depend on the number of stages
    (``dilate_attention``, ``downsamples``) are filled in. After ``__post_init__``
    the sequences are tuples, ``dilation`` is normalised by ``check_dilations``
    and ``img_size`` is a (height, width) pair. The fields are ``DilateFormer``'s
    arguments, documented there.
    """

    img_size: object = 224
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: Sequence[int] = (2, 2, 6, 2)
    num_heads: Sequence[int] = (3, 6, 12, 24)
    kernel_size: int = 3
    dilation: Sequence[int] = (1, 2, 3)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    dilate_attention: Sequence[bool] | None = None
    downsamples: Sequence[bool] | None = None
    merging_way: str = "conv3_2"
    padding: str = "zeros"
    impl: str = "auto"
    stem_hidden_dim: int = 16

    def __post_init__(self) -> None:
        self._check_scalars()
        self._normalise_stages()
        self._check_heads()
        self._set("img_size", _image_size(self.img_size, self.stride))

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)  # frozen: only __post_init__ normalises

    def _check_scalars(self) -> None:
        check_positive_int(self.in_chans, "in_chans")
        n_cls = self.num_classes
        if isinstance(n_cls, bool) or not isinstance(n_cls, numbers.Integral) or n_cls < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0: no head), got {n_cls!r}")
        check_positive_int(self.embed_dim, "embed_dim")
        check_positive_int(self.stem_hidden_dim, "stem_hidden_dim")

    def _normalise_stages(self) -> None:
        """Per-stage lists checked in the official argument order; the defaults filled in."""
        depths = _as_list(self.depths, "depths", item=check_positive_int)
        if not depths:
            raise ValueError("depths must name at least one stage, e.g. (2, 2, 6, 2); got an empty list")
        n = len(depths)
        self._set("depths", tuple(depths))
        self._set("num_heads", tuple(_as_list(self.num_heads, "num_heads", n, item=check_positive_int)))
        check_kernel_size(self.kernel_size)
        self._set("dilation", check_dilations(self.dilation))
        check_positive_real(self.mlp_ratio, "mlp_ratio")
        check_scale(self.qk_scale)
        check_probability(self.drop_rate, "drop_rate")
        check_probability(self.attn_drop_rate, "attn_drop_rate")
        check_probability(self.drop_path_rate, "drop_path_rate")
        dilate = self.dilate_attention
        dilate = [i < (n + 1) // 2 for i in range(n)] if dilate is None else dilate
        self._set("dilate_attention", tuple(_as_list(dilate, "dilate_attention", n, item=_check_bool)))
        down = [i < n - 1 for i in range(n)] if self.downsamples is None else self.downsamples
        self._set("downsamples", tuple(_as_list(down, "downsamples", n, item=_check_bool)))
        if self.merging_way not in MERGING_WAYS:
            raise ValueError(f"merging_way must be one of {MERGING_WAYS}, got {self.merging_way!r}")
        check_padding(self.padding)
        check_impl(self.impl)

    def _check_heads(self) -> None:
        """Every stage's heads divide its width, and split evenly over the dilations where dilated."""
        dilation = self.dilation
        for i, (dim, heads) in enumerate(zip(self.dims, self.num_heads)):
            if dim % heads:
                raise ValueError(
                    f"num_heads[{i}] = {heads} must divide stage {i + 1}'s width {dim} "
                    f"(embed_dim = {self.embed_dim}, doubled at every downsampling)"
                )
            if self.dilate_attention[i] and heads % len(dilation):
                raise ValueError(
                    f"num_heads[{i}] = {heads} must be a multiple of len(dilation) = "
                    f"{len(dilation)} (dilation={dilation}), because stage {i + 1} uses "
                    "multi-scale dilated attention and every dilation gets the same number of heads"
                )

    @property
    def dims(self) -> list[int]:
        """The width of every stage: embed_dim, doubled after each downsampling."""
        dims = [self.embed_dim]
        for down in self.downsamples[:-1]:
            dims.append(dims[-1] * 2 if down else dims[-1])
        return dims

    @property
    def stride(self) -> int:
        """Input pixels per output token along a side: 4 for the stem, 2 per downsampling."""
        return 4 * 2 ** sum(self.downsamples)

    @property
    def num_features(self) -> int:
        """Channels after the last stage (its downsampling, if any, doubles them)."""
        return self.dims[-1] * 2 if self.downsamples[-1] else self.dims[-1]


class DilateFormer(nn.Module):
    """DilateFormer image classifier: (B, in_chans, H, W) -> (B, num_classes) logits.

    H and W may be any multiple of ``self.stride`` (32 for the official four
    stages); ``img_size`` is the nominal size (checked the same way and used by
    ``count_flops`` by default).

    Args:
        img_size: nominal input side, or (height, width).
        in_chans: input channels.
        num_classes: classes of the head; 0 gives features (an Identity head).
        embed_dim: channels of the first stage; doubled by every downsampling.
        depths: blocks per stage; the number of stages is ``len(depths)``.
        num_heads: heads per stage.
        kernel_size, dilation, padding, impl: of the multi-scale dilated attention
            (``dilation`` has one entry per group of heads, (1, 2, 3) in the paper).
        mlp_ratio: hidden width of the MLP over the block width.
        qkv_bias, qk_scale: of every attention.
        drop_rate, attn_drop_rate: dropout after MLP/projection layers, on attention weights.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks.
        dilate_attention: per stage, True for DilateBlock, False for GlobalBlock.
            Default: the first half of the stages (rounded up) dilated, the rest global,
            which for four stages is the official [True, True, False, False].
        downsamples: per stage, whether a PatchMerging ends it; default all but the last.
        merging_way: ``"conv3_2"`` (official) or ``"conv2_2"``.
        stem_hidden_dim: width of the stem's first convolution (16 officially).
    """

    def __init__(
        self,
        img_size=224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        kernel_size: int = 3,
        dilation: Sequence[int] = (1, 2, 3),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        dilate_attention: Sequence[bool] | None = None,
        downsamples: Sequence[bool] | None = None,
        merging_way: str = "conv3_2",
        padding: str = "zeros",
        impl: str = "auto",
        stem_hidden_dim: int = 16,
    ):
        super().__init__()
        # the whole configuration is checked before anything is built
        cfg = DilateFormerConfig(
            img_size=img_size, in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim,
            depths=depths, num_heads=num_heads, kernel_size=kernel_size, dilation=dilation,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            dilate_attention=dilate_attention, downsamples=downsamples, merging_way=merging_way,
            padding=padding, impl=impl, stem_hidden_dim=stem_hidden_dim,
        )
        self.config = cfg
        self.stride = cfg.stride
        self.img_size = cfg.img_size
        self.in_chans = cfg.in_chans
        self.num_classes = cfg.num_classes
        self.embed_dim = cfg.embed_dim
        self.depths = cfg.depths
        self.num_heads = cfg.num_heads
        self.dilation = cfg.dilation
        self.dilate_attention = cfg.dilate_attention
        self.downsamples = cfg.downsamples
        self.num_features = cfg.num_features
        norm_layer = partial(nn.LayerNorm, eps=1e-6)

        # built in the official order (stem, stages, norm, head): the default
        # initialisations draw from the global generator in that order
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dim, cfg.stem_hidden_dim)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        self.stages = nn.ModuleList()
        for i in range(len(cfg.depths)):
            stage_rates = rates[sum(cfg.depths[:i]) : sum(cfg.depths[: i + 1])]
            self.stages.append(self._build_stage(cfg, i, stage_rates, norm_layer))
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _build_stage(cfg: DilateFormerConfig, i: int, drop_paths: list[float], norm_layer) -> DilateFormerStage:
        """Stage ``i``: one block per drop-path rate (DilateBlock or GlobalBlock), then its downsampling."""
        dim = cfg.dims[i]
        common = dict(
            dim=dim, num_heads=cfg.num_heads[i], mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias,
            qk_scale=cfg.qk_scale, drop=cfg.drop_rate, attn_drop=cfg.attn_drop_rate,
            norm_layer=norm_layer,
        )
        if cfg.dilate_attention[i]:
            blocks = [
                DilateBlock(**common, drop_path=p, kernel_size=cfg.kernel_size, dilation=cfg.dilation,
                            padding=cfg.padding, impl=cfg.impl)
                for p in drop_paths
            ]
        else:
            blocks = [GlobalBlock(**common, drop_path=p) for p in drop_paths]
        downsample = (
            PatchMerging(dim, dim * 2, cfg.merging_way) if cfg.downsamples[i] else nn.Identity()
        )
        return DilateFormerStage(blocks, downsample)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """As the official code: truncated normal (std 0.02) Linear weights, zero biases."""
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def check_input(self, x) -> None:
        """ValueError unless x is (B, in_chans, H, W) with H and W multiples of ``self.stride``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_chans:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"DilateFormer takes images (B, {self.in_chans}, H, W), got {shape}"
            )
        H, W = x.shape[-2:]
        if H % self.stride or W % self.stride:
            raise ValueError(
                f"input height and width must be multiples of {self.stride} (the stem divides "
                f"them by 4, each of the {sum(self.downsamples)} downsamplings by 2), "
                f"got height {H}, width {W}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> pooled features (B, num_features)."""
        self.check_input(x)
        # channels_last memory format from the image on: oneDNN's convolutions (the stem,
        # the position embeddings, the downsampling) run in it without reordering, and
        # the blocks' permutes to (B, H, W, C) are views
        x = x.contiguous(memory_format=torch.channels_last)  # B, in_chans, H, W
        x = self.patch_embed(x)  # B, embed_dim, H/4, W/4 (stored channels-last)
        for stage in self.stages:
            x = stage(x)  # B, C', H', W' (stored B, H', W', C')
        x = x.flatten(2).transpose(1, 2)  # B, H'*W', C' (a view of the channels-last map)
        return self.norm(x).mean(dim=1)  # B, C'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))  # B, num_classes


def dilateformer_tiny(**kwargs) -> DilateFormer:
    """DilateFormer-Tiny: depths (2, 2, 6, 2), embed_dim 72; 17.24M parameters, 3.18 GFLOPs at 224."""
    return DilateFormer(**{"depths": (2, 2, 6, 2), "embed_dim": 72, "num_heads": (3, 6, 12, 24), **kwargs})


def dilateformer_small(**kwargs) -> DilateFormer:
    """DilateFormer-Small: depths (3, 5, 8, 3), embed_dim 72; 24.06M parameters."""
    return DilateFormer(**{"depths": (3, 5, 8, 3), "embed_dim": 72, "num_heads": (3, 6, 12, 24), **kwargs})


def dilateformer_base(**kwargs) -> DilateFormer:
    """DilateFormer-Base: depths (4, 8, 10, 3), embed_dim 96; 47.43M parameters."""
    return DilateFormer(**{"depths": (4, 8, 10, 3), "embed_dim": 96, "num_heads": (3, 6, 12, 24), **kwargs})
