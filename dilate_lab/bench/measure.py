"""Measuring one call: wall-clock time after warm calls, and peak memory to the byte.

Time: ``_timed_warm_ms`` times a call right after ``WARM_CALLS`` untimed ones,
synchronising the GPU around it. Peak memory: ``peak_memory_bytes``, from CUDA's
allocator counters, or on the CPU from the profiler's allocation events (the
package docstring says why process-level numbers will not do).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import torch

__all__ = ["WARM_CALLS", "peak_memory_bytes", "device_name"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 a moment: the profiler's C++ side logs its start and stop there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn) -> int | None:
    """Peak bytes allocated by PyTorch's CPU allocator while ``fn`` runs (see the module doc)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:  # a PyTorch without the event tree: no exact CPU peak
        return None
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    allocations = []
    pending = list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        pending.extend(event.children)
        if event.typed[0] == _EventType.Allocation and event.typed[1].device.type == "cpu":
            fields = event.typed[1]
            allocations.append((event.start_time_ns, fields.alloc_size, fields.total_allocated))
    if not allocations:
        return 0
    allocations.sort()
    _, first_size, first_total = allocations[0]
    before = first_total - first_size  # the running total just before the call
    return max(total for _, _, total in allocations) - before


def peak_memory_bytes(fn, device) -> int | None:
    """The most bytes held at once by tensors that ``fn()`` allocates on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type == "cpu":
        return _cpu_peak_bytes(fn)
    return None


def _timed_ms(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


WARM_CALLS = 3
"""Untimed calls before each timed one (see _timed_warm_ms)."""


def _timed_warm_ms(fn, device) -> float:
    """Time of fn() right after WARM_CALLS untimed fn(): every call, the floor's included,
    is timed in its own steady state (inputs in cache, the allocator and the threads
    settled), whatever ran before it. After unfold's 180 MB, one call was not enough."""
    for _ in range(WARM_CALLS):
        fn()
    return _timed_ms(fn, device)


@contextlib.contextmanager
def _threads(count: int | None):
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _progress(stream, message: str) -> None:
    if stream is not None:
        print(message, file=stream, flush=True)


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} thread(s)"


