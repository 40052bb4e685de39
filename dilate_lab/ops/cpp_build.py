"""Building and loading the C++ SWDA kernel (``csrc/swda_cpu_kernel.cpp``) of ``impl="cpp"``.

Building: ``torch.utils.cpp_extension.load`` compiles the source with the
system's C++ compiler (g++ on Linux), ``-O3 -march=native`` and OpenMP (or, where
the compiler takes neither, plain ``-O3`` and one thread), the first time the
kernel is needed (about half a minute, announced by a one-line log warning), and
keeps the result in a kernel cache, so that later processes only load it.

The cache is a folder of builds, one sub-folder per build:

- ``DILATE_LAB_KERNEL_DIR`` when set (e.g. a folder an instructor filled with
  ``python -m dilate_lab.build_kernel --dir FOLDER``; it may be read-only), then
- PyTorch's extension cache (``TORCH_EXTENSIONS_DIR``, by default under ``~/.cache``).

A build is named after the source's content, the flags, Python, torch and this
CPU's instruction sets, never after where the package lies: two checkouts of the
same source share one build, and a cache shared between machines never loads code
built for another CPU. The source is copied into the build folder and compiled
from there, so ninja's files do not name a checkout either. A finished build is
marked (``ready``) and loaded directly, without a lock, so a read-only cache works.

Builds never block a learner: one process builds at a time, under an OS lock on
``build.lock`` that dies with its process (a build killed half-way, by a kernel
restart or Ctrl-C, leaves nothing that stops the next one: PyTorch's own ``lock``
file, left behind, is cleared). Another process waits for a running build at most
``DILATE_LAB_BUILD_WAIT`` seconds (default 120), then uses ``"fused"`` with a warning.

Where no compiler is found, or the build fails, ``compiled_available()`` is False
and ``swda(impl="auto")`` uses ``"fused"`` instead; ``impl="cpp"`` then raises a
RuntimeError that says why. ``DILATE_LAB_NO_COMPILE=1`` in the environment turns
the compiled path off without trying.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import platform
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["compiled_available", "load_kernel", "build_error", "MAX_KERNEL_SIZE"]

_SOURCE = Path(__file__).with_name("csrc") / "swda_cpu_kernel.cpp"
_BUILDS = (
    (("-O3", "-march=native", "-fopenmp"), ("-fopenmp",)),  # this CPU's vectors, PyTorch's threads
    (("-O3",), ()),  # compilers without -march=native or OpenMP (Apple's clang): one thread
)
"""Compiler and linker flags, tried in order until one builds (tuples: torch's ``load``
appends its own link flags to the lists it is given, so each call gets fresh lists)."""
_DISABLE_VARIABLE = "DILATE_LAB_NO_COMPILE"
_DIR_VARIABLE = "DILATE_LAB_KERNEL_DIR"
_WAIT_VARIABLE = "DILATE_LAB_BUILD_WAIT"
_DEFAULT_WAIT_S = 120.0
_READY = "ready"
MAX_KERNEL_SIZE = 63
"""The kernel's largest window side (kMaxKernel in the C++ source)."""

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {"module": None, "error": None}


class _BuildBusy(RuntimeError):
    """Another process is building this kernel, and did not finish in time."""


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
    """Build name: changes with the source's content, the flags, Python, torch and the CPU."""
    digest = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), " ".join([*cflags, *ldflags]).encode(),
                 sys.implementation.cache_tag.encode(), torch.__version__.encode(),
                 _cpu_signature().encode()):
        digest.update(part)
    return "dilate_lab_swda_" + digest.hexdigest()[:16]


def _torch_extensions_root() -> Path:
    """PyTorch's extension cache, as ``torch.utils.cpp_extension`` chooses it."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    if torch.version.hip is not None:
        accelerator = "rocm" + torch.version.hip.replace(".", "")
    elif torch.version.cuda is not None:
        accelerator = "cu" + torch.version.cuda.replace(".", "")
    else:
        accelerator = "cpu"
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(_cpp_extension().get_default_build_root()) / f"{python}_{accelerator}"


def _cache_roots() -> list[Path]:
    """Where builds are looked for, in order; new builds go to the first writable one."""
    roots = [Path(os.environ[_DIR_VARIABLE])] if os.environ.get(_DIR_VARIABLE) else []
    torch_root = _torch_extensions_root()
    return roots + [torch_root] if torch_root not in roots else roots


class _DropNoCudaRuntime(logging.Filter):
    """Drops torch's "No CUDA runtime is found" warning: a CUDA build of torch on a machine
    without a GPU logs it when ``torch.utils.cpp_extension`` is imported, and the CPU kernel
    has no use for CUDA; in a notebook it would land in the learner's cell as stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


@contextlib.contextmanager
def _quiet_cuda_warning():
    logger = logging.getLogger("torch.utils.cpp_extension")
    drop = _DropNoCudaRuntime()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported without its "No CUDA runtime" warning."""
    with _quiet_cuda_warning():
        import torch.utils.cpp_extension as cpp_extension
    return cpp_extension


def _import_built(name: str, folder: Path):
    """The module of a finished build in folder, imported directly (no lock, no ninja), or None."""
    library = folder / f"{name}{_cpp_extension().LIB_EXT}"
    if not (folder / _READY).is_file() or not library.is_file():
        return None
    try:
        spec = importlib.util.spec_from_file_location(name, library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError) as error:  # a damaged or foreign file: build again
        _log.warning("the cached C++ SWDA kernel %s could not be loaded (%s); rebuilding", library, error)
        return None
    return module


def _wait_limit() -> float:
    value = os.environ.get(_WAIT_VARIABLE, "")
    try:
        return float(value) if value else _DEFAULT_WAIT_S
    except ValueError:
        raise ValueError(f"{_WAIT_VARIABLE} must be a number of seconds, got {value!r}") from None


def _try_lock(handle) -> bool:
    """Takes the OS lock on an open file without waiting; the OS drops it when the process dies."""
    try:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _holder(lock_path: Path) -> str:
    """Who holds the build lock, as its holder wrote it ("pid N on host")."""
    try:
        return lock_path.read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def _build_lock(folder: Path, name: str):
    """Holds build.lock in folder; waits for another holder at most DILATE_LAB_BUILD_WAIT seconds.

    Yields True when the caller should build, False when the build another process
    held the lock for has finished meanwhile (load it). Raises _BuildBusy on timeout.
    """
    lock_path = folder / "build.lock"
    with open(lock_path, "a+") as handle:
        deadline, announced = time.monotonic() + _wait_limit(), False
        while not _try_lock(handle):
            if (folder / _READY).is_file():
                yield False
                return
            if time.monotonic() > deadline:
                raise _BuildBusy(
                    f"{_holder(lock_path)} has been building the C++ SWDA kernel in {folder} for over "
                    f"{_wait_limit():.0f} s; this process uses impl='fused' (same results, slower). "
                    f"The next process loads the kernel once that build is done; {_WAIT_VARIABLE} "
                    "sets how long to wait"
                )
            if not announced:
                _log.warning("waiting for %s, which is building the C++ SWDA kernel (at most %.0f s)",
                             _holder(lock_path), _wait_limit())
                announced = True
            time.sleep(0.2)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            # PyTorch's own lock file can only be left over from a build that was killed:
            # every live builder holds build.lock, which we now hold
            with contextlib.suppress(FileNotFoundError):
                (folder / "lock").unlink()
            yield not (folder / _READY).is_file()
        finally:
            with contextlib.suppress(OSError):
                handle.truncate(0)


def _build(name: str, folder: Path, cflags, ldflags, verbose: bool):
    """Compiles the kernel in folder (the caller holds its lock) and marks it ready."""
    source = folder / _SOURCE.name  # compiled from here: ninja's files never name a checkout
    text = _SOURCE.read_bytes()
    if not source.is_file() or source.read_bytes() != text:
        source.write_bytes(text)
    if not _state.get("announced"):  # once, not again for the fallback flags
        _state["announced"] = True
        _log.warning("building the C++ SWDA kernel: about 30 s, once per machine (later runs load it at once)")
    with _quiet_cuda_warning():
        module = _cpp_extension().load(
            name=name,
            sources=[str(source)],
            extra_cflags=list(cflags),  # fresh lists: load() appends to them
            extra_ldflags=list(ldflags),
            build_directory=str(folder),
            verbose=verbose,
        )
    ready = folder / (_READY + ".tmp")
    ready.write_text(name + "\n")
    os.replace(ready, folder / _READY)  # a reader sees no marker, or a whole one
    return module


def _writable_folder(name: str) -> Path:
    """The build folder in the first cache root where one can be made."""
    problems = []
    for root in _cache_roots():
        folder = root / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
            return folder
        except OSError as error:
            problems.append(f"{root}: {error.strerror or error}")
    raise RuntimeError(
        "no kernel cache here holds this build of the C++ SWDA kernel, and none can be written ("
        + "; ".join(problems) + f"); set {_DIR_VARIABLE} or TORCH_EXTENSIONS_DIR to a folder you can write"
    )


def _load_or_build(cflags, ldflags, verbose: bool):
    """One build of the kernel: loaded from a cache if it is there, else built (under the lock)."""
    name = _build_name(cflags, ldflags)
    folder = _writable_folder(name)
    with _build_lock(folder, name) as must_build:
        if must_build:
            return _build(name, folder, cflags, ldflags, verbose)
    module = _import_built(name, folder)
    if module is None:
        raise RuntimeError(f"the build in {folder} is marked ready but could not be loaded")
    return module


def _find_built():
    """The first finished build, of any flag set, in any cache root; None if there is none."""
    for cflags, ldflags in _BUILDS:
        name = _build_name(cflags, ldflags)
        for root in _cache_roots():
            module = _import_built(name, root / name)
            if module is not None:
                return module
    return None


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
        module = _find_built()
        if module is None:
            module = _build_first_that_works(verbose)
        _state["module"] = module
        _state["error"] = None
        return module


def _build_first_that_works(verbose: bool):
    """Builds with each flag set in turn; records and raises the reason when none works."""
    failures = []
    for cflags, ldflags in _BUILDS:
        try:
            return _load_or_build(cflags, ldflags, verbose)
        except _BuildBusy as error:
            _state["error"] = str(error)
            warnings.warn(str(error), RuntimeWarning, stacklevel=4)
            raise RuntimeError(_state["error"]) from error
        except Exception as error:  # no compiler, no ninja, a failed build: try the next
            failures.append(error)
    error = failures[0]
    _state["error"] = (
        f"the C++ SWDA kernel could not be built ({type(error).__name__}: "
        f"{_first_error_line(error)}); use impl='fused' (pure PyTorch, same results); "
        "dilate_lab.ops.cpp_build.load_kernel(verbose=True) retries and shows the compiler's output"
    )
    raise RuntimeError(_state["error"]) from error


def _first_error_line(error: Exception) -> str:
    """The compiler's first "error:" line if the message has one, else its last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line
    return lines[-1] if lines else "no message"


def compiled_available() -> bool:
    """True when the kernel is built or can be built here.

    The first call in a process loads the kernel: a fraction of a second from the
    kernel cache, about half a minute where it must be compiled first (once per
    machine). A failure is remembered for the rest of the process.
    """
    try:
        load_kernel()
    except RuntimeError:
        return False
    return True


def build_error() -> str | None:
    """Why the kernel is not available (None when it is, or has not been tried yet)."""
    return _state["error"]
