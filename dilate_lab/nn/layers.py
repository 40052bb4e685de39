"""The building blocks DilateFormer shares with other vision transformers.

``DropPath`` (stochastic depth), ``Mlp`` (the feed-forward branch), ``PatchEmbed``
(the overlapping convolutional stem) and ``PatchMerging`` (downsampling between
stages), with the official parameter names.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .._checks import check_probability

__all__ = ["drop_path", "DropPath", "Mlp", "PatchEmbed", "PatchMerging", "MERGING_WAYS"]

MERGING_WAYS = ("conv3_2", "conv2_2")
"""Downsampling between stages: a 3x3 (official default) or 2x2 convolution, stride 2."""


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the whole residual branch of some samples, rescale the rest.

    ``drop_prob=1.0`` drops every sample: the branch is all zeros (not ``x * 0 / 0``,
    which is NaN), as timm guards it.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)  # B, 1, 1, ...
    mask = x.new_empty(mask_shape).bernoulli_(keep)
    if keep > 0.0:
        mask.div_(keep)  # the kept samples are rescaled so the expectation stays x
    return x * mask


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
