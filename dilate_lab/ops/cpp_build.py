"""Building and loading the C++ SWDA kernel (``csrc/swda_cpu_kernel.cpp``) of ``impl="cpp"``.

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

import hashlib
import logging
import os
import platform
import threading
from pathlib import Path

import torch

__all__ = ["compiled_available", "load_kernel", "build_error", "MAX_KERNEL_SIZE"]

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
                "dilate_lab.ops.cpp_build.load_kernel(verbose=True) retries and shows the compiler's output"
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
