"""The ``"fused"`` SWDA implementation: a custom autograd Function in plain PyTorch, any device.

Why it is fast, and why it stays small in memory:

- **No k*k copy of K or V.** Every map is read as one flat table of rows,
  ``(B*heads*H*W, head_dim)``. Window position ``o = (a, b)`` of query row
  ``n`` is then the key row ``n + shift_o``, with
  ``shift_o = (a - k//2) * r * W + (b - k//2) * r``: a window is a fixed set of
  row shifts, so "the keys at window position o, for every query" is a plain
  slice of K, and "the keys of window row a, for every query" is an
  ``as_strided`` view of K (k rows, ``r`` rows apart). No tensor the size of the
  unfolded K or V is ever made.
- A shift can leave the map (a zero-padded key) or wrap into the next row or
  image. Both are wrong rows; a precomputed ``inside`` mask (k*k, H*W) sets their
  logits to 0 (``padding="zeros"``: a zero key has logit 0 and takes softmax mass)
  or to -inf (``"mask"``), and their value weights to 0 (a zero value adds nothing).
- **Logits** come from ``torch.bmm`` of each window row view with the queries:
  one call per window row, no temporary.
- **The weighted sum** of values, and every sum in the backward pass, is a loop
  over the k*k shifts of in-place ``addcmul_`` on the output buffer, each over the
  row range where the shift stays inside the table.
- **Backward is written by hand** and keeps only q, k, v and the (k*k, N) value
  weights ``w`` (the softmax, zero at padded positions). With ``l`` the logits,
  ``g = dL/d(out)`` and ``da_o = g . v_o`` (the gradient of the weights)::

      dl_o = w_o * (da_o - sum_p w_p da_p)          (softmax backward; 0 where padded)
      dq   = scale * sum_o dl_o k_o
      dk_m = scale * sum_o dl_o[m - shift_o] q[m - shift_o]   (scatter: add into shifted rows)
      dv_m =         sum_o  w_o[m - shift_o] g[m - shift_o]

  Zero-padded positions have constant logits (0), so no gradient may flow through
  them: with ``w`` zero there, ``dl`` is zero there too, in both padding modes.

- **Two cases go through the differentiable ``"shift"`` path instead**, because
  cancelling a wrong row by a zero weight fails for them: non-finite inputs
  (``NaN * 0`` is NaN, and would leak into the neighbouring image; a non-finite
  output is therefore recomputed by ``"shift"``) and, in backward, a non-finite upstream
  gradient or ``create_graph=True`` (second derivatives: the backward is then
  recomputed with autograd, so it is itself differentiable).

Weights are stored offset-major, (k*k, N), so that the softmax, the masks and
each per-offset weight row are contiguous along the long dimension.

The function runs on any device (it is plain PyTorch); it is the fallback of
``impl="auto"`` where no compiled kernel runs (``ops.cpp`` on CPU, ``ops.flex`` on CUDA).
"""

from __future__ import annotations

import functools

import torch

from ..geometry import inside_mask
from ..tracing import record
from .reference import swda_shift
from .registry import is_plain_tensor, register

__all__ = ["swda_fused", "backward_by_recomputing"]

# torch.bmm on CPU uses a plain loop kernel, fast for these tiny matrices, while
# rows * contraction stays below 400; above it, it takes a general path that is
# much slower for millions of 3 x 24 products. The window-dot helper picks a
# formulation from this bound (a speed choice only: every branch is exact).
_BMM_SMALL_LIMIT = 400


def _window_shifts(kernel_size: int, dilation: int, width: int) -> list[int]:
    """Row shift of every window position, in window (unfold) order, in the flat table."""
    half = kernel_size // 2
    steps = range(-half, half + 1)
    return [p * dilation * width + s * dilation for p in steps for s in steps]


@functools.lru_cache(maxsize=64)
def _window_masks(height, width, kernel_size, dilation, device, dtype):
    """(k*k, H*W) masks: bool ``inside``, and the same as 0/1 in ``dtype``."""
    inside = inside_mask(height, width, kernel_size, dilation, device=device)  # H, W, k*k
    inside = inside.reshape(height * width, -1).t().contiguous()  # k*k, H*W
    return inside, inside.to(dtype)


def _dots_from_table(queries, table, first_row, kernel_size, dilation, width, out):
    """out[a*k + b, n] = queries[n] . table[first_row + n + a*r*W + b*r].

    ``table`` is contiguous (rows, d) and holds every row that is read.
    """
    n, d = queries.shape
    ks, r = kernel_size, dilation
    if n == 0:
        return
    base = table.storage_offset()
    if ks * d < _BMM_SMALL_LIMIT:
        q_col = queries.unsqueeze(-1)  # n, d, 1
        for a in range(ks):
            keys = table.as_strided(
                (n, ks, d), (d, r * d, 1), base + (first_row + a * r * width) * d
            )  # n, k, d: the k keys of window row a, for every query (a view)
            torch.bmm(keys, q_col, out=out[a * ks : (a + 1) * ks].t().unsqueeze(-1))  # n, k, 1
    else:
        for a in range(ks):
            for b in range(ks):
                start = first_row + a * r * width + b * r
                keys = table[start : start + n]  # n, d
                if d < _BMM_SMALL_LIMIT:
                    torch.bmm(
                        keys.unsqueeze(1), queries.unsqueeze(-1), out=out[a * ks + b].view(n, 1, 1)
                    )  # n, 1, 1
                else:
                    torch.sum(keys * queries, dim=-1, out=out[a * ks + b])


def _window_dots(queries, keys, kernel_size, dilation, width, out):
    """out[o, n] = queries[n] . keys[n + shift_o] for every window position o.

    Where ``n + shift_o`` falls outside the table the result is 0; rows that wrap
    into another image give a meaningless number. Both are window positions
    beyond the border, which the caller masks.
    """
    rows, d = queries.shape
    reach = max(_window_shifts(kernel_size, dilation, width))  # the largest shift, >= 0
    # Queries in [lo, hi) read only rows of ``keys``: a view of it suffices.
    lo = min(reach, rows)
    hi = max(lo, rows - reach)
    _dots_from_table(queries[lo:hi], keys, lo - reach, kernel_size, dilation, width, out[:, lo:hi])
    # The first and last ``reach`` queries read beyond the table: a small zero-padded copy.
    for start, stop in ((0, lo), (hi, rows)):
        if stop > start:
            padded = keys.new_zeros(stop - start + 2 * reach, d)  # rows start-reach .. stop+reach
            src_lo, src_hi = max(start - reach, 0), min(stop + reach, rows)
            padded[src_lo - (start - reach) : src_hi - (start - reach)] = keys[src_lo:src_hi]
            _dots_from_table(
                queries[start:stop], padded, 0, kernel_size, dilation, width, out[:, start:stop]
            )


def _valid_rows(shift: int, rows: int) -> tuple[int, int]:
    """The query rows n with 0 <= n + shift < rows."""
    return max(0, -shift), min(rows, rows - shift)


def _weighted_sum(weights, table, shifts, center):
    """out[n] = sum_o weights[o, n] * table[n + shift_o] (rows outside the table skipped)."""
    rows = table.shape[0]
    out = torch.mul(weights[center].unsqueeze(-1), table)  # rows, d (shift 0: every row)
    for o, shift in enumerate(shifts):
        if o != center:
            lo, hi = _valid_rows(shift, rows)
            if hi > lo:
                out[lo:hi].addcmul_(weights[o, lo:hi].unsqueeze(-1), table[lo + shift : hi + shift])
    return out


def _scatter_sum(weights, table, shifts, center):
    """out[n + shift_o] += weights[o, n] * table[n] for every o (the transpose of _weighted_sum)."""
    rows = table.shape[0]
    out = torch.mul(weights[center].unsqueeze(-1), table)  # rows, d
    for o, shift in enumerate(shifts):
        if o != center:
            lo, hi = _valid_rows(shift, rows)
            if hi > lo:
                out[lo + shift : hi + shift].addcmul_(weights[o, lo:hi].unsqueeze(-1), table[lo:hi])
    return out


class _FusedSWDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kernel_size, dilation, padding, scale):
        B, heads, H, W, d = q.shape
        rows, kk = B * heads * H * W, kernel_size * kernel_size
        q_rows = q.contiguous().view(rows, d)  # B*heads*H*W, d
        k_rows = k.contiguous().view(rows, d)  # B*heads*H*W, d
        v_rows = v.contiguous().view(rows, d)  # B*heads*H*W, d
        shifts = _window_shifts(kernel_size, dilation, W)
        inside, inside_float = _window_masks(H, W, kernel_size, dilation, q.device, q.dtype)

        logits = q.new_empty(kk, rows)  # k*k, B*heads*H*W
        _window_dots(q_rows, k_rows, kernel_size, dilation, W, logits)
        per_image = logits.view(kk, B * heads, H * W)  # k*k, B*heads, H*W
        if padding == "zeros":
            per_image.mul_((inside_float * scale).unsqueeze(1))  # padded keys: logit 0
        else:
            per_image.mul_(scale).masked_fill_(~inside.unsqueeze(1), float("-inf"))
        weights = torch.softmax(logits, dim=0)  # k*k, B*heads*H*W
        record(
            "attention weights",
            weights.t().view(B, heads, H, W, kk),  # B, heads, H, W, k*k (a view)
            "one weight per window position",
        )
        if padding == "zeros":
            # a padded key's value is zero: its weight stays in the softmax, not in the sum
            weights.view(kk, B * heads, H * W).mul_(inside_float.unsqueeze(1))

        out = _weighted_sum(weights, v_rows, shifts, kk // 2)  # B*heads*H*W, d
        # the inputs themselves (not their row views): unpacked in a create_graph backward
        # they are still nodes of the caller's graph, so second derivatives can flow
        ctx.save_for_backward(q, k, v, weights)
        ctx.geometry = (q.shape, kernel_size, dilation, scale)
        ctx.padding = padding
        return out.view(B, heads, H, W, d)

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled() or not _finite(grad_out):
            # create_graph=True (a gradient of the gradient is wanted), or a non-finite
            # upstream gradient that the hand-written sums would spread across images:
            # recompute through the differentiable shift path instead.
            return backward_by_recomputing(ctx, grad_out)
        with torch.no_grad():
            return _FusedSWDA._hand_written_backward(ctx, grad_out)

    @staticmethod
    def _hand_written_backward(ctx, grad_out):
        q, k, v, weights = ctx.saved_tensors
        shape, kernel_size, dilation, scale = ctx.geometry
        W, d = shape[3], shape[4]
        rows = q.numel() // d
        q_rows = q.contiguous().view(rows, d)  # B*heads*H*W, d
        k_rows = k.contiguous().view(rows, d)  # B*heads*H*W, d
        v_rows = v.contiguous().view(rows, d)  # B*heads*H*W, d
        kk = kernel_size * kernel_size
        shifts = _window_shifts(kernel_size, dilation, W)
        center = kk // 2
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        g_rows = grad_out.contiguous().view(rows, d)  # B*heads*H*W, d

        grad_q = grad_k = grad_v = None
        if need_v:
            grad_v = _scatter_sum(weights, g_rows, shifts, center).view(shape)
        if need_q or need_k:
            grad_w = weights.new_empty(kk, rows)  # k*k, B*heads*H*W
            _window_dots(g_rows, v_rows, kernel_size, dilation, W, grad_w)
            # softmax backward, times scale; 0 wherever the weight is 0 (padded positions)
            grad_logits = grad_w.mul_(weights)
            total = grad_logits.sum(dim=0)  # B*heads*H*W
            grad_logits.sub_(weights * total).mul_(scale)
            if need_q:
                grad_q = _weighted_sum(grad_logits, k_rows, shifts, center).view(shape)
            if need_k:
                grad_k = _scatter_sum(grad_logits, q_rows, shifts, center).view(shape)
        return grad_q, grad_k, grad_v, None, None, None, None


def backward_by_recomputing(ctx, grad_out):
    """Gradients through autograd over the shift implementation (differentiable, NaN-exact)."""
    q, k, v, _ = ctx.saved_tensors
    shape, kernel_size, dilation, scale = ctx.geometry
    wanted = [i for i, needed in enumerate(ctx.needs_input_grad[:3]) if needed]
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        # Differentiate with respect to fresh views: an unpacked saved tensor is not the
        # graph node autograd knows it by, while a view made here is. With create_graph
        # the views still hang on the caller's graph, so the result is differentiable.
        views = []
        for saved in (q, k, v):
            view = saved.view(shape)  # B, heads, H, W, d
            views.append(view if view.requires_grad else view.detach().requires_grad_(True))
        out = swda_shift(*views, kernel_size, dilation, ctx.padding, scale)
        grads = torch.autograd.grad(
            out, [views[i] for i in wanted], grad_out, create_graph=create_graph, allow_unused=True
        )
    result = [None, None, None]
    for i, grad in zip(wanted, grads):
        result[i] = grad.view(shape) if grad is not None else torch.zeros(shape, dtype=grad_out.dtype, device=grad_out.device)
    return (*result, None, None, None, None)


def _finite(t: torch.Tensor) -> bool:
    """One cheap pass: a NaN or inf anywhere makes the sum non-finite. (A sum that
    overflows reads as non-finite too, which only sends the call down the slower path.)"""
    if t.device.type == "meta":  # shapes only (the shape tracer): no values to check
        return True
    return bool(torch.isfinite(t.sum()))


def swda_fused(q, k, v, kernel_size, dilation, padding, scale):
    """SWDA through the fused autograd Function; arguments as in ``swda`` (already checked).

    Any non-finite input makes the fused output non-finite (every input element is
    read with a non-zero weight by its own query), but the fused reads that are
    cancelled by zero weights would also spread it to other images (NaN * 0 = NaN).
    So a non-finite output is recomputed by the shift path, which pads with real
    zeros and gives unfold's exact pattern; finite calls pay one sum over the output.
    """
    out = _FusedSWDA.apply(q, k, v, kernel_size, dilation, padding, scale)
    if _finite(out):
        return out
    return swda_shift(q, k, v, kernel_size, dilation, padding, scale)


def plain_tensors_only(q, k, v, kernel_size, dilation, padding) -> str | None:
    """The can-run check of the autograd Functions: no dual or torch.func-wrapped tensors."""
    if all(is_plain_tensor(t) for t in (q, k, v)):
        return None
    return (
        "it is a custom autograd Function, with no forward-mode derivative and no "
        "torch.func (jvp, vmap, grad) rule; 'shift' runs those"
    )


register(
    "fused", swda_fused,
    summary="a custom autograd Function in plain PyTorch: no k*k copy, a hand-written backward",
    can_run=plain_tensors_only,
    auto_rank=20,
)
