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
import torch.nn.functional as F

from ._checks import (
    check_channels_last_input,
    check_kernel_size,
    check_padding,
    check_positive_int,
    check_scale,
)
from .msda import MultiDilateAttention, check_dilations, check_impl, check_probability

__all__ = [
    "DropPath",
    "Mlp",
    "GlobalAttention",
    "DilateBlock",
    "GlobalBlock",
    "PatchEmbed",
    "PatchMerging",
    "DilateFormerStage",
    "DilateFormer",
    "dilateformer_tiny",
    "dilateformer_small",
    "dilateformer_base",
    "MERGING_WAYS",
]

MERGING_WAYS = ("conv3_2", "conv2_2")
"""Downsampling between stages: a 3x3 (official default) or 2x2 convolution, stride 2."""


def _check_positive_real(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_channels_first(x, dim: int, who: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{who} takes channels-first maps (B, C, H, W) with C = {dim}, got {shape}"
        )


# ---------------------------------------------------------------------------
# pieces of a block
# ---------------------------------------------------------------------------
def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the whole residual branch of some samples, rescale the rest."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)  # B, 1, 1, ...
    mask = x.new_empty(mask_shape).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """``drop_path`` as a module: per-sample stochastic depth on a residual branch."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        check_probability(drop_prob, "drop_path")
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """The feed-forward branch: Linear -> GELU -> dropout -> Linear -> dropout."""

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class GlobalAttention(nn.Module):
    """Ordinary multi-head self-attention over all H*W tokens; (B, H, W, C) in and out."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        check_positive_int(dim, "dim")
        check_positive_int(num_heads, "num_heads")
        check_scale(qk_scale)
        check_probability(attn_drop, "attn_drop")
        check_probability(proj_drop, "proj_drop")
        if dim % num_heads != 0:
            raise ValueError(
                f"dim ({dim}) must be divisible by num_heads ({num_heads}), so that every head "
                "gets the same number of channels"
            )
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5 if qk_scale is None else float(qk_scale)
        self.attn_drop_p = float(attn_drop)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels_last_input(x, self.dim, self)
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, self.head_dim)  # B, N, 3, heads, d
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B, heads, N, d
        out = F.scaled_dot_product_attention(
            q, k, v,
            dropout_p=self.attn_drop_p if self.training else 0.0,
            scale=self.scale,
        )  # B, heads, N, d
        out = out.transpose(1, 2).reshape(B, H, W, C)  # B, H, W, C
        return self.proj_drop(self.proj(out))


class _Block(nn.Module):
    """Position embedding, pre-norm attention and pre-norm MLP, each added residually."""

    def __init__(self, dim, attn, mlp_ratio, drop, drop_path, act_layer, norm_layer):
        super().__init__()
        _check_positive_real(mlp_ratio, "mlp_ratio")
        check_probability(drop, "drop")
        check_probability(drop_path, "drop_path")
        self.dim = dim
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels_first(x, self.dim, type(self).__name__)
        x = x + self.pos_embed(x)  # B, C, H, W
        x = x.permute(0, 2, 3, 1)  # B, H, W, C
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)  # B, C, H, W


class DilateBlock(_Block):
    """A DilateFormer block with multi-scale dilated attention; (B, C, H, W) in and out.

    ``x + pos_embed(x)`` (depthwise 3x3 conv), then
    ``x + drop_path(MultiDilateAttention(norm1(x)))``, then ``x + drop_path(mlp(norm2(x)))``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer=nn.GELU,
        norm_layer=nn.LayerNorm,
        kernel_size: int = 3,
        dilation: Sequence[int] = (1, 2, 3),
        padding: str = "zeros",
        impl: str = "auto",
    ):
        attn = MultiDilateAttention(
            dim, num_heads, kernel_size=kernel_size, dilation=dilation, qkv_bias=qkv_bias,
            qk_scale=qk_scale, attn_drop=attn_drop, padding=padding, impl=impl,
        )
        super().__init__(dim, attn, mlp_ratio, drop, drop_path, act_layer, norm_layer)


class GlobalBlock(_Block):
    """A DilateFormer block with global self-attention; (B, C, H, W) in and out."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer=nn.GELU,
        norm_layer=nn.LayerNorm,
    ):
        attn = GlobalAttention(
            dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop
        )
        super().__init__(dim, attn, mlp_ratio, drop, drop_path, act_layer, norm_layer)


# ---------------------------------------------------------------------------
# stem, downsampling, stages
# ---------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """The overlapping convolutional stem: (B, in_chans, H, W) -> (B, embed_dim, H/4, W/4).

    conv3x3 (stride 1) -> BN -> GELU -> conv3x3 (stride 2) -> BN -> GELU ->
    conv3x3 (stride 1) -> BN -> GELU -> conv3x3 (stride 2); widths hidden_dim,
    2*hidden_dim, 4*hidden_dim, embed_dim; no conv biases.
    """

    def __init__(self, in_chans: int = 3, embed_dim: int = 96, hidden_dim: int = 16):
        super().__init__()
        widths = [in_chans, hidden_dim, hidden_dim * 2, hidden_dim * 4]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=1 + i % 2, padding=1, bias=False),
                nn.BatchNorm2d(widths[i + 1]),
                nn.GELU(),
            ]
        layers.append(nn.Conv2d(widths[3], embed_dim, 3, stride=2, padding=1, bias=False))
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # B, embed_dim, H/4, W/4


class PatchMerging(nn.Module):
    """Downsampling between stages: a stride-2 convolution then BatchNorm; halves H and W."""

    def __init__(self, in_channels: int, out_channels: int, merging_way: str = "conv3_2"):
        super().__init__()
        if merging_way not in MERGING_WAYS:
            raise ValueError(f"merging_way must be one of {MERGING_WAYS}, got {merging_way!r}")
        size, pad = (3, 1) if merging_way == "conv3_2" else (2, 0)
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, size, stride=2, padding=pad),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # B, out_channels, H/2, W/2


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


# ---------------------------------------------------------------------------
# the classifier
# ---------------------------------------------------------------------------
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
        _check_positive_real(mlp_ratio, "mlp_ratio")
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
