"""Argument checks shared by the package.

Every check raises ``ValueError`` with a message that names the argument and
says what is allowed, so that a learner never has to read a deep torch error.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
PADDINGS = ("zeros", "mask")


def check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_kernel_size(kernel_size) -> None:
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, numbers.Integral)
        or kernel_size < 1
        or kernel_size % 2 == 0
    ):
        raise ValueError(
            f"kernel_size must be an odd int >= 1 (1, 3, 5, 7, ...), so that the window "
            f"is centred on its query; got {kernel_size!r}"
        )


def check_dilation(dilation, name: str = "dilation") -> None:
    if isinstance(dilation, bool) or not isinstance(dilation, numbers.Integral) or dilation < 1:
        raise ValueError(f"{name} must be an int >= 1 (1 = no dilation), got {dilation!r}")


def check_padding(padding) -> None:
    if padding not in PADDINGS:
        raise ValueError(
            f"padding must be one of {PADDINGS}: 'zeros' is the paper's zero padding "
            f"(padded keys take softmax mass), 'mask' leaves them out; got {padding!r}"
        )


def check_scale(scale) -> None:
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"scale must be None (head_dim ** -0.5) or a finite number, got {scale!r}")


def check_qkv(q, k, v) -> None:
    """q, k, v: tensors of one shape (B, heads, H, W, head_dim), dtype and device."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 5:
            raise ValueError(
                f"{name} must have 5 dimensions (B, heads, H, W, head_dim), "
                f"got {t.dim()} with shape {tuple(t.shape)}"
            )
        if t.dtype not in FLOAT_DTYPES:
            allowed = ", ".join(str(d).replace("torch.", "") for d in FLOAT_DTYPES)
            raise ValueError(
                f"{name} must be a floating tensor ({allowed}), got dtype {t.dtype}"
            )
        if t.numel() == 0:
            raise ValueError(
                f"{name} has a zero-sized dimension, shape {tuple(t.shape)}: "
                "every dimension of (B, heads, H, W, head_dim) must be >= 1"
            )
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(
                f"q, k and v must have the same shape: q is {tuple(q.shape)}, "
                f"{name} is {tuple(t.shape)}"
            )
        if t.dtype != q.dtype:
            raise ValueError(
                f"q, k and v must have the same dtype: q is {q.dtype}, {name} is {t.dtype}"
            )
        if t.device != q.device:
            raise ValueError(
                f"q, k and v must be on the same device: q is on {q.device}, "
                f"{name} is on {t.device}"
            )


def check_channels_last_input(x, dim: int, module: torch.nn.Module) -> None:
    """x: a (B, H, W, C) tensor with C = dim.

    Shapes only: the dtype and device are left to the module's own layers, so that
    ``torch.autocast`` (a bfloat16 activation into float32 parameters) works, and a
    real mismatch still gets PyTorch's error from the first Linear or conv.
    ``module`` is kept for callers' sake (and for messages that may name it).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor (B, H, W, C), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[-1] != dim:
        raise ValueError(
            f"x must be channels-last (B, H, W, C) with C = dim = {dim}, got shape {tuple(x.shape)}"
            + (" (channels-first? use x.permute(0, 2, 3, 1))" if x.dim() == 4 and x.shape[1] == dim else "")
        )


def check_probability(value, name: str) -> None:
    """A dropout rate: a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def check_dilations(dilation, name: str = "dilation") -> tuple[int, ...]:
    """A non-empty list/tuple of ints >= 1, one per group of heads; returned as a tuple."""
    if isinstance(dilation, (str, bytes)) or not isinstance(dilation, Sequence):
        raise ValueError(
            f"{name} must be a non-empty list or tuple of ints >= 1, one dilation per group "
            f"of heads, e.g. (1, 2, 3); for a single group write ({dilation!r},); got {dilation!r}"
        )
    if len(dilation) == 0:
        raise ValueError(
            f"{name} must name at least one dilation (one per group of heads), e.g. (1, 2, 3); "
            "got an empty sequence"
        )
    for i, r in enumerate(dilation):
        check_dilation(r, f"{name}[{i}]")
    return tuple(int(r) for r in dilation)


def check_head_dim(dim: int, num_heads: int) -> None:
    """Every head gets dim / num_heads channels."""
    if dim % num_heads != 0:
        raise ValueError(
            f"dim ({dim}) must be divisible by num_heads ({num_heads}), so that every head "
            "gets the same number of channels"
        )


def check_head_split(dim: int, num_heads: int, dilation: tuple[int, ...], name: str = "dilation") -> None:
    """Every head gets dim / num_heads channels, every dilation num_heads / len(dilation) heads."""
    check_head_dim(dim, num_heads)
    if num_heads % len(dilation) != 0:
        raise ValueError(
            f"num_heads ({num_heads}) must be a multiple of len({name}) "
            f"({len(dilation)}, from {name}={dilation}), so that every dilation gets "
            "the same number of heads"
        )


def check_positive_real(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_channels_first(x, dim: int, who: str) -> None:
    """x: a (B, C, H, W) tensor with C = dim; ``who`` names the module in the message."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{who} takes channels-first maps (B, C, H, W) with C = {dim}, got {shape}"
        )


def check_seed(seed, name: str = "seed") -> None:
    """A random seed: an int >= 0 (Python's or numpy's)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name} must be an int >= 0, got {seed!r}")


def check_head_dilations(dilation, heads: int, name: str = "dilation"):
    """An int >= 1, or a list/tuple of them with one entry per head: returned as an int
    when every head has the same dilation, else as a tuple of ints."""
    if isinstance(dilation, (str, bytes)) or not isinstance(dilation, Sequence):
        check_dilation(dilation, name)
        return int(dilation)
    if len(dilation) != heads:
        raise ValueError(
            f"{name} must be an int, or a list/tuple with one dilation per head "
            f"({heads} heads here); got {len(dilation)} entries: {tuple(dilation)!r}"
        )
    for i, r in enumerate(dilation):
        check_dilation(r, f"{name}[{i}]")
    per_head = tuple(int(r) for r in dilation)
    return per_head[0] if len(set(per_head)) == 1 else per_head
