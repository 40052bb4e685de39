"""What a real forward pass makes: tensor shapes through MSDA, attention weights of a block.

The shape tracer does not type shapes from formulas: it builds a
``MultiDilateAttention``, runs it inside ``trace_tensors()``, and returns the
rows that the module and ``swda`` ``record``-ed on the way. By default it runs
on PyTorch's ``"meta"`` device, where every operator computes its output's shape
and dtype but allocates and computes nothing, so even a 224 x 224 batch of 8
is traced instantly and the sizes are exactly those of a real run (the tests
check this against a forward pass on the CPU).

The attention viewer needs the weights themselves: ``block_attention`` runs a
photograph through a DilateFormer stem and its first ``DilateBlock`` inside
``trace_tensors(keep=True)`` and returns each head's weights over its window.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .._checks import check_positive_int
from .images import sample_image_tensor
from .._checks import check_dilations
from ..nn import DilateBlock, DilateFormer, MultiDilateAttention, PatchEmbed
from ..tracing import trace_tensors

__all__ = [
    "ShapeRow",
    "trace_msda_shapes",
    "HeadAttention",
    "block_attention",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize_imagenet",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel (R, G, B) mean of the ImageNet training images, on a [0, 1] scale."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of the same images. DilateFormer (like DeiT and
timm) is trained on images normalised with these two, so it expects them."""

_GROUP_STEP = re.compile(r"^group (\d+) ")
_SWDA_STEPS = ("unfolded K", "unfolded V", "attention weights")


@dataclass(frozen=True)
class ShapeRow:
    """One tensor that MSDA's forward pass made, in the order it was made."""

    step: str
    """What the tensor is, e.g. ``"qkv"`` or ``"group 1 unfolded K (dilation 2)"``."""
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int
    note: str
    group: int | None
    """Index of the dilation group the tensor belongs to; None outside the groups."""
    kk_copy: bool
    """True for a tensor k*k times the size of its group's K: the unfolded K and V
    (and, only when head_dim is 1, the attention weights)."""
    vs_input: float
    """Its size relative to the input's."""

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _label_steps(steps, kernel_size: int, dilations: tuple[int, ...]) -> list[ShapeRow]:
    """The traced steps as ``ShapeRow`` s: each SWDA step named after its dilation group.

    The tracer reports a group's own steps ("group 0 k (...)") and then the
    generic SWDA steps inside it; a SWDA step belongs to the group named last,
    until that group's output. A tensor with k*k times the elements of its
    group's K is flagged as an unfolded copy.
    """
    input_bytes = steps[0].nbytes
    kk = kernel_size * kernel_size
    rows: list[ShapeRow] = []
    group: int | None = None
    group_k_numel: dict[int, int] = {}
    for traced in steps:
        name = traced.name
        match = _GROUP_STEP.match(name)
        if match:
            group = int(match.group(1))
            if " k (" in name:
                group_k_numel[group] = int(np.prod(traced.shape, dtype=np.int64))
        elif name in _SWDA_STEPS and group is not None:
            name = f"group {group} {name} (dilation {dilations[group]})"
        else:
            group = None
        numel = int(np.prod(traced.shape, dtype=np.int64))
        kk_copy = kk > 1 and group is not None and numel == kk * group_k_numel.get(group, -1)
        rows.append(
            ShapeRow(
                name, traced.shape, traced.dtype, traced.nbytes, traced.note,
                group, kk_copy, traced.nbytes / input_bytes,
            )
        )
        if name.startswith(f"group {group} output"):
            group = None
    return rows


def trace_msda_shapes(
    batch: int = 1,
    channels: int = 72,
    height: int = 14,
    width: int = 14,
    num_heads: int = 3,
    kernel_size: int = 3,
    dilations: Sequence[int] = (1, 2, 3),
    *,
    impl: str = "unfold",
    device="meta",
    dtype: torch.dtype = torch.float32,
) -> list[ShapeRow]:
    """Every tensor one ``MultiDilateAttention`` forward makes, with its shape and memory.

    Runs ``MultiDilateAttention(channels, num_heads, kernel_size, dilations,
    impl=impl)`` on a (batch, height, width, channels) input inside
    ``trace_tensors()``. ``impl="unfold"`` (the paper's form) shows the k*k-times
    larger unfolded K and V; ``"shift"`` shows that they are avoidable.
    ``device="meta"`` (default) computes shapes without memory or time; any
    real device gives the same rows. Bad settings (e.g. channels not divisible
    by num_heads) raise the library's own ValueError.

    >>> [(r.step, r.shape) for r in trace_msda_shapes(1, 12, 4, 4, 3, 3, (1, 2, 3))][:2]
    [('input (B, H, W, C)', (1, 4, 4, 12)), ('qkv', (1, 36, 4, 4))]
    """
    check_positive_int(batch, "batch")
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    dilations = check_dilations(dilations, "dilations")
    device = torch.device(device)
    with device:  # builds the parameters on the device: on "meta", none are allocated
        module = MultiDilateAttention(channels, num_heads, kernel_size, dilations, impl=impl)
    module = module.to(dtype).eval()
    x = torch.zeros(batch, height, width, channels, device=device, dtype=dtype)  # B, H, W, C
    with torch.no_grad(), trace_tensors() as steps:
        module(x)

    return _label_steps(steps, kernel_size, dilations)


# ---------------------------------------------------------------------------
# attention weights of a DilateFormer block on a photograph
# ---------------------------------------------------------------------------
def normalize_imagenet(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] -> (images - mean) / std per channel, with ImageNet's statistics."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (B, 3, H, W) of RGB values in [0, 1], got {shape}")
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)  # 1, 3, 1, 1: broadcast over B, H, W
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


@dataclass(frozen=True)
class HeadAttention:
    """Every query's attention weights in one DilateBlock, per head."""

    weights: np.ndarray
    """(heads, H, W, k*k): head h's softmax weights of query (i, j) over its window, in window order."""
    dilations: tuple[int, ...]
    """The dilation of each head."""
    kernel_size: int
    image: np.ndarray
    """The photograph fed to the stem, (image_size, image_size, 3) in [0, 1]."""
    stride: int
    """Pixels per feature-map cell (4: the stem's stride)."""

    @property
    def map_size(self) -> tuple[int, int]:
        return self.weights.shape[1], self.weights.shape[2]


def _default_stem_and_block(seed: int) -> tuple[nn.Module, DilateBlock]:
    """Stage 1 of DilateFormer-Tiny (72 channels, 3 heads, dilations 1, 2, 3), seeded random weights."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        stem = PatchEmbed(3, 72)
        block = DilateBlock(72, 3, kernel_size=3, dilation=(1, 2, 3), qkv_bias=True)
    finally:
        torch.random.set_rng_state(generator_state)  # leave the caller's random stream alone
    return stem, block


def block_attention(model: DilateFormer | None = None, image_size: int = 112, seed: int = 0) -> HeadAttention:
    """Run the sample photograph through a stem and one DilateBlock; return each head's weights.

    ``model``: a ``DilateFormer`` (trained or not) whose ``patch_embed`` and first
    block are used; None builds stage 1 of DilateFormer-Tiny with seeded random
    weights (untrained: its weights say how random projections of the photo
    compare, not what a trained model looks at). ``image_size`` must be a
    multiple of 4 (the stem's stride). The photograph is normalised with
    ImageNet's mean and standard deviation (``normalize_imagenet``) before the
    stem, as the model was trained; ``HeadAttention.image`` keeps the [0, 1]
    photograph, for drawing.
    """
    check_positive_int(image_size, "image_size")
    if image_size % 4:
        raise ValueError(f"image_size must be a multiple of 4 (the stem's stride), got {image_size}")
    if model is None:
        stem, block = _default_stem_and_block(seed)
    else:
        if not isinstance(model, DilateFormer) or not model.dilate_attention[0]:
            raise ValueError("model must be a DilateFormer whose first stage uses DilateBlock")
        stem, block = model.patch_embed, model.stages[0].blocks[0]
    attention = block.attn
    image = sample_image_tensor(image_size)  # 1, 3, S, S in [0, 1]
    device = next(block.parameters()).device
    was_training, impl = (stem.training, block.training), attention.impl
    stem.eval()
    block.eval()
    attention.impl = "unfold"  # same output; the one implementation that records every weight
    try:
        with torch.no_grad(), trace_tensors(keep=True) as steps:
            block(stem(normalize_imagenet(image).to(device)))
    finally:
        stem.train(was_training[0])
        block.train(was_training[1])
        attention.impl = impl
    H = W = image_size // 4
    kk = attention.kernel_size**2
    per_group = [
        t.tensor.float().cpu().reshape(t.shape[1], H, W, kk)  # heads/groups, H, W, k*k (from B=1, heads, H*W, 1, k*k)
        for t in steps
        if t.name == "attention weights"
    ]
    heads_per_group = attention.num_heads // attention.num_dilation
    dilations = tuple(r for r in attention.dilation for _ in range(heads_per_group))
    weights = torch.cat(per_group, dim=0).numpy()  # heads, H, W, k*k
    return HeadAttention(weights, dilations, attention.kernel_size, image[0].permute(1, 2, 0).numpy(), 4)
