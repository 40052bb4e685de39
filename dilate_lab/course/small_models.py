"""Small DilateFormers that train in seconds on a CPU, for lesson 07 and its ablation.

``SmallDilateFormer`` is one stage of DilateFormer blocks on a grid of patch
tokens: a patch stem (a ``patch_size`` x ``patch_size`` convolution with the same
stride, the official code's "nonoverlaping" patch embedding), ``depth`` blocks,
LayerNorm over every token, the mean over the tokens, a Linear head. Each block
is the package's: ``x + pos_embed(x)`` (optional), ``x + attn(norm1(x))``,
``x + mlp(norm2(x))``, with ``MultiDilateAttention`` or ``GlobalAttention``.

Why not the full ``DilateFormer``: its overlapping stem (four 3x3 convolutions)
and the conditional position embedding (a depthwise 3x3 convolution in every
block) each widen what a token sees. That is good for images, but the ablation
on the long-range task needs to know *exactly* which pixels a token can see.
With the patch stem a token sees its own patch; with the position embedding
off, a block with dilations (1, 2, 3) lets it see 3 patches further in each
direction and a block with (1, 1, 1) only 1 (``receptive_radius``).

``build_model(task, arm)`` builds the model the lesson and the command line
train: same depth and width for every arm, only the attention changes.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn as nn

from .._checks import check_dilations, check_kernel_size, check_positive_int
from ..nn import DilateFormer, GlobalAttention, Mlp, MultiDilateAttention
from ..tracing import trace_tensors

__all__ = [
    "ARMS",
    "TASK_MODELS",
    "SmallBlock",
    "SmallDilateFormer",
    "build_model",
    "check_arm",
    "check_patch_images",
    "parse_arm",
    "receptive_radius",
]

ARMS = ("1,2,3", "1,1,1", "global")
"""The paper's ablation: dilations (1, 2, 3), all-ones (an ordinary sliding window), global attention."""


def parse_arm(arm: str) -> tuple[int, ...] | None:
    """"1,2,3" -> (1, 2, 3); "global" -> None (global attention)."""
    if arm == "global":
        return None
    if not isinstance(arm, str):
        raise ValueError(f"arm must be a string such as '1,2,3', '1,1,1' or 'global', got {arm!r}")
    try:
        dilation = tuple(int(part) for part in arm.split(","))
    except ValueError:
        raise ValueError(
            f"arm must be 'global' or comma-separated dilations such as '1,2,3'; got {arm!r}"
        ) from None
    return check_dilations(dilation, "arm")


def check_arm(arm) -> str:
    """The canonical spelling of an arm ("1, 2,3" -> "1,2,3"); ValueError if it is not one."""
    dilation = parse_arm(arm)
    return "global" if dilation is None else ",".join(str(r) for r in dilation)


def receptive_radius(depth: int, dilation: Sequence[int] | None, kernel_size: int = 3,
                     position_embedding: bool = False) -> int | None:
    """How many patches away (along a row or a column) a token of ``SmallDilateFormer`` can see.

    Each block adds ``max(dilation) * (kernel_size // 2)`` for the attention
    and 1 for the position embedding (a 3x3 depthwise convolution); the stem
    adds nothing (non-overlapping patches); MLPs and norms act per token.
    ``dilation=None`` (global attention): None, every token sees everything.
    """
    check_positive_int(depth, "depth")
    check_kernel_size(kernel_size)
    if dilation is None:
        return None
    dilation = check_dilations(dilation)
    per_block = max(dilation) * (kernel_size // 2) + (1 if position_embedding else 0)
    return depth * per_block



def check_patch_images(x, in_chans: int, patch_size: int) -> None:
    """x must be a batch of images (B, in_chans, H, W) whose sides are multiples of patch_size."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != in_chans:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be images (B, {in_chans}, H, W), got {shape}")
    if x.shape[-2] % patch_size or x.shape[-1] % patch_size:
        raise ValueError(
            f"image height and width must be multiples of patch_size = {patch_size}, "
            f"got {tuple(x.shape[-2:])}"
        )

class SmallBlock(nn.Module):
    """A DilateFormer block whose position embedding can be switched off; (B, C, H, W) in and out.

    ``x + pos_embed(x)`` (depthwise 3x3 conv, if ``position_embedding``),
    ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``; parameter names as in
    ``DilateBlock``. ``dilation=None`` uses global attention (``GlobalBlock``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dilation: Sequence[int] | None = (1, 2, 3),
        kernel_size: int = 3,
        mlp_ratio: float = 2.0,
        position_embedding: bool = True,
        qkv_bias: bool = True,
        impl: str = "auto",
    ):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.dim = dim
        self.pos_embed = (
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if position_embedding else None
        )
        self.norm1 = norm_layer(dim)
        if dilation is None:
            self.attn = GlobalAttention(dim, num_heads, qkv_bias=qkv_bias)
        else:
            self.attn = MultiDilateAttention(
                dim, num_heads, kernel_size=kernel_size, dilation=dilation, qkv_bias=qkv_bias,
                impl=impl,
            )
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed(x)  # B, C, H, W
        x = x.permute(0, 2, 3, 1)  # B, H, W, C
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x.permute(0, 3, 1, 2)  # B, C, H, W


class SmallDilateFormer(nn.Module):
    """Patch stem, ``depth`` blocks on one grid, LayerNorm, mean over tokens, Linear head.

    (B, in_chans, H, W) -> (B, num_classes) logits, H and W multiples of ``patch_size``.

    Args:
        in_chans, num_classes: input channels, classes.
        patch_size: side of the square patch one token stands for (the stem's stride).
        embed_dim, num_heads: width and heads of every block (heads a multiple
            of ``len(dilation)``: every dilation gets the same number).
        depth: number of blocks.
        dilation: one dilation per group of heads; None for global attention.
        kernel_size: window side of the dilated attention.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        position_embedding: the conditional position embedding of DilateFormer
            (a depthwise 3x3 convolution at the start of every block).
        official_init: the official initialisation (Linear weights truncated
            normal, std 0.02, zero biases; LayerNorms 1 and 0). Default False:
            PyTorch's default initialisation. On the long-range task the choice
            did not change the ablation's outcome (8 epochs, seeds 0-2,
            ``python -m dilate_lab.course.train --official-init``: (1, 2, 3) 0.992-0.994,
            (1, 1, 1) 0.500-0.520, global 1.000; the default gives 0.992-1.000,
            0.498-0.540 and 1.000).
        impl: ``swda`` implementation of the dilated attention.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 2,
        patch_size: int = 4,
        embed_dim: int = 24,
        depth: int = 1,
        num_heads: int = 3,
        dilation: Sequence[int] | None = (1, 2, 3),
        kernel_size: int = 3,
        mlp_ratio: float = 2.0,
        position_embedding: bool = True,
        official_init: bool = False,
        impl: str = "auto",
    ):
        super().__init__()
        for name, value in (
            ("in_chans", in_chans), ("num_classes", num_classes), ("patch_size", patch_size),
            ("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads),
        ):
            check_positive_int(value, name)
        if not isinstance(position_embedding, bool):
            raise ValueError(f"position_embedding must be True or False, got {position_embedding!r}")
        if not isinstance(mlp_ratio, numbers.Real) or isinstance(mlp_ratio, bool) or mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
        if dilation is not None:
            dilation = check_dilations(dilation)
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.dilation = dilation
        self.kernel_size = kernel_size
        self.depth = depth
        self.position_embedding = position_embedding
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(
            SmallBlock(embed_dim, num_heads, dilation, kernel_size, mlp_ratio, position_embedding,
                       impl=impl)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        if official_init:
            self.apply(DilateFormer._init_weights)  # the official initialisation

    @property
    def receptive_radius(self) -> int | None:
        """Patches a token sees in each direction (None: all of them), see ``receptive_radius``."""
        return receptive_radius(self.depth, self.dilation, self.kernel_size, self.position_embedding)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> normalised tokens (B, H/p, W/p, C), before the mean."""
        check_patch_images(x, self.in_chans, self.patch_size)
        x = self.patch_embed(x)  # B, C, H/p, W/p
        for block in self.blocks:
            x = block(x)  # B, C, H/p, W/p
        return self.norm(x.permute(0, 2, 3, 1))  # B, H/p, W/p, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_tokens(x).mean(dim=(1, 2)))  # B, num_classes

    @torch.no_grad()
    def attention_maps(self, image: torch.Tensor, block: int = 0) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Every head's attention weights in block ``block`` for one image, in eval mode.

        ``image``: (in_chans, H, W). Returns ``(weights, dilations)``: weights
        (heads, H/p, W/p, k*k), head h's softmax weights of each query over its
        window in window order (``dilated_window``), and each head's dilation;
        the form ``plot_attention_heads`` takes. Dilated attention only.
        """
        if self.dilation is None:
            raise ValueError("attention_maps needs a model with dilated attention (dilation is None: global)")
        if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < self.depth:
            raise ValueError(f"block must be an int in [0, {self.depth - 1}], got {block!r}")
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must be one image (in_chans, H, W), got {shape}")
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            x = self.patch_embed(image.unsqueeze(0).to(device))  # 1, C, H/p, W/p
            for earlier in self.blocks[:block]:
                x = earlier(x)
            with trace_tensors(keep=True) as steps:
                self.blocks[block](x)
        finally:
            self.train(was_training)
        H, W = x.shape[-2:]
        attention = self.blocks[block].attn
        kk = attention.kernel_size**2
        per_group = [
            t.tensor.float().cpu().reshape(-1, H, W, kk)  # heads per group, H, W, k*k
            for t in steps
            if t.name == "attention weights"
        ]
        heads_per_group = attention.num_heads // attention.num_dilation
        dilations = tuple(r for r in attention.dilation for _ in range(heads_per_group))
        return torch.cat(per_group, dim=0), dilations  # heads, H, W, k*k


TASK_MODELS: dict[str, dict] = {
    "digits": dict(
        model=dict(in_chans=1, num_classes=10, patch_size=4, embed_dim=36, depth=2, num_heads=3,
                   mlp_ratio=2.0, position_embedding=True),
        epochs=10,
        lr=5e-3,
    ),
    "longrange": dict(
        model=dict(in_chans=3, num_classes=2, patch_size=4, embed_dim=36, depth=1, num_heads=3,
                   mlp_ratio=2.0, position_embedding=False),
        epochs=8,
        lr=3e-3,
    ),
}
"""Per task: the model's settings (all arms share them), and the default epochs and peak lr."""


def build_model(task: str, arm: str = "1,2,3", **overrides) -> SmallDilateFormer:
    """The task's ``SmallDilateFormer`` with the attention of ``arm``; ``overrides`` change settings."""
    if task not in TASK_MODELS:
        raise ValueError(f"task must be one of {tuple(TASK_MODELS)}, got {task!r}")
    settings = {**TASK_MODELS[task]["model"], **overrides}
    return SmallDilateFormer(dilation=parse_arm(arm), **settings)
