"""impl="cpp", the compiled CPU kernel: its specialised code paths, its build and its fallbacks.

test_swda.py runs "cpp" through the shared grid (kernels 3/5/7, dilations 1-4, tiny
maps, head_dim 4). The kernel also has code unrolled for head_dim 8/16/24/32/48/64
and kernel 3, and splits the rows between threads: those paths are checked here,
against the same independent dense reference.
"""

import os
import subprocess
import sys

import pytest
import torch

from compiled import compiled_or_skip
from conftest import make_qkv, out_and_grads
from dilate_lab import swda
from dilate_lab.ops.cpp_build import MAX_KERNEL_SIZE
from reference import dense_swda


@pytest.fixture(autouse=True)
def _needs_kernel():
    compiled_or_skip()


@pytest.mark.parametrize("padding", ["zeros", "mask"])
@pytest.mark.parametrize("head_dim", [8, 16, 24, 32, 48, 64, 3, 40])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_every_head_size_path_matches_reference(kernel_size, head_dim, padding):
    """Unrolled head sizes and run-time ones, unrolled kernel 3 and run-time 5, float64."""
    for dilation, (H, W) in [(1, (6, 9)), (2, (9, 7)), (3, (11, 12))]:
        q, k, v = make_qkv((2, 3, H, W, head_dim), seed=head_dim + dilation)
        weight = torch.randn(q.shape, generator=torch.Generator().manual_seed(5), dtype=q.dtype)
        expected = out_and_grads(
            lambda a, b, c: dense_swda(a, b, c, kernel_size, dilation, padding), q, k, v, weight
        )
        got = out_and_grads(
            lambda a, b, c: swda(a, b, c, kernel_size, dilation, padding=padding, impl="cpp"),
            q, k, v, weight,
        )
        for name, e, g in zip(("out", "dq", "dk", "dv"), expected, got):
            torch.testing.assert_close(
                g, e, rtol=1e-10, atol=1e-10,
                msg=lambda m: f"k={kernel_size} d={head_dim} r={dilation} {padding} {name}: {m}",
            )


@pytest.mark.parametrize("padding", ["zeros", "mask"])
def test_float32_on_a_stage_sized_map(padding):
    """DilateFormer's head_dim 24 on a 28x28 map in float32: within float32 rounding of float64."""
    q, k, v = make_qkv((2, 2, 28, 28, 24), dtype=torch.float32, seed=3)
    weight = torch.randn(q.shape, generator=torch.Generator().manual_seed(4))
    for dilation in (1, 2, 3):
        expected = out_and_grads(
            lambda a, b, c: dense_swda(a.double(), b.double(), c.double(), 3, dilation, padding),
            q, k, v, weight.double(),
        )
        got = out_and_grads(
            lambda a, b, c: swda(a, b, c, 3, dilation, padding=padding, impl="cpp"), q, k, v, weight
        )
        for e, g in zip(expected, got):
            assert g.dtype == torch.float32
            torch.testing.assert_close(g.double(), e.double(), rtol=1e-4, atol=2e-5)


def test_gradcheck_on_the_unrolled_path():
    q, k, v = (t.requires_grad_(True) for t in make_qkv((1, 2, 4, 5, 8)))
    for padding in ("zeros", "mask"):
        assert torch.autograd.gradcheck(
            lambda a, b, c: swda(a, b, c, 3, 2, padding=padding, impl="cpp"), (q, k, v)
        )


def test_same_bits_for_any_thread_count():
    """Each output row is computed by one thread in a fixed order: threads change nothing."""
    q, k, v = (t.requires_grad_(True) for t in make_qkv((2, 3, 17, 19, 24), dtype=torch.float32))
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = swda(q, k, v, 3, 2, impl="cpp")
            results.append([out, *torch.autograd.grad(out.square().sum(), (q, k, v))])
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_views_and_partial_gradients():
    """Non-contiguous inputs (an unbound qkv) and only v requiring grad."""
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 5, 6, 3, 2, 8, generator=gen, dtype=torch.float64)  # B, H, W, 3, heads, d
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # each B, heads, H, W, d, non-contiguous
    assert not q.is_contiguous()
    torch.testing.assert_close(swda(q, k, v, 3, 2, impl="cpp"), dense_swda(q, k, v, 3, 2))
    v_grad = v.clone().requires_grad_(True)
    v_ref = v.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(swda(q, k, v_grad, 3, 2, impl="cpp").sum(), v_grad)
    (e,) = torch.autograd.grad(dense_swda(q, k, v_ref, 3, 2).sum(), v_ref)
    torch.testing.assert_close(g, e)


def test_auto_runs_cpp_on_cpu():
    q, k, v = make_qkv((1, 2, 6, 7, 8), dtype=torch.float32)
    assert torch.equal(swda(q, k, v, 3, 2), swda(q, k, v, 3, 2, impl="cpp"))


def test_clear_errors_where_the_kernel_cannot_go():
    q = torch.empty(1, 1, 4, 4, 4, device="meta")
    with pytest.raises(ValueError, match=r"impl='cpp'.*CPU tensors only.*meta"):
        swda(q, q, q, impl="cpp")
    small = make_qkv((1, 1, 2, 2, 2))
    big = MAX_KERNEL_SIZE + 2
    with pytest.raises(ValueError, match=r"impl='cpp'.*kernel_size up to"):
        swda(*small, kernel_size=big, impl="cpp")
    # auto sends such a window to the fused path instead
    torch.testing.assert_close(swda(*small, kernel_size=big), dense_swda(*small, big, 1))


def test_turned_off_by_the_environment():
    """DILATE_LAB_NO_COMPILE=1: no build is tried, auto is fused, impl='cpp' says why."""
    script = (
        "import torch\n"
        "from dilate_lab import available_impls, swda\n"
        "from dilate_lab.ops.cpp_build import build_error, compiled_available\n"
        "q = torch.randn(1, 1, 5, 5, 4)\n"
        "assert not compiled_available()\n"
        "assert 'cpp' not in available_impls('cpu') and 'fused' in available_impls('cpu')\n"
        "assert 'DILATE_LAB_NO_COMPILE' in build_error()\n"
        "assert torch.equal(swda(q, q, q), swda(q, q, q, impl='fused'))\n"
        "try:\n"
        "    swda(q, q, q, impl='cpp')\n"
        "except RuntimeError as error:\n"
        "    print('refused:', error)\n"
    )
    env = dict(os.environ, DILATE_LAB_NO_COMPILE="1")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "DILATE_LAB_NO_COMPILE" in result.stdout


def empty_cache(monkeypatch, tmp_path):
    """This process's kernel forgotten, and an empty kernel cache: the next load builds."""
    from dilate_lab.ops import cpp_build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("DILATE_LAB_KERNEL_DIR", raising=False)
    monkeypatch.setattr(cpp_build, "_state", {"module": None, "error": None})


def test_a_failed_first_build_falls_back_to_plain_flags(monkeypatch, tmp_path):
    """A compiler without OpenMP or -march=native (Apple's clang) still gets a kernel."""
    import torch.utils.cpp_extension as cpp_extension

    from dilate_lab.ops import cpp_build as swda_compiled

    tried = []

    def fake_load(name, sources, extra_cflags, extra_ldflags, build_directory, verbose):
        tried.append(tuple(extra_cflags))
        if "-fopenmp" in extra_cflags:
            raise RuntimeError("clang: error: unsupported option '-fopenmp'")
        return "the plain build"

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    empty_cache(monkeypatch, tmp_path)
    assert swda_compiled.load_kernel() == "the plain build"
    assert tried == [cflags for cflags, _ in swda_compiled._BUILDS]
    assert swda_compiled.build_error() is None


def test_no_compiler_is_one_clear_error_and_auto_falls_back(monkeypatch, tmp_path):
    import torch.utils.cpp_extension as cpp_extension

    from dilate_lab.ops import cpp_build as swda_compiled

    def fake_load(**kwargs):
        raise RuntimeError("ninja: build stopped\nc++: error: no such compiler\nmore lines")

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    empty_cache(monkeypatch, tmp_path)
    assert not swda_compiled.compiled_available()
    assert "c++: error: no such compiler" in swda_compiled.build_error()
    with pytest.raises(RuntimeError, match="impl='fused'"):
        swda(*make_qkv((1, 1, 4, 4, 2)), impl="cpp")
    q, k, v = make_qkv((1, 1, 5, 5, 2))
    assert torch.equal(swda(q, k, v), swda(q, k, v, impl="fused"))


def test_build_command():
    ok = subprocess.run(
        [sys.executable, "-m", "dilate_lab.build_kernel"], capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0 and "C++ SWDA kernel ready" in ok.stdout, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "dilate_lab.build_kernel", "--fast"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "--verbose" in bad.stderr


def test_tiny_weights_are_kept_as_in_torch_softmax():
    """A logit 95 below the largest still gets expf's subnormal weight (float32), not 0."""
    q = torch.ones(1, 1, 1, 2, 1)
    k = torch.tensor([0.0, -95.0]).view(1, 1, 1, 2, 1)
    v = torch.tensor([1.0, 1e38]).view(1, 1, 1, 2, 1)
    for padding in ("zeros", "mask"):
        expected = swda(q, k, v, 3, 1, padding=padding, scale=1.0, impl="unfold")
        got = swda(q, k, v, 3, 1, padding=padding, scale=1.0, impl="cpp")
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)


# torch's own forward-AD set-up scripts a few decompositions with torch.jit, which warns
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_forward_mode_and_torch_func_go_through_plain_operators():
    """cpp reads raw memory: auto sends dual and torch.func tensors to 'shift', cpp refuses them."""
    import torch.autograd.forward_ad as fwAD

    q, k, v = make_qkv((1, 2, 5, 6, 8))
    tangent = torch.randn(q.shape, dtype=q.dtype, generator=torch.Generator().manual_seed(7))
    with fwAD.dual_level():
        out = swda(fwAD.make_dual(q, tangent), k, v, 3, 2)
        got = fwAD.unpack_dual(out).tangent
    eps = 1e-6
    expected = (dense_swda(q + eps * tangent, k, v, 3, 2) - dense_swda(q - eps * tangent, k, v, 3, 2)) / (2 * eps)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)
    with fwAD.dual_level(), pytest.raises(ValueError, match="forward-mode"):
        swda(fwAD.make_dual(q, tangent), k, v, 3, 2, impl="cpp")
    # vmap over a leading axis gives the per-sample calls
    batched = torch.func.vmap(lambda a, b, c: swda(a, b, c, 3, 2))(q[None], k[None], v[None])[0]
    torch.testing.assert_close(batched, dense_swda(q, k, v, 3, 2))
