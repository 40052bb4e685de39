"""impl="triton": the fused Triton kernels against the independent dense reference.

On a machine without a GPU the kernels run on CPU tensors under Triton's interpreter,
which needs ``TRITON_INTERPRET=1`` before ``dilate_lab`` is imported (the
implementation registers for CPU only then, and Triton reads the variable when the
kernels are defined). conftest.py has imported ``dilate_lab`` already when this module
loads, so here the checks run in a child pytest on this same file with the variable
set: ``test_in_the_interpreter`` below. On CUDA, or in that child, they run directly.

The interpreter runs one program at a time in Python (a few ms per window step), so the
cases are few and small: nine over kernel size x dilation, each map, head dim and
padding meeting every kernel size and every dilation.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from conftest import make_qkv as shared_make_qkv, out_and_grads  # noqa: E402
from dilate_lab import swda  # noqa: E402
from dilate_lab.ops.registry import get_impl  # noqa: E402
from dilate_lab.ops.triton import swda_triton  # noqa: E402
from reference import dense_swda  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RUNS_HERE = get_impl("triton").runs_on(DEVICE)
here_only = pytest.mark.skipif(
    not RUNS_HERE, reason="runs in the TRITON_INTERPRET=1 child (test_in_the_interpreter)"
)

# (kernel_size, dilation, H, W, head_dim, padding): every map and head dim meets every
# kernel size and every dilation, and so does each padding (and it meets every map)
CASES = [
    (3, 1, 1, 1, 3, "zeros"),
    (3, 2, 2, 5, 24, "zeros"),
    (3, 3, 7, 9, 8, "mask"),
    (5, 1, 2, 5, 8, "mask"),
    (5, 2, 7, 9, 3, "zeros"),
    (5, 3, 1, 1, 24, "zeros"),
    (7, 1, 7, 9, 24, "zeros"),
    (7, 2, 1, 1, 8, "mask"),
    (7, 3, 2, 5, 3, "zeros"),
]


def test_in_the_interpreter():
    """Run this file's checks in a child pytest with TRITON_INTERPRET=1 (CPU machines)."""
    if RUNS_HERE:
        pytest.skip("the checks run directly in this process")
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = Path(__file__).resolve().parent.parent
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).resolve())],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-3000:]


def make_qkv(shape, dtype=torch.float32, seed=0):
    """conftest's seeded q, k, v, in float32 and on the device the kernel runs on."""
    return shared_make_qkv(shape, dtype=dtype, seed=seed, device=DEVICE)


def assert_all_close(got, expected, what, tol):
    for name, g, e in zip(("out", "dq", "dk", "dv"), got, expected):
        torch.testing.assert_close(
            g.double(), e.double(), rtol=tol, atol=tol, msg=lambda m: f"{what} {name}: {m}"
        )


def reference_of(q, k, v, weight, kernel_size, dilation, padding):
    """The dense reference in float64 on the same (rounded) inputs."""
    q, k, v, weight = (t.double() for t in (q, k, v, weight))
    return out_and_grads(
        lambda a, b, c: dense_swda(a, b, c, kernel_size, dilation, padding), q, k, v, weight
    )


@here_only
@pytest.mark.parametrize(
    "kernel_size, dilation, H, W, d, padding", CASES,
    ids=[f"k{c[0]}-r{c[1]}-{c[2]}x{c[3]}-d{c[4]}-{c[5]}" for c in CASES],
)
def test_matches_dense_reference(kernel_size, dilation, H, W, d, padding):
    shape = (1, 1, H, W, d)  # batch and head offsets: the per-head and strided tests
    q, k, v = make_qkv(shape, seed=kernel_size * 100 + dilation * 10 + H)
    weight = make_qkv(shape, seed=1)[0]
    got = out_and_grads(
        lambda a, b, c: swda(a, b, c, kernel_size, dilation, padding=padding, impl="triton"),
        q, k, v, weight,
    )
    expected = reference_of(q, k, v, weight, kernel_size, dilation, padding)
    assert_all_close(got, expected, f"k={kernel_size} r={dilation} {H}x{W} d={d} {padding}", 2e-5)


@here_only
def test_kernel_size_9_and_custom_scale():
    q, k, v = make_qkv((1, 1, 5, 6, 4), seed=3)
    weight = make_qkv((1, 1, 5, 6, 4), seed=4)[0]
    got = out_and_grads(lambda a, b, c: swda(a, b, c, 9, 1, scale=0.7, impl="triton"), q, k, v, weight)
    expected = out_and_grads(
        lambda a, b, c: dense_swda(a, b, c, 9, 1, scale=0.7),
        *(t.double() for t in (q, k, v)), weight.double(),
    )
    assert_all_close(got, expected, "k=9 scale=0.7", 2e-5)


@here_only
@pytest.mark.parametrize("padding", ["zeros", "mask"])
def test_per_head_dilations_in_one_call(padding):
    """Heads with dilations (1, 2, 3) in one call equal three reference calls, one per head."""
    shape = (2, 3, 6, 7, 5)
    q, k, v = make_qkv(shape, seed=7)
    weight = make_qkv(shape, seed=8)[0]
    got = out_and_grads(
        lambda a, b, c: swda(a, b, c, 3, (1, 2, 3), padding=padding, impl="triton"), q, k, v, weight
    )
    per_head = [
        reference_of(*(t[:, h : h + 1] for t in (q, k, v, weight)), 3, h + 1, padding)
        for h in range(3)
    ]
    expected = [torch.cat(parts, dim=1) for parts in zip(*per_head)]  # B, heads, H, W, d each
    assert_all_close(got, expected, f"dilations (1, 2, 3) {padding}", 2e-5)


@here_only
def test_strided_views_of_a_conv_output():
    """q, k, v as head views of one (B, 3*C, H, W) tensor, read without a copy."""
    B, heads, d, H, W = 2, 2, 6, 5, 7
    gen = torch.Generator().manual_seed(11)
    qkv = torch.randn(B, 3 * heads * d, H, W, generator=gen).to(DEVICE)
    weight = make_qkv((B, heads, H, W, d), seed=12)[0]

    def split(t):
        parts = t.view(B, 3, heads, d, H, W)  # B, 3, heads, d, H, W
        return [parts[:, i].permute(0, 1, 3, 4, 2) for i in range(3)]  # B, heads, H, W, d each

    q, k, v = split(qkv)
    assert not q.is_contiguous()

    def grads_through(fn, source):
        source = source.detach().clone().requires_grad_(True)
        out = fn(*split(source))
        (grad,) = torch.autograd.grad((out * weight).sum(), source)
        return out.detach(), grad

    got = grads_through(lambda a, b, c: swda(a, b, c, 3, 2, impl="triton"), qkv)
    expected = grads_through(lambda a, b, c: dense_swda(a, b, c, 3, 2), qkv.double())
    for name, g, e in zip(("out", "d qkv"), got, expected):
        torch.testing.assert_close(g.double(), e, rtol=2e-5, atol=2e-5, msg=lambda m: f"{name}: {m}")


@here_only
def test_bfloat16_accumulates_in_float32():
    q, k, v = make_qkv((1, 2, 4, 5, 8), dtype=torch.bfloat16, seed=5)
    weight = make_qkv((1, 2, 4, 5, 8), dtype=torch.bfloat16, seed=6)[0]
    got = out_and_grads(lambda a, b, c: swda(a, b, c, 3, 2, impl="triton"), q, k, v, weight)
    assert all(t.dtype == torch.bfloat16 for t in got)
    expected = reference_of(q, k, v, weight, 3, 2, "zeros")
    assert_all_close(got, expected, "bfloat16", 3e-2)


@here_only
def test_zero_padding_takes_softmax_mass():
    """q = k = 0: every logit 0, so the output is the share of the window on the map."""
    q = torch.zeros(1, 1, 8, 8, 2, device=DEVICE)
    v = torch.ones(1, 1, 8, 8, 2, device=DEVICE)
    out = swda(q, q, v, 3, 3, impl="triton")[0, 0, :, :, 0]
    assert out[0, 0].item() == pytest.approx(4 / 9)
    assert out[0, 4].item() == pytest.approx(6 / 9)
    assert out[4, 4].item() == pytest.approx(1.0)
    masked = swda(q, q, v, 3, 3, padding="mask", impl="triton")
    torch.testing.assert_close(masked, torch.ones_like(masked))


@here_only
def test_operator_registration():
    """Fake (meta) shapes, schema and autograd registration, checked by torch.library."""
    q, k, v = make_qkv((1, 2, 3, 4, 3), seed=9)
    q.requires_grad_(True)
    torch.library.opcheck(
        torch.ops.dilate_lab.swda_triton.default, (q, k, v, [1, 2], 3, False, 0.5),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


@here_only
def test_compile_fullgraph_and_export():
    """One opaque operator node: torch.compile(fullgraph=True) and torch.export trace it."""
    q, k, v = make_qkv((1, 2, 4, 5, 3), seed=10)

    def attend(a, b, c):
        return swda_triton(a, b, c, 3, (1, 2), "zeros", 0.5)

    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = compiled(*leaves)
    out.sum().backward()
    eager = [t.clone().requires_grad_(True) for t in (q, k, v)]
    expected = attend(*eager)
    expected.sum().backward()
    torch.testing.assert_close(out, expected)
    for got, want in zip(leaves, eager):
        torch.testing.assert_close(got.grad, want.grad)

    class Attend(torch.nn.Module):
        def forward(self, a, b, c):
            return attend(a, b, c)

    exported = torch.export.export(Attend(), (q, k, v))
    assert "dilate_lab.swda_triton" in str(exported.graph)
    torch.testing.assert_close(exported.module()(q, k, v), expected.detach())


@here_only
def test_autocast_computes_in_the_autocast_dtype():
    q, k, v = make_qkv((1, 2, 3, 4, 8), seed=13)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        out = swda_triton(q, k, v, 3, 1, "zeros", 8**-0.5)
    assert out.dtype == torch.bfloat16
    expected = dense_swda(*(t.bfloat16().double() for t in (q, k, v)), 3, 1)
    torch.testing.assert_close(out.double(), expected, rtol=3e-2, atol=3e-2)


@here_only
def test_msda_layer_runs_every_group_in_one_launch(monkeypatch):
    """MultiDilateAttention with impl="triton" (heads of 3 dilations, q, k, v views of its
    qkv convolution) equals the same layer on "fused", with one forward launch."""
    from dilate_lab.nn.msda import MultiDilateAttention
    import dilate_lab.ops.triton_kernels as kernels

    torch.manual_seed(14)
    layer = MultiDilateAttention(12, 3, dilation=(1, 2, 3), impl="triton").to(DEVICE).eval()
    x = torch.randn(1, 5, 6, 12, device=DEVICE)
    launches = []
    real = kernels.swda_fwd_kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return real[grid]

    monkeypatch.setattr(kernels, "swda_fwd_kernel", Counting())
    x_triton = x.clone().requires_grad_(True)
    out = layer(x_triton)
    out.square().sum().backward()
    assert len(launches) == 1
    layer.impl = "fused"
    x_fused = x.clone().requires_grad_(True)
    expected = layer(x_fused)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(x_triton.grad, x_fused.grad, rtol=2e-5, atol=2e-5)


@pytest.mark.skipif(RUNS_HERE and DEVICE == "cpu", reason="the kernels are interpreted here")
def test_kernels_compile_for_a_gpu():
    """Triton compiles all three kernels down to a cubin for sm_90 with its bundled ptxas,
    no GPU needed: code the interpreter accepts but the compiler does not fails here."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile as triton_compile

    import dilate_lab.ops.triton_kernels as kernels

    for fn, constexprs in (
        (kernels.swda_fwd_kernel, {"KS": 3, "MASK": True, "BLOCK_Q": 32, "BLOCK_D": 32}),
        (kernels.swda_bwd_dq_kernel, {"KS": 5, "BLOCK_Q": 16, "BLOCK_D": 64}),
        (kernels.swda_bwd_dkdv_kernel, {"KS": 3, "BLOCK_Q": 8, "BLOCK_D": 128}),
    ):
        signature = {}
        for name in fn.arg_names:
            if name in constexprs:
                signature[name] = "constexpr"
            elif name == "dil_ptr":
                signature[name] = "*i32"
            elif name in ("lse_ptr", "delta_ptr"):
                signature[name] = "*fp32"
            elif name.endswith("_ptr"):
                signature[name] = "*bf16"  # loads converted to float32, stores back
            elif name in ("qk_scale", "scale"):
                signature[name] = "fp32"
            else:  # strides and sizes
                signature[name] = "i32"
        compiled = triton_compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32))
        assert compiled.asm["cubin"], fn.__name__
