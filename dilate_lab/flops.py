"""Count a model's FLOPs the way the DilateFormer paper does.

The paper's numbers come from fvcore's ``FlopCountAnalysis`` on a 1-image batch
in eval mode (the official ``check_model.py``). fvcore counts one
multiply-accumulate as one FLOP and counts only these operations:

- convolutions: batch * out_channels * (in_channels / groups) * kh * kw * H_out * W_out
  (the bias is not counted; the depthwise position embeddings count too);
- linear layers and matrix products: one per multiply-accumulate, so the two
  attention products (q . k and weights . v) are included;
- BatchNorm in eval mode: 2 per element; LayerNorm: 5 per element;
- not counted: activations, softmax, additions, scaling, pooling, nn.Unfold.

``count_flops`` runs a real forward pass on a zero image with forward hooks on
every module that does one of these operations, and sums them per part of the
model (stem, each stage with its downsampling, head).

The attention products are counted as the official code computes them,
whichever ``impl`` the model uses: multi-scale dilated attention does
B * heads * H*W * k*k * head_dim for q . K (against each query's k*k window) and
as many for the weights . V; global attention B * heads * N * N * head_dim twice.
"""

from __future__ import annotations

import numbers
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn as nn

from .nn import GlobalAttention, MultiDilateAttention

__all__ = ["FlopCount", "count_flops", "format_flops_table", "PAPER_GFLOPS"]

PAPER_GFLOPS = {"dilateformer_tiny": 3.18}
"""GFLOPs at 224x224 reported for the released models (multiply-accumulates)."""

OPERATORS = ("conv", "linear", "attention matmul", "norm")


@dataclass(frozen=True)
class FlopCount:
    """FLOPs (multiply-accumulates) of one forward pass of one image.

    Attributes:
        img_size: (height, width) of the image counted.
        total: all counted FLOPs.
        by_part: FLOPs per part, in forward order: "stem", "stage 1", ..., "head"
            (for a model that is not a DilateFormer: its top-level children's names).
        by_operator: FLOPs per kind of operation: "conv", "linear",
            "attention matmul", "norm".
    """

    img_size: tuple[int, int]
    total: int
    by_part: dict[str, int]
    by_operator: dict[str, int]

    @property
    def gflops(self) -> float:
        return self.total / 1e9


def _conv_flops(module: nn.Conv2d, inputs, output) -> tuple[str, int]:
    out_channels, in_per_group, kh, kw = module.weight.shape
    batch, _, h_out, w_out = output.shape
    return "conv", batch * out_channels * in_per_group * kh * kw * h_out * w_out


def _linear_flops(module: nn.Linear, inputs, output) -> tuple[str, int]:
    return "linear", inputs[0].numel() * module.out_features


def _batchnorm_flops(module: nn.BatchNorm2d, inputs, output) -> tuple[str, int]:
    # fvcore: 2 per element in eval mode with an affine transform, 1 without
    return "norm", inputs[0].numel() * (2 if module.affine else 1)


def _layernorm_flops(module: nn.LayerNorm, inputs, output) -> tuple[str, int]:
    # fvcore's "rough estimate": 5 per element with an affine transform, 4 without
    return "norm", inputs[0].numel() * (5 if module.elementwise_affine else 4)


def _msda_flops(module: MultiDilateAttention, inputs, output) -> tuple[str, int]:
    B, H, W, C = inputs[0].shape  # C = heads * head_dim
    window = module.kernel_size**2
    # q . K over the window, then weights . V: each B * heads * H*W * k*k * head_dim
    return "attention matmul", 2 * B * H * W * window * C


def _global_attention_flops(module: GlobalAttention, inputs, output) -> tuple[str, int]:
    B, H, W, C = inputs[0].shape
    tokens = H * W
    # q . K^T, then weights . V: each B * heads * N * N * head_dim
    return "attention matmul", 2 * B * tokens * tokens * C


_COUNTERS = {
    nn.Conv2d: _conv_flops,
    nn.Linear: _linear_flops,
    nn.BatchNorm2d: _batchnorm_flops,
    nn.LayerNorm: _layernorm_flops,
    MultiDilateAttention: _msda_flops,
    GlobalAttention: _global_attention_flops,
}


def _counter_for(module: nn.Module):
    for kind, counter in _COUNTERS.items():
        if isinstance(module, kind):
            return counter
    return None


def _part_of(name: str) -> str:
    """The part of a DilateFormer a module belongs to, from its qualified name."""
    top, _, rest = name.partition(".")
    if top == "patch_embed":
        return "stem"
    if top == "stages":
        return f"stage {int(rest.split('.')[0]) + 1}"
    if top in ("norm", "head"):
        return "head"
    return top or "(model)"


def _image_size(img_size) -> tuple[int, int]:
    size = (img_size, img_size) if isinstance(img_size, numbers.Integral) else img_size
    if (
        isinstance(img_size, bool)
        or not isinstance(size, (tuple, list))
        or len(size) != 2
        or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in size)
    ):
        raise ValueError(
            f"img_size must be a positive int or a (height, width) pair of them, got {img_size!r}"
        )
    return int(size[0]), int(size[1])


def _checked_input(model, img_size, in_chans) -> tuple[tuple[int, int], int]:
    """(height, width) and channels of the image ``count_flops`` runs: checked, and checked
    against the model itself (``check_input``) so that a bad size is named here, not deep in a layer."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    size = _image_size(getattr(model, "img_size", 224) if img_size is None else img_size)
    chans = getattr(model, "in_chans", 3) if in_chans is None else in_chans
    if isinstance(chans, bool) or not isinstance(chans, numbers.Integral) or chans < 1:
        raise ValueError(f"in_chans must be a positive int, got {chans!r}")
    check = getattr(model, "check_input", None)
    if check is not None:
        try:
            check(torch.zeros(1, chans, *size))
        except ValueError as err:
            raise ValueError(f"img_size {size} does not fit this model: {err}") from None
    return size, chans


def _run_once_in_eval(model: nn.Module, chans: int, size: tuple[int, int]) -> None:
    """One forward pass on a zero image, in eval mode and without gradients, on the model's
    device and dtype; every submodule's training mode is restored afterwards."""
    modes = {module: module.training for module in model.modules()}  # restored one by one
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, chans, *size, device=device, dtype=dtype))  # 1, C, H, W
    finally:
        for module, training in modes.items():
            module.training = training


def count_flops(model: nn.Module, img_size=None, in_chans: int | None = None) -> FlopCount:
    """FLOPs (multiply-accumulates, fvcore's rules) of ``model`` on one image.

    Args:
        model: a DilateFormer, or any module made of the counted layers.
        img_size: side or (height, width) of the image; default the model's
            ``img_size`` attribute, else 224. A DilateFormer needs a multiple of
            ``model.stride``.
        in_chans: image channels; default the model's ``in_chans``, else 3.

    The model runs once, in eval mode and without gradients, on a zero image;
    its training mode is restored afterwards.
    """
    size, chans = _checked_input(model, img_size, in_chans)
    by_part: dict[str, int] = defaultdict(int)
    by_operator: dict[str, int] = {op: 0 for op in OPERATORS}

    def hook_for(name, counter):
        def hook(module, inputs, output):
            operator, flops = counter(module, inputs, output)
            by_part[_part_of(name)] += int(flops)
            by_operator[operator] += int(flops)

        return hook

    handles = []
    for name, module in model.named_modules():
        counter = _counter_for(module)
        if counter is not None:
            handles.append(module.register_forward_hook(hook_for(name, counter)))
    try:
        _run_once_in_eval(model, chans, size)
    finally:
        for handle in handles:
            handle.remove()
    return FlopCount(
        img_size=size,
        total=sum(by_part.values()),
        by_part=dict(by_part),
        by_operator=by_operator,
    )


def format_flops_table(count: FlopCount, paper_gflops: float | None = None) -> str:
    """A plain-text table of ``count``: GFLOPs and share per part, then the total.

    With ``paper_gflops`` (e.g. ``PAPER_GFLOPS["dilateformer_tiny"]``) the total
    row also shows the paper's number and the relative difference.
    """
    if not isinstance(count, FlopCount):
        raise ValueError(f"count must be a FlopCount (from count_flops), got {type(count).__name__}")
    height, width = count.img_size
    lines = [
        f"FLOPs (multiply-accumulates) at {height}x{width}",
        f"{'part':<10} {'GFLOPs':>8} {'share':>7}",
    ]
    for part, flops in count.by_part.items():
        share = flops / count.total if count.total else 0.0
        lines.append(f"{part:<10} {flops / 1e9:>8.3f} {share:>7.1%}")
    total = f"{'total':<10} {count.gflops:>8.3f} {1:>7.1%}"
    if paper_gflops is not None:
        diff = count.gflops / paper_gflops - 1
        total += f"   paper: {paper_gflops:.2f} ({diff:+.1%})"
    lines.append(total)
    ops = ", ".join(f"{op} {flops / 1e9:.3f}" for op, flops in count.by_operator.items())
    lines.append(f"by operation (GFLOPs): {ops}")
    return "\n".join(lines)
