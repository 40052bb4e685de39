"""A pytest plugin: each lesson's nbval run against the run time the lesson states.

nbval runs every lesson top to bottom anyway; this plugin adds up the seconds of each
notebook's cells (the kernel's start and shutdown included), prints a table at the end
of the run, and appends one test, ``lesson_run_times``, that fails when a lesson took
more than :data:`~dilate_lab.course.lesson_times.CI_FACTOR` times its stated budget, or
the whole course more than that factor times the course's budget. Registered in
``pyproject.toml`` (``-p dilate_lab.course.pytest_lesson_times``); it adds nothing to a
run that collects no notebook.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

_seconds: dict[str, float] = defaultdict(float)  # notebook (its node id) -> seconds so far
_cells_run: dict[str, int] = defaultdict(int)
_cells: dict[str, int] = defaultdict(int)
_root: list[Path] = []


def _notebook_id(nodeid: str) -> str | None:
    file = nodeid.split("::")[0]
    return file if file.endswith(".ipynb") else None


def _measured_rows():
    from .lesson_times import LessonTime, stated_budget

    rows = []
    for file, seconds in sorted(_seconds.items()):
        if _cells_run[file] == _cells[file]:  # only notebooks that ran to the end
            budget, stated = stated_budget(_root[0] / file)
            rows.append(LessonTime(Path(file).stem, seconds, budget, stated))
    return rows


class LessonsOverBudget(Exception):
    """A lesson (or the course) ran longer than its stated run time allows."""


class LessonRunTimes(pytest.Item):
    """Every lesson that ran, within CI_FACTOR times its stated run time; the course too."""

    def runtest(self):
        from .lesson_times import CI_FACTOR, COURSE_BUDGET_SECONDS, format_lesson_times, lesson_paths

        rows = _measured_rows()
        table = format_lesson_times(rows, CI_FACTOR)
        over = [row.lesson for row in rows if row.seconds > CI_FACTOR * row.budget]
        every_lesson = {row.lesson for row in rows} >= {path.stem for path in lesson_paths()}
        total = sum(row.seconds for row in rows)
        if every_lesson and total > CI_FACTOR * COURSE_BUDGET_SECONDS:
            over.append("the whole course")
        if over:
            raise LessonsOverBudget(f"over {CI_FACTOR:g}x the stated run time: {', '.join(over)}\n{table}")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, LessonsOverBudget):
            return str(excinfo.value)  # the table says it all; no traceback
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


def pytest_collection_modifyitems(session, config, items):
    _root[:] = [config.rootpath]
    notebook_items = [item for item in items if _notebook_id(item.nodeid) is not None]
    for item in notebook_items:
        _cells[_notebook_id(item.nodeid)] += 1
    if notebook_items:
        items.append(LessonRunTimes.from_parent(session, name="lesson_run_times"))


def pytest_runtest_logreport(report):
    file = _notebook_id(report.nodeid)
    if file is not None:
        _seconds[file] += report.duration
        _cells_run[file] += report.when == "teardown"


def pytest_terminal_summary(terminalreporter):
    rows = _measured_rows()
    if rows:
        from .lesson_times import CI_FACTOR, format_lesson_times

        terminalreporter.section("lesson run times (nbval) against their stated budgets")
        terminalreporter.write_line(format_lesson_times(rows, CI_FACTOR))
