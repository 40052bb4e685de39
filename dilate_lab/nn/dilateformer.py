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
channels-first maps (B, C, H, W) between them, as the official code does; the
attention modules inside work channels-last (B, H, W, C).

The same classes build small models for experiments: the number of stages is
``len(depths)``, ``dilate_attention`` picks which stages use DilateBlock.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
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
        # ---- check the whole configuration before building anything
        check_positive_int(in_chans, "in_chans")
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0: no head), got {num_classes!r}")
        check_positive_int(embed_dim, "embed_dim")
        check_positive_int(stem_hidden_dim, "stem_hidden_dim")
        depths = _as_list(depths, "depths", item=check_positive_int)
        if not depths:
            raise ValueError("depths must name at least one stage, e.g. (2, 2, 6, 2); got an empty list")
        n = len(depths)
        num_heads = _as_list(num_heads, "num_heads", n, item=check_positive_int)
        check_kernel_size(kernel_size)
        dilation = check_dilations(dilation)
        check_positive_real(mlp_ratio, "mlp_ratio")
        check_scale(qk_scale)
        check_probability(drop_rate, "drop_rate")
        check_probability(attn_drop_rate, "attn_drop_rate")
        check_probability(drop_path_rate, "drop_path_rate")
        if dilate_attention is None:
            dilate_attention = [i < (n + 1) // 2 for i in range(n)]
        dilate_attention = _as_list(dilate_attention, "dilate_attention", n, item=_check_bool)
        if downsamples is None:
            downsamples = [i < n - 1 for i in range(n)]
        downsamples = _as_list(downsamples, "downsamples", n, item=_check_bool)
        if merging_way not in MERGING_WAYS:
            raise ValueError(f"merging_way must be one of {MERGING_WAYS}, got {merging_way!r}")
        check_padding(padding)
        check_impl(impl)
        dims = [embed_dim]
        for i in range(n - 1):
            dims.append(dims[-1] * 2 if downsamples[i] else dims[-1])
        for i, (dim, heads) in enumerate(zip(dims, num_heads)):
            if dim % heads:
                raise ValueError(
                    f"num_heads[{i}] = {heads} must divide stage {i + 1}'s width {dim} "
                    f"(embed_dim = {embed_dim}, doubled at every downsampling)"
                )
            if dilate_attention[i] and heads % len(dilation):
                raise ValueError(
                    f"num_heads[{i}] = {heads} must be a multiple of len(dilation) = "
                    f"{len(dilation)} (dilation={dilation}), because stage {i + 1} uses "
                    "multi-scale dilated attention and every dilation gets the same number of heads"
                )
        self.stride = 4 * 2 ** sum(downsamples)
        self.img_size = _image_size(img_size, self.stride)

        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.depths = tuple(depths)
        self.num_heads = tuple(num_heads)
        self.dilation = dilation
        self.dilate_attention = tuple(dilate_attention)
        self.downsamples = tuple(downsamples)
        self.num_features = dims[-1] * 2 if downsamples[-1] else dims[-1]
        norm_layer = partial(nn.LayerNorm, eps=1e-6)

        # ---- build
        self.patch_embed = PatchEmbed(in_chans, embed_dim, stem_hidden_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i in range(n):
            dim = dims[i]
            common = dict(
                dim=dim, num_heads=num_heads[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate, norm_layer=norm_layer,
            )
            stage_rates = rates[sum(depths[:i]) : sum(depths[: i + 1])]
            if dilate_attention[i]:
                blocks = [
                    DilateBlock(**common, drop_path=p, kernel_size=kernel_size, dilation=dilation,
                                padding=padding, impl=impl)
                    for p in stage_rates
                ]
            else:
                blocks = [GlobalBlock(**common, drop_path=p) for p in stage_rates]
            downsample = PatchMerging(dim, dim * 2, merging_way) if downsamples[i] else nn.Identity()
            self.stages.append(DilateFormerStage(blocks, downsample))
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

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
        x = self.patch_embed(x)  # B, embed_dim, H/4, W/4
        for stage in self.stages:
            x = stage(x)  # B, C', H', W'
        x = x.flatten(2).transpose(1, 2)  # B, H'*W', C'
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
