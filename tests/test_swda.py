"""swda: every implementation against the independent dense reference."""

import importlib.util
import itertools

import pytest
import torch

from dilate_lab import NAIVE_MAX_STEPS, SWDA_IMPLS, available_impls, swda, trace_tensors
from conftest import make_qkv, out_and_grads
from reference import border_fraction, dense_swda

CPU_IMPLS = list(available_impls("cpu"))  # SWDA_IMPLS and the compiled "cpp"
ALL_IMPLS = CPU_IMPLS + ["auto"]
# (H, W): square, non-square, smaller than every window, and one the window wraps in one direction
MAPS = [(7, 7), (5, 9), (1, 1), (2, 5)]


@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("impl", ALL_IMPLS)
def test_matches_dense_reference(impl, kernel_size, padding):
    """Outputs and gradients for dilations 1-4 on square, non-square and tiny maps, B, heads > 1."""
    for dilation in (1, 2, 3, 4):
        for H, W in MAPS:
            shape = (2, 3, H, W, 4)
            q, k, v = make_qkv(shape, seed=H * 100 + W * 10 + dilation)
            weight = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=q.dtype)
            expected = out_and_grads(
                lambda a, b, c: dense_swda(a, b, c, kernel_size, dilation, padding), q, k, v, weight
            )
            got = out_and_grads(
                lambda a, b, c: swda(a, b, c, kernel_size, dilation, padding=padding, impl=impl),
                q, k, v, weight,
            )
            for name, e, g in zip(("out", "dq", "dk", "dv"), expected, got):
                torch.testing.assert_close(
                    g, e, rtol=1e-10, atol=1e-10,
                    msg=lambda m: f"{impl} k={kernel_size} r={dilation} {H}x{W} {padding} {name}: {m}",
                )


@pytest.mark.parametrize("impl", ALL_IMPLS)
def test_custom_scale(impl):
    q, k, v = make_qkv((1, 2, 5, 6, 3))
    torch.testing.assert_close(
        swda(q, k, v, 3, 2, scale=0.7, impl=impl), dense_swda(q, k, v, 3, 2, scale=0.7)
    )


@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_gradcheck(impl, padding):
    # 3x4 map, dilation 2: every query has window positions on and beyond the border
    q, k, v = make_qkv((1, 2, 3, 4, 2), requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: swda(a, b, c, 3, 2, padding=padding, impl=impl), (q, k, v)
    )


@pytest.mark.parametrize("impl", ALL_IMPLS)
def test_border_fact_of_zero_padding(impl):
    """q = k = 0 makes every logit 0, so the output is the share of the window on the map."""
    q = torch.zeros(1, 1, 8, 8, 2)
    v = torch.ones(1, 1, 8, 8, 2)
    out = swda(q, q, v, kernel_size=3, dilation=3, impl=impl)[0, 0, :, :, 0]
    for corner in [(0, 0), (0, 7), (7, 0), (7, 7), (2, 2)]:
        assert out[corner].item() == pytest.approx(4 / 9)
    for edge in [(0, 3), (4, 0), (7, 4), (3, 7)]:
        assert out[edge].item() == pytest.approx(6 / 9)
    for inside in [(3, 3), (3, 4), (4, 3), (4, 4)]:
        assert out[inside].item() == pytest.approx(1.0)
    expected = torch.tensor(
        [[border_fraction(8, 8, 3, 3, i, j) for j in range(8)] for i in range(8)]
    )
    torch.testing.assert_close(out, expected)
    masked = swda(q, q, v, kernel_size=3, dilation=3, padding="mask", impl=impl)
    torch.testing.assert_close(masked, torch.ones_like(masked))


# float16 carries ~3 significant digits, bfloat16 ~2; inputs are N(0, 1), head_dim 8.
# Stated tolerances (absolute, on outputs of magnitude <= ~3): float16 5e-3, bfloat16 4e-2.
LOW_PRECISION = [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)]


@pytest.mark.parametrize("dtype,atol", LOW_PRECISION)
@pytest.mark.parametrize("impl", ALL_IMPLS)
def test_half_precision_agrees_with_float32(impl, dtype, atol):
    q, k, v = make_qkv((2, 2, 6, 7, 8), dtype=torch.float32)
    full = swda(q, k, v, 3, 2, impl=impl)
    low = swda(q.to(dtype), k.to(dtype), v.to(dtype), 3, 2, impl=impl)
    assert low.dtype == dtype
    torch.testing.assert_close(low.float(), full, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype,atol", LOW_PRECISION)
@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_half_precision_gradients_flow(impl, dtype, atol):
    q, k, v = make_qkv((1, 2, 5, 5, 8), dtype=torch.float32)
    _, *full = out_and_grads(lambda a, b, c: swda(a, b, c, 3, 1, impl=impl), q, k, v, 1.0)
    _, *low = out_and_grads(
        lambda a, b, c: swda(a, b, c, 3, 1, impl=impl), q.to(dtype), k.to(dtype), v.to(dtype), 1.0
    )
    for g_full, g_low in zip(full, low):
        assert g_low.dtype == dtype
        torch.testing.assert_close(g_low.float(), g_full, rtol=0, atol=4 * atol)


@pytest.mark.parametrize("impl", ALL_IMPLS)
def test_keeps_shape_dtype_and_inputs(impl):
    q, k, v = make_qkv((2, 3, 4, 6, 5), dtype=torch.float32)
    before = [t.clone() for t in (q, k, v)]
    out = swda(q, k, v, 3, 1, impl=impl)
    assert out.shape == q.shape and out.dtype == q.dtype and out.device == q.device
    for t, b in zip((q, k, v), before):
        assert torch.equal(t, b), "swda modified its input"


def test_impl_list_names_the_three_teaching_forms():
    assert {"naive", "unfold", "shift"} <= set(SWDA_IMPLS)
    assert "auto" not in SWDA_IMPLS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize("impl", [i for i in ALL_IMPLS if i not in ("naive", "cpp")])
def test_cuda_matches_cpu(impl, padding):
    q, k, v = make_qkv((2, 2, 9, 11, 16), dtype=torch.float32)
    expected = dense_swda(q.double(), k.double(), v.double(), 3, 2, padding).float()
    got = swda(q.cuda(), k.cuda(), v.cuda(), 3, 2, padding=padding, impl=impl)
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- bad input
def good():
    return make_qkv((1, 2, 4, 4, 3), dtype=torch.float32)


BAD_CALLS = {
    "rank": (lambda q, k, v: swda(q[0], k[0], v[0]), "q must have 5 dimensions"),
    "not a tensor": (lambda q, k, v: swda(q.tolist(), k, v), "q must be a torch.Tensor"),
    "shape": (lambda q, k, v: swda(q, k[:, :, :3], v), "same shape"),
    "dtype": (lambda q, k, v: swda(q, k, v.double()), "same dtype"),
    "int dtype": (lambda q, k, v: swda(q.long(), k.long(), v.long()), "q must be a floating"),
    "bool dtype": (lambda q, k, v: swda(q > 0, k > 0, v > 0), "q must be a floating"),
    "zero size": (lambda q, k, v: swda(q[:0], k[:0], v[:0]), "zero-sized"),
    "even kernel": (lambda q, k, v: swda(q, k, v, kernel_size=4), "kernel_size must be an odd int"),
    "zero kernel": (lambda q, k, v: swda(q, k, v, kernel_size=0), "kernel_size"),
    "float kernel": (lambda q, k, v: swda(q, k, v, kernel_size=3.0), "kernel_size"),
    "bool kernel": (lambda q, k, v: swda(q, k, v, kernel_size=True), "kernel_size"),
    "zero dilation": (lambda q, k, v: swda(q, k, v, dilation=0), "dilation must be an int >= 1"),
    "float dilation": (lambda q, k, v: swda(q, k, v, dilation=1.5), "dilation"),
    "padding": (lambda q, k, v: swda(q, k, v, padding="reflect"), "padding must be one of"),
    "impl": (lambda q, k, v: swda(q, k, v, impl="fastest"), "impl must be"),
    "scale": (lambda q, k, v: swda(q, k, v, scale="big"), "scale must be"),
    "nan scale": (lambda q, k, v: swda(q, k, v, scale=float("nan")), "scale must be"),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_names_the_argument(case):
    call, message = BAD_CALLS[case]
    with pytest.raises(ValueError, match=message):
        call(*good())


def test_naive_refuses_large_maps_and_suggests_another():
    side = int(NAIVE_MAX_STEPS**0.5) // 3 + 1  # side * side * 9 > NAIVE_MAX_STEPS
    q = torch.zeros(1, 1, side, side, 2)
    with pytest.raises(ValueError, match="impl='naive'.*'unfold'"):
        swda(q, q, q, 3, 1, impl="naive")
    swda(q, q, q, 3, 1, impl="unfold")  # the suggested alternative works


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch():
    q, k, v = good()
    with pytest.raises(ValueError, match="same device"):
        swda(q, k.cuda(), v)


# --------------------------------------------------------------------------- non-finite values, 2nd order
@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize("impl", ALL_IMPLS)
def test_a_nan_stays_where_unfold_puts_it(impl, padding):
    """A NaN or inf in one image reaches exactly the pixels unfold sends it to, never another image.

    Inside the map and at a corner, where a query's window holds zero-padded keys: a zero
    key scores q . 0, which is NaN when q holds an inf.
    """
    q, k, v = make_qkv((2, 2, 7, 8, 3), dtype=torch.float32)
    for poisoned, pixel, value in itertools.product(
        ("q", "k", "v"), ((3, 4), (0, 0)), (float("nan"), float("inf"), -float("inf"))
    ):
        tensors = {"q": q.clone(), "k": k.clone(), "v": v.clone()}
        tensors[poisoned][(0, 1, *pixel, 0)] = value
        expected = swda(**tensors, kernel_size=3, dilation=2, padding=padding, impl="unfold")
        got = swda(**tensors, kernel_size=3, dilation=2, padding=padding, impl=impl)
        case = f"{value} in {poisoned} at {pixel}"
        assert torch.equal(torch.isnan(got), torch.isnan(expected)), case
        assert torch.equal(torch.isinf(got), torch.isinf(expected)), case
        assert torch.isfinite(got[1]).all(), f"{case} in image 0 reached image 1"


@pytest.mark.parametrize("impl", ALL_IMPLS)
def test_huge_finite_queries_do_not_overflow(impl):
    """(scale q) . k stays finite where q . k alone would overflow float32: scale first."""
    q = torch.full((1, 1, 2, 3, 64), 2.6e18)
    v = torch.ones(1, 1, 2, 3, 64)
    out = swda(q, q, v, 3, 1, impl=impl)
    torch.testing.assert_close(out, swda(q, q, v, 3, 1, impl="unfold"))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize("impl", ALL_IMPLS)
def test_dilation_far_beyond_the_map(impl, padding):
    """Dilations that leave only the centre on the map, up to the largest int64.

    Then each query sees its own key and k*k - 1 zero-padded ones: out = w v with
    w = e^l / (e^l + k*k - 1), l = q . k / sqrt(d) ("zeros"), or out = v ("mask").
    """
    q, k, v = make_qkv((1, 2, 5, 4, 3))
    logit = (q * k).sum(-1, keepdim=True) / 3**0.5
    weight = logit.exp() / (logit.exp() + 24) if padding == "zeros" else torch.ones_like(logit)
    for dilation in (5, 1000, 2**62, 2**63 - 1):
        got = swda(q, k, v, 5, dilation, padding=padding, impl=impl)
        torch.testing.assert_close(got, weight * v, msg=lambda m: f"r={dilation}: {m}")


@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize("impl", [i for i in CPU_IMPLS if i not in ("naive", "unfold")])
def test_traced_weights_are_the_paper_softmax(impl, padding):
    """What the tracer records as "attention weights" is unfold's softmax, zero-padded
    positions included, in the layout (B, heads, H, W, k*k)."""
    q, k, v = make_qkv((1, 2, 4, 5, 3), seed=2)
    traced = {}
    for name in ("unfold", impl):
        with trace_tensors(keep=True) as steps:
            swda(q, k, v, 3, 2, padding=padding, impl=name)
        traced[name] = {s.name: s for s in steps}["attention weights"]
    assert traced[impl].shape == (1, 2, 4, 5, 9)
    torch.testing.assert_close(
        traced[impl].tensor, traced["unfold"].tensor.reshape(1, 2, 4, 5, 9), rtol=1e-12, atol=1e-12
    )


def test_available_impls_by_device():
    """The pure-PyTorch implementations everywhere; "cpp" on CPU exactly where it builds."""
    from compiled import REQUIRED
    from dilate_lab import available_impls
    from dilate_lab.ops.cpp_build import build_error, compiled_available

    built = compiled_available()
    assert built or not REQUIRED, f"DILATE_LAB_REQUIRE_COMPILED=1, but: {build_error()}"
    assert set(available_impls("cpu")) == set(SWDA_IMPLS) | ({"cpp"} if built else set())
    with_triton = {"flex", "triton"} if importlib.util.find_spec("triton") else set()  # both need Triton
    assert set(available_impls("cuda")) == set(SWDA_IMPLS) | with_triton
    assert set(available_impls("meta")) == set(SWDA_IMPLS)
    with pytest.raises(ValueError, match="device must be"):
        available_impls("tpu")


@pytest.mark.parametrize("impl", list(SWDA_IMPLS) + ["auto"])
def test_meta_tensors_give_shapes(impl):
    """The shape tracer runs on the meta device: no implementation may need values."""
    if impl == "naive":
        pytest.skip("the loop indexes values one by one; the tracer does not use it")
    q = torch.empty(2, 3, 9, 7, 4, device="meta")
    out = swda(q, q, q, 3, 2, impl=impl)
    assert out.shape == q.shape and out.device.type == "meta"
