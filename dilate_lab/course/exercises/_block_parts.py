"""The checker's own parts for lesson 05's block exercise (``block``).

- ``GivenMSDA``: the ``msda`` a learner's block is built with: correct MSDA written here in
  plain torch (so that it runs none of dilate_lab's attention, which the block may not
  call), or one that returns v, and a record of every call;
- ``reference_block_forward``: DilateBlock by its three equations, with any ``msda`` and,
  on request, one of the usual mistakes (``MISTAKES``), which the checker uses to name
  what a wrong block did.

The package tests check both against the package (``swda``, ``DilateBlock``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["GivenMSDA", "MISTAKES", "reference_block_forward", "plain_msda", "plain_swda"]


# --------------------------------------------------------------------------- the checker's MSDA
def plain_swda(q, k, v, kernel_size: int, dilation: int) -> torch.Tensor:
    """SWDA with zero padding, (B, heads, H, W, d) in and out, one shifted view per offset.

    Written here in plain torch, so that the checker's ``msda`` runs none of dilate_lab's
    attention (which a learner's block may not call); the package tests check it against
    ``dilate_lab.swda``.
    """
    B, heads, H, W, d = q.shape
    pad = dilation * (kernel_size // 2)
    k_pad = F.pad(k, (0, 0, pad, pad, pad, pad))  # B, heads, H + 2 pad, W + 2 pad, d
    v_pad = F.pad(v, (0, 0, pad, pad, pad, pad))  # B, heads, H + 2 pad, W + 2 pad, d
    offsets = list(itertools.product(range(kernel_size), repeat=2))
    logits = torch.stack(
        [(q * k_pad[:, :, a * dilation : a * dilation + H, b * dilation : b * dilation + W]).sum(-1)
         for a, b in offsets],
        dim=-1,
    )  # B, heads, H, W, k*k
    attn = torch.softmax(logits * d**-0.5, dim=-1)  # B, heads, H, W, k*k
    out = torch.zeros_like(q)  # B, heads, H, W, d
    for o, (a, b) in enumerate(offsets):
        out = out + attn[..., o : o + 1] * v_pad[:, :, a * dilation : a * dilation + H, b * dilation : b * dilation + W]
    return out


def plain_msda(q, k, v, kernel_size: int, dilations: Sequence[int]) -> torch.Tensor:
    """MSDA on (B, heads, H, W, d): contiguous blocks of heads, one dilation each (lesson 04)."""
    per_group = q.shape[1] // len(dilations)
    outputs = [
        plain_swda(q[:, i * per_group : (i + 1) * per_group], k[:, i * per_group : (i + 1) * per_group],
                        v[:, i * per_group : (i + 1) * per_group], kernel_size, r)  # B, heads/groups, H, W, d
        for i, r in enumerate(dilations)
    ]
    return torch.cat(outputs, dim=1)  # B, heads, H, W, d


def _values(q, k, v, kernel_size: int, dilations: Sequence[int]) -> torch.Tensor:
    """Not attention: every query gets its own value. Tells whether a block uses what msda returns."""
    return v * 1.0  # B, heads, H, W, d (a new tensor, as an attention output would be)


class GivenMSDA:
    """The ``msda`` a learner's block is built with: lesson 04's signature, calls recorded.

    ``kind="msda"``: correct multi-scale dilated attention (plain torch); ``kind="values"``:
    returns v unchanged, so that a block that ignores what msda returns is seen.
    """

    def __init__(self, kind: str = "msda"):
        if kind not in ("msda", "values"):
            raise ValueError(f"kind must be 'msda' or 'values', got {kind!r}")
        self.kind = kind
        self.calls: list[tuple[tuple[int, ...], int, tuple[int, ...]]] = []
        """One (q's shape, kernel_size, dilations) per call."""

    def __call__(self, q, k, v, kernel_size, dilations):
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (q, k, v)]
        if not all(isinstance(t, torch.Tensor) and t.dim() == 5 for t in (q, k, v)) or len(set(shapes)) != 1:
            raise ValueError(
                f"msda takes q, k, v of one shape (B, heads, H, W, head_dim), got {shapes}"
            )
        if isinstance(dilations, int) or not all(isinstance(r, int) and r > 0 for r in dilations):
            raise ValueError(f"msda takes dilations as a list of positive ints, one per group, got {dilations!r}")
        if q.shape[1] % len(dilations):
            raise ValueError(
                f"msda got {q.shape[1]} heads for the {len(dilations)} dilations {list(dilations)}: the heads "
                "must split evenly into one group per dilation (does your block pass its own dilation?)"
            )
        self.calls.append((tuple(q.shape), int(kernel_size), tuple(int(r) for r in dilations)))
        attend = plain_msda if self.kind == "msda" else _values
        return attend(q, k, v, int(kernel_size), list(dilations))


# --------------------------------------------------------------------------- the block, by the equations
MISTAKES = {
    "no position embedding":
        "your block leaves out the position embedding: start with x = x + pos_embed(x), a depthwise "
        "3x3 convolution (groups=dim).",
    "position embedding not residual":
        "your position embedding replaces x instead of adding to it: x = x + pos_embed(x), not "
        "x = pos_embed(x). The convolution only adds a sense of position; the features must pass through.",
    "qkv from the unnormalised input":
        "your qkv projection reads x itself: the attention branch starts with the LayerNorm, "
        "qkv(norm1(x)), and the residual adds to the un-normalised x.",
    "norm on the residual stream":
        "you normalise the residual stream itself (x = norm(x), then x = x + branch(x)). DilateBlock is "
        "pre-norm: only the branch's input is normalised, x = x + branch(norm(x)), so the residual "
        "path carries x unchanged.",
    "qkv split heads first":
        "your q, k, v come out mixed: qkv's 3*dim channels are ordered [q | k | v], each split into heads. "
        "Reshape the last axis to (3, num_heads, head_dim), not (num_heads, 3, head_dim).",
    "heads merged without permute":
        "you reshaped msda's (B, heads, H, W, head_dim) output straight to (B, H, W, dim): a reshape "
        "does not move the heads next to head_dim. Permute to (B, H, W, heads, head_dim) first.",
    "no projection":
        "your attention branch has no output projection: msda's output, heads merged, goes through "
        "proj (a Linear dim -> dim) before it is added to x.",
    "attention not residual":
        "your attention branch replaces x instead of adding to it: x = x + proj(attention), not "
        "x = proj(attention).",
    "no activation":
        "your MLP has no activation between fc1 and fc2: without the GELU the two Linears are one "
        "linear map.",
    "relu instead of gelu":
        "your MLP uses ReLU; DilateBlock's MLP uses GELU (nn.GELU(), the exact form).",
    "mlp not residual":
        "your MLP branch replaces x instead of adding to it: x = x + fc2(gelu(fc1(norm2(x)))).",
}
"""Each mistake ``reference_block_forward`` can make on purpose, and what it means."""


def reference_block_forward(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    msda,
    num_heads: int,
    kernel_size: int,
    dilation: Sequence[int],
    mistake: str | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """DilateBlock by its three equations, (B, C, H, W) -> (B, C, H, W), with any ``msda``.

    ``params``: the block's weights under ``LAYER_NAMES`` (``"qkv.weight"`` of shape
    (3C, C) or (3C, C, 1, 1) ...). ``mistake``: one of ``MISTAKES`` to compute what a
    typical wrong block returns. The package tests check that without a mistake this is
    exactly ``DilateBlock``.
    """
    if mistake is not None and mistake not in MISTAKES:
        raise ValueError(f"mistake must be None or one of {tuple(MISTAKES)}, got {mistake!r}")
    B, C, H, W = x.shape
    d = C // num_heads

    def linear(name, t):
        weight = params[f"{name}.weight"]
        return F.linear(t, weight.reshape(weight.shape[0], -1), params.get(f"{name}.bias"))

    def norm(name, t):
        return F.layer_norm(t, (C,), params[f"{name}.weight"], params[f"{name}.bias"], eps)

    position = F.conv2d(x, params["pos_embed.weight"], params["pos_embed.bias"], padding=1, groups=C)  # B, C, H, W
    if mistake != "no position embedding":
        x = position if mistake == "position embedding not residual" else x + position
    x = x.permute(0, 2, 3, 1)  # B, H, W, C

    if mistake == "norm on the residual stream":
        x = norm("norm1", x)
    attention_input = x if mistake in ("qkv from the unnormalised input", "norm on the residual stream") else norm("norm1", x)
    qkv = linear("qkv", attention_input)  # B, H, W, 3C
    if mistake == "qkv split heads first":
        qkv = qkv.reshape(B, H, W, num_heads, 3, d).permute(4, 0, 3, 1, 2, 5)  # 3, B, heads, H, W, d
    else:
        qkv = qkv.reshape(B, H, W, 3, num_heads, d).permute(3, 0, 4, 1, 2, 5)  # 3, B, heads, H, W, d
    q, k, v = qkv.unbind(0)  # each B, heads, H, W, d
    heads = msda(q, k, v, kernel_size, list(dilation))  # B, heads, H, W, d
    if mistake == "heads merged without permute":
        merged = heads.reshape(B, H, W, C)  # the mistake: heads and pixels mixed
    else:
        merged = heads.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)  # B, H, W, C
    branch = merged if mistake == "no projection" else linear("proj", merged)  # B, H, W, C
    x = branch if mistake == "attention not residual" else x + branch

    if mistake == "norm on the residual stream":
        x = norm("norm2", x)
    hidden = linear("fc1", x if mistake == "norm on the residual stream" else norm("norm2", x))  # B, H, W, hidden
    if mistake == "relu instead of gelu":
        hidden = F.relu(hidden)
    elif mistake != "no activation":
        hidden = F.gelu(hidden)
    branch = linear("fc2", hidden)  # B, H, W, C
    x = branch if mistake == "mlp not residual" else x + branch
    return x.permute(0, 3, 1, 2)  # B, C, H, W
