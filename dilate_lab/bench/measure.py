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
import statistics
import time

import torch

__all__ = [
    "NOISY_SPREAD",
    "spread",
    "WARM_CALLS",
    "peak_memory_bytes",
    "device_name",
    "copy_bandwidth",
    "timed_calls_ms",
    "device_busy_ms",
]


NOISY_SPREAD = 0.5
"""Repeats disagree when the median run was more than half as slow again as the best run:
something else held the CPU (or GPU) meanwhile, and a table flags that row ``<- noisy``."""


def spread(times: list[float]) -> float:
    """How much slower the median repeat was than the best: median / best - 1 (0: they agree)."""
    best, median = min(times), statistics.median(times)
    return 0.0 if best <= 0 else median / best - 1


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


def timed_calls_ms(fn, device, calls: int = 1) -> float:
    """Milliseconds per call of ``calls`` back-to-back ``fn()``, the device idle before and after.

    On CUDA the interval is taken by two CUDA events on the stream, so it is the
    GPU's time from the first launch to the end of the last kernel; calls are not
    synchronised one by one, so the CPU may queue the next launch while the GPU
    runs the previous one (a small layout may still be bound by the CPU's launch
    cost: ``device_busy_ms`` gives the kernels' time alone). Elsewhere: wall clock.
    """
    device = torch.device(device)
    _sync(device)
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) * 1e3 / calls
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def device_busy_ms(fn, device, calls: int = 1) -> float | None:
    """Milliseconds per call that the GPU spends in kernels (and copies) that ``fn()`` launches.

    The durations of the events that ``torch.profiler``'s CUDA activity records on the
    GPU itself (kernels, copies, memsets), each counted once: the launch gaps and
    the Python between kernels are left out, so this is the number to hold against
    a memory-traffic floor. (The GPU's own events, not the operators' *self device
    time*: the profiler may attach a kernel's time both to the CPU event that
    launched it and to the kernel's event.) None off CUDA.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    _sync(device)
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        _sync(device)
    total_us = sum(e.device_time_total for e in prof.events() if e.device_type == DeviceType.CUDA)
    return total_us / 1e3 / calls


def copy_bandwidth(device, nbytes: int = 2**30, repeats: int = 5) -> float:
    """The device's copy bandwidth in bytes per second: one ``Tensor.copy_`` of ``nbytes``.

    A copy reads ``nbytes`` and writes ``nbytes``, so it moves ``2 * nbytes``; that
    is what the floor's bytes are divided by. ``nbytes`` must dwarf the caches
    (1 GiB against an H100/H200's 50-60 MB of L2). Median of ``repeats`` copies
    after one untimed copy, each timed by ``timed_calls_ms``.
    """
    device = torch.device(device)
    src = torch.ones(nbytes // 4, device=device)  # float32: 4 bytes an element
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = sorted(timed_calls_ms(lambda: dst.copy_(src), device) for _ in range(repeats))
    seconds = times[len(times) // 2] / 1e3
    del src, dst
    return 2 * (nbytes // 4) * 4 / seconds


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


