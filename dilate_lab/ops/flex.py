"""The ``"flex"`` SWDA implementation: FlexAttention with a dilated-window mask, for CUDA.

FlexAttention (``torch.nn.attention.flex_attention``) runs attention over all
H*W keys but skips every key block the mask rules out, so a compiled kernel
touches only the keys near each query, forward and backward. SWDA needs two
pieces from it:

- a **mask_mod** that allows exactly the dilated window: key (ki, kj) is in the
  window of query (qi, qj) when ``|ki - qi|`` and ``|kj - qj|`` are at most
  ``r * (k // 2)`` and both differences are multiples of ``r``;
- the **zero padding** of the paper. Window positions beyond the border are zero
  keys: logit 0, value 0, yet each takes ``exp(0)`` of softmax mass. ``n_pad`` of
  them add ``n_pad`` to the denominator. One extra all-zero key, appended after the
  H*W real ones, with the score ``log(n_pad)`` (set by a **score_mod**), adds exactly
  that: ``exp(log(n_pad)) = n_pad``, and its zero value adds nothing to the output.
  It is masked out where ``n_pad = 0`` and with ``padding="mask"``.

(An equivalent correction works on the output: with ``lse`` the log-sum-exp of
the masked softmax, ``out_zeros = out_mask * sigmoid(lse - log(n_pad))``. The extra
key is used here because it needs nothing but FlexAttention's own backward.)

On CPU, FlexAttention has no backward in this PyTorch, so ``swda(impl="flex")``
accepts CUDA tensors only, and computes in float32 (halves are cast up and back;
float64 goes to ``"fused"`` under ``impl="auto"``); ``flex_swda_forward(..., compiled=False)`` runs the same
math eagerly on any device (forward only on CPU), which is how the tests check it
without a GPU.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from ..geometry import padding_counts
from .registry import register

__all__ = [
    "swda_flex",
    "flex_swda_forward",
    "flex_available",
    "window_mask_mod",
    "zero_padding_from_lse",
]


@functools.lru_cache(maxsize=1)
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def flex_available(device) -> bool:
    """True when the compiled FlexAttention kernel can run on ``device`` (CUDA with Triton)."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available() and _triton_installed()


def window_mask_mod(height: int, width: int, kernel_size: int, dilation: int, n_pad=None):
    """The FlexAttention ``mask_mod`` of the dilated window on a flattened H x W map.

    Keys 0 .. H*W-1 are the map's pixels in row-major order. With ``n_pad`` (a
    (H*W,) tensor of padded-position counts) key H*W is the extra zero key, allowed
    for the queries whose window reaches beyond the border.
    """
    reach = dilation * (kernel_size // 2)
    n_keys = height * width

    def mask_mod(b, h, q_idx, kv_idx):
        d_row = kv_idx // width - q_idx // width
        d_col = kv_idx % width - q_idx % width
        in_window = (
            (kv_idx < n_keys)
            & (d_row.abs() <= reach)
            & (d_col.abs() <= reach)
            & (d_row % dilation == 0)
            & (d_col % dilation == 0)
        )
        if n_pad is None:
            return in_window
        return in_window | ((kv_idx == n_keys) & (n_pad[q_idx] > 0))

    return mask_mod


def _pad_score_mod(n_keys: int, log_n_pad: torch.Tensor):
    """score_mod: the extra zero key (index H*W) scores log(n_pad) of its query."""

    def score_mod(score, b, h, q_idx, kv_idx):
        return torch.where(kv_idx == n_keys, score + log_n_pad[q_idx], score)

    return score_mod


@functools.lru_cache(maxsize=32)
def _window_setup(height, width, kernel_size, dilation, padding, device, score_dtype):
    """BlockMask and score_mod of one map geometry (cached: building a mask is costly)."""
    from torch.nn.attention.flex_attention import create_block_mask

    n_keys = height * width
    if padding == "zeros":
        n_pad = padding_counts(height, width, kernel_size, dilation, device=device)  # H, W
        n_pad = n_pad.reshape(n_keys)  # H*W
        log_n_pad = torch.log(n_pad.to(score_dtype))  # -inf where nothing is padded (masked anyway)
        mask_mod = window_mask_mod(height, width, kernel_size, dilation, n_pad)
        score_mod = _pad_score_mod(n_keys, log_n_pad)
        kv_len = n_keys + 1
    else:
        mask_mod = window_mask_mod(height, width, kernel_size, dilation)
        score_mod = None
        kv_len = n_keys
    # On CUDA the mask is built blockwise by a compiled kernel; eagerly it would hold
    # several (H*W) x (H*W) index tensors at once (gigabytes for a 112 x 112 map).
    block_mask = create_block_mask(
        mask_mod, None, None, n_keys, kv_len, device=device, _compile=flex_available(device)
    )
    return block_mask, score_mod


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_swda_forward(q, k, v, kernel_size, dilation, padding, scale, *, compiled=True):
    """SWDA through FlexAttention, on (B, heads, H, W, d) tensors already checked by ``swda``.

    ``compiled=False`` calls FlexAttention eagerly (slow, any device; forward only on CPU).
    """
    from torch.nn.attention.flex_attention import flex_attention

    B, heads, H, W, d = q.shape
    n_keys = H * W
    score_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    block_mask, score_mod = _window_setup(
        H, W, kernel_size, dilation, padding, q.device, score_dtype
    )
    queries = q.reshape(B, heads, n_keys, d)  # B, heads, H*W, d
    keys = k.reshape(B, heads, n_keys, d)  # B, heads, H*W, d
    values = v.reshape(B, heads, n_keys, d)  # B, heads, H*W, d
    if padding == "zeros":
        zero = q.new_zeros(B, heads, 1, d)
        keys = torch.cat([keys, zero], dim=2)  # B, heads, H*W + 1, d: the extra zero key
        values = torch.cat([values, zero], dim=2)  # B, heads, H*W + 1, d
    attend = _compiled_flex() if compiled else flex_attention
    out = attend(queries, keys, values, score_mod=score_mod, block_mask=block_mask, scale=scale)
    return out.reshape(B, heads, H, W, d)  # B, heads, H, W, d


def swda_flex(q, k, v, kernel_size, dilation, padding, scale):
    """SWDA for ``swda(impl="flex")``: CUDA tensors in float16, bfloat16 or float32."""
    return flex_swda_forward(
        q, k, v, kernel_size, dilation, padding, scale, compiled=flex_available(q.device)
    )


def zero_padding_from_lse(out_masked, lse, n_pad):
    """Turn a masked-window result into the zero-padded one from its log-sum-exp.

    ``out_masked`` (..., N, d), ``lse`` (..., N) of the masked softmax (natural log),
    ``n_pad`` (N,) padded positions per query. The padded keys add ``n_pad`` to the
    softmax denominator ``exp(lse)``, so the output shrinks by
    ``exp(lse) / (exp(lse) + n_pad) = sigmoid(lse - log(n_pad))`` (1 where n_pad = 0).
    """
    log_n_pad = torch.log(n_pad.to(lse.dtype))  # -inf where n_pad == 0: sigmoid(+inf) = 1
    return out_masked * torch.sigmoid(lse - log_n_pad).unsqueeze(-1)


def _flex_missing() -> str | None:
    if not _triton_installed():
        return "Triton is not installed (FlexAttention compiles its GPU kernel with it)"
    return None


register(
    "flex", swda_flex,
    summary="FlexAttention with a dilated-window block mask and an exact zero-padding correction",
    device_types=("cuda",),
    dtypes=(torch.float32,),
    available=_flex_missing,
    auto_rank=10,
)
