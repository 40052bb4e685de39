"""How fast each explorer answers a change of one control, at the extremes of every control; a command line.

    python -m dilate_lab.course.widget_timing            # every ipywidgets (tensor) explorer
    python -m dilate_lab.course.widget_timing --threads 1 erf_explorer shifted_views_explorer

Typical values hide the slow corners (an effective receptive field of eight layers
of dilation 9 at kernel 7 once took 26 s), so every control is swept to its
extremes: every option of a toggle, the minimum and maximum of a slider, both
states of a checkbox, short and long schedules in a text box. Each value is set
from the default setting and set back (the way back may come from the explorer's
cache of recent pictures, as it does for a learner). Then the "worst corner": every control at
the value that was slowest on its own, all at once, and from there each control
moved once more (so that, e.g., kernel 7 is timed with the longest schedules).

A change is timed from setting the control's value to the end of the redraw
(figure and PNG): what a learner waits for, less the transfer to the page. Both
wall-clock and CPU seconds of this process are kept: on a busy shared machine the
CPU time is the better estimate of what a quiet one would take. With
``--rounds N`` (a new explorer each round, so that its picture cache starts
empty) every setting is timed N times; its median over the rounds drops the odd
round in which another process held the CPU. The table gives per explorer the median change, the slowest setting
(by its median over the rounds, with its CPU time and its best round) and the
single worst change seen, against the course's budget of 0.2 s: "yes" when the
slowest setting's median is within it, "CPU only" when only its CPU time is (the
wall clock lost to other processes). Python's full garbage collection runs when
enough new objects have outlived two younger collections, whatever the setting; each
change here starts from a collected heap and the collection is timed on its own: a
learner's change that happens to trigger one waits that much longer. How often that
happens is counted too (last column): a new explorer that keeps no PNGs (every change
draws) is swept again and again, its changes one after the other as a learner makes
them, nothing collected in between, and the full collections Python ran are counted
over at least ``GC_COUNT_CHANGES`` changes. The browser-native explorers
(``dilate_lab.course.explorers``) answer in the browser and are timed by the
browser test instead (tests/test_browser_explorers.py).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import ipywidgets as widgets
import torch

from . import widgets as explorers

__all__ = ["BUDGET_SECONDS", "GC_COUNT_CHANGES", "EXPLORERS", "extreme_values", "measure_explorers", "format_timings", "main"]

BUDGET_SECONDS = 0.2
GC_COUNT_CHANGES = 60
"""At least this many changes drawn one after the other when the full garbage collections are counted."""

EXPLORERS = tuple(name for name in explorers.__all__ if name not in ("Explorer", "parse_dilations"))
"""Every explorer factory of ``dilate_lab.course.widgets``."""

_EXTREME_TEXT = {
    "left": ("1", "1, 2, 5", "9, 9, 9, 9, 9, 9, 9, 9"),
    "right": ("1", "1, 3, 9", "9, 9, 9, 9, 9, 9, 9, 9"),
}


def extreme_values(name: str, control: widgets.Widget) -> list:
    """The values of a control worth timing: every option, both ends of a range, short and long schedules."""
    if isinstance(control, widgets.ToggleButtons):
        values = [option[1] if isinstance(option, tuple) else option for option in control.options]
    elif isinstance(control, (widgets.IntSlider, widgets.BoundedIntText)):
        values = [control.min, control.max]
    elif isinstance(control, widgets.Checkbox):
        values = [False, True]
    elif isinstance(control, widgets.Text):
        values = list(_EXTREME_TEXT.get(name, ("1", "1, 2, 3, 4, 5, 6, 7, 8")))
    else:
        values = []
    return [value for value in values if value != control.value]


def _timed_change(explorer, changes: list, label: str, set_values, collect: bool = True) -> None:
    if collect:
        gc.collect()  # no garbage left over from the change before: its collection is timed on its own
    wall, cpu = time.perf_counter(), time.process_time()
    set_values()
    changes.append((time.perf_counter() - wall, time.process_time() - cpu, label, explorer.error))


def _set(explorer, key: str, value):
    return lambda: setattr(explorer.controls[key], "value", value)


def _sweep(explorer, changes: list, collect: bool = True) -> dict:
    """Each control to each extreme and back; returns the slowest value of each control."""
    slowest = {}
    for key, control in explorer.controls.items():
        default = control.value
        for value in extreme_values(key, control):
            before = len(changes)
            _timed_change(explorer, changes, f"{key}={value!r}", _set(explorer, key, value), collect)
            if key not in slowest or changes[before][0] > slowest[key][1]:
                slowest[key] = (value, changes[before][0])
            _timed_change(explorer, changes, f"{key}={default!r} (back)", _set(explorer, key, default), collect)
    return {key: value for key, (value, _) in slowest.items()}


def _full_collections_in_sweeps(name: str, at_least: int = GC_COUNT_CHANGES) -> tuple[int, int]:
    """(full garbage collections Python ran, changes made) over sweeps of a new explorer that keeps
    no PNGs (every change draws), its changes following one another as a learner's do, nothing
    collected in between, until ``at_least`` changes were made."""
    explorer = getattr(explorers, name)()
    explorer.cache_size = 0
    gc.collect()
    full = []

    def count(phase, info):
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    changes: list = []
    gc.callbacks.append(count)
    try:
        while len(changes) < at_least:
            before = len(changes)
            _sweep(explorer, changes, collect=False)
            if len(changes) == before:  # no control to move
                break
    finally:
        gc.callbacks.remove(count)
    _dispose(explorer)
    return len(full), len(changes)


def _worst_corner(explorer, changes: list, corner: dict) -> None:
    """Every control at its slowest value at once; from there each control moved and moved back."""
    defaults = explorer.values()
    label = ", ".join(f"{k}={v!r}" for k, v in corner.items())

    def set_corner():
        with explorer.hold_redraw():
            for key, value in corner.items():
                explorer.controls[key].value = value

    _timed_change(explorer, changes, f"all at once: {label}", set_corner)
    for key, value in corner.items():
        other = defaults[key] if defaults[key] != value else None
        if other is None:
            continue
        _timed_change(explorer, changes, f"{key}={other!r} at the corner ({label})", _set(explorer, key, other))
        _timed_change(explorer, changes, f"{key}={value!r} at the corner ({label})", _set(explorer, key, value))
    with explorer.hold_redraw():
        for key, value in defaults.items():
            explorer.controls[key].value = value


def _full_collection_seconds() -> float:
    """CPU seconds of one full garbage collection of this process, with the explorer alive (median of 3).

    Python runs one whenever enough objects have outlived two younger collections (every
    several redraws for an explorer that builds a new figure each time; rarely for one that
    gives a reused picture new data), whatever the setting: its cost is the number of live
    objects (torch, matplotlib and the widgets make some 230,000), not the explorer's work.
    """
    seconds = []
    for _ in range(3):
        start = time.process_time()
        gc.collect()
        seconds.append(time.process_time() - start)
    return statistics.median(seconds)


def _dispose(explorer) -> None:
    """Close the explorer's widgets (ipywidgets keeps every open widget alive), drop its cached
    pictures, and collect: an earlier round's figures would otherwise make every later full
    garbage collection slower."""
    stack = [explorer]
    while stack:
        widget = stack.pop()
        stack += [w for w in getattr(widget, "children", ()) if isinstance(w, widgets.Widget)]
        stack += list(getattr(widget, "controls", {}).values())
        widget.close()
    explorer.release()
    gc.collect()


def measure_explorers(names=EXPLORERS, rounds: int = 1) -> list[dict]:
    """One row per explorer: build time, median change, the slowest setting by its median over the rounds."""
    rows = []
    for name in names:
        changes: list[tuple[float, float, str, str | None]] = []
        collections: list[float] = []
        for round_ in range(rounds):  # a new explorer each round: its picture cache starts empty
            start = time.perf_counter()
            explorer = getattr(explorers, name)()
            if round_ == 0:
                build = time.perf_counter() - start
            slowest_values = _sweep(explorer, changes)
            if round_ == 0:  # the corner of the first round, every round: the same settings, timed again
                corner = slowest_values
            _worst_corner(explorer, changes, corner)
            collections.append(_full_collection_seconds())
            _dispose(explorer)  # the next round starts from what a learner's kernel holds: one explorer
        full_collections, swept = _full_collections_in_sweeps(name)
        runs: dict[str, list[tuple[float, float]]] = {}  # per setting, its (wall, CPU) of every round
        for wall, cpu, label, _ in changes:
            runs.setdefault(label, []).append((wall, cpu))
        median = {label: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for label, r in runs.items()}
        slowest_label = max(median, key=lambda label: median[label][0])
        rows.append({
            "explorer": name,
            "rounds": rounds,
            "build_s": build,
            "median_change_s": statistics.median(c[0] for c in changes),
            "slowest_change_s": median[slowest_label][0],
            "slowest_cpu_s": median[slowest_label][1],
            "slowest_best_s": min(w for w, _ in runs[slowest_label]),
            "slowest_setting": slowest_label,
            "slowest_cpu_of_all_s": max(cpu for _, cpu in median.values()),
            "worst_single_change_s": max(c[0] for c in changes),
            "full_collection_s": statistics.median(collections),
            "full_collections": full_collections,
            "full_collections_over": swept,
            "changes": len(changes),
            "messages": sorted({c[3] for c in changes if c[3]}),
            "errors": explorer.error,
        })
    return rows


def _verdict(row: dict) -> str:
    if row["slowest_change_s"] < BUDGET_SECONDS:
        return "yes"
    return "CPU only" if row["slowest_cpu_of_all_s"] < BUDGET_SECONDS else "NO"


def format_timings(rows: list[dict]) -> str:
    rounds = max(row.get("rounds", 1) for row in rows)
    lines = [
        f"| explorer | build s | median change s | slowest setting (median of {rounds}) | its median: s (CPU s) | "
        f"its best s | worst single change s | changes | within {BUDGET_SECONDS} s | full GC CPU s | "
        "full GCs, changes drawn in a row |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['explorer']} | {row['build_s']:.3f} | {row['median_change_s']:.3f} | {row['slowest_setting']} | "
            f"{row['slowest_change_s']:.3f} ({row['slowest_cpu_s']:.3f}) | {row['slowest_best_s']:.3f} | "
            f"{row['worst_single_change_s']:.3f} | {row['changes']} | {_verdict(row)} | "
            f"{row['full_collection_s']:.3f} | {row['full_collections']} in {row['full_collections_over']} changes |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dilate_lab.course.widget_timing", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"explorers to time (default: all of {', '.join(EXPLORERS)})")
    parser.add_argument("--rounds", type=int, default=1, help="times the whole sweep is repeated")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    unknown = [name for name in args.names if name not in EXPLORERS]
    if unknown:
        parser.error(f"unknown explorer(s) {unknown}; choose from {list(EXPLORERS)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), {os.cpu_count()} CPU core(s); "
          f"load average {_load()} (other processes' demand for the cores)")
    rows = measure_explorers(args.names or EXPLORERS, rounds=args.rounds)
    print(format_timings(rows))
    slowest = max(rows, key=lambda row: row["slowest_change_s"])
    print(f"slowest of all: {slowest['explorer']} at {slowest['slowest_setting']}: {slowest['slowest_change_s']:.3f} s "
          f"(median of {args.rounds}); load average now {_load()}")
    return 0


def _load() -> str:
    try:
        return ", ".join(f"{value:.1f}" for value in os.getloadavg())  # 1, 5 and 15 minutes
    except OSError:  # not on every system
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
