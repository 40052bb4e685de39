"""SWDA as a real PyTorch operator: compile, export, jit.trace, autocast, threads.

The "cpp" and "fused" implementations are ``torch.library`` operators with fake
kernels and autograd rules, and ``swda``'s choice among implementations is plain
Python that dynamo traces. Every check here compares a traced or cast run against
the same module run eagerly in float32/float64, or against the independent dense
reference (``reference.dense_swda``).

Compiled runs use the ``aot_eager`` backend (dynamo's fullgraph capture, the fake
kernels and the autograd rules, as inductor sees them, without its minutes of C++
code generation on a small CPU); one case goes through inductor itself.
"""

import threading

import pytest
import torch

from compiled import compiled_or_skip
from dilate_lab import swda, trace_tensors
from dilate_lab.nn.dilateformer import DilateFormer
from dilate_lab.nn.layers import DropPath, drop_path
from dilate_lab.nn.msda import MultiDilateAttention
from reference import dense_swda

pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]

IMPLS = ["cpp", "fused", "auto"]


def _needs(impl):
    if impl == "cpp":
        compiled_or_skip()


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def make(shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def small_model(**kwargs):
    torch.manual_seed(0)
    return DilateFormer(
        img_size=32, embed_dim=24, depths=(1, 1), num_heads=(3, 6), num_classes=4, **kwargs
    ).eval()


def output_and_grads(fn, inputs, params=()):
    """fn's output and the gradients of a fixed weighted sum of it, for inputs and params."""
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    weight = make(out.shape, seed=99, dtype=out.dtype)
    grads = torch.autograd.grad((out * weight).sum(), [*inputs, *params])
    return out.detach(), grads


def assert_same(got, expected, **tol):
    (out, grads), (out_e, grads_e) = got, expected
    torch.testing.assert_close(out, out_e, **tol)
    assert len(grads) == len(grads_e)
    for g, e in zip(grads, grads_e):
        torch.testing.assert_close(g, e, **tol)


# ---------------------------------------------------------------------------
# torch.compile(fullgraph=True)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
def test_swda_compiles_in_one_graph(impl):
    _needs(impl)
    q, k, v = (make((2, 3, 6, 7, 8), seed) for seed in (1, 2, 3))

    def attend(a, b, c):
        return swda(a, b, c, 3, (1, 2, 2), impl=impl)

    backend = "inductor" if impl == "auto" else "aot_eager"
    compiled = torch.compile(attend, fullgraph=True, backend=backend)
    assert_same(output_and_grads(compiled, (q, k, v)), output_and_grads(attend, (q, k, v)))
    expected = dense_swda(q.double(), k.double(), v.double(), 3, 2)[:, 1:]
    torch.testing.assert_close(compiled(q, k, v)[:, 1:].double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["cpp", "fused"])
def test_msda_compiles_in_one_graph(impl):
    _needs(impl)
    torch.manual_seed(0)
    module = MultiDilateAttention(24, 3, impl=impl)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = make((2, 8, 7, 24), seed=4)
    params = list(module.parameters())
    assert_same(output_and_grads(compiled, (x,), params), output_and_grads(module, (x,), params))


def test_dilateformer_compiles_in_one_graph():
    model = small_model()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = make((2, 3, 32, 32), seed=5)
    params = list(model.parameters())
    assert_same(
        output_and_grads(compiled, (x,), params), output_and_grads(model, (x,), params),
        rtol=1e-4, atol=1e-5,
    )


def test_compiled_graph_calls_the_operator():
    """The graph holds one opaque SWDA node, not the kernel's innards."""
    compiled_or_skip()
    graphs = []

    def keep_graph(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    q = make((1, 2, 5, 5, 4), seed=6)
    torch.compile(lambda a: swda(a, a, a, impl="cpp"), fullgraph=True, backend=keep_graph)(q)
    targets = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert any("dilate_lab.swda_cpp" in t for t in targets), targets


@pytest.mark.parametrize("impl", ["cpp", "fused"])
def test_compiled_backward_calls_the_backward_operator(impl):
    """AOTAutograd's backward graph holds the hand-written backward operator (not a
    recomputation through "shift", which only create_graph=True needs)."""
    from functorch.compile import aot_module_simplified, make_boxed_func

    _needs(impl)
    backward_graphs = []

    def keep_backward(gm, example_inputs):
        backward_graphs.append(gm)
        return make_boxed_func(gm.forward)

    def backend(gm, example_inputs):
        return aot_module_simplified(
            gm, example_inputs, fw_compiler=lambda g, _: make_boxed_func(g.forward), bw_compiler=keep_backward
        )

    q = make((1, 3, 6, 6, 8), seed=24).requires_grad_(True)
    compiled = torch.compile(lambda a: swda(a, a, a, 3, (1, 2, 3), impl=impl), fullgraph=True, backend=backend)
    compiled(q).sum().backward()
    targets = {str(node.target) for node in backward_graphs[0].graph.nodes}
    assert f"dilate_lab.swda_{impl}_backward.default" in targets, targets


# ---------------------------------------------------------------------------
# torch.export
# ---------------------------------------------------------------------------
class Attend(torch.nn.Module):
    def __init__(self, impl):
        super().__init__()
        self.impl = impl

    def forward(self, q, k, v):
        return swda(q, k, v, 3, 2, impl=self.impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_export_swda_and_msda(impl):
    _needs(impl)
    q, k, v = (make((1, 3, 6, 5, 8), seed) for seed in (7, 8, 9))
    exported = torch.export.export(Attend(impl), (q, k, v))
    torch.testing.assert_close(exported.module()(q, k, v), Attend(impl)(q, k, v), rtol=0, atol=0)
    torch.manual_seed(0)
    msda = MultiDilateAttention(24, 3, impl=impl).eval()
    x = make((2, 6, 5, 24), seed=10)
    exported = torch.export.export(msda, (x,))
    nodes = [str(node.target) for node in exported.graph.nodes]
    if impl != "auto":
        assert any(f"dilate_lab.swda_{impl}" in n for n in nodes), nodes
    torch.testing.assert_close(exported.module()(x), msda(x), rtol=0, atol=0)


def test_export_dilateformer():
    model = small_model()
    x = make((2, 3, 32, 32), seed=11)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# torch.jit.trace: a second input, different values, must give eager's answer
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["cpp", "fused"])
def test_jit_trace_generalises_to_new_values(impl):
    _needs(impl)
    torch.manual_seed(0)
    msda = MultiDilateAttention(24, 3, impl=impl).eval()
    traced = torch.jit.trace(msda, (make((2, 6, 5, 24), seed=12),))
    assert f"dilate_lab::swda_{impl}" in str(traced.inlined_graph)
    x = make((2, 6, 5, 24), seed=13)
    torch.testing.assert_close(traced(x), msda(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# autocast
# ---------------------------------------------------------------------------
def _close_to_float32(got, expected, tol=0.05):
    """Loose: bfloat16 keeps 8 bits of mantissa; relative to the largest entry."""
    got, expected = got.float(), expected.float()
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max() <= tol * expected.abs().max().clamp_min(1e-6)


def _autocast_run(module, x):
    module.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    (out.float() * make(out.shape, seed=98)).sum().backward()
    return out, [p.grad.clone() for p in module.parameters()]


def _float32_run(module, x):
    module.zero_grad()
    out = module(x)
    (out * make(out.shape, seed=98)).sum().backward()
    return out, [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: MultiDilateAttention(24, 3), (2, 6, 5, 24)),
        (lambda: torch.nn.Sequential(torch.nn.Linear(16, 24), MultiDilateAttention(24, 3)), (2, 6, 5, 16)),
        (small_model, (2, 3, 32, 32)),
    ],
    ids=["msda", "linear-msda", "dilateformer"],
)
def test_bfloat16_autocast_forward_and_backward(build, shape):
    torch.manual_seed(0)
    module = build()
    x = make(shape, seed=14)
    out, grads = _autocast_run(module, x)
    assert out.dtype == torch.bfloat16
    out32, grads32 = _float32_run(module, x)
    _close_to_float32(out, out32)
    for g, g32 in zip(grads, grads32):
        _close_to_float32(g, g32, tol=0.1)


@pytest.mark.parametrize("impl", IMPLS)
def test_autocast_takes_q_k_v_of_different_dtypes(impl):
    """One from a bfloat16 Linear, one float32: promoted, computed in float32."""
    _needs(impl)
    q = make((1, 3, 5, 5, 8), seed=15).bfloat16()
    k, v = make((1, 3, 5, 5, 8), seed=16), make((1, 3, 5, 5, 8), seed=17)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = swda(q, k, v, impl=impl)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, swda(q.float(), k, v, impl=impl))
    with pytest.raises(ValueError, match="same dtype"):  # outside autocast: still an error
        swda(q, k, v, impl=impl)


@pytest.mark.parametrize("name", ["swda_cpp", "swda_fused"])
def test_operators_compute_halves_in_float32_and_pass_opcheck(name):
    if name == "swda_cpp":
        compiled_or_skip()
    op = getattr(torch.ops.dilate_lab, name)
    q, k, v = (make((1, 2, 4, 5, 8), seed) for seed in (18, 19, 20))
    cpp = name == "swda_cpp"
    extra = (True,) if cpp else ()
    one, two = ([1, 1], [2, 2]) if cpp else (1, 2)  # "cpp" takes one dilation per head
    out, _ = op(q.bfloat16(), k.bfloat16(), v.bfloat16(), 3, one, False, 0.5, *extra)
    assert out.dtype == torch.bfloat16
    expected = dense_swda(*(t.bfloat16().double() for t in (q, k, v)), 3, 1, scale=0.5)
    torch.testing.assert_close(out.double(), expected, rtol=1e-2, atol=1e-2)
    args = [t.double().requires_grad_(True) for t in (q, k, v)]
    torch.library.opcheck(op.default, (*args, 3, two, True, 0.5, *extra))


def test_cpp_operator_reads_strided_heads_with_their_own_dilations():
    """MSDA's call: q, k, v are views of one channels-last (B, H, W, 3*C) projection, each
    head with its dilation; out comes back channels-last. Checked against the dense
    reference per head, and the operator against its fake kernel, autograd and compile."""
    compiled_or_skip()
    B, H, W, heads, d = 2, 6, 7, 3, 8
    qkv = make((B, H, W, 3 * heads * d), 21).double()
    q, k, v = qkv.unflatten(3, (3, heads, d)).permute(3, 0, 4, 1, 2, 5).unbind(0)  # each B, heads, H, W, d
    dilations = [1, 2, 3]
    out, _ = torch.ops.dilate_lab.swda_cpp(q, k, v, 3, dilations, False, 0.5, True)
    assert out.permute(0, 2, 3, 1, 4).is_contiguous()  # B, H, W, heads, d: channels-last
    for head, r in enumerate(dilations):
        expected = dense_swda(*(t[:, head : head + 1] for t in (q, k, v)), 3, r, scale=0.5)
        torch.testing.assert_close(out[:, head : head + 1], expected)
    leaf = qkv.clone().requires_grad_(True)
    args = leaf.unflatten(3, (3, heads, d)).permute(3, 0, 4, 1, 2, 5).unbind(0)
    torch.library.opcheck(torch.ops.dilate_lab.swda_cpp.default, (*args, 3, dilations, True, 0.5, True))


# ---------------------------------------------------------------------------
# second derivatives stay exact
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["cpp", "fused"])
def test_second_derivatives_match_shift(impl):
    _needs(impl)
    results = []
    for name in (impl, "shift"):
        q = make((1, 2, 5, 4, 3), seed=21, dtype=torch.float64).requires_grad_(True)
        (grad,) = torch.autograd.grad(swda(q, q, q, 3, 2, impl=name).pow(2).sum(), q, create_graph=True)
        (hess,) = torch.autograd.grad(grad.pow(2).sum(), q)
        results.append((grad, hess))
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# the shape tracer is per thread
# ---------------------------------------------------------------------------
def test_two_threads_tracing_at_once_see_only_their_own_records():
    barrier = threading.Barrier(2)
    seen, errors = {}, []

    def work(height):
        try:
            q = make((1, 2, height, 5, 4), seed=height)
            with trace_tensors() as steps:
                barrier.wait(timeout=30)  # both traces are open now
                for _ in range(3):
                    swda(q, q, q)
                barrier.wait(timeout=30)
            seen[height] = [s.shape for s in steps]
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(h,)) for h in (4, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for height in (4, 7):
        assert len(seen[height]) == 3, seen[height]
        assert all(shape[2] == height for shape in seen[height]), seen[height]


# ---------------------------------------------------------------------------
# the bugs of the issue
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
def test_overflowing_products_beyond_the_border_give_no_nan(impl):
    """The neighbour right of (1, 3) wraps to (2, 0) in a flat table; there g . v = 1e40
    overflows float32. Such a product must be replaced, not multiplied by a zero weight."""
    _needs(impl)
    q = torch.zeros(1, 1, 4, 4, 1)
    k = torch.zeros(1, 1, 4, 4, 1)
    v = torch.zeros(1, 1, 4, 4, 1)
    v[..., 2, 0, :] = 1e20
    grad_out = torch.zeros(1, 1, 4, 4, 1)
    grad_out[..., 1, 3, :] = 1e20
    inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = swda(*inputs, 3, 1, impl=impl)
    grads = torch.autograd.grad(out, inputs, grad_out)
    ref_inputs = [t.double().requires_grad_(True) for t in (q, k, v)]
    expected = torch.autograd.grad(dense_swda(*ref_inputs, 3, 1), ref_inputs, grad_out.double())
    for got, want in zip(grads, expected):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)


def test_drop_path_one_gives_zeros_in_training():
    x = make((4, 3, 3, 8), seed=22)
    assert torch.equal(drop_path(x, 1.0, training=True), torch.zeros_like(x))
    layer = DropPath(1.0).train()
    assert torch.equal(layer(x), torch.zeros_like(x))
    model = small_model(drop_path_rate=1.0).train()
    assert torch.isfinite(model(make((2, 3, 32, 32), seed=23))).all()
