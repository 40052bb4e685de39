"""The ``"cpp"`` SWDA implementation: a C++ kernel, compiled on first use; fastest on CPU.

Why a compiled kernel: the pure-PyTorch ``"fused"`` Function makes k*k passes over
memory (one per window position, each reading and writing the whole output), so
its forward costs about ten times one pass over q, k, v and the output. The C++
kernel (``csrc/swda_cpu_kernel.cpp``) does one pass: it works on one image row at
a time, whose logits, softmax and output stay in the CPU caches, and it writes only
the output and the (k*k)-per-pixel weights that backward needs. Keys beyond the
border are never read, so NaN and inf reach exactly the pixels that ``nn.Unfold``
sends them to; no finiteness check is needed.

Building: ``torch.utils.cpp_extension.load`` compiles the source with the
system's C++ compiler (g++ on Linux), ``-O3 -march=native`` and OpenMP (or, where
the compiler takes neither, plain ``-O3`` and one thread), the first time the
kernel is needed (about half a minute), and keeps the result in PyTorch's extension cache (``TORCH_EXTENSIONS_DIR``, by default under
``~/.cache``), so later processes only load it. The build is named after the
source, the flags and this CPU's instruction sets, so a cache shared between
different machines never loads code built for another CPU.

Where no compiler is found, or the build fails, ``compiled_available()`` is False
and ``swda(impl="auto")`` uses ``"fused"`` instead; ``impl="cpp"`` then raises a
RuntimeError that says why. ``DILATE_LAB_NO_COMPILE=1`` in the environment turns
the compiled path off without trying.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import threading
from pathlib import Path

import torch

from .tracing import record, tracing

__all__ = ["swda_cpp", "compiled_available", "load_kernel", "build_error", "plain_tensor", "MAX_KERNEL_SIZE"]

_SOURCE = Path(__file__).with_name("csrc") / "swda_cpu_kernel.cpp"
_BUILDS = (
    (["-O3", "-march=native", "-fopenmp"], ["-fopenmp"]),  # this CPU's vectors, PyTorch's threads
    (["-O3"], []),  # compilers without -march=native or OpenMP (Apple's clang): one thread
)
"""Compiler and linker flags, tried in order until one builds."""
_DISABLE_VARIABLE = "DILATE_LAB_NO_COMPILE"
MAX_KERNEL_SIZE = 63
"""The kernel's largest window side (kMaxKernel in the C++ source)."""

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {"module": None, "error": None}


def _cpu_signature() -> str:
    """The machine type and, on Linux, the CPU's instruction-set flags."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    flags = line
                    break
    except OSError:
        pass
    return platform.machine() + flags


def _build_name(cflags, ldflags) -> str:
    """Extension name: changes with the source, the flags, torch and the CPU."""
    digest = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), " ".join(cflags + ldflags).encode(),
                 torch.__version__.encode(), _cpu_signature().encode()):
        digest.update(part)
    return "dilate_lab_swda_" + digest.hexdigest()[:16]


def load_kernel(verbose: bool = False):
    """The compiled kernel module, built on the first call; raises RuntimeError if it cannot be.

    ``verbose=True`` shows the compiler's output (useful when a build fails).
    """
    with _lock:
        if _state["module"] is not None:
            return _state["module"]
        if os.environ.get(_DISABLE_VARIABLE, "") not in ("", "0"):
            _state["error"] = f"the compiled SWDA kernel is turned off ({_DISABLE_VARIABLE} is set)"
            raise RuntimeError(_state["error"])
        if _state["error"] is not None and not verbose:
            raise RuntimeError(_state["error"])  # a failed build is not retried: it takes ~30 s
        from torch.utils.cpp_extension import load

        _log.info("building the C++ SWDA kernel (once per machine, about half a minute)")
        failures = []
        for cflags, ldflags in _BUILDS:
            try:
                module = load(
                    name=_build_name(cflags, ldflags),
                    sources=[str(_SOURCE)],
                    extra_cflags=cflags,
                    extra_ldflags=ldflags,
                    verbose=verbose,
                )
                break
            except Exception as error:  # no compiler, no ninja, a failed build: try the next
                failures.append(error)
        else:
            error = failures[0]
            _state["error"] = (
                f"the C++ SWDA kernel could not be built ({type(error).__name__}: "
                f"{_first_error_line(error)}); use impl='fused' (pure PyTorch, same results); "
                "dilate_lab.swda_compiled.load_kernel(verbose=True) retries and shows the compiler's output"
            )
            raise RuntimeError(_state["error"]) from error
        _state["module"] = module
        _state["error"] = None
        return module


def _first_error_line(error: Exception) -> str:
    """The compiler's first "error:" line if the message has one, else its last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line
    return lines[-1] if lines else "no message"


def compiled_available() -> bool:
    """True when the kernel is built or can be built here.

    The first call in a process loads the kernel: a fraction of a second from
    PyTorch's extension cache, about half a minute where it must be compiled first
    (once per machine). A failure is remembered for the rest of the process.
    """
    try:
        load_kernel()
    except RuntimeError:
        return False
    return True


def build_error() -> str | None:
    """Why the kernel is not available (None when it is, or has not been tried yet)."""
    return _state["error"]


def _profiled(name: str):
    """A named row in the PyTorch profiler while one is recording; no cost otherwise."""
    if torch.autograd.profiler._is_profiler_enabled:
        return torch.profiler.record_function(name)
    return contextlib.nullcontext()


def _forward(q, k, v, kernel_size, dilation, padding, scale, keep):
    """(out, weights) from the kernel; weights is empty unless ``keep``."""
    with _profiled("cpp::swda_forward"):
        return load_kernel().forward(
            q.contiguous(), k.contiguous(), v.contiguous(), kernel_size, dilation,
            padding == "mask", scale, keep,
        )


class _CompiledSWDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kernel_size, dilation, padding, scale, keep):
        # keep: store the weights (for backward, or for a tracer)
        out, weights = _forward(q, k, v, kernel_size, dilation, padding, scale, keep)
        if keep:
            B, heads, H, W, _ = q.shape
            lines = weights.view(B, heads, H, kernel_size * kernel_size, -1)  # B, heads, H, k*k, stride
            record(
                "attention weights",
                lines[..., :W].transpose(-1, -2),  # B, heads, H, W, k*k (a view)
                "one weight per window position",
            )
        # the inputs themselves are saved: unpacked in a create_graph backward they are
        # still nodes of the caller's graph, so second derivatives can flow
        ctx.save_for_backward(q, k, v, weights)
        ctx.geometry = (q.shape, kernel_size, dilation, scale)
        ctx.padding = padding
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            # create_graph=True: the gradient must itself be differentiable, so it is
            # recomputed with autograd through the "shift" path
            from .swda_cpu import _backward_by_recomputing

            return (*_backward_by_recomputing(ctx, grad_out), None)  # and none for keep
        q, k, v, weights = ctx.saved_tensors
        _, kernel_size, dilation, scale = ctx.geometry
        with _profiled("cpp::swda_backward"):
            grad_q, grad_k, grad_v = load_kernel().backward(
                q.contiguous(), k.contiguous(), v.contiguous(), weights, grad_out.contiguous(),
                kernel_size, dilation, ctx.padding == "mask", scale,
            )
        needed = ctx.needs_input_grad
        return (
            grad_q if needed[0] else None,
            grad_k if needed[1] else None,
            grad_v if needed[2] else None,
            None, None, None, None, None,
        )


def plain_tensor(t: torch.Tensor) -> bool:
    """False for a forward-mode dual tensor or one wrapped by a torch.func transform:
    the compiled kernel reads raw memory and would silently drop their tangents."""
    if torch._C._functorch.is_functorch_wrapped_tensor(t):
        return False
    return torch.autograd.forward_ad.unpack_dual(t).tangent is None


def swda_cpp(q, k, v, kernel_size, dilation, padding, scale):
    """SWDA through the compiled kernel; arguments as in ``swda`` (already checked), CPU only."""
    if q.device.type != "cpu":
        raise ValueError(
            f"impl='cpp' is a CPU kernel; q is on {q.device}. On this device use impl='auto' "
            f"or one of 'fused', 'shift', 'unfold', 'naive'"
        )
    if kernel_size > MAX_KERNEL_SIZE:
        raise ValueError(
            f"impl='cpp' takes kernel_size up to {MAX_KERNEL_SIZE}, got {kernel_size}; "
            f"use impl='fused' for larger windows"
        )
    if q.dtype not in (torch.float32, torch.float64):  # swda computes halves in float32
        raise ValueError(f"impl='cpp' computes in float32 or float64, got {q.dtype}")
    if any(not plain_tensor(t) for t in (q, k, v)):
        raise ValueError(
            "impl='cpp' has no forward-mode derivative and does not run under torch.func "
            "transforms (jvp, vmap, grad); use impl='auto' (which then picks 'shift') or 'shift'"
        )
    if tracing() or (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        return _CompiledSWDA.apply(q, k, v, kernel_size, dilation, padding, scale, True)
    # inference: no graph to record, so no autograd Function, and no weights stored
    return _forward(q, k, v, kernel_size, dilation, padding, scale, keep=False)[0]
