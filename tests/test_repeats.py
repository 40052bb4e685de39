"""Repeated timings: best run, spread and the noisy flag; lesson 01's repeated sweep and its table."""

from __future__ import annotations

import math
import statistics
import time

import pytest

from dilate_lab.course.cost import measure_global_vs_window
from dilate_lab.course.cost_repeats import format_cost_table, repeat_global_vs_window
from dilate_lab.course.repeats import NOISY_MARK, NOISY_SPREAD, Repeats, best_ratio, noisy_mark, time_in_turns


# --------------------------------------------------------------------------- Repeats
def test_best_median_and_spread():
    times = (4.0, 2.0, 3.0, 2.5, 10.0)
    r = Repeats(times)
    assert r.runs == 5 and r.best == 2.0 and r.median == statistics.median(times) == 3.0
    assert r.spread == pytest.approx(3.0 / 2.0 - 1)
    assert r.times_ms == times  # measuring order kept


@pytest.mark.parametrize(
    "times, noisy",
    [
        ((1.0, 1.0, 1.0), False),
        ((1.0, 1.2, 9.0), False),  # one slow run out of three: the median still agrees with the best
        ((1.0, 1.0 + NOISY_SPREAD, 2.0), False),  # exactly at the tolerance: not beyond it
        ((1.0, 1.6, 2.0), True),  # most runs much slower than the best
    ],
)
def test_noisy_when_the_median_run_is_far_from_the_best(times, noisy):
    r = Repeats(times)
    assert r.noisy is noisy
    assert noisy_mark(r) == (NOISY_MARK if noisy else "")
    assert noisy_mark(Repeats((1.0, 1.0, 1.0)), r) == noisy_mark(r)  # any timing of the row flags it


def test_a_tolerance_can_be_chosen():
    r = Repeats((1.0, 1.3, 1.4))
    assert not r.is_noisy() and r.is_noisy(tolerance=0.2)
    assert noisy_mark(r, tolerance=0.2) == NOISY_MARK


def test_cell_shows_the_best_run_and_the_spread():
    assert Repeats((2.0, 3.0, 4.0)).cell() == "2.00  +50%"
    assert Repeats((1234.56, 1234.56)).cell(1) == "1234.6   +0%"
    assert "+inf%" in Repeats((0.0, 1.0, 2.0)).cell()  # a best run of 0 ms: no finite spread
    assert Repeats((0.0, 0.0)).spread == 0.0


def test_best_ratio():
    assert best_ratio(Repeats((12.0, 30.0)), Repeats((3.0, 4.0))) == pytest.approx(4.0)
    assert math.isinf(best_ratio(Repeats((1.0,)), Repeats((0.0,))))


@pytest.mark.parametrize("times", [(), (1.0, -1.0), (float("nan"),), (float("inf"),), (True,), ("1",)])
def test_bad_times_name_the_argument(times):
    with pytest.raises(ValueError, match="times_ms"):
        Repeats(times)


# --------------------------------------------------------------------------- time_in_turns
def test_calls_take_turns_and_are_timed():
    order = []
    calls = {
        "sleep": lambda: (order.append("sleep"), time.sleep(0.005)),
        "quick": lambda: order.append("quick"),
    }
    timings = time_in_turns(calls, repeats=3)
    assert order == ["sleep", "quick"] * 3
    assert set(timings) == {"sleep", "quick"}
    assert all(r.runs == 3 for r in timings.values())
    assert timings["sleep"].best >= 5.0  # a 5 ms sleep cannot take less
    assert timings["quick"].best < timings["sleep"].best


@pytest.mark.parametrize(
    "calls, repeats, match",
    [({}, 3, "calls"), ([lambda: None], 3, "calls"), ({"a": 1}, 3, r"calls\['a'\]"), ({"a": lambda: None}, 0, "repeats")],
)
def test_time_in_turns_refuses_bad_input(calls, repeats, match):
    with pytest.raises(ValueError, match=match):
        time_in_turns(calls, repeats)


# --------------------------------------------------------------------------- lesson 01's sweep
def test_repeated_sweep_keeps_every_run_and_the_best():
    rows = repeat_global_vs_window(repeats=3, sides=(4, 8), heads=2, head_dim=8, device="cpu")
    single = measure_global_vs_window(sides=(4, 8), heads=2, head_dim=8, repeats=1, device="cpu")
    assert [r["side"] for r in rows] == [4, 8]
    for row, one in zip(rows, single):
        assert row["global_repeats"].runs == row["window_repeats"].runs == 3
        assert row["global_ms"] == min(row["global_repeats"].times_ms)
        assert row["window_ms"] == min(row["window_repeats"].times_ms)
        # counts and memory do not depend on the load: the same as one sweep's
        for key in ("tokens", "global_scores", "window_scores", "global_peak_bytes", "window_peak_bytes"):
            assert row[key] == one[key]
        assert row["memory_repeats_agree"] is True
    with pytest.raises(ValueError, match="repeats"):
        repeat_global_vs_window(repeats=0, sides=(4,))


def _row(side, global_times, window_times, memory=(2**20, 2**18)):
    return {
        "side": side, "tokens": side * side,
        "global_repeats": Repeats(global_times), "window_repeats": Repeats(window_times),
        "global_peak_bytes": memory[0], "window_peak_bytes": memory[1],
    }


def test_cost_table_shows_spread_and_flags_noisy_rows():
    rows = [
        _row(8, (1.0, 1.1, 1.2), (0.5, 0.5, 0.6)),
        _row(16, (4.0, 9.0, 9.5), (0.7, 0.7, 0.7)),  # global's median run 2.25x its best: noisy
        _row(32, (8.0, 8.0, 8.0), (1.0, 2.0, 2.0), memory=(None, None)),  # window noisy; no memory counter
    ]
    lines = format_cost_table(rows).splitlines()
    assert len(lines) == 1 + len(rows) + 1  # header, one line per map, the legend
    assert "8x8" in lines[1] and "1.00  +10%" in lines[1] and NOISY_MARK not in lines[1]
    assert "16x16" in lines[2] and "4.00 +125%" in lines[2] and lines[2].endswith(NOISY_MARK)
    assert "32x32" in lines[3] and lines[3].endswith(NOISY_MARK) and " - " in lines[3]
    assert "1.00" in lines[1] and "0.25" in lines[1]  # 1 MiB and 0.25 MiB
    assert "best of 3 runs" in lines[-1] and f"{100 * NOISY_SPREAD:.0f}%" in lines[-1]
    with pytest.raises(ValueError, match="rows"):
        format_cost_table([])
