"""How fast each explorer answers a change of one control, measured; also a command line.

    python -m dilate_lab.course.widget_timing            # every explorer, 3 rounds
    python -m dilate_lab.course.widget_timing --rounds 5 --threads 1

Each explorer is built at its default settings; then every control in turn is
moved to another valid value and back, ``rounds`` times. A change is timed from
setting the control's value to the end of the redraw (figure and PNG), which is
what a learner waits for in the browser, less the transfer to the page. The
table gives the median and the slowest change per explorer, against the
course's budget of 0.2 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import ipywidgets as widgets
import torch

from . import widgets as explorers

__all__ = ["BUDGET_SECONDS", "EXPLORERS", "measure_explorers", "format_timings", "main"]

BUDGET_SECONDS = 0.2

EXPLORERS = tuple(name for name in explorers.__all__ if name not in ("Explorer", "parse_dilations"))
"""Every explorer factory of ``dilate_lab.widgets``."""

_ALTERNATIVE_TEXT = {"dilations": "1, 2", "left": "1, 1", "right": "1, 2"}


def _other_value(name: str, control: widgets.Widget):
    """A valid value different from the control's current one."""
    if isinstance(control, widgets.ToggleButtons):
        options = [option[1] if isinstance(option, tuple) else option for option in control.options]
        return next(option for option in options if option != control.value)
    if isinstance(control, (widgets.IntSlider, widgets.BoundedIntText)):
        step = getattr(control, "step", 1) or 1
        return control.value + step if control.value + step <= control.max else control.value - step
    if isinstance(control, widgets.Checkbox):
        return not control.value
    if isinstance(control, widgets.Text):
        return _ALTERNATIVE_TEXT.get(name, "1, 2")
    return None


def measure_explorers(names=EXPLORERS, rounds: int = 3) -> list[dict]:
    """One row per explorer: build time, median and slowest change (seconds), changes timed."""
    rows = []
    for name in names:
        start = time.perf_counter()
        explorer = getattr(explorers, name)()
        build = time.perf_counter() - start
        changes = []
        for _ in range(rounds):
            for key, control in explorer.controls.items():
                original = control.value
                other = _other_value(key, control)
                if other is None:
                    continue
                for value in (other, original):
                    start = time.perf_counter()
                    control.value = value
                    changes.append(time.perf_counter() - start)
        rows.append(
            {
                "explorer": name,
                "build_s": build,
                "median_change_s": statistics.median(changes),
                "slowest_change_s": max(changes),
                "changes": len(changes),
                "errors": explorer.error,
            }
        )
    return rows


def format_timings(rows: list[dict]) -> str:
    lines = [
        "| explorer | build s | median change s | slowest change s | changes | within 0.2 s (median) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['explorer']} | {row['build_s']:.3f} | {row['median_change_s']:.3f} | "
            f"{row['slowest_change_s']:.3f} | {row['changes']} | "
            f"{'yes' if row['median_change_s'] < BUDGET_SECONDS else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dilate_lab.course.widget_timing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="times each control is moved and moved back")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    print(format_timings(measure_explorers(rounds=args.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
