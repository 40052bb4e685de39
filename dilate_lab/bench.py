"""Benchmark the SWDA implementations: time and peak memory, forward and forward+backward.

Run it as a program::

    python -m dilate_lab.bench                    # every device here, default implementations
    python -m dilate_lab.bench --quick            # tiny sizes, a few seconds (used by the tests)
    python -m dilate_lab.bench --impls unfold,fused --json bench.json --plot scaling.png

or from Python: ``rows = run_benchmark(device="cpu")``; and where the time goes, operator
by operator: ``print(format_profile(profile_ops("fused")))``.

What one case measures. A *layout* is the attention part of one DilateFormer-Tiny
MSDA layer: its channels split into three dilation groups (r = 1, 2, 3), each a
``swda`` call on (B, heads, H, W, 24) tensors with a 3x3 window. One case runs
all three calls, as the layer does.

- **Time**: the median over ``repeats`` runs, the implementations taking turns
  (round robin), so that a burst of load elsewhere on a shared machine hits them
  all alike. Each timed call follows three untimed calls of the same thing, so
  that none inherits the state another implementation left behind (unfold's
  large tensors evict q, k and v from the caches and churn the allocator; the
  first call after them was up to 2x slower than the next ones). "Forward" runs under ``torch.no_grad()``; "forward+backward" computes
  the gradients of q, k and v with ``torch.autograd.grad``.
- **The memory-traffic floor**: one ``torch.addcmul(q, k, v, out=out)`` per group
  reads q, k and v and writes an output, the least any SWDA forward must move;
  it is timed in the same round robin.
- **Peak memory**: the most bytes held at once by tensors allocated during the
  call (inputs excluded). On CUDA, ``torch.cuda.max_memory_allocated`` after a
  reset. On CPU there is no such counter, and process-level numbers (RSS, psutil)
  are too coarse: the C library keeps freed pages, and short-lived temporaries
  come and go between two samples. So the call runs under the PyTorch profiler
  with ``profile_memory=True``: PyTorch's CPU allocator then reports every
  allocation and free, each with the running total of bytes it has handed out
  since profiling started. The peak of that running total is exact to the byte
  for every tensor PyTorch allocates, temporaries inside operators included
  (buffers a library such as MKL allocates by itself are not seen).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from ._checks import check_positive_int
from .functional import ALL_IMPLS, NAIVE_MAX_STEPS, swda
from .ops import available_impls
from .ops.cpp_build import compiled_available
from .ops.flex import flex_available

__all__ = [
    "Layout",
    "LAYOUTS",
    "QUICK_LAYOUTS",
    "TARGETS",
    "run_benchmark",
    "run_scaling",
    "scaling_figure",
    "peak_memory_bytes",
    "format_table",
    "check_targets",
    "PROFILE_LAYOUT",
    "OpTime",
    "profile_ops",
    "format_profile",
    "main",
]


@dataclass(frozen=True)
class Layout:
    """One MSDA layer's attention: ``len(dilations)`` groups of (batch, heads, H, W, head_dim)."""

    name: str
    batch: int
    height: int
    width: int
    heads_per_group: int
    head_dim: int = 24
    dilations: tuple[int, ...] = (1, 2, 3)
    kernel_size: int = 3

    @property
    def channels(self) -> int:
        return len(self.dilations) * self.heads_per_group * self.head_dim

    def describe(self) -> str:
        return (
            f"B{self.batch} C{self.channels} {self.height}x{self.width}: "
            f"{len(self.dilations)} groups x {self.heads_per_group} head(s) x {self.head_dim}, "
            f"r={','.join(map(str, self.dilations))}, k={self.kernel_size}"
        )


LAYOUTS = (
    Layout("stage1", batch=8, height=56, width=56, heads_per_group=1),
    Layout("stage2", batch=8, height=28, width=28, heads_per_group=2),
)
"""DilateFormer-Tiny at 224 x 224: stage 1 (C = 72, 3 heads) and stage 2 (C = 144, 6 heads)."""

QUICK_LAYOUTS = (
    Layout("quick1", batch=1, height=8, width=8, heads_per_group=1, head_dim=8),
    Layout("quick2", batch=1, height=6, width=5, heads_per_group=2, head_dim=8),
)
"""Tiny layouts for ``--quick``: they check that everything runs, not how fast."""

SCALING_SIDES = (28, 56, 84, 112)
QUICK_SCALING_SIDES = (6, 8, 12)

def fast_impl(device_type: str) -> str:
    """The implementation the targets are about: what ``swda(impl="auto")`` runs there."""
    if device_type == "cpu":
        return "cpp" if compiled_available() else "fused"
    return "flex" if device_type == "cuda" else "fused"

TARGETS = {
    "forward_speedup": 5.0,
    "fwd_bwd_speedup": 4.0,
    "fwd_bwd_memory_fraction": 0.25,
    "forward_vs_floor": 3.0,
}
"""Goals for the fast path against ``unfold`` measured in the same run:
forward at least 5x faster, forward+backward at least 4x faster, peak memory of
forward+backward at most 1/4, and forward at most 3x the memory-traffic floor."""


# ---------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------
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


class _Case:
    """Inputs of one layout on one device, and the three calls to time."""

    def __init__(self, layout: Layout, device: torch.device, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        shape = (layout.batch, layout.heads_per_group, layout.height, layout.width, layout.head_dim)
        self.layout = layout
        self.groups = []
        for _ in layout.dilations:
            q, k, v, grad = (torch.randn(shape, generator=gen).to(device) for _ in range(4))
            self.groups.append(([t.requires_grad_(True) for t in (q, k, v)], grad))
        self.floor_out = [torch.empty(shape, device=device) for _ in layout.dilations]

    def _outputs(self, impl):
        lay = self.layout
        return [
            swda(q, k, v, lay.kernel_size, r, impl=impl)
            for ((q, k, v), _), r in zip(self.groups, lay.dilations)
        ]

    def forward(self, impl) -> None:
        with torch.no_grad():
            self._outputs(impl)

    def forward_backward(self, impl) -> None:
        outs = self._outputs(impl)
        inputs = [t for qkv, _ in self.groups for t in qkv]
        torch.autograd.grad(outs, inputs, [grad for _, grad in self.groups])

    def floor(self) -> None:
        for ((q, k, v), _), out in zip(self.groups, self.floor_out):
            torch.addcmul(q.detach(), k.detach(), v.detach(), out=out)


def _naive_too_big(layout: Layout) -> bool:
    return layout.height * layout.width * layout.kernel_size**2 > NAIVE_MAX_STEPS


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


def _default_impls(device: torch.device) -> list[str]:
    """unfold, shift, fused, and the compiled kernel of the device where it runs (not naive: too slow)."""
    names = ["unfold", "shift", "fused"]
    if device.type == "cpu" and compiled_available():
        names.append("cpp")
    return names + (["flex"] if flex_available(device) else [])


def _impls_for(device: torch.device, impls, progress=None) -> list[str]:
    """The requested implementations that run on ``device``, with unfold (the baseline) first."""
    names = _default_impls(device) if impls is None else list(impls)
    known = set(ALL_IMPLS)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"impls must be among {sorted(known)}, got {unknown}")
    allowed = available_impls(device)
    for name in names:
        if name not in allowed:
            _progress(progress, f"{device.type}: {name} does not run on this device, left out")
    names = [name for name in names if name in allowed]
    return ["unfold"] + [name for name in names if name != "unfold"]


def run_benchmark(
    device="cpu",
    impls=None,
    layouts=None,
    repeats: int = 10,
    *,
    quick: bool = False,
    threads: int | None = 2,
    progress=sys.stderr,
) -> list[dict]:
    """Time and measure every implementation on every layout; one dict per (layout, impl).

    ``impls`` defaults to the fast and the teaching implementations that run on
    ``device`` (not ``naive``); ``unfold`` is always added, as the baseline of the
    ratios. ``quick=True`` uses tiny layouts and 2 repeats. ``threads`` sets
    ``torch.set_num_threads`` for the run (CPU), restored afterwards.
    """
    device = torch.device(device)
    layouts = (QUICK_LAYOUTS if quick else LAYOUTS) if layouts is None else layouts
    repeats = 2 if quick else repeats
    names = _impls_for(device, impls, progress)
    rows = []
    with _threads(threads if device.type == "cpu" else None):
        for layout in layouts:
            case = _Case(layout, device)
            runnable = [n for n in names if not (n == "naive" and _naive_too_big(layout))]
            for name in runnable:  # warm up: first-call costs, compilation (flex)
                _progress(progress, f"{device.type} {layout.name} {name}: warming up")
                case.forward(name)
                case.forward_backward(name)
            case.floor()
            times = {name: ([], []) for name in runnable}
            floor_times = []
            for _ in range(repeats):
                floor_times.append(_timed_warm_ms(case.floor, device))
                for name in runnable:
                    times[name][0].append(_timed_warm_ms(lambda: case.forward(name), device))
                    times[name][1].append(
                        _timed_warm_ms(lambda: case.forward_backward(name), device)
                    )
            floor_ms = statistics.median(floor_times)
            for name in names:
                row = {
                    "device": device.type,
                    "device_name": device_name(device),
                    "impl": name,
                    "layout": layout.name,
                    "layout_desc": layout.describe(),
                    "repeats": repeats,
                    "floor_ms": floor_ms,
                }
                if name not in runnable:
                    row["skipped"] = f"naive refuses more than {NAIVE_MAX_STEPS} steps"
                    rows.append(row)
                    _progress(progress, f"{device.type} {layout.name} {name}: skipped")
                    continue
                row["forward_ms"] = statistics.median(times[name][0])
                row["fwd_bwd_ms"] = statistics.median(times[name][1])
                fwd_peak = peak_memory_bytes(lambda: case.forward(name), device)
                fb_peak = peak_memory_bytes(lambda: case.forward_backward(name), device)
                row["forward_peak_mb"] = None if fwd_peak is None else fwd_peak / 2**20
                row["fwd_bwd_peak_mb"] = None if fb_peak is None else fb_peak / 2**20
                rows.append(row)
                _progress(
                    progress,
                    f"{device.type} {layout.name} {name}: forward {row['forward_ms']:.2f} ms, "
                    f"forward+backward {row['fwd_bwd_ms']:.2f} ms, "
                    f"peak {_fmt(row['fwd_bwd_peak_mb'], 1)} MB",
                )
            _add_ratios(
                [r for r in rows if r["layout"] == layout.name and r["device"] == device.type]
            )
    return rows


def _add_ratios(rows: list[dict]) -> None:
    """Speed-ups and memory fraction against unfold, time against the floor (in place)."""
    base = next((r for r in rows if r["impl"] == "unfold" and "forward_ms" in r), None)
    for row in rows:
        if "forward_ms" not in row:
            continue
        row["forward_vs_floor"] = row["forward_ms"] / row["floor_ms"]
        if base is None:
            continue
        row["forward_speedup"] = base["forward_ms"] / row["forward_ms"]
        row["fwd_bwd_speedup"] = base["fwd_bwd_ms"] / row["fwd_bwd_ms"]
        if row["fwd_bwd_peak_mb"] is not None and base["fwd_bwd_peak_mb"]:
            row["fwd_bwd_memory_fraction"] = row["fwd_bwd_peak_mb"] / base["fwd_bwd_peak_mb"]


def check_targets(rows: list[dict]) -> list[dict]:
    """Each target, for the fast implementation of each device, on each layout: met or not."""
    results = []
    for row in rows:
        if row["impl"] != fast_impl(row["device"]) or "forward_ms" not in row:
            continue
        for key, goal in TARGETS.items():
            value = row.get(key)
            at_most = key in ("fwd_bwd_memory_fraction", "forward_vs_floor")
            met = None if value is None else (value <= goal if at_most else value >= goal)
            results.append(
                {
                    "device": row["device"],
                    "layout": row["layout"],
                    "impl": row["impl"],
                    "target": key,
                    "goal": goal,
                    "comparison": "<=" if at_most else ">=",
                    "value": value,
                    "met": met,
                }
            )
    return results


# ---------------------------------------------------------------------------
# time and memory as the map grows
# ---------------------------------------------------------------------------
def run_scaling(
    device="cpu",
    impls=None,
    sides=None,
    batch: int = 8,
    repeats: int = 3,
    *,
    quick: bool = False,
    threads: int | None = 2,
    progress=sys.stderr,
) -> list[dict]:
    """Forward+backward time and peak memory of the stage-1 layout on ever larger square maps."""
    device = torch.device(device)
    sides = (QUICK_SCALING_SIDES if quick else SCALING_SIDES) if sides is None else sides
    layouts = [
        Layout(
            f"{side}x{side}",
            batch=1 if quick else batch,
            height=side,
            width=side,
            heads_per_group=1,
            head_dim=8 if quick else 24,
        )
        for side in sides
    ]
    rows = run_benchmark(
        device,
        impls,
        layouts,
        repeats=2 if quick else repeats,
        threads=threads,
        progress=progress,
    )
    side_of = {layout.name: layout.height for layout in layouts}
    for row in rows:
        row["side"] = side_of[row["layout"]]
    return rows


def scaling_figure(rows: list[dict]):
    """Two panels against the map side: forward+backward time, and its peak memory."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    ax_time, ax_mem = fig.subplots(1, 2)
    for device in sorted({r["device"] for r in rows}):
        for impl in dict.fromkeys(r["impl"] for r in rows if r["device"] == device):
            points = [
                r for r in rows if r["device"] == device and r["impl"] == impl and "fwd_bwd_ms" in r
            ]
            label = f"{impl} ({device})"
            sides = [r["side"] for r in points]
            ax_time.plot(sides, [r["fwd_bwd_ms"] for r in points], marker="o", label=label)
            if all(r["fwd_bwd_peak_mb"] is not None for r in points):
                ax_mem.plot(sides, [r["fwd_bwd_peak_mb"] for r in points], marker="o", label=label)
    ax_time.set(
        xlabel="map side H = W",
        ylabel="forward+backward (ms)",
        yscale="log",
        title="time as the map grows",
    )
    ax_mem.set(
        xlabel="map side H = W",
        ylabel="peak memory (MB)",
        yscale="log",
        title="peak memory, forward+backward",
    )
    for ax in (ax_time, ax_mem):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# where the time goes: the profiler, one operator per row
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# the program
# ---------------------------------------------------------------------------
def _fmt(value, digits=2, suffix=""):
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def format_table(rows: list[dict]) -> str:
    """A Markdown table of the rows of one device."""
    header = (
        "| implementation | layout | forward ms | fwd+bwd ms | peak MB (fwd+bwd) "
        "| fwd speed-up vs unfold | fwd+bwd speed-up | memory / unfold | forward / floor |"
    )
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        if "forward_ms" not in r:
            lines.append(f"| {r['impl']} | {r['layout']} | {r.get('skipped', '-')} | | | | | | |")
            continue
        lines.append(
            f"| {r['impl']} | {r['layout']} | {_fmt(r['forward_ms'])} | {_fmt(r['fwd_bwd_ms'])} "
            f"| {_fmt(r['fwd_bwd_peak_mb'], 1)} | {_fmt(r.get('forward_speedup'), 1, 'x')} "
            f"| {_fmt(r.get('fwd_bwd_speedup'), 1, 'x')} "
            f"| {_fmt(r.get('fwd_bwd_memory_fraction'), 3)} "
            f"| {_fmt(r.get('forward_vs_floor'), 1, 'x')} |"
        )
    return "\n".join(lines)


def _devices(choice: str) -> list[torch.device]:
    if choice == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [torch.device(choice)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dilate_lab.bench",
        description="Time and peak memory of the SWDA implementations, DilateFormer-Tiny layouts.",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: the CPU, and the GPU when there is one (default)",
    )
    parser.add_argument(
        "--impls",
        default=None,
        help="comma-separated implementations (default: unfold,shift,fused, cpp on CPU, flex on CUDA)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed runs per case; the median is shown"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and 2 repeats: checks it runs"
    )
    parser.add_argument("--json", metavar="PATH", help="also write every row as JSON")
    parser.add_argument("--plot", metavar="PATH", help="also sweep the map side and save a figure")
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    impls = None if args.impls is None else [n.strip() for n in args.impls.split(",") if n.strip()]
    if impls is not None:
        known = set(ALL_IMPLS)
        unknown = [n for n in impls if n not in known]
        if unknown:
            parser.error(f"--impls: unknown {unknown}; choose from {sorted(known)}")

    devices = _devices(args.device)
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s)")
    if torch.cuda.is_available():
        print(f"CUDA device: {torch.cuda.get_device_name(0)}")
    else:
        print("no CUDA device: CPU only")

    report = {
        "torch": torch.__version__,
        "threads": args.threads,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "quick": args.quick,
        "rows": [],
    }
    for device in devices:
        rows = run_benchmark(
            device, impls, repeats=args.repeats, quick=args.quick, threads=args.threads
        )
        report["rows"].extend(rows)
        print(f"\n## {device.type}: {rows[0]['device_name'] if rows else device.type}\n")
        for layout in dict.fromkeys(r["layout"] for r in rows):
            print(f"- {layout}: {next(r['layout_desc'] for r in rows if r['layout'] == layout)}")
        print("\n" + format_table(rows))
        print(
            "(speed-up: unfold's time / this time; memory: this peak / unfold's; "
            "floor: one addcmul pass over q, k, v and the output)"
        )
    report["targets"] = check_targets(report["rows"])
    if report["targets"] and args.quick:
        print("\n(--quick: tiny maps, where fixed per-call costs dominate; the targets apply to the "
              "full layouts and are checked only without --quick)")
    elif report["targets"]:
        print("\nTargets (fast path against unfold, same run):")
        for t in report["targets"]:
            verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            print(
                f"- {t['device']} {t['layout']} {t['impl']}: {t['target']} {t['comparison']} "
                f"{t['goal']}: {_fmt(t['value'], 3)} -> {verdict}"
            )
    if args.plot:
        scaling = []
        for device in devices:
            scaling.extend(run_scaling(device, impls, quick=args.quick, threads=args.threads))
        report["scaling"] = scaling
        scaling_figure(scaling).savefig(args.plot, dpi=120)
        print(f"\nscaling figure written to {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"rows written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
