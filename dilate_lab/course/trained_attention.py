"""The attention weights of a small trained DilateFormer over many images (lesson 05).

Lesson 05 trains lesson 07's digits model for a few seconds and compares its
attention with the same model untrained. ``collect_attention`` reads every head's
softmax weights for many images, one forward pass per batch, recorded with
``dilate_lab.tracing.trace_tensors`` (as ``SmallDilateFormer.attention_maps`` does for
one image); the figures and the statistics over them are in ``figures.attention_heads`` (``plot_attention_comparison``,
``head_sharpness``, ``plot_head_sharpness``); ``trained_attention_explorer`` slides
through the images and queries of that comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .._checks import check_positive_int
from ..tracing import trace_tensors
from ._controls import _slider
from .data import display_array
from .figures.attention_heads import AttentionPicture, plot_attention_comparison
from .small_models import SmallDilateFormer
from .widgets import _PNG_DPI, Explorer, RenderedFigure

__all__ = ["collect_attention", "trained_attention_explorer"]


def collect_attention(
    model: SmallDilateFormer, images: torch.Tensor, block: int = 0, batch_size: int = 256
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Every head's attention weights in block ``block`` for each image, in eval mode.

    ``images``: (N, in_chans, H, W), run ``batch_size`` at a time. Returns
    ``(weights, dilations)``: weights (N, heads, H/p, W/p, k*k) as float32 numpy, head h's
    softmax weights of each query over its window (window order of ``dilated_window``,
    padded positions included), and each head's dilation; for one image the same as
    ``model.attention_maps(image, block)``, read in one forward pass per batch.
    """
    if not isinstance(model, SmallDilateFormer):
        raise ValueError(f"model must be a SmallDilateFormer (build_model), got {type(model).__name__}")
    if model.dilation is None:
        raise ValueError("model must use dilated attention (its dilation is None: global attention)")
    if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < model.depth:
        raise ValueError(f"block must be an int in [0, {model.depth - 1}], got {block!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a batch (N, in_chans, H, W), got {shape}")
    check_positive_int(batch_size, "batch_size")
    attention = model.blocks[block].attn
    kk = attention.kernel_size**2
    heads_per_group = attention.num_heads // attention.num_dilation
    dilations = tuple(r for r in attention.dilation for _ in range(heads_per_group))
    device = next(model.parameters()).device
    modes = {module: module.training for module in model.modules()}  # restored one by one
    model.eval()
    batches = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                x = model.patch_embed(images[start : start + batch_size].to(device))  # n, C, H/p, W/p
                for earlier in model.blocks[:block]:
                    x = earlier(x)  # n, C, H/p, W/p
                with trace_tensors(keep=True) as steps:
                    model.blocks[block](x)
                n, _, H, W = x.shape
                per_group = [
                    t.tensor.float().cpu().reshape(n, heads_per_group, H, W, kk)  # n, heads/groups, H, W, k*k
                    for t in steps
                    if t.name == "attention weights"
                ]
                batches.append(torch.cat(per_group, dim=1))  # n, heads, H, W, k*k
    finally:
        for module, training in modes.items():
            module.training = training
    return torch.cat(batches).numpy(), dilations  # N, heads, H/p, W/p, k*k


def trained_attention_explorer(
    weights_by_model: Mapping[str, np.ndarray],
    images: torch.Tensor,
    dilations: Sequence[int],
    kernel_size: int = 3,
    image: int = 0,
    row: int = 3,
    col: int = 4,
):
    """Slide through the images and the queries; every model's heads for that query, one row each.

    ``weights_by_model``: {label: ``collect_attention(...)[0]``} for the same ``images``
    (N, in_chans, H, W). The picture is ``figures.attention_heads.plot_attention_comparison``, as an
    ``AttentionPicture`` that a change redraws.
    """
    if not isinstance(weights_by_model, Mapping) or not weights_by_model:
        raise ValueError("weights_by_model must be a non-empty dict {label: (N, heads, H, W, k*k) weights}")
    shapes = {np.asarray(w).shape for w in weights_by_model.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 5:
        raise ValueError(f"weights_by_model: every entry must be (N, heads, H, W, k*k) of one shape, got {sorted(shapes)}")
    count, _, height, width, _ = next(iter(shapes))
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < count:
        raise ValueError(f"images must be the (N, in_chans, H, W) batch the weights came from (N >= {count})")
    controls = {
        "image": _slider(min(image, count - 1), 0, count - 1, "image", "dl-image"),
        "row": _slider(min(row, height - 1), 0, height - 1, "query row", "dl-row"),
        "col": _slider(min(col, width - 1), 0, width - 1, "query col", "dl-col"),
    }

    def data(image):
        return display_array(images[image]), {label: w[image] for label, w in weights_by_model.items()}

    # plot_attention_comparison built once: a change gives its photographs, squares and labels new data
    first_image, first_weights = data(controls["image"].value)
    picture = AttentionPicture(first_image, first_weights, kernel_size, dilations, dpi=_PNG_DPI)

    def draw(image, row, col):
        shown, weights = data(image)
        title = f"image {image}, query ({row}, {col})"
        return RenderedFigure(picture.figure, picture.png(row, col, title, image=shown, weights=weights))

    def static_figure(image, row, col):
        shown, weights = data(image)
        return plot_attention_comparison(shown, weights, row, col, kernel_size, dilations,
                                         title=f"image {image}, query ({row}, {col})")

    return Explorer(
        "trained-attention", controls, draw, cache=64, static_figure=static_figure,
        note="One cell = one token (a patch of the image). One colour scale for every panel (0 to 1); "
             "hatched cells are zero padding.",
    )
