"""Ordinary global multi-head self-attention, the attention of DilateFormer's later stages."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import (
    check_channels_last_input,
    check_head_dim,
    check_positive_int,
    check_probability,
    check_scale,
)

__all__ = ["GlobalAttention"]


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
        check_head_dim(dim, num_heads)
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
