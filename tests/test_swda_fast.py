"""The fast implementations: "fused" (a PyTorch operator) and "flex" (FlexAttention).

Expected values come from the independent dense reference in ``reference.py``
(scaled_dot_product_attention over every key, a window mask built from pixel
coordinates, and one extra zero key scored log(n_pad) for the zero padding).
"""

import importlib.util
import math
import warnings

import pytest
import torch

from conftest import make_qkv, out_and_grads
from dilate_lab import SWDA_IMPLS, available_impls, swda
from dilate_lab.ops.fused import swda_fused
from dilate_lab.ops.flex import flex_swda_forward, window_mask_mod, zero_padding_from_lse
from reference import dense_swda, window_allowed

MAPS = [(7, 7), (5, 9), (1, 1), (2, 5)]  # square, non-square, smaller than every window
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def assert_all_close(got, expected, label, **tol):
    for name, g, e in zip(("out", "dq", "dk", "dv"), got, expected):
        torch.testing.assert_close(g, e, **tol, msg=lambda m: f"{label} {name}: {m}")


# ---------------------------------------------------------------------------
# "fused"
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_fused_matches_dense_reference(kernel_size, padding):
    """Outputs and gradients, dilations 1-4, every map shape, B = 2 and heads = 3, float64."""
    for dilation in (1, 2, 3, 4):
        for H, W in MAPS:
            shape = (2, 3, H, W, 4)
            q, k, v = make_qkv(shape, seed=H * 100 + W * 10 + dilation)
            weight = make_qkv(shape, seed=7)[0]
            expected = out_and_grads(
                lambda a, b, c: dense_swda(a, b, c, kernel_size, dilation, padding), q, k, v, weight
            )
            got = out_and_grads(
                lambda a, b, c: swda(a, b, c, kernel_size, dilation, padding=padding, impl="fused"),
                q,
                k,
                v,
                weight,
            )
            label = f"k={kernel_size} r={dilation} {H}x{W} {padding}"
            assert_all_close(got, expected, label, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize(
    "kernel_size, dilation, H, W",
    [(3, 1, 5, 4), (3, 2, 6, 5), (5, 1, 4, 6), (3, 3, 2, 5), (7, 4, 1, 1)],
)
def test_fused_gradcheck(kernel_size, dilation, H, W, padding):
    """The hand-written backward against finite differences, float64."""
    q, k, v = (t.requires_grad_(True) for t in make_qkv((2, 1, H, W, 2), seed=H + W))
    assert torch.autograd.gradcheck(
        lambda a, b, c: swda_fused(a, b, c, kernel_size, dilation, padding, 0.8), (q, k, v)
    )


def test_fused_zero_padding_by_hand():
    """q = k = 0, v = 1, 8x8, k = 3, r = 3: 4/9 at a corner, 6/9 on an edge, 1 inside (counted)."""
    q = torch.zeros(1, 1, 8, 8, 2)
    v = torch.ones(1, 1, 8, 8, 2)
    out = swda(q, q, v, 3, 3, impl="fused")[0, 0, :, :, 0]
    assert out[0, 0].item() == pytest.approx(4 / 9)
    assert out[0, 4].item() == pytest.approx(6 / 9)
    assert out[4, 4].item() == pytest.approx(1.0)
    masked = swda(q, q, v, 3, 3, padding="mask", impl="fused")
    torch.testing.assert_close(masked, torch.ones_like(masked))


def test_fused_kernel_one_returns_v():
    """A 1x1 window holds only the query's own position: weight 1, out = v, dq = dk = 0."""
    q, k, v = (t.requires_grad_(True) for t in make_qkv((2, 2, 3, 4, 5), seed=1))
    for padding in ("zeros", "mask"):
        out = swda(q, k, v, 1, 3, padding=padding, impl="fused")
        torch.testing.assert_close(out, v, rtol=0, atol=1e-15)
        dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
        assert torch.all(dq.abs() < 1e-15) and torch.all(dk.abs() < 1e-15)
        torch.testing.assert_close(dv, torch.ones_like(dv))


@pytest.mark.parametrize(
    "kernel_size, head_dim",
    [(3, 140), (7, 64), (3, 400)],  # each takes a different branch of the window dot product
)
def test_fused_large_head_dims(kernel_size, head_dim):
    shape = (1, 2, 5, 6, head_dim)
    q, k, v = make_qkv(shape, seed=head_dim)
    weight = make_qkv(shape, seed=3)[0]
    for padding in ("zeros", "mask"):
        expected = out_and_grads(
            lambda a, b, c: dense_swda(a, b, c, kernel_size, 2, padding), q, k, v, weight
        )
        got = out_and_grads(
            lambda a, b, c: swda(a, b, c, kernel_size, 2, padding=padding, impl="fused"),
            q,
            k,
            v,
            weight,
        )
        assert_all_close(got, expected, f"d={head_dim} {padding}", rtol=1e-10, atol=1e-10)


def test_fused_bigger_map_float32():
    """A map with many interior rows, two images per call, float32 at float32 tolerance."""
    shape = (2, 2, 12, 17, 8)
    q, k, v = make_qkv(shape, seed=5)
    weight = make_qkv(shape, seed=6)[0]
    for dilation in (1, 3):
        expected = out_and_grads(lambda a, b, c: dense_swda(a, b, c, 3, dilation), q, k, v, weight)
        got = out_and_grads(
            lambda a, b, c: swda(
                a.float(), b.float(), c.float(), 3, dilation, impl="fused"
            ).double(),
            q,
            k,
            v,
            weight,
        )
        assert_all_close(got, expected, f"r={dilation}", rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "dtype, tol",
    [(torch.float16, dict(rtol=2e-3, atol=2e-4)), (torch.bfloat16, dict(rtol=2e-2, atol=2e-3))],
)
def test_fused_half_precision(dtype, tol):
    """Half inputs give half outputs and gradients equal to the float64 result, rounded."""
    shape = (2, 2, 6, 7, 8)
    q, k, v = (t.to(dtype) for t in make_qkv(shape, seed=11))
    weight = make_qkv(shape, seed=12)[0].to(dtype)
    for padding in ("zeros", "mask"):
        got = out_and_grads(
            lambda a, b, c: swda(a, b, c, 3, 2, padding=padding, impl="fused"), q, k, v, weight
        )
        assert all(t.dtype == dtype for t in got)
        expected = out_and_grads(
            lambda a, b, c: dense_swda(a, b, c, 3, 2, padding),
            q.double(),
            k.double(),
            v.double(),
            weight.double(),
        )
        assert_all_close(
            [t.double() for t in got], [t.to(dtype).double() for t in expected], padding, **tol
        )


def test_fused_accepts_views_and_partial_gradients():
    """Non-contiguous inputs (a permuted, unbound qkv) and only some inputs requiring grad."""
    B, heads, H, W, d = 2, 2, 5, 6, 4
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, H, W, 3, heads, d, generator=gen, dtype=torch.float64)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # each B, heads, H, W, d, non-contiguous
    assert not q.is_contiguous()
    expected = dense_swda(q, k, v, 3, 2)
    torch.testing.assert_close(swda(q, k, v, 3, 2, impl="fused"), expected, rtol=1e-10, atol=1e-10)

    weight = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
    v_only = v.clone().requires_grad_(True)
    (swda(q, k, v_only, 3, 2, impl="fused") * weight).sum().backward()
    v_ref = v.clone().requires_grad_(True)
    (dense_swda(q, k, v_ref, 3, 2) * weight).sum().backward()
    torch.testing.assert_close(v_only.grad, v_ref.grad, rtol=1e-10, atol=1e-10)


def test_auto_is_the_cpu_fast_path():
    """auto runs the compiled kernel where it builds, the fused Function where it does not."""
    from dilate_lab.ops.cpp_build import compiled_available

    q, k, v = make_qkv((1, 1, 6, 6, 4), dtype=torch.float32)
    fast = "cpp" if compiled_available() else "fused"
    assert torch.equal(swda(q, k, v, 3, 2, impl="auto"), swda(q, k, v, 3, 2, impl=fast))


# ---------------------------------------------------------------------------
# device-specific registry
# ---------------------------------------------------------------------------
def test_flex_is_listed_for_cuda_only():
    assert "fused" in SWDA_IMPLS and "flex" not in SWDA_IMPLS
    assert "flex" not in available_impls("cpu")
    assert "flex" in available_impls("cuda") or not importlib.util.find_spec("triton")


def test_flex_on_cpu_is_a_clear_value_error():
    q, k, v = make_qkv((1, 1, 4, 4, 4), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"impl='flex'.*CUDA.*cpu"):
        swda(q, k, v, impl="flex")


# ---------------------------------------------------------------------------
# "flex": the parts that run without a GPU
# ---------------------------------------------------------------------------
def _dense_mask(mask_mod, n_queries, n_keys):
    from torch.nn.attention.flex_attention import create_mask

    return create_mask(mask_mod, None, None, n_queries, n_keys, device="cpu")[0, 0]


@pytest.mark.parametrize(
    "kernel_size, dilation, H, W", [(3, 1, 5, 6), (3, 2, 6, 4), (5, 3, 7, 7), (7, 4, 2, 5)]
)
def test_flex_window_mask(kernel_size, dilation, H, W):
    """The mask_mod allows exactly the dilated window, and the extra key where one is padded."""
    window = window_allowed(H, W, kernel_size, dilation)  # from pixel coordinates
    masked = _dense_mask(window_mask_mod(H, W, kernel_size, dilation), H * W, H * W)
    assert torch.equal(masked, window)

    n_pad = kernel_size**2 - window.sum(dim=1)  # padded window positions, counted
    zeros = _dense_mask(window_mask_mod(H, W, kernel_size, dilation, n_pad), H * W, H * W + 1)
    assert torch.equal(zeros[:, : H * W], window)
    assert torch.equal(zeros[:, H * W], n_pad > 0)


@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flex_forward_eager_on_cpu(padding, dtype):
    """The flex math (mask_mod, extra zero key, score log(n_pad)) run eagerly, forward only."""
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*without torch.compile.*")
        for kernel_size, dilation, (H, W) in [
            (3, 1, (6, 5)),
            (3, 3, (7, 7)),
            (5, 2, (2, 5)),
            (7, 4, (1, 1)),
        ]:
            q, k, v = make_qkv((2, 3, H, W, 8), dtype=dtype, seed=kernel_size + dilation)
            got = flex_swda_forward(q, k, v, kernel_size, dilation, padding, 0.35, compiled=False)
            expected = dense_swda(q, k, v, kernel_size, dilation, padding, scale=0.35)
            torch.testing.assert_close(got, expected, **tol)


def test_zero_padding_from_lse():
    """out_zeros = out_mask * sigmoid(lse - log n_pad), with lse of the masked logits."""
    H, W, ks, r = 5, 6, 3, 2
    q, k, v = make_qkv((1, 2, H, W, 4), seed=9)
    allowed = window_allowed(H, W, ks, r)
    logits = (q.reshape(1, 2, H * W, 4) @ k.reshape(1, 2, H * W, 4).transpose(-1, -2)) * 0.5
    lse = logits.masked_fill(~allowed, -math.inf).logsumexp(dim=-1)  # 1, 2, H*W
    n_pad = ks * ks - allowed.sum(dim=1)
    out_mask = dense_swda(q, k, v, ks, r, "mask", scale=0.5).reshape(1, 2, H * W, 4)
    got = zero_padding_from_lse(out_mask, lse, n_pad)
    expected = dense_swda(q, k, v, ks, r, "zeros", scale=0.5).reshape(1, 2, H * W, 4)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# "flex" on a GPU
# ---------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize(
    "dtype, tol",
    [
        (torch.float32, dict(rtol=1e-4, atol=1e-4)),
        (torch.float16, dict(rtol=2e-3, atol=2e-3)),
        (torch.bfloat16, dict(rtol=2e-2, atol=2e-2)),
    ],
)
def test_flex_on_cuda_matches_reference(padding, dtype, tol):
    shape = (2, 2, 9, 11, 24)
    q, k, v = (t.cuda().to(dtype) for t in make_qkv(shape, seed=4))
    weight = make_qkv(shape, seed=5)[0].cuda().to(dtype)
    for dilation in (1, 2, 3):
        got = out_and_grads(
            lambda a, b, c: swda(a, b, c, 3, dilation, padding=padding, impl="flex"),
            q,
            k,
            v,
            weight,
        )
        expected = out_and_grads(
            lambda a, b, c: dense_swda(a, b, c, 3, dilation, padding),
            q.double(),
            k.double(),
            v.double(),
            weight.double(),
        )
        assert_all_close([t.double() for t in got], expected, f"r={dilation} {dtype}", **tol)


@needs_cuda
def test_auto_on_cuda_agrees_with_fused():
    q, k, v = (t.cuda() for t in make_qkv((1, 2, 8, 8, 16), dtype=torch.float32))
    torch.testing.assert_close(
        swda(q, k, v, 3, 2, impl="auto"), swda(q, k, v, 3, 2, impl="fused"), rtol=1e-4, atol=1e-4
    )
