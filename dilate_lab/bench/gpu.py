"""The GPU suite: triton, flex, fused and unfold side by side, against a measured memory-traffic floor.

What ``python -m dilate_lab.bench --device cuda`` runs (``--suite gpu`` runs the
same on any device: that is how the tests check it on the CPU).

- **Cases**: the layouts of ``GPU_LAYOUTS`` (DilateFormer-Tiny's stage 1 and 2, and
  stage 1's batch and heads on 128 x 128 and 256 x 256 maps), each as one ``swda``
  call over all heads with one dilation per head (``_HeadsCase``), in each dtype
  asked for (float32 and bfloat16 by default). ``triton`` computes bfloat16
  natively; the others compute it in float32 and cast (the registry's rule), and
  their time includes those casts: that is what a caller gets.
- **Time**: after warm-up calls (Triton and flex compile on the first call), the
  implementations take turns, ``repeats`` times; each turn times ``calls``
  back-to-back calls between two CUDA events (``timed_calls_ms``); the median is
  kept ("wall": what a caller waits). Then the profiler gives each one's
  **device time**, the kernels' time alone (``device_busy_ms``): a small layout's
  call can be bound by the CPU's launch cost, which no kernel can beat.
- **The floor**: the bytes any implementation must move, over the copy bandwidth
  measured in the same run (``copy_bandwidth``: a 1 GiB ``Tensor.copy_``, which reads
  and writes, so it moves 2 GiB). Forward: read q, k, v, write out (4 tensors).
  Forward+backward: the forward's 4, then the backward reads q, k, v, out and
  grad_out and writes grad_q, grad_k and grad_v (8): 12 tensors. Triton's float32
  log-sum-exp (one number per query, 1/head_dim of a tensor) is left out.
- **Ratios and targets** use the device time where there is one (CUDA), the wall
  time elsewhere (the CPU, in the tests): ``GPU_TARGETS`` says what ``triton``
  must reach; ``check_gpu_targets`` takes rows as plain data, so fake rows test
  every verdict.
"""

from __future__ import annotations

import statistics
import sys

import torch

from .benchmark import _fmt
from .cases import GPU_LAYOUTS, QUICK_GPU_LAYOUTS, Layout, _HeadsCase, _impls_for
from .measure import (
    _progress,
    _threads,
    copy_bandwidth,
    device_busy_ms,
    device_name,
    peak_memory_bytes,
    timed_calls_ms,
)

__all__ = [
    "GPU_IMPLS",
    "GPU_TARGETS",
    "FLOOR_TENSORS",
    "DTYPES",
    "run_gpu_benchmark",
    "check_gpu_targets",
    "format_gpu_table",
    "format_gpu_targets",
    "add_gpu_ratios",
]

GPU_IMPLS = ("triton", "flex", "fused", "unfold")
"""The suite's implementations, in the table's order (those that run on the device)."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

FLOOR_TENSORS = {"forward": 4, "fwd_bwd": 12}
"""Tensors of q's size the floor moves: forward reads q, k, v and writes out;
forward+backward adds reading q, k, v, out, grad_out and writing three gradients."""

GPU_TARGETS = (
    {"target": "forward_vs_floor", "layout": "stage1", "dtype": "bfloat16", "goal": 1.5, "le": True},
    {"target": "fwd_bwd_vs_floor", "layout": "stage1", "dtype": "bfloat16", "goal": 3.0, "le": True},
    {"target": "forward_vs_flex", "layout": None, "dtype": None, "goal": 10.0, "le": False},
    {"target": "fwd_bwd_vs_flex", "layout": None, "dtype": None, "goal": 10.0, "le": False},
    {"target": "forward_vs_unfold", "layout": None, "dtype": None, "goal": 20.0, "le": False},
    {"target": "fwd_bwd_vs_unfold", "layout": None, "dtype": None, "goal": 20.0, "le": False},
)
"""What ``triton`` must reach (``le``: the value at most the goal, else at least).
``layout``/``dtype`` None: checked on every layout and dtype of the run. Times vs
the floor: at most 1.5x forward, 3x forward+backward (stage 1, bfloat16). Speed-ups
(the other's time / triton's, same run): at least 10x flex and 20x unfold."""
TARGET_IMPL = "triton"


def _measure_times(case, names, repeats: int, calls: int, device) -> dict:
    """Median wall ms per call, round robin: {impl: (forward, forward+backward)}."""
    times = {name: ([], []) for name in names}
    for _ in range(repeats):
        for name in names:
            times[name][0].append(timed_calls_ms(lambda: case.forward(name), device, calls))
            times[name][1].append(timed_calls_ms(lambda: case.forward_backward(name), device, calls))
    return {name: (statistics.median(f), statistics.median(fb)) for name, (f, fb) in times.items()}


def _case_rows(layout: Layout, dtype_name: str, names, repeats, calls, device, bandwidth, progress):
    """One row per implementation on one layout in one dtype, ratios included."""
    case = _HeadsCase(layout, device, DTYPES[dtype_name])
    for name in names:  # first calls compile (Triton, flex): kept out of every number
        _progress(progress, f"{device.type} {layout.name} {dtype_name} {name}: warming up")
        for _ in range(2):
            case.forward(name)
            case.forward_backward(name)
    times = _measure_times(case, names, repeats, calls, device)
    floor_bytes = {p: n * case.elements * case.element_size for p, n in FLOOR_TENSORS.items()}
    rows = []
    for name in names:
        fb_peak = peak_memory_bytes(lambda: case.forward_backward(name), device)
        row = {
            "device": device.type,
            "device_name": device_name(device),
            "impl": name,
            "layout": layout.name,
            "layout_desc": layout.describe(),
            "dtype": dtype_name,
            "repeats": repeats,
            "calls_per_repeat": calls,
            "forward_ms": times[name][0],
            "fwd_bwd_ms": times[name][1],
            "forward_device_ms": device_busy_ms(lambda: case.forward(name), device, calls),
            "fwd_bwd_device_ms": device_busy_ms(lambda: case.forward_backward(name), device, calls),
            "fwd_bwd_peak_mb": None if fb_peak is None else fb_peak / 2**20,
            "floor_forward_ms": floor_bytes["forward"] / bandwidth * 1e3,
            "floor_fwd_bwd_ms": floor_bytes["fwd_bwd"] / bandwidth * 1e3,
        }
        rows.append(row)
        _progress(
            progress,
            f"{device.type} {layout.name} {dtype_name} {name}: forward {row['forward_ms']:.3f} ms, "
            f"forward+backward {row['fwd_bwd_ms']:.3f} ms",
        )
    add_gpu_ratios(rows)
    return rows


def _basis(row: dict, phase: str) -> float:
    """The time the ratios use: device time where measured (CUDA), else wall time."""
    device_ms = row.get(f"{phase}_device_ms")
    return row[f"{phase}_ms"] if device_ms is None else device_ms


def add_gpu_ratios(rows: list[dict]) -> None:
    """Time over the floor, and speed-ups over flex and unfold, for rows of one layout and dtype."""
    by_impl = {r["impl"]: r for r in rows}
    for row in rows:
        for phase in ("forward", "fwd_bwd"):
            row[f"{phase}_vs_floor"] = _basis(row, phase) / row[f"floor_{phase}_ms"]
            for other in ("flex", "unfold"):
                base = by_impl.get(other)
                row[f"{phase}_vs_{other}"] = (
                    None if base is None else _basis(base, phase) / _basis(row, phase)
                )


def run_gpu_benchmark(
    device="cuda",
    impls=None,
    layouts=None,
    dtypes=("float32", "bfloat16"),
    repeats: int = 10,
    *,
    calls: int | None = None,
    quick: bool = False,
    bandwidth: float | None = None,
    progress=sys.stderr,
) -> dict:
    """The GPU suite on ``device``: ``{"copy_bandwidth_gbs", "device_name", "rows"}``.

    ``impls`` defaults to ``GPU_IMPLS`` (those that run on ``device``; unfold always
    comes along, as a baseline). ``quick``: tiny layouts, 2 repeats, a 16 MiB copy.
    ``calls`` per timed turn: 10 on CUDA (a turn then spans many launches), 1
    elsewhere. ``bandwidth`` (bytes/s) skips measuring it (tests).
    """
    device = torch.device(device)
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        raise ValueError(f"dtypes must be among {sorted(DTYPES)}, got {list(dtypes)}")
    layouts = (QUICK_GPU_LAYOUTS if quick else GPU_LAYOUTS) if layouts is None else layouts
    repeats = 2 if quick else repeats
    calls = (10 if device.type == "cuda" else 1) if calls is None else calls
    requested = [n for n in (GPU_IMPLS if impls is None else impls) if n != "unfold"] + ["unfold"]
    names = [n for n in requested if n in _impls_for(device, requested, progress)]
    if bandwidth is None:
        _progress(progress, f"{device.type}: measuring the copy bandwidth")
        bandwidth = copy_bandwidth(device, 2**24 if quick else 2**30)
    rows = []
    for layout in layouts:
        for dtype_name in dtypes:
            rows.extend(
                _case_rows(layout, dtype_name, names, repeats, calls, device, bandwidth, progress)
            )
    return {"device_name": device_name(device), "copy_bandwidth_gbs": bandwidth / 1e9, "rows": rows}


def check_gpu_targets(rows: list[dict], targets=GPU_TARGETS) -> list[dict]:
    """Every target on every row of ``triton`` it applies to: value, goal, met (None: not measured)."""
    results = []
    for spec in targets:
        for row in rows:
            if row["impl"] != TARGET_IMPL or spec["layout"] not in (None, row["layout"]):
                continue
            if spec["dtype"] not in (None, row["dtype"]):
                continue
            value = row.get(spec["target"])
            met = None
            if value is not None:
                met = value <= spec["goal"] if spec["le"] else value >= spec["goal"]
            results.append(
                {
                    "target": spec["target"],
                    "layout": row["layout"],
                    "dtype": row["dtype"],
                    "impl": TARGET_IMPL,
                    "comparison": "<=" if spec["le"] else ">=",
                    "goal": spec["goal"],
                    "value": value,
                    "met": met,
                }
            )
    return results


def format_gpu_table(rows: list[dict]) -> str:
    """A Markdown table of the GPU suite's rows: times, floor, ratios (see the module doc)."""
    header = (
        "| layout | dtype | implementation | fwd ms | fwd device ms | fwd floor ms | fwd / floor "
        "| fwd+bwd ms | fwd+bwd device ms | fwd+bwd floor ms | fwd+bwd / floor | peak MB "
        "| fwd vs flex | fwd+bwd vs flex | fwd vs unfold | fwd+bwd vs unfold |"
    )
    lines = [header, "|" + "---|" * 16]
    for r in rows:
        lines.append(
            f"| {r['layout']} | {r['dtype']} | {r['impl']} "
            f"| {_fmt(r['forward_ms'], 3)} | {_fmt(r['forward_device_ms'], 3)} "
            f"| {_fmt(r['floor_forward_ms'], 4)} | {_fmt(r['forward_vs_floor'], 1, 'x')} "
            f"| {_fmt(r['fwd_bwd_ms'], 3)} | {_fmt(r['fwd_bwd_device_ms'], 3)} "
            f"| {_fmt(r['floor_fwd_bwd_ms'], 4)} | {_fmt(r['fwd_bwd_vs_floor'], 1, 'x')} "
            f"| {_fmt(r['fwd_bwd_peak_mb'], 1)} "
            f"| {_fmt(r['forward_vs_flex'], 1, 'x')} | {_fmt(r['fwd_bwd_vs_flex'], 1, 'x')} "
            f"| {_fmt(r['forward_vs_unfold'], 1, 'x')} | {_fmt(r['fwd_bwd_vs_unfold'], 1, 'x')} |"
        )
    return "\n".join(lines)


def format_gpu_targets(results: list[dict]) -> str:
    """One line per target: each (layout, dtype) it was checked on, then the verdict."""
    lines = []
    for target in dict.fromkeys(r["target"] for r in results):
        checks = [r for r in results if r["target"] == target]
        parts = ", ".join(f"{r['layout']}/{r['dtype']} {_fmt(r['value'], 2)}" for r in checks)
        first = checks[0]
        lines.append(
            f"- {TARGET_IMPL} {target} {first['comparison']} {first['goal']}: {parts} "
            f"-> {_verdict([r['met'] for r in checks])}"
        )
    return "\n".join(lines)


def _verdict(met: list) -> str:
    """MISSED if any check failed; met if all passed; otherwise how many were not measured."""
    missed, unmeasured = met.count(False), met.count(None)
    if missed:
        return f"MISSED ({missed} of {len(met)})"
    if unmeasured == len(met):
        return "not measured"
    return "met" if not unmeasured else f"met where measured ({unmeasured} not measured)"


def gpu_suite(
    device, impls, dtypes, repeats: int, quick: bool, threads=None, progress=sys.stderr
) -> dict:
    """The command line's GPU suite on one device: the report, targets included, printed.

    ``threads``: CPU threads while it runs on the CPU (as the CPU table's ``--threads``).
    """
    device = torch.device(device)
    with _threads(threads if device.type == "cpu" else None):
        report = run_gpu_benchmark(
            device, impls, dtypes=dtypes, repeats=repeats, quick=quick, progress=progress
        )
    report["device"] = device.type
    report["floor"] = (
        "bytes over the measured copy bandwidth; forward: q, k, v read, out written; "
        "forward+backward: that, then q, k, v, out, grad_out read and grad_q, grad_k, grad_v written"
    )
    report["targets"] = check_gpu_targets(report["rows"])
    report["table"] = format_gpu_table(report["rows"])  # the Markdown, ready for the README
    print(f"\n## GPU suite on {report['device']}: {report['device_name']}\n")
    print(f"copy bandwidth (Tensor.copy_, read + write): {report['copy_bandwidth_gbs']:.1f} GB/s")
    for layout in dict.fromkeys(r["layout"] for r in report["rows"]):
        desc = next(r["layout_desc"] for r in report["rows"] if r["layout"] == layout)
        print(f"- {layout}: {desc}")
    print("\n" + report["table"])
    print(
        "(ms: time per call between CUDA events (wall clock off CUDA), median of the round robin; "
        "device ms: the "
        "kernels' time alone (profiler); ratios use device ms where measured, else wall ms; "
        "floor: 4 tensors forward, 12 forward+backward, over the copy bandwidth; "
        "vs flex / vs unfold: their time / this time)"
    )
    if quick:
        print("\n(--quick: tiny maps, where fixed per-call costs dominate: the verdicts mean nothing)")
    if report["targets"]:
        print(f"\nTargets ({TARGET_IMPL}, same run):\n" + format_gpu_targets(report["targets"]))
    else:
        print(f"\nTargets: no {TARGET_IMPL} rows on {report['device']}, nothing to check")
    return report
