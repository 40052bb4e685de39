"""The ``"fused"`` SWDA implementation: a PyTorch operator in plain PyTorch, any device.

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
  image. Both are wrong rows; a precomputed ``outside`` mask (k*k, H*W) replaces
  their logits by 0 (``padding="zeros"``: a zero key has logit 0 and takes softmax
  mass) or -inf (``"mask"``), and their value weights and weight gradients by 0. A
  *replacement* (``masked_fill``), not a product with a 0/1 mask: a wrong row's
  dot product may overflow to inf, and ``inf * 0`` is NaN.
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

- **Non-finite values go through the exact "shift" path instead**, because a
  wrong row read with a zero weight spreads them to other pixels (``NaN * 0`` is
  NaN): a non-finite output is recomputed by "shift" inside the operator, and the
  backward of such a call, or one with a non-finite upstream gradient, is
  "shift"'s gradient (``torch.func.vjp``). ``create_graph=True`` (second
  derivatives) recomputes the backward with autograd through "shift", so that it
  is itself differentiable.

- **A PyTorch operator.** Forward and backward are ``torch.ops.dilate_lab.swda_fused``
  and ``swda_fused_backward`` (``torch.library.custom_op``) with shape-only fake
  kernels and an autograd rule, so ``torch.compile(fullgraph=True)``, ``torch.export``
  and ``torch.jit.trace`` record one node; halves are computed in float32 inside and
  returned in the input's dtype (what ``torch.autocast`` needs). Eager inference
  without autograd skips the dispatch and calls the same Python directly.

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
from .reference import swda_shift, swda_shift_heads
from .registry import is_plain_tensor, register

__all__ = ["swda_fused", "backward_by_recomputing", "eager_without_graph", "compute_dtype", "in_compute_dtype"]

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
def _window_outside(height, width, kernel_size, dilation, device):
    """(k*k, H*W) bool: which window positions of each pixel fall beyond the border."""
    inside = inside_mask(height, width, kernel_size, dilation, device=device)  # H, W, k*k
    return ~inside.reshape(height * width, -1).t().contiguous()  # k*k, H*W


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


def _fused_forward(q, k, v, kernel_size, dilation, padding, scale):
    """(out (B, heads, H, W, d), weights (k*k, B*heads*H*W)), plain PyTorch, no autograd."""
    B, heads, H, W, d = q.shape
    rows, kk = B * heads * H * W, kernel_size * kernel_size
    q_rows = q.contiguous().view(rows, d)  # B*heads*H*W, d
    k_rows = k.contiguous().view(rows, d)  # B*heads*H*W, d
    v_rows = v.contiguous().view(rows, d)  # B*heads*H*W, d
    shifts = _window_shifts(kernel_size, dilation, W)
    outside = _window_outside(H, W, kernel_size, dilation, q.device).unsqueeze(1)  # k*k, 1, H*W

    logits = q.new_empty(kk, rows)  # k*k, B*heads*H*W
    _window_dots(q_rows, k_rows, kernel_size, dilation, W, logits)
    per_image = logits.view(kk, B * heads, H * W)  # k*k, B*heads, H*W
    # a where, not a product with 0/1: a wrong row's dot may overflow to inf, and inf * 0 is NaN
    per_image.mul_(scale).masked_fill_(outside, 0.0 if padding == "zeros" else float("-inf"))
    weights = torch.softmax(logits, dim=0)  # k*k, B*heads*H*W
    record(
        "attention weights",
        weights.t().view(B, heads, H, W, kk),  # B, heads, H, W, k*k (a view)
        "one weight per window position",
    )
    if padding == "zeros":
        # a padded key's value is zero: its weight stays in the softmax, not in the sum
        weights.view(kk, B * heads, H * W).masked_fill_(outside, 0.0)
    out = _weighted_sum(weights, v_rows, shifts, kk // 2)  # B*heads*H*W, d
    return out.view(B, heads, H, W, d), weights


def _fused_backward(grad_out, q, k, v, weights, kernel_size, dilation, scale):
    """(dq, dk, dv) by the hand-written sums of the module docstring; finite inputs only."""
    B, heads, H, W, d = q.shape
    shape, rows, kk = q.shape, q.numel() // d, kernel_size * kernel_size
    q_rows = q.contiguous().view(rows, d)  # B*heads*H*W, d
    k_rows = k.contiguous().view(rows, d)  # B*heads*H*W, d
    v_rows = v.contiguous().view(rows, d)  # B*heads*H*W, d
    g_rows = grad_out.contiguous().view(rows, d)  # B*heads*H*W, d
    shifts = _window_shifts(kernel_size, dilation, W)
    center = kk // 2
    outside = _window_outside(H, W, kernel_size, dilation, q.device).unsqueeze(1)  # k*k, 1, H*W

    grad_v = _scatter_sum(weights, g_rows, shifts, center).view(shape)
    grad_w = weights.new_empty(kk, rows)  # k*k, B*heads*H*W
    _window_dots(g_rows, v_rows, kernel_size, dilation, W, grad_w)
    # g . v of a wrong row may overflow (inf * 0 would be NaN): replace it, do not cancel it
    grad_w.view(kk, B * heads, H * W).masked_fill_(outside, 0.0)
    # softmax backward, times scale; 0 wherever the weight is 0 (padded positions)
    grad_logits = grad_w.mul_(weights)
    total = grad_logits.sum(dim=0)  # B*heads*H*W
    grad_logits.sub_(weights * total).mul_(scale)
    grad_q = _weighted_sum(grad_logits, k_rows, shifts, center).view(shape)
    grad_k = _scatter_sum(grad_logits, q_rows, shifts, center).view(shape)
    return grad_q, grad_k, grad_v


def _exact_backward(grad_out, q, k, v, kernel_size, dilation, padding, scale):
    """(dq, dk, dv) of the "shift" path, which pads with real zeros: NaN and inf go
    exactly where ``nn.Unfold``'s gradient sends them. ``torch.func.vjp`` works inside
    an operator, where the autograd of the caller is switched off."""
    def shift(a, b, c):
        return swda_shift(a, b, c, kernel_size, dilation, padding, scale)

    _, pullback = torch.func.vjp(shift, q, k, v)
    return pullback(grad_out)


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype the plain-PyTorch and C++ operators compute in: float32 for halves."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def in_compute_dtype(*tensors):
    work = compute_dtype(tensors[0])
    return [t.to(work) for t in tensors]  # no copy where already in it


def _forward_impl(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    kernel_size: int, dilation: int, mask: bool, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, heads, H, W, d) in q's dtype, weights (k*k, B*heads*H*W) in the compute dtype).

    Halves are computed in float32 (the autocast contract: any float inputs in,
    float32 inside, q's dtype out). A non-finite output is recomputed by "shift"
    (see the module docstring) and the weights then filled with NaN: the mark that
    tells the backward operator to take the exact path too.
    """
    padding = "mask" if mask else "zeros"
    qc, kc, vc = in_compute_dtype(q, k, v)
    out, weights = _fused_forward(qc, kc, vc, kernel_size, dilation, padding, scale)
    if not _finite(out):
        out = swda_shift(qc, kc, vc, kernel_size, dilation, padding, scale)
        weights.fill_(float("nan"))
    return out.to(q.dtype), weights


_forward_op = torch.library.custom_op("dilate_lab::swda_fused", mutates_args=())(_forward_impl)


@_forward_op.register_fake
def _(q, k, v, kernel_size, dilation, mask, scale):
    rows = q.numel() // q.shape[-1]
    return q.new_empty(q.shape), q.new_empty((kernel_size * kernel_size, rows), dtype=compute_dtype(q))


@torch.library.custom_op("dilate_lab::swda_fused_backward", mutates_args=())
def _backward_op(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, weights: torch.Tensor,
    kernel_size: int, dilation: int, mask: bool, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) in the dtypes of q, k, v; ``weights`` from ``swda_fused``.

    The hand-written sums are exact for finite values; a non-finite upstream gradient,
    or a forward that fell back (NaN weights), goes through the exact "shift" gradient.
    """
    gc, qc, kc, vc = in_compute_dtype(grad_out, q, k, v)
    if _finite(weights.view(-1)[:1]) and _finite(gc):
        grads = _fused_backward(gc, qc, kc, vc, weights, kernel_size, dilation, scale)
    else:
        grads = _exact_backward(gc, qc, kc, vc, kernel_size, dilation, "mask" if mask else "zeros", scale)
    return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v)))


@_backward_op.register_fake
def _(grad_out, q, k, v, weights, kernel_size, dilation, mask, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def setup_context(ctx, inputs, output):
    """Save q, k, v themselves (not copies: unpacked in a create_graph backward they are
    still nodes of the caller's graph, so second derivatives can flow) and the weights."""
    q, k, v, kernel_size, dilation, mask, scale = inputs[:7]
    weights = output[1]
    ctx.mark_non_differentiable(weights)
    ctx.save_for_backward(q, k, v, weights)
    ctx.geometry = (q.shape, kernel_size, dilation, scale)
    ctx.padding = "mask" if mask else "zeros"


def _backward(ctx, grad_out, _grad_weights):
    if torch.is_grad_enabled():
        # create_graph=True: the gradient must itself be differentiable, so it is
        # recomputed with autograd through the "shift" path
        return backward_by_recomputing(ctx, grad_out)
    q, k, v, weights = ctx.saved_tensors
    _, kernel_size, dilation, scale = ctx.geometry
    grads = torch.ops.dilate_lab.swda_fused_backward(
        grad_out, q, k, v, weights, kernel_size, dilation, ctx.padding == "mask", scale
    )
    return (*grads, None, None, None, None)


_forward_op.register_autograd(_backward, setup_context=setup_context)


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
        if isinstance(dilation, (list, tuple)):  # one per head ("cpp")
            out = swda_shift_heads(*views, kernel_size, dilation, ctx.padding, scale)
        else:
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


def eager_without_graph(q, k, v) -> bool:
    """True for a plain eager call that records no graph: no autograd, no
    ``torch.compile``/``torch.export`` or ``torch.jit.trace`` tracing. Such a call may
    skip the operator's dispatch (tens of microseconds) and run the implementation
    directly; every other call goes through the operator, which tracers see as one node."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))


def swda_fused(q, k, v, kernel_size, dilation, padding, scale):
    """SWDA through the ``dilate_lab::swda_fused`` operator; arguments as in ``swda``
    (already checked). Inference in eager mode calls the implementation directly."""
    if eager_without_graph(q, k, v):
        return _forward_impl(q, k, v, kernel_size, dilation, padding == "mask", float(scale))[0]
    out, _ = torch.ops.dilate_lab.swda_fused(
        q, k, v, kernel_size, dilation, padding == "mask", float(scale)
    )
    return out


def plain_tensors_only(q, k, v, kernel_size, dilation, padding) -> str | None:
    """The can-run check of the autograd Functions: no dual or torch.func-wrapped tensors."""
    if all(is_plain_tensor(t) for t in (q, k, v)):
        return None
    return (
        "it is a custom operator with a reverse-mode rule only: no forward-mode derivative and no "
        "torch.func (jvp, vmap, grad) rule; 'shift' runs those"
    )


register(
    "fused", swda_fused,
    summary="a PyTorch operator in plain PyTorch: no k*k copy, a hand-written backward",
    can_run=plain_tensors_only,
    auto_rank=20,
)
