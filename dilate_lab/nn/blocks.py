"""DilateFormer's two blocks: multi-scale dilated attention (``DilateBlock``) and
global attention (``GlobalBlock``), both (B, C, H, W) in and out.

Every block: ``x = x + pos_embed(x)`` (a depthwise 3x3 convolution, the
conditional position embedding), ``x = x + drop_path(attn(norm1(x)))``,
``x = x + drop_path(mlp(norm2(x)))``. The attention modules inside work
channels-last (B, H, W, C), as in the official code. The maps are kept in
``torch.channels_last`` memory format, so that the permutes between the two
layouts are views (``_Block.forward``); the values are those of the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .._checks import check_channels_first, check_positive_real, check_probability
from .attention import GlobalAttention
from .layers import DropPath, Mlp
from .msda import MultiDilateAttention

__all__ = ["DilateBlock", "GlobalBlock"]


def _residual(branch: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x + branch``, added into ``branch`` (a fresh output) where the dtypes agree.

    Under autocast the branch may be bfloat16 and x float32; then the sum is a new
    float32 tensor, as ``x + branch`` gives, so the residual stream keeps its precision.
    """
    return branch.add_(x) if branch.dtype == x.dtype else x + branch


class _Block(nn.Module):
    """Position embedding, pre-norm attention and pre-norm MLP, each added residually."""

    def __init__(self, dim, attn, mlp_ratio, drop, drop_path, act_layer, norm_layer):
        super().__init__()
        check_positive_real(mlp_ratio, "mlp_ratio")
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
        check_channels_first(x, self.dim, type(self).__name__)
        # Stored channels-last (torch.channels_last), a (B, C, H, W) map is a (B, H, W, C)
        # tensor seen through a permute: the depthwise convolution reads and writes it in
        # that layout, and the permutes around the channels-last attention and MLP are
        # views, not copies. A no-op when x already is (the blocks of a stage pass it on).
        x = x.contiguous(memory_format=torch.channels_last)  # B, C, H, W (stored B, H, W, C)
        # Each residual sum is added into the branch's fresh output (add_), not into a
        # new tensor: no large allocation, and autograd saved none of those outputs
        # (a convolution, a Linear, dropout or drop path keep their inputs or masks;
        # drop path without dropping returns the branch output itself, as fresh).
        x = _residual(self.pos_embed(x), x)  # B, C, H, W (stored B, H, W, C)
        x = x.permute(0, 2, 3, 1)  # B, H, W, C (contiguous, a view)
        x = _residual(self.drop_path(self.attn(self.norm1(x))), x)  # B, H, W, C
        x = _residual(self.drop_path(self.mlp(self.norm2(x))), x)  # B, H, W, C
        return x.permute(0, 3, 1, 2)  # B, C, H, W (stored B, H, W, C, a view)


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
