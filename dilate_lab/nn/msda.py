"""Multi-Scale Dilated Attention (MSDA), DilateFormer eq. (4)-(5), as an nn.Module.

The channels are split into ``len(dilation)`` contiguous groups, each a set of
heads; group i runs sliding window dilated attention (``swda``) with dilation
``dilation[i]``, so that one layer sees 3x3, 5x5 and 7x7 spans at once
(for the default (1, 2, 3)). The groups' outputs are concatenated and mixed by
a Linear projection.

The parameters are named as in the official DilateFormer code (``qkv``, a 1x1
Conv2d to 3*dim, and ``proj``, a Linear), so its checkpoints load key for key.
Unlike the circulating versions, this one never writes into a tensor autograd
saved, never detaches q, k or v, and gives every group its own dilation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .._checks import (
    check_channels_last_input,
    check_dilations,
    check_head_split,
    check_kernel_size,
    check_padding,
    check_positive_int,
    check_probability,
    check_scale,
)
from ..functional import check_impl, swda
from ..ops import choose_impl
from ..ops.reference import swda_shift
from ..tracing import record, tracing

__all__ = ["MultiDilateAttention"]


class MultiDilateAttention(nn.Module):
    """Multi-scale dilated attention over a channels-last feature map.

    Input and output: (B, H, W, C) with C = ``dim``.

    Steps (and the names under which each is ``record``-ed for the shape tracer):

    1. ``"input (B, H, W, C)"``: the input.
    2. ``"qkv"``: a 1x1 convolution to 3*dim channels, (B, 3*C, H, W), ordered
       [q | k | v], each split into ``len(dilation)`` contiguous channel groups
       (computed on the channels-last input; recorded as a view).
    3. For group i: ``"group i q (dilation r)"``, ``"group i k (dilation r)"``,
       ``"group i v (dilation r)"``, each (B, heads/groups, H, W, head_dim), then
       ``swda`` with that group's dilation gives ``"group i output (dilation r)"``
       (B, H, W, C/groups). With ``impl="unfold"`` swda adds ``"unfolded K"``,
       ``"unfolded V"`` and ``"attention weights"`` inside each group (the shift
       implementation adds ``"attention weights"``).
    4. ``"heads concatenated"``: the groups side by side, (B, H, W, C).
    5. ``"output (after proj)"``: the Linear projection, (B, H, W, C).

    Args:
        dim: channels C.
        num_heads: heads in total; a multiple of ``len(dilation)``, and must divide ``dim``.
        kernel_size: odd window side k.
        dilation: one dilation per group of heads, (1, 2, 3) in DilateFormer.
        qkv_bias: bias in the qkv convolution (the DilateFormer models use True).
        qk_scale: logit scale; ``head_dim ** -0.5`` when None.
        attn_drop: dropout on the attention weights (training only). When > 0 a
            shifted-window path that exposes the weights is used in training;
            otherwise, and always in eval mode, ``swda`` with ``impl``.
        proj_drop: dropout after the projection.
        padding: ``"zeros"`` (the paper: border keys are zero vectors that take
            softmax mass) or ``"mask"`` (left out), as in ``swda``.
        impl: ``swda`` implementation, ``"auto"`` or one of ``SWDA_IMPLS``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 3,
        dilation: Sequence[int] = (1, 2, 3),
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        padding: str = "zeros",
        impl: str = "auto",
    ):
        super().__init__()
        check_positive_int(dim, "dim")
        check_positive_int(num_heads, "num_heads")
        check_kernel_size(kernel_size)
        dilation = check_dilations(dilation)
        check_scale(qk_scale)
        check_probability(attn_drop, "attn_drop")
        check_probability(proj_drop, "proj_drop")
        check_padding(padding)
        check_impl(impl)
        check_head_split(dim, num_heads, dilation)
        self.dim = dim
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.num_dilation = len(dilation)
        self.head_dilations = tuple(r for r in dilation for _ in range(num_heads // len(dilation)))
        """One dilation per head: the heads of group i use ``dilation[i]``."""
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5 if qk_scale is None else float(qk_scale)
        self.padding = padding
        self.impl = impl
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}, padding={self.padding!r}, impl={self.impl!r}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels_last_input(x, self.dim, self)
        record("input (B, H, W, C)", x)
        # The official 1x1 convolution, run on x seen as a (B, C, H, W) map stored
        # channels-last (a view of the contiguous x): oneDNN computes it in that layout,
        # bias included, so the output viewed back as (B, H, W, 3*C) is contiguous. No
        # copy either way, the same values as a Linear, and the module (its hooks,
        # count_flops) is still called.
        qkv = self.qkv(x.permute(0, 3, 1, 2))  # B, 3*C, H, W (stored B, H, W, 3*C)
        qkv = qkv.permute(0, 2, 3, 1)  # B, H, W, 3*C (a view)
        record(
            "qkv", qkv.permute(0, 3, 1, 2),  # B, 3*C, H, W (a view)
            "1x1 conv; channels [q | k | v], each split into groups",
        )
        if tracing() or (self.training and self.attn_drop.p > 0):
            x = self._attend_group_by_group(qkv)  # B, H, W, C
        elif self._takes_per_head_dilations(qkv):
            x = self._attend_in_one_call(qkv)  # B, H, W, C
        else:
            x = self._attend_per_group(qkv)  # B, H, W, C
        x = self.proj_drop(self.proj(x))  # B, H, W, C
        return record("output (after proj)", x)

    def _takes_per_head_dilations(self, qkv: torch.Tensor) -> bool:
        """Whether the implementation ``swda`` will run takes one dilation per head in one
        call, reading q, k, v where they are (``"cpp"``, ``"triton"``). Others would split
        the call per dilation themselves, then concatenate."""
        q = qkv[..., : self.head_dim].unsqueeze(1)  # B, 1, H, W, d (a view; only its kind matters)
        try:
            chosen = choose_impl(q, q, q, self.kernel_size, self.dilation[0], self.padding, self.impl)
        except (RuntimeError, ValueError):
            return False  # swda itself will raise the right error
        return chosen.per_head_dilation

    def _attend_in_one_call(self, qkv: torch.Tensor) -> torch.Tensor:
        """Every group in one ``swda`` call, reading q, k, v where the convolution put them."""
        B, H, W, _ = qkv.shape
        qkv = qkv.unflatten(3, (3, self.num_heads, self.head_dim))  # B, H, W, 3, heads, d (a view)
        # unbind at dim 3, then permute: backward stacks the gradients (each laid out
        # B, H, W, heads, d, as the kernel writes them) straight into qkv's own layout, one
        # plain copy; unbinding a permuted qkv would stack them transposed, then copy again.
        q, k, v = (t.permute(0, 3, 1, 2, 4) for t in qkv.unbind(3))  # each B, heads, H, W, d (views)
        out = swda(
            q, k, v, self.kernel_size, self.head_dilations,
            padding=self.padding, scale=self.scale, impl=self.impl,
        )  # B, heads, H, W, d
        return out.permute(0, 2, 3, 1, 4).reshape(B, H, W, self.dim)  # B, H, W, C

    def _attend_per_group(self, qkv: torch.Tensor) -> torch.Tensor:
        """One ``swda`` call per dilation group, for the implementations that take one
        dilation per call (``"fused"``, ``"unfold"``, ``"shift"``, ``"flex"``).

        One permuting copy of qkv lays every group's q, k and v out contiguously, which
        is what these implementations read fastest; the groups' outputs meet in one
        concatenation, which is also the permute back to channels-last.
        """
        B, H, W, _ = qkv.shape
        groups, heads = self.num_dilation, self.num_heads // self.num_dilation
        qkv = qkv.unflatten(3, (3, groups, heads, self.head_dim))  # B, H, W, 3, groups, heads, d (a view)
        qkv = qkv.permute(4, 3, 0, 5, 1, 2, 6).contiguous()  # groups, 3, B, heads, H, W, d
        # unbind, not qkv[i, 0]: the backward of an index is a zero-filled tensor the size of
        # all of qkv per index (nine of them, then summed, half of a training step's time in
        # MSDA); the backward of unbind is one stack of the gradients.
        outputs = [
            swda(
                q, k, v, self.kernel_size, r,
                padding=self.padding, scale=self.scale, impl=self.impl,
            ).permute(0, 2, 3, 1, 4)  # B, H, W, heads, d (a view)
            for (q, k, v), r in zip((group.unbind(0) for group in qkv.unbind(0)), self.dilation)
        ]
        return torch.cat(outputs, dim=3).reshape(B, H, W, self.dim)  # B, H, W, C

    def _attend_group_by_group(self, qkv: torch.Tensor) -> torch.Tensor:
        """The attention one group of heads at a time, (B, H, W, 3*C) -> (B, H, W, C).

        The same result as one ``swda`` call with per-head dilations; this path runs
        when the shape tracer records every group's tensors (lesson 04), and in
        training with attention dropout, whose weights must exist to be dropped.
        """
        B, H, W, _ = qkv.shape
        groups, heads = self.num_dilation, self.num_heads // self.num_dilation
        qkv = qkv.unflatten(3, (3, groups, heads, self.head_dim))  # B, H, W, 3, groups, heads, d (a view)
        qkv = qkv.permute(4, 3, 0, 5, 1, 2, 6)  # groups, 3, B, heads, H, W, d
        outputs = []
        for i, (group, r) in enumerate(zip(qkv.unbind(0), self.dilation)):
            q, k, v = group.unbind(0)  # each B, heads, H, W, d (unbind: one stack in backward)
            record(f"group {i} q (dilation {r})", q)
            record(f"group {i} k (dilation {r})", k)
            record(f"group {i} v (dilation {r})", v)
            if self.training and self.attn_drop.p > 0:
                work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
                out = swda_shift(
                    q.to(work), k.to(work), v.to(work), self.kernel_size, r, self.padding,
                    self.scale, dropout=self.attn_drop,
                ).to(q.dtype)  # B, heads, H, W, d
            else:
                out = swda(
                    q, k, v, self.kernel_size, r,
                    padding=self.padding, scale=self.scale, impl=self.impl,
                )  # B, heads, H, W, d
            out = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, heads * self.head_dim)  # B, H, W, C/groups
            outputs.append(record(f"group {i} output (dilation {r})", out))
        return record("heads concatenated", torch.cat(outputs, dim=-1))  # B, H, W, C
