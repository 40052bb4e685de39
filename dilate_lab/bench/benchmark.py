"""The SWDA benchmark: every implementation on every layout, its table, and the targets.

``run_benchmark`` times the implementations in round robin (see the package
docstring), then measures each one's peak memory, and adds the ratios against
``unfold`` measured in the same run; ``check_targets`` says which goals the
fast path meets; ``format_table`` prints the rows as Markdown. ``run_scaling``
repeats the stage-1 layout on ever larger maps for the scaling figure.
"""

from __future__ import annotations

import statistics
import sys

import torch

from ..functional import NAIVE_MAX_STEPS
from ..ops import choose_impl
from ..ops.cpp_build import compiled_available
from .cases import (
    LAYOUTS,
    QUICK_LAYOUTS,
    QUICK_SCALING_SIDES,
    SCALING_SIDES,
    Layout,
    _Case,
    _impls_for,
    _naive_too_big,
)
from .measure import NOISY_SPREAD, _progress, _threads, _timed_warm_ms, device_name, peak_memory_bytes, spread

__all__ = ["TARGETS", "fast_impl", "run_benchmark", "check_targets", "run_scaling", "format_table"]


def fast_impl(device_type: str) -> str:
    """The implementation the targets are about: what ``swda(impl="auto")`` runs there."""
    if device_type == "cpu":
        return "cpp" if compiled_available() else "fused"
    if device_type == "cuda" and torch.cuda.is_available():
        q = torch.zeros(1, 1, 8, 8, 16, device="cuda")  # B, heads, H, W, d: any small case
        return choose_impl(q, q, q, 3, 1, "zeros").name  # "triton" where Triton runs, else "flex"
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




def _warm_up(case: _Case, names: list[str], device: torch.device, progress) -> None:
    """First-call costs (and flex's compilation) out of the timings: one forward, one backward each."""
    for name in names:
        _progress(progress, f"{device.type} {case.layout.name} {name}: warming up")
        case.forward(name)
        case.forward_backward(name)
    case.floor()


def _time_round_robin(case: _Case, names: list[str], repeats: int, device) -> tuple[dict, dict, float]:
    """Median times: {impl: (forward ms, forward+backward ms)}, their spreads (``spread``:
    median / best - 1) in the same form, and the floor's ms.

    The implementations take turns, one repeat at a time, so that a burst of
    load elsewhere on a shared machine hits them all alike.
    """
    times = {name: ([], []) for name in names}
    floor_times = []
    for _ in range(repeats):
        floor_times.append(_timed_warm_ms(case.floor, device))
        for name in names:
            times[name][0].append(_timed_warm_ms(lambda: case.forward(name), device))
            times[name][1].append(_timed_warm_ms(lambda: case.forward_backward(name), device))
    medians = {name: (statistics.median(f), statistics.median(fb)) for name, (f, fb) in times.items()}
    spreads = {name: (spread(f), spread(fb)) for name, (f, fb) in times.items()}
    return medians, spreads, statistics.median(floor_times)


def _measured_row(row: dict, case: _Case, name: str, times: tuple[float, float], device) -> dict:
    """``row`` completed with the median times and the peak memory of forward and forward+backward."""
    row["forward_ms"], row["fwd_bwd_ms"] = times
    fwd_peak = peak_memory_bytes(lambda: case.forward(name), device)
    fb_peak = peak_memory_bytes(lambda: case.forward_backward(name), device)
    row["forward_peak_mb"] = None if fwd_peak is None else fwd_peak / 2**20
    row["fwd_bwd_peak_mb"] = None if fb_peak is None else fb_peak / 2**20
    return row


def _layout_rows(layout: Layout, names: list[str], repeats: int, device, progress) -> list[dict]:
    """One row per implementation on one layout; naive is skipped (with the reason) where it refuses."""
    case = _Case(layout, device)
    runnable = [n for n in names if not (n == "naive" and _naive_too_big(layout))]
    _warm_up(case, runnable, device, progress)
    times, spreads, floor_ms = _time_round_robin(case, runnable, repeats, device)
    rows = []
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
        row["forward_spread"], row["fwd_bwd_spread"] = spreads[name]
        rows.append(_measured_row(row, case, name, times[name], device))
        _progress(
            progress,
            f"{device.type} {layout.name} {name}: forward {row['forward_ms']:.2f} ms, "
            f"forward+backward {row['fwd_bwd_ms']:.2f} ms, "
            f"peak {_fmt(row['fwd_bwd_peak_mb'], 1)} MB",
        )
    _add_ratios(rows)
    return rows


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
            rows.extend(_layout_rows(layout, names, repeats, device, progress))
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


def _fmt(value, digits=2, suffix=""):
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def format_table(rows: list[dict]) -> str:
    """A Markdown table of the rows of one device: medians of the repeats, and in the last
    column how far the median repeat was from the best (forward / forward+backward),
    flagged ``<- noisy`` beyond ``NOISY_SPREAD``: read that row's ratios with care."""
    header = (
        "| implementation | layout | forward ms | fwd+bwd ms | peak MB (fwd+bwd) "
        "| fwd speed-up vs unfold | fwd+bwd speed-up | memory / unfold | forward / floor "
        "| median over best |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        if "forward_ms" not in r:
            lines.append(f"| {r['impl']} | {r['layout']} | {r.get('skipped', '-')} | | | | | | | |")
            continue
        lines.append(
            f"| {r['impl']} | {r['layout']} | {_fmt(r['forward_ms'])} | {_fmt(r['fwd_bwd_ms'])} "
            f"| {_fmt(r['fwd_bwd_peak_mb'], 1)} | {_fmt(r.get('forward_speedup'), 1, 'x')} "
            f"| {_fmt(r.get('fwd_bwd_speedup'), 1, 'x')} "
            f"| {_fmt(r.get('fwd_bwd_memory_fraction'), 3)} "
            f"| {_fmt(r.get('forward_vs_floor'), 1, 'x')} | {_spread_cell(r)} |"
        )
    return "\n".join(lines)


def _spread_cell(row: dict) -> str:
    """'+4% / +9%': the median repeat against the best, forward / forward+backward; flagged when noisy."""
    spreads = [row.get("forward_spread"), row.get("fwd_bwd_spread")]
    if any(s is None for s in spreads):
        return "-"
    cell = " / ".join(f"+{100 * s:.0f}%" for s in spreads)
    return cell + (" <- noisy" if max(spreads) > NOISY_SPREAD else "")


