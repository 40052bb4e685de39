"""Three bugs of DilateFormer code, one reported and two easy to make, each kept as a small module.

Every class here is DELIBERATELY WRONG. They exist so that lesson 04 can show
each bug in a few lines, and so that learners can write the checks that catch
it. Use ``dilate_lab.MultiDilateAttention`` for real work.

Each buggy module has the same constructor, attributes (``dim``, ``num_heads``,
``kernel_size``, ``dilation``, ``head_dim``, ``scale``) and parameters (``qkv``,
a 1x1 Conv2d to 3*dim channels, and ``proj``, a Linear) as
``MultiDilateAttention``, takes and returns channels-last maps (B, H, W, C), and
differs from it in exactly one place:

1. ``InPlaceMultiDilateAttention``, the pattern of the official code: the
   per-dilation outputs are written with ``x[i] = ...`` into a view of the
   module's input, which the qkv convolution saved for its backward pass. The
   forward pass is right; ``backward()`` raises "one of the variables needed
   for gradient computation has been modified by an inplace operation", as
   reported in the official repository's issues #2, #12 and #13. The write
   also overwrites the caller's input. (Issue #13's workaround,
   ``self.qkv(x.clone())``, lets the convolution save a copy that the writes
   do not touch; building the output out of place, as ``MultiDilateAttention``
   does, avoids the write altogether.)
2. ``DetachedMultiDilateAttention``, a tempting "fix" of the same error (one
   you may find online or write yourself): q, k and v are detached before the
   attention, so the convolution leaves the graph and backward runs. The
   forward pass is still right, and training runs, but the qkv projection
   never receives a gradient (its ``.grad`` stays None) and nothing reaches
   the input through the attention either.
3. ``FixedRateMultiDilateAttention``, a port you may write (or find) that
   builds one ``nn.Unfold`` with a fixed rate and uses it for every group:
   every group attends to the same 3x3 neighbourhood, whatever ``dilation``
   says. No error, no warning: the output equals a correct module with all
   dilations set to 1.

The per-group attention (``_unfold_attention``) is the paper's unfold form,
written as the official code computes it: zero padding, queries scaled by
``scale``, softmax over the k*k window.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import check_dilations, check_head_split, check_kernel_size, check_positive_int, check_scale

__all__ = [
    "InPlaceMultiDilateAttention",
    "DetachedMultiDilateAttention",
    "FixedRateMultiDilateAttention",
    "CIRCULATING_BUGS",
]


def _unfold_attention(q, k, v, head_dim, kernel_size, dilation, scale):
    """SWDA of one group in the official layout: q, k, v (B, d, H, W) -> (B, H, W, d).

    d = heads * head_dim channels of the group. ``dilation`` sets the spacing
    of the window and its zero padding (dilation * (kernel_size // 2)).
    """
    B, d, H, W = q.shape
    heads, kk, n = d // head_dim, kernel_size * kernel_size, H * W
    pad = dilation * (kernel_size // 2)
    q = q.reshape(B, heads, head_dim, 1, n).permute(0, 1, 4, 3, 2)  # B, heads, N, 1, head_dim
    k = F.unfold(k, kernel_size, dilation=dilation, padding=pad)  # B, d*k*k, N
    k = k.reshape(B, heads, head_dim, kk, n).permute(0, 1, 4, 2, 3)  # B, heads, N, head_dim, k*k
    attn = ((q @ k) * scale).softmax(dim=-1)  # B, heads, N, 1, k*k
    v = F.unfold(v, kernel_size, dilation=dilation, padding=pad)  # B, d*k*k, N
    v = v.reshape(B, heads, head_dim, kk, n).permute(0, 1, 4, 3, 2)  # B, heads, N, k*k, head_dim
    out = attn @ v  # B, heads, N, 1, head_dim
    return out.transpose(1, 2).reshape(B, H, W, d)  # B, H, W, d (heads then head_dim)


class _BuggyMultiDilateAttention(nn.Module):
    """What the three buggy modules share: arguments, checks, parameters, and the qkv step."""

    bug = ""
    """One sentence: what is wrong with this module."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 3,
        dilation: Sequence[int] = (1, 2, 3),
        qkv_bias: bool = False,
        qk_scale: float | None = None,
    ):
        super().__init__()
        check_positive_int(dim, "dim")
        check_positive_int(num_heads, "num_heads")
        check_kernel_size(kernel_size)
        dilation = check_dilations(dilation)
        check_scale(qk_scale)
        check_head_split(dim, num_heads, dilation)
        self.dim = dim
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.num_dilation = len(dilation)
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5 if qk_scale is None else float(qk_scale)
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}; DELIBERATELY BUGGY: {self.bug}"
        )

    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be channels-last (B, H, W, C) with C = dim = {self.dim}, got {shape}")

    def _qkv_groups(self, x_channels_first):
        """(B, C, H, W) -> (groups, 3, B, C/groups, H, W), channels ordered [q | k | v], each in groups."""
        B, C, H, W = x_channels_first.shape
        qkv = self.qkv(x_channels_first)  # B, 3*C, H, W
        qkv = qkv.reshape(B, 3, self.num_dilation, C // self.num_dilation, H, W)  # B, 3, groups, C/groups, H, W
        return qkv.permute(2, 1, 0, 3, 4, 5)  # groups, 3, B, C/groups, H, W


class InPlaceMultiDilateAttention(_BuggyMultiDilateAttention):
    """DELIBERATELY WRONG: writes its results in place into a tensor autograd saved.

    The official ``MultiDilatelocalAttention.forward`` pattern: reuse the input
    ``x`` as the output buffer (``x[i] = group output``). ``x`` is the input of
    the qkv convolution, which keeps it to compute the weight's gradient; the
    writes bump its version counter, so ``backward()`` raises a RuntimeError.
    The forward output is correct. Side effect: the caller's input is overwritten.
    """

    bug = "x[i] = ... overwrites the qkv convolution's saved input; backward() raises"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        B, H, W, C = x.shape
        x = x.permute(0, 3, 1, 2)  # B, C, H, W (a view of the input)
        qkv = self._qkv_groups(x)  # groups, 3, B, C/groups, H, W
        x = x.reshape(B, self.num_dilation, C // self.num_dilation, H, W)  # still a view
        x = x.permute(1, 0, 3, 4, 2)  # groups, B, H, W, C/groups (a view of the input)
        for i, r in enumerate(self.dilation):
            # THE BUG: an in-place write into the convolution's saved input
            x[i] = _unfold_attention(qkv[i][0], qkv[i][1], qkv[i][2], self.head_dim, self.kernel_size, r, self.scale)
        x = x.permute(1, 2, 3, 0, 4).reshape(B, H, W, C)  # B, H, W, C
        return self.proj(x)


class DetachedMultiDilateAttention(_BuggyMultiDilateAttention):
    """DELIBERATELY WRONG: detaches q, k and v, so the qkv projection never learns.

    A tempting "fix" for ``InPlaceMultiDilateAttention``: detach q, k, v
    before the attention (and keep the in-place writes). backward() now runs,
    because the qkv convolution is no longer in the graph, which is exactly why
    ``qkv.weight.grad`` stays None. The forward output is correct.
    """

    bug = "q, k, v are detached: qkv.weight never gets a gradient"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        B, H, W, C = x.shape
        x = x.permute(0, 3, 1, 2)  # B, C, H, W (a view of the input)
        qkv = self._qkv_groups(x)  # groups, 3, B, C/groups, H, W
        x = x.reshape(B, self.num_dilation, C // self.num_dilation, H, W)  # still a view
        x = x.permute(1, 0, 3, 4, 2)  # groups, B, H, W, C/groups
        for i, r in enumerate(self.dilation):
            # THE BUG: detach() cuts q, k and v (and so the qkv projection) out of the graph
            q, k, v = qkv[i][0].detach(), qkv[i][1].detach(), qkv[i][2].detach()
            x[i] = _unfold_attention(q, k, v, self.head_dim, self.kernel_size, r, self.scale)
        x = x.permute(1, 2, 3, 0, 4).reshape(B, H, W, C)  # B, H, W, C
        return self.proj(x)


class FixedRateMultiDilateAttention(_BuggyMultiDilateAttention):
    """DELIBERATELY WRONG: one unfold with a fixed rate for every group; the dilation is ignored.

    A port that builds ``nn.Unfold(kernel_size, dilation=1, padding=kernel_size // 2)``
    once and reuses it in every group (the official code builds one unfold per
    dilation, inside each group's own attention module). It keeps
    ``self.dilation`` and prints it, but every group attends to the same
    undilated k x k window. Otherwise it is correct (out of place, gradients flow).
    """

    bug = "one nn.Unfold with dilation 1 for every group: the dilations are ignored"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # THE BUG: the rate is fixed here, once, instead of one unfold per dilation
        self.unfold = nn.Unfold(self.kernel_size, dilation=1, padding=self.kernel_size // 2)

    def _group_attention(self, q, k, v):
        """SWDA of one group through the shared fixed-rate unfold: (B, d, H, W) -> (B, H, W, d)."""
        B, d, H, W = q.shape
        heads, hd, kk, n = d // self.head_dim, self.head_dim, self.kernel_size**2, H * W
        q = q.reshape(B, heads, hd, 1, n).permute(0, 1, 4, 3, 2)  # B, heads, N, 1, head_dim
        k = self.unfold(k).reshape(B, heads, hd, kk, n).permute(0, 1, 4, 2, 3)  # B, heads, N, head_dim, k*k
        attn = ((q @ k) * self.scale).softmax(dim=-1)  # B, heads, N, 1, k*k
        v = self.unfold(v).reshape(B, heads, hd, kk, n).permute(0, 1, 4, 3, 2)  # B, heads, N, k*k, head_dim
        return (attn @ v).transpose(1, 2).reshape(B, H, W, d)  # B, H, W, d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        B, H, W, C = x.shape
        qkv = self._qkv_groups(x.permute(0, 3, 1, 2))  # groups, 3, B, C/groups, H, W
        outputs = [
            self._group_attention(qkv[i][0], qkv[i][1], qkv[i][2])  # B, H, W, C/groups
            for i in range(self.num_dilation)  # self.dilation is never read: the bug
        ]
        return self.proj(torch.cat(outputs, dim=-1))  # B, H, W, C


CIRCULATING_BUGS = {
    "in-place": InPlaceMultiDilateAttention,
    "detach": DetachedMultiDilateAttention,
    "fixed-rate": FixedRateMultiDilateAttention,
}
"""The three deliberately buggy modules, by a short name."""
