"""Where the time goes: the PyTorch profiler over one layout, one row per operator (self time)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_positive_int
from ..functional import ALL_IMPLS
from ..ops import available_impls
from .cases import Layout, _Case
from .measure import _quiet_stderr, _sync, _threads

__all__ = ["PROFILE_LAYOUT", "OpTime", "profile_ops", "format_profile"]


PROFILE_LAYOUT = Layout("profile", batch=2, height=56, width=56, heads_per_group=1)
"""DilateFormer-Tiny's stage-1 attention at batch 2: big enough for the operators
to dominate, small enough to profile in a fraction of a second on a laptop core."""


@dataclass(frozen=True)
class OpTime:
    """One operator of a profile: its *self* time (children excluded), per run."""

    name: str
    calls: int
    """How many times one run calls it."""
    self_ms: float
    """Milliseconds spent in the operator itself in one run (device time on CUDA)."""
    share: float
    """self_ms as a fraction of all operators' self time (the shares sum to 1)."""


def profile_ops(
    impl: str,
    layout: Layout = PROFILE_LAYOUT,
    device="cpu",
    *,
    backward: bool = True,
    repeats: int = 3,
    threads: int | None = 2,
) -> list[OpTime]:
    """Profile ``impl`` on ``layout`` with ``torch.profiler``; operators by self time, largest first.

    One run is the layout's three ``swda`` calls, with their backward pass when
    ``backward`` (gradients of q, k and v). After one warm-up run, ``repeats`` runs
    are profiled and every number is divided by ``repeats``. *Self* time leaves
    out the operators an operator calls, so the rows add up to the whole run. On
    CUDA the rows are ranked by time on the GPU; on the CPU by CPU time.
    """
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    known = list(ALL_IMPLS)
    if impl not in known:
        raise ValueError(f"impl must be one of {known}, got {impl!r}")
    if impl not in available_impls(device):
        raise ValueError(f"impl={impl!r} does not run on {device.type}; here: {available_impls(device)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    case = _Case(layout, device)
    run = (lambda: case.forward_backward(impl)) if backward else (lambda: case.forward(impl))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with _threads(threads if device.type == "cpu" else None):
        run()  # warm up: first-call costs and compilation stay out of the profile
        _sync(device)
        with _quiet_stderr(), profile(activities=activities) as prof:
            for _ in range(repeats):
                run()
            _sync(device)
    on_gpu = device.type == "cuda"
    totals = {}
    for event in prof.key_averages():
        us = event.self_device_time_total if on_gpu else event.self_cpu_time_total
        if us > 0 or not on_gpu:  # on the GPU, operators that only run on the CPU are left out
            calls, before = totals.get(event.key, (0, 0.0))
            totals[event.key] = (calls + event.count, before + us)
    everything = sum(us for _, us in totals.values()) or 1.0
    ops = [
        OpTime(name, round(calls / repeats), us / repeats / 1e3, us / everything)
        for name, (calls, us) in totals.items()
    ]
    return sorted(ops, key=lambda op: op.self_ms, reverse=True)


def format_profile(ops: list[OpTime], top: int = 8) -> str:
    """The ``top`` operators of a profile as a fixed-width table, the rest summed as "(other)"."""
    check_positive_int(top, "top")
    shown, rest = ops[:top], ops[top:]
    lines = [f"{'operator':<28} {'calls':>6} {'self ms':>9} {'share':>6}"]
    for op in shown:
        name = op.name.replace("autograd::engine::evaluate_function: ", "autograd: ")
        lines.append(f"{name[:28]:<28} {op.calls:>6} {op.self_ms:>9.2f} {op.share:>6.0%}")
    if rest:
        lines.append(
            f"{'(other: ' + str(len(rest)) + ' operators)':<28} {sum(op.calls for op in rest):>6} "
            f"{sum(op.self_ms for op in rest):>9.2f} {sum(op.share for op in rest):>6.0%}"
        )
    lines.append(f"{'total':<28} {'':>6} {sum(op.self_ms for op in ops):>9.2f} {'100%':>6}")
    return "\n".join(lines)


