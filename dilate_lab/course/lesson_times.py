"""Each lesson's run time against the run time it states; a command line and a pytest check.

    python -m dilate_lab.course.lesson_times                 # run every lesson, print the table
    python -m dilate_lab.course.lesson_times notebooks/02_swda_loops.ipynb

A lesson states how long running all its cells takes in its first cell ("running
every cell takes about a minute on two CPU cores"); a lesson that says nothing is held
to the README's promise for every lesson, :data:`DEFAULT_BUDGET_SECONDS`. The whole
course is held to :data:`COURSE_BUDGET_SECONDS`. Times are wall-clock seconds of a
fresh kernel running the notebook top to bottom (nbclient, as JupyterLab's "Restart
Kernel and Run All Cells"), the kernel's start included; the first run on a machine
also builds the C++ kernel (about a minute of compiler time, once), which
``python -m dilate_lab.build_kernel`` does ahead of time.

The test suite applies the same budgets to the runs nbval makes anyway, with
:data:`CI_FACTOR` to spare for a slower or busier machine (see
``pytest_lesson_times``), so no lesson is run twice.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CI_FACTOR",
    "COURSE_BUDGET_SECONDS",
    "DEFAULT_BUDGET_SECONDS",
    "LessonTime",
    "format_lesson_times",
    "lesson_paths",
    "main",
    "parse_run_time",
    "run_notebook",
    "stated_budget",
]

DEFAULT_BUDGET_SECONDS = 60.0
"""The README: every lesson runs top to bottom in about a minute on two CPU cores."""

COURSE_BUDGET_SECONDS = 240.0
"""The whole course, every lesson in turn, on a quiet two-core machine: about four minutes."""

CI_FACTOR = 3.0
"""How far over its budget a lesson may run in the test suite before the check fails:
a stated "about a minute" is measured on a quiet machine, and CI machines are shared."""

_AMOUNTS = {"a": 1.0, "one": 1.0, "half a": 0.5, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0}
_RUN_TIME = re.compile(
    r"(?:running every cell|runs? (?:top to bottom )?(?:in)?|the notebook runs|takes)[^.]*?"
    r"(?:about|under|within) (half a|an?|one|two|three|four|five|\d+(?:\.\d+)?) (minutes?|seconds?)",
    re.IGNORECASE,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass(frozen=True)
class LessonTime:
    """One lesson: its run time in seconds, its budget and where the budget is stated."""

    lesson: str
    seconds: float
    budget: float
    stated: str

    @property
    def ratio(self) -> float:
        return self.seconds / self.budget


def parse_run_time(text: str) -> float | None:
    """The run time a lesson's text states, in seconds, or None.

    >>> parse_run_time("running every cell takes about a minute on two CPU cores")
    60.0
    >>> parse_run_time("The notebook itself runs in about half a minute")
    30.0
    """
    match = _RUN_TIME.search(" ".join(text.split()))
    if match is None:
        return None
    amount, unit = match.group(1).lower(), match.group(2).lower()
    number = _AMOUNTS.get(amount, 1.0 if amount == "an" else None)
    if number is None:
        number = float(amount)
    return number * (60.0 if unit.startswith("minute") else 1.0)


def stated_budget(notebook: str | Path) -> tuple[float, str]:
    """(seconds, where it is stated): the lesson's own first cell, else the README's promise."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    if cells:
        seconds = parse_run_time("".join(cells[0]["source"]))
        if seconds is not None:
            return seconds, "the lesson's first cell"
    return DEFAULT_BUDGET_SECONDS, "the README (every lesson)"


def lesson_paths(folder: str | Path = NOTEBOOKS) -> list[Path]:
    """Every lesson notebook of the course, in order."""
    return sorted(Path(folder).glob("[0-9][0-9]*.ipynb"))


def run_notebook(path: str | Path, timeout: float = 1200.0) -> float:
    """Wall-clock seconds for a fresh kernel to run the notebook top to bottom (nothing is saved)."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def format_lesson_times(rows: list[LessonTime], factor: float = 1.0) -> str:
    """A table: each lesson's seconds against its budget (flagged beyond ``factor`` times
    it), then their sum against the course's budget when every lesson is there."""
    lines = [f"{'lesson':<28} {'seconds':>8} {'budget':>7} {'ratio':>6}  budget stated in"]
    for row in rows:
        flag = "" if row.seconds <= factor * row.budget else "  <- over"
        lines.append(
            f"{row.lesson:<28} {row.seconds:8.1f} {row.budget:7.0f} {row.ratio:6.2f}  {row.stated}{flag}"
        )
    total = sum(row.seconds for row in rows)
    if {row.lesson for row in rows} >= {path.stem for path in lesson_paths()}:
        flag = "" if total <= factor * COURSE_BUDGET_SECONDS else "  <- over"
        lines.append(f"{'whole course':<28} {total:8.1f} {COURSE_BUDGET_SECONDS:7.0f} "
                     f"{total / COURSE_BUDGET_SECONDS:6.2f}  dilate_lab.course.lesson_times{flag}")
    else:
        lines.append(f"{'these lessons together':<28} {total:8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="lesson notebooks (default: every lesson)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or lesson_paths()
    rows = []
    for path in paths:
        seconds = run_notebook(path)
        budget, stated = stated_budget(path)
        rows.append(LessonTime(path.stem, seconds, budget, stated))
        print(f"{path.stem}: {seconds:.1f} s", flush=True)
    print(format_lesson_times(rows))


if __name__ == "__main__":
    main()
