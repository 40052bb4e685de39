"""One registry of SWDA implementations, and the one rule that chooses among them.

Every implementation registers itself once, in its own module, with:

- where it runs: the device types (``None``: any device) and the dtypes it computes in
  (a half-precision input is computed in float32 by an implementation that does not
  list the half type, and the result cast back);
- ``available()``: whether this machine can run it at all (a compiled kernel that
  builds, Triton installed), ``None`` or the reason why not;
- ``can_run(q, k, v, kernel_size, dilation, padding)``: whether it takes these particular
  tensors and arguments, ``None`` or the reason why not;
- ``auto_rank``: its place in ``impl="auto"``'s order of preference (lower first;
  ``None``: never chosen automatically), and ``auto_device_types``: the device types
  where ``"auto"`` may choose it (``None``: wherever it runs);
- ``per_head_dilation``: whether its ``forward`` takes ``dilation`` as a tuple, one
  per head, in one call (all dilation groups of an MSDA at once); ``swda`` gives the
  others one call per run of heads with equal dilation.

Choosing is plain Python that ``torch.compile(fullgraph=True)`` traces: a machine
check (which may build a kernel, behind a lock) runs through ``_machine_check``,
which the compiler calls once while tracing and bakes in as a constant; the
torch.func check and the DEBUG log are skipped while compiling (no wrapped tensors
reach a compiled graph's implementations, and logging is a side effect).

``impl="auto"`` takes the first implementation, by rank, that runs on the tensors'
device and passes both checks. An implementation named explicitly must pass them
too, or ``swda`` raises an error that gives the reason: a RuntimeError where this
machine cannot run it at all, a ValueError where it does not take these arguments.
``dilate_lab.explain_impl`` shows the choice and every reason, and the ``dilate_lab`` logger logs it at DEBUG level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "SwdaImpl",
    "ImplChoice",
    "register",
    "get_impl",
    "impl_names",
    "choose_impl",
    "explain_choice",
    "available_impls",
    "is_plain_tensor",
    "FULL_PRECISION",
]

FULL_PRECISION = (torch.float32, torch.float64)
"""The dtypes most implementations compute in; halves are computed in float32."""

_log = logging.getLogger("dilate_lab")


@dataclass(frozen=True)
class SwdaImpl:
    """One registered implementation; see the module docstring for the fields."""

    name: str
    forward: Callable
    summary: str
    device_types: tuple[str, ...] | None = None
    dtypes: tuple[torch.dtype, ...] = FULL_PRECISION
    available: Callable[[], str | None] | None = None
    can_run: Callable[..., str | None] | None = None
    auto_rank: int | None = None
    auto_device_types: tuple[str, ...] | None = None
    per_head_dilation: bool = False

    def runs_on(self, device_type: str) -> bool:
        return self.device_types is None or device_type in self.device_types

    def compute_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype this implementation computes a ``dtype`` input in."""
        if dtype in self.dtypes:
            return dtype
        return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    def why_not(self, q, k, v, kernel_size: int, dilation: int, padding: str) -> str | None:
        """None if it runs these arguments, else the reason it does not."""
        failure = self.failure(q, k, v, kernel_size, dilation, padding)
        return None if failure is None else failure[0]

    def failure(self, q, k, v, kernel_size: int, dilation: int, padding: str):
        """None if it runs these arguments, else (reason, the error to raise if it was named):
        RuntimeError where this machine cannot run it, ValueError where the arguments are out."""
        if not self.runs_on(q.device.type):
            where = "/".join(t.upper() for t in self.device_types)
            return f"it runs on {where} tensors only; q is on {q.device}", ValueError
        compute = self.compute_dtype(q.dtype)
        if compute not in self.dtypes:
            allowed = ", ".join(str(d).replace("torch.", "") for d in self.dtypes)
            return f"it computes in {allowed}, not {str(compute).replace('torch.', '')}", ValueError
        if self.available is not None:
            reason = _machine_check(self.name)
            if reason is not None:
                return reason, RuntimeError
        if self.can_run is not None:
            reason = self.can_run(q, k, v, kernel_size, dilation, padding)
            if reason is not None:
                return reason, ValueError
        return None


_REGISTRY: dict[str, SwdaImpl] = {}
_ranked: list[SwdaImpl] = []  # auto candidates, best first


def _machine_check(name: str) -> str | None:
    """``available()`` of the implementation ``name``: None, or why this machine cannot run it.

    Eager calls ask every time (a kernel's loader may have changed its mind, e.g. in
    tests). Under ``torch.compile`` this function is run once, outside the traced
    graph, and its answer is a constant of that graph: the check may take locks and
    build a kernel, which tracing could not follow.
    """
    return _REGISTRY[name].available()


# What torch.compiler.assume_constant_result does (it only sets this mark), without
# importing torch._dynamo, which would add seconds to `import dilate_lab`; the compile
# tests in tests/test_integration.py fail if a torch release changes the mark.
_machine_check._dynamo_marked_constant = True


def register(
    name: str,
    forward: Callable,
    *,
    summary: str,
    device_types: tuple[str, ...] | None = None,
    dtypes: tuple[torch.dtype, ...] = FULL_PRECISION,
    available: Callable[[], str | None] | None = None,
    can_run: Callable[..., str | None] | None = None,
    auto_rank: int | None = None,
    auto_device_types: tuple[str, ...] | None = None,
    per_head_dilation: bool = False,
) -> SwdaImpl:
    """Add an implementation under ``name`` (each name once)."""
    if name in _REGISTRY or name == "auto":
        raise ValueError(f"an SWDA implementation named {name!r} is already registered")
    impl = SwdaImpl(
        name, forward, summary, device_types, dtypes, available, can_run, auto_rank,
        auto_device_types, per_head_dilation,
    )
    _REGISTRY[name] = impl
    _ranked[:] = sorted(
        (i for i in _REGISTRY.values() if i.auto_rank is not None), key=lambda i: i.auto_rank
    )
    return impl


def _auto_candidates(device_type: str) -> list[SwdaImpl]:
    """The implementations ``"auto"`` may pick on this device type, best first."""
    return [
        impl for impl in _ranked
        if impl.auto_device_types is None or device_type in impl.auto_device_types
    ]


def impl_names() -> tuple[str, ...]:
    """Every registered name, in registration order."""
    return tuple(_REGISTRY)


def get_impl(name: str) -> SwdaImpl:
    """The implementation registered as ``name``; ValueError naming the choices otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"impl must be 'auto' or one of {impl_names()}, got {name!r}") from None


def is_plain_tensor(t: torch.Tensor) -> bool:
    """False for a forward-mode dual tensor or one wrapped by a ``torch.func`` transform:
    a kernel that reads raw memory would silently drop their tangents.

    True while ``torch.compile`` traces: a compiled graph's tensors are plain (a
    ``torch.func`` transform around compiled code runs it with its own rules)."""
    if torch.compiler.is_compiling():
        return True
    if torch._C._functorch.is_functorch_wrapped_tensor(t):
        return False
    return torch.autograd.forward_ad.unpack_dual(t).tangent is None


@dataclass(frozen=True)
class ImplChoice:
    """Which implementation ``swda`` runs for some arguments, and why.

    ``rejected`` lists, in order of preference, each candidate passed over and the reason.
    """

    name: str
    requested: str
    device: str
    dtype: torch.dtype
    compute_dtype: torch.dtype
    rejected: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        how = "chosen by impl='auto'" if self.requested == "auto" else "named by impl"
        lines = [
            f"swda runs {self.name!r} ({how}) on {self.device} {str(self.dtype).replace('torch.', '')}"
            + (
                f", computing in {str(self.compute_dtype).replace('torch.', '')}"
                if self.compute_dtype != self.dtype else ""
            )
        ]
        lines += [f"  passed over {name!r}: {reason}" for name, reason in self.rejected]
        return "\n".join(lines)


def choose_impl(q, k, v, kernel_size: int, dilation: int, padding: str, impl: str = "auto") -> SwdaImpl:
    """The implementation ``swda`` runs: ``impl`` itself if it can, the best one for ``"auto"``.

    Raises RuntimeError when a named implementation cannot run on this machine,
    ValueError when it does not take these arguments.
    """
    if impl != "auto":
        chosen = get_impl(impl)
        failure = chosen.failure(q, k, v, kernel_size, dilation, padding)
        if failure is not None:
            reason, error = failure
            raise error(f"impl={impl!r} cannot run here: {reason}")
        return chosen
    for candidate in _auto_candidates(q.device.type):
        if candidate.why_not(q, k, v, kernel_size, dilation, padding) is None:
            if not torch.compiler.is_compiling() and _log.isEnabledFor(logging.DEBUG):
                _log.debug("%s", explain_choice(q, k, v, kernel_size, dilation, padding))
            return candidate
    raise RuntimeError("no registered SWDA implementation runs here")  # "shift" always does


def explain_choice(q, k, v, kernel_size: int, dilation, padding: str, impl: str = "auto") -> ImplChoice:
    """The choice ``choose_impl`` makes for these (already checked) arguments, with the
    reason each implementation preferred to it was passed over."""
    rejected = []
    if impl == "auto":
        for candidate in _auto_candidates(q.device.type):
            reason = candidate.why_not(q, k, v, kernel_size, dilation, padding)
            if reason is None:
                chosen = candidate
                break
            rejected.append((candidate.name, reason))
    else:
        chosen = choose_impl(q, k, v, kernel_size, dilation, padding, impl)
    return ImplChoice(
        chosen.name, impl, str(q.device), q.dtype, chosen.compute_dtype(q.dtype), tuple(rejected)
    )


def available_impls(device) -> tuple[str, ...]:
    """Names ``swda(..., impl=...)`` runs for tensors on ``device`` (besides ``"auto"``).

    An implementation whose machine check fails (a C++ kernel that cannot be built,
    Triton not installed) is left out; the first call may therefore build the C++
    kernel (once per machine, about half a minute).
    """
    try:
        device_type = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be a torch.device or a name such as 'cpu' or 'cuda', got {device!r}"
        ) from None
    return tuple(
        impl.name
        for impl in _REGISTRY.values()
        if impl.runs_on(device_type) and (impl.available is None or _machine_check(impl.name) is None)
    )
