"""A small image classifier around any block, so that lesson 05's learner can train their own.

``BlockClassifier(make_block)`` has the layout of lesson 07's ``SmallDilateFormer``
(a patch stem, ``depth`` blocks on one grid of tokens, a LayerNorm, the mean over the
tokens, a Linear head), but its blocks come from ``make_block(dim)``: in lesson 05 the
DilateBlock the learner assembled from their own pieces.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .._checks import check_positive_int
from .small_models import check_patch_images

__all__ = ["BlockClassifier"]


class BlockClassifier(nn.Module):
    """Patch stem, ``depth`` blocks from ``make_block(embed_dim)``, LayerNorm, mean, Linear head.

    (B, in_chans, H, W) -> (B, num_classes) logits, H and W multiples of ``patch_size``.
    Each block takes and returns (B, embed_dim, H / patch_size, W / patch_size).
    """

    def __init__(
        self,
        make_block: Callable[[int], nn.Module],
        in_chans: int = 1,
        num_classes: int = 10,
        patch_size: int = 4,
        embed_dim: int = 36,
        depth: int = 2,
    ):
        super().__init__()
        if not callable(make_block):
            raise ValueError(f"make_block must be a function dim -> nn.Module, got {type(make_block).__name__}")
        for name, value in (
            ("in_chans", in_chans), ("num_classes", num_classes), ("patch_size", patch_size),
            ("embed_dim", embed_dim), ("depth", depth),
        ):
            check_positive_int(value, name)
        blocks = [make_block(embed_dim) for _ in range(depth)]
        for block in blocks:
            if not isinstance(block, nn.Module):
                raise ValueError(f"make_block must return an nn.Module, got {type(block).__name__}")
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_patch_images(x, self.in_chans, self.patch_size)
        x = self.patch_embed(x)  # B, C, H/p, W/p
        for block in self.blocks:
            x = block(x)  # B, C, H/p, W/p
        tokens = self.norm(x.permute(0, 2, 3, 1))  # B, H/p, W/p, C
        return self.head(tokens.mean(dim=(1, 2)))  # B, num_classes
