"""The Triton kernels of ``impl="triton"``: one fused SWDA forward and a two-kernel backward.

Layout and indexing. q, k, v are (B, heads, H, W, head_dim) tensors with any strides
(views of a conv output included); every kernel takes the five strides of each tensor
it reads or writes, so no caller ever makes a contiguous copy. A program instance owns
``BLOCK_Q`` consecutive pixels n of one (batch, head) image, flattened row-major
(``i = n // W``, ``j = n % W``), and the head dimension padded to ``BLOCK_D``, a power
of two, by masked loads: a tile is (BLOCK_Q, BLOCK_D) and lanes ``>= head_dim`` read 0,
which adds nothing to any dot product.

Window. With ``half = KS // 2`` and ``r`` the dilation of this program's head (read from a
small int32 tensor, one entry per head, so heads with different dilations share a
launch), window position ``o = (a, b)`` of query (i, j) is the key at
``(i + (a - half) r, j + (b - half) r)``. Each kernel loops over the KS*KS positions;
each step is a gather of one key (or query) row per pixel of the tile.

Padding. A position beyond the border is loaded with ``mask=inside``, ``other=0``:

- ``MASK=False`` (the paper's zero padding): the key is 0, so its logit is exactly 0 and
  it takes ``exp(0 - m)`` of softmax mass; its value is 0, so it adds nothing to the
  output. No special case is needed: the masked load *is* the zero padding.
- ``MASK=True``: its logit is set to -inf, so it takes no mass.

Softmax. The forward keeps, per query, the running maximum ``m``, the running sum
``l = sum_o 2^(s_o - m)`` and the running output ``acc = sum_o 2^(s_o - m) v_o``
(the online softmax): when a new logit raises the maximum to ``m'``, ``l`` and ``acc``
are multiplied by ``2^(m - m')``. Logits are kept in base 2 (``s = scale * log2(e) * q.k``,
the scale folded into q once) because ``exp2`` is the GPU's native exponential.
Forward writes the output and ``lse2 = m + log2(l)`` per query (a base-2 log-sum-exp);
the weights are never stored, backward recomputes them as ``P_o = 2^(s_o - lse2)``.

Backward. With ``dO`` the upstream gradient and ``Delta = dO . out`` (= ``sum_o P_o dP_o``,
since ``out = sum_o P_o v_o``, padded values being 0), the softmax backward is
``dl_o = P_o (dO . v_o - Delta)`` on the natural-log logits ``l_o = scale q . k_o``, so::

    dq_n = scale * sum_o dl_o k_o                      (a gather: _swda_bwd_dq_kernel)
    dk_m = scale * sum_{queries n seeing m} dl q_n      (_swda_bwd_dkdv_kernel)
    dv_m =         sum_{queries n seeing m} P  dO_n

Key m sits at window position o of exactly one query, ``m - offset_o``, for each o, so the
dk/dv kernel loops over the same KS*KS positions in reverse and gathers those queries:
each output row is written by one program, no atomics. Zero-padded keys are constants
(no gradient); their P still enters ``Delta`` through ``out``, which is what the paper's
unfold gives. The dq kernel writes ``Delta`` for the dk/dv kernel, launched after it.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["swda_fwd_kernel", "swda_bwd_dq_kernel", "swda_bwd_dkdv_kernel"]


@triton.jit
def _tile(pid_q, H, W, D, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    """Pixel indices n, rows i, columns j, their validity, and the head-dim lanes."""
    n = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    valid = n < H * W
    i = n // W
    j = n % W
    dd = tl.arange(0, BLOCK_D)
    return n, i, j, valid, dd, dd < D


@triton.jit
def _load_rows(base, i, j, dd, s_y, s_x, s_d, rows_ok, d_ok):
    """(BLOCK_Q, BLOCK_D) float32 tile of rows (i, j) of one image; 0 where not rows_ok."""
    offs = i.to(tl.int64)[:, None] * s_y + j.to(tl.int64)[:, None] * s_x + dd[None, :] * s_d
    return tl.load(base + offs, mask=rows_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)


@triton.jit
def _store_rows(base, i, j, dd, s_y, s_x, s_d, rows_ok, d_ok, value):
    offs = i.to(tl.int64)[:, None] * s_y + j.to(tl.int64)[:, None] * s_x + dd[None, :] * s_d
    tl.store(base + offs, value.to(base.dtype.element_ty), mask=rows_ok[:, None] & d_ok[None, :])


@triton.jit
def swda_fwd_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, dil_ptr,
    sq_b, sq_h, sq_y, sq_x, sq_d,
    sk_b, sk_h, sk_y, sk_x, sk_d,
    sv_b, sv_h, sv_y, sv_x, sv_d,
    so_b, so_h, so_y, so_x, so_d,
    HEADS, H, W, D, qk_scale,
    KS: tl.constexpr, MASK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out and lse2 for BLOCK_Q queries of image program_id(1) (grid: q tiles, B*heads)."""
    pid_q = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // HEADS).to(tl.int64)
    h = pid_bh % HEADS
    r = tl.load(dil_ptr + h)
    h = h.to(tl.int64)
    n, i, j, valid, dd, d_ok = _tile(pid_q, H, W, D, BLOCK_Q, BLOCK_D)
    q = _load_rows(q_ptr + b * sq_b + h * sq_h, i, j, dd, sq_y, sq_x, sq_d, valid, d_ok)
    q = q * qk_scale  # base-2 logits: s = scale * log2(e) * q . k
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h

    m = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    for o in range(KS * KS):
        ki = i + (o // KS - KS // 2) * r
        kj = j + (o % KS - KS // 2) * r
        inside = valid & (ki >= 0) & (ki < H) & (kj >= 0) & (kj < W)
        kt = _load_rows(k_base, ki, kj, dd, sk_y, sk_x, sk_d, inside, d_ok)
        s = tl.sum(q * kt, axis=1)  # BLOCK_Q; exactly 0 for a zero-padded key
        if MASK:
            s = tl.where(inside, s, float("-inf"))
        m_new = tl.maximum(m, s)
        # while every logit so far is -inf (masked), rescale by 0 instead of exp2(nan)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m - m_safe)
        p = tl.exp2(s - m_safe)
        vt = _load_rows(v_base, ki, kj, dd, sv_y, sv_x, sv_d, inside, d_ok)
        l = l * alpha + p
        acc = acc * alpha[:, None] + p[:, None] * vt
        m = m_new
    l = tl.where(valid, l, 1.0)  # pixels past the map: nothing stored, no 0/0
    _store_rows(out_ptr + b * so_b + h * so_h, i, j, dd, so_y, so_x, so_d, valid, d_ok,
                acc / l[:, None])
    tl.store(lse_ptr + pid_bh.to(tl.int64) * H * W + n, m + tl.log2(l), mask=valid)


@triton.jit
def swda_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, dil_ptr,
    sq_b, sq_h, sq_y, sq_x, sq_d,
    sk_b, sk_h, sk_y, sk_x, sk_d,
    sv_b, sv_h, sv_y, sv_x, sv_d,
    so_b, so_h, so_y, so_x, so_d,
    sg_b, sg_h, sg_y, sg_x, sg_d,
    HEADS, H, W, D, qk_scale, scale,
    KS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dq for BLOCK_Q queries, and Delta = dO . out for the dk/dv kernel.

    dq is allocated contiguous like ``out``, so it is written with the ``so_*`` strides.
    No MASK parameter: a padded position has a zero key, so it adds nothing to dq in
    either padding (its weight only enters through Delta, i.e. through ``out``).
    """
    pid_q = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // HEADS).to(tl.int64)
    h = pid_bh % HEADS
    r = tl.load(dil_ptr + h)
    h = h.to(tl.int64)
    n, i, j, valid, dd, d_ok = _tile(pid_q, H, W, D, BLOCK_Q, BLOCK_D)
    q = _load_rows(q_ptr + b * sq_b + h * sq_h, i, j, dd, sq_y, sq_x, sq_d, valid, d_ok) * qk_scale
    o_tile = _load_rows(out_ptr + b * so_b + h * so_h, i, j, dd, so_y, so_x, so_d, valid, d_ok)
    g = _load_rows(do_ptr + b * sg_b + h * sg_h, i, j, dd, sg_y, sg_x, sg_d, valid, d_ok)
    delta = tl.sum(g * o_tile, axis=1)  # BLOCK_Q
    row = pid_bh.to(tl.int64) * H * W + n
    lse2 = tl.load(lse_ptr + row, mask=valid, other=0.0)
    tl.store(delta_ptr + row, delta, mask=valid)
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h

    dq = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    for o in range(KS * KS):
        ki = i + (o // KS - KS // 2) * r
        kj = j + (o % KS - KS // 2) * r
        inside = valid & (ki >= 0) & (ki < H) & (kj >= 0) & (kj < W)
        kt = _load_rows(k_base, ki, kj, dd, sk_y, sk_x, sk_d, inside, d_ok)
        vt = _load_rows(v_base, ki, kj, dd, sv_y, sv_x, sv_d, inside, d_ok)
        p = tl.exp2(tl.sum(q * kt, axis=1) - lse2)  # the softmax weight, recomputed
        ds = p * (tl.sum(g * vt, axis=1) - delta)
        dq += ds[:, None] * kt
    _store_rows(dq_ptr + b * so_b + h * so_h, i, j, dd, so_y, so_x, so_d, valid, d_ok, dq * scale)


@triton.jit
def swda_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, dil_ptr,
    sq_b, sq_h, sq_y, sq_x, sq_d,
    sk_b, sk_h, sk_y, sk_x, sk_d,
    sv_b, sv_h, sv_y, sv_x, sv_d,
    so_b, so_h, so_y, so_x, so_d,
    sg_b, sg_h, sg_y, sg_x, sg_d,
    HEADS, H, W, D, qk_scale, scale,
    KS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dk and dv (contiguous, ``so_*`` strides) for BLOCK_Q keys, gathering their queries.

    No MASK parameter: only real keys get gradients, and a real key's weight
    ``2^(s - lse2)`` is the same in both paddings (the padding is inside lse2).
    """
    pid_q = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // HEADS).to(tl.int64)
    h = pid_bh % HEADS
    r = tl.load(dil_ptr + h)
    h = h.to(tl.int64)
    n, i, j, valid, dd, d_ok = _tile(pid_q, H, W, D, BLOCK_Q, BLOCK_D)
    kt = _load_rows(k_ptr + b * sk_b + h * sk_h, i, j, dd, sk_y, sk_x, sk_d, valid, d_ok)
    vt = _load_rows(v_ptr + b * sv_b + h * sv_h, i, j, dd, sv_y, sv_x, sv_d, valid, d_ok)
    kt = kt * qk_scale  # base-2 logits, as in the forward
    q_base = q_ptr + b * sq_b + h * sq_h
    g_base = do_ptr + b * sg_b + h * sg_h
    image = pid_bh.to(tl.int64) * H * W

    dk = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    for o in range(KS * KS):
        # the query that holds this key at window position o
        qi = i - (o // KS - KS // 2) * r
        qj = j - (o % KS - KS // 2) * r
        sees = valid & (qi >= 0) & (qi < H) & (qj >= 0) & (qj < W)
        qt = _load_rows(q_base, qi, qj, dd, sq_y, sq_x, sq_d, sees, d_ok)
        g = _load_rows(g_base, qi, qj, dd, sg_y, sg_x, sg_d, sees, d_ok)
        row = image + qi * W + qj
        lse2 = tl.load(lse_ptr + row, mask=sees, other=0.0)
        delta = tl.load(delta_ptr + row, mask=sees, other=0.0)
        p = tl.where(sees, tl.exp2(tl.sum(qt * kt, axis=1) - lse2), 0.0)
        dv += p[:, None] * g
        ds = p * (tl.sum(g * vt, axis=1) - delta)
        dk += ds[:, None] * qt
    base = b * so_b + h * so_h
    _store_rows(dk_ptr + base, i, j, dd, so_y, so_x, so_d, valid, d_ok, dk * scale)
    _store_rows(dv_ptr + base, i, j, dd, so_y, so_x, so_d, valid, d_ok, dv)
