"""Lesson run-time budgets: how they are read from a lesson, and the check nbval's run feeds."""

import json
import subprocess
import sys

import pytest

from dilate_lab.course.lesson_times import (
    COURSE_BUDGET_SECONDS,
    DEFAULT_BUDGET_SECONDS,
    LessonTime,
    format_lesson_times,
    lesson_paths,
    parse_run_time,
    stated_budget,
)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("**Time:** about 30 minutes to read; running every cell takes about a minute on two CPU cores", 60),
        ("The notebook itself runs in about half a minute on 2 CPU cores", 30),
        ("Running every cell takes about two minutes", 120),
        ("the notebook runs top to bottom in about 40 seconds", 40),
        ("**Time:** about 20 minutes.", None),  # reading time, not run time
        ("", None),
    ],
)
def test_parse_run_time(text, seconds):
    assert parse_run_time(text) == seconds


def test_every_lesson_has_a_budget_within_the_course_budget():
    paths = lesson_paths()
    assert len(paths) >= 8
    budgets = [stated_budget(path)[0] for path in paths]
    assert all(0 < budget <= DEFAULT_BUDGET_SECONDS * 2 for budget in budgets)


def test_table_flags_a_lesson_over_its_budget():
    rows = [LessonTime("fast", 10.0, 60.0, "x"), LessonTime("slow", 200.0, 60.0, "x")]
    table = format_lesson_times(rows, factor=3.0)
    fast, slow = (line for line in table.splitlines() if line.startswith(("fast", "slow")))
    assert "over" not in fast and "over" in slow
    assert COURSE_BUDGET_SECONDS > 0


def _notebook(path, stated, sleep_seconds):
    cells = [
        {"cell_type": "markdown", "id": "head", "metadata": {}, "source": [f"# x\n\nrunning every cell takes {stated}."]},
        {"cell_type": "code", "id": "wait", "metadata": {}, "execution_count": 1,
         "source": [f"import time; time.sleep({sleep_seconds})"], "outputs": []},
    ]
    notebook = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(notebook))


@pytest.mark.parametrize("stated, passes", [("about 0.5 seconds", False), ("about 20 seconds", True)])
def test_nbval_run_checked_against_the_stated_time(tmp_path, stated, passes):
    """A notebook that sleeps 2 s: over 3x a stated half second fails, within 3x twenty seconds passes."""
    _notebook(tmp_path / "00_lesson.ipynb", stated, 2)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "dilate_lab.course.pytest_lesson_times",
         "--nbval", "--nbval-current-env", "00_lesson.ipynb"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert "against their stated budgets" in run.stdout, run.stdout  # the table
    assert (run.returncode == 0) == passes, run.stdout
    if passes:
        assert "2 passed" in run.stdout, run.stdout  # the cell and lesson_run_times
    else:
        assert "1 failed, 1 passed" in run.stdout, run.stdout
        assert "over 3x the stated run time: 00_lesson" in run.stdout
