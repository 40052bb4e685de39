"""Lesson 01's measurement with its spread: the whole sweep of map sizes, repeated.

``repeat_global_vs_window(repeats=7, ...)`` runs ``measure_global_vs_window`` (one timed
run of every map size) ``repeats`` times, rather than timing one size ``repeats`` times
in a row: a burst of load elsewhere then lands on one repeat of a few sizes, where the
spread of their repeats shows it, instead of on every repeat of one size, where the
repeats would agree with each other and all be wrong. Each row keeps its best times
(``global_ms``, ``window_ms``: what ``plot_attention_cost`` draws), every repeat
(``global_repeats``, ``window_repeats``: ``Repeats``) and the peak memory of the first
sweep; peak memory does not depend on the load, so every sweep measures the same bytes
(``memory_repeats_agree`` says whether they did).

``format_cost_table(rows)`` prints the table: best times with their spread, memory, and
``<- noisy`` on a row whose repeats disagree by more than ``NOISY_SPREAD``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._checks import check_positive_int
from .cost import measure_global_vs_window
from .repeats import NOISY_SPREAD, Repeats, noisy_mark

__all__ = ["repeat_global_vs_window", "format_cost_table"]

_MEMORY_KEYS = ("global_peak_bytes", "window_peak_bytes")


def repeat_global_vs_window(repeats: int = 7, sides: Sequence[int] = (8, 16, 24, 32, 48, 64), **kwargs) -> list[dict]:
    """``measure_global_vs_window(sides, repeats=1, **kwargs)`` ``repeats`` times, merged row by row.

    Each row is the first sweep's row (side, tokens, score counts, peak memory) with
    ``global_ms`` and ``window_ms`` set to the best of the repeats, plus
    ``global_repeats`` and ``window_repeats`` (``Repeats``, every time in ms) and
    ``memory_repeats_agree`` (True when every sweep measured the same peak bytes).
    """
    check_positive_int(repeats, "repeats")
    sweeps = [measure_global_vs_window(sides=sides, repeats=1, **kwargs) for _ in range(repeats)]
    rows = []
    for index, first in enumerate(sweeps[0]):
        same_size = [sweep[index] for sweep in sweeps]
        global_repeats = Repeats(tuple(row["global_ms"] for row in same_size))
        window_repeats = Repeats(tuple(row["window_ms"] for row in same_size))
        rows.append({
            **first,
            "global_ms": global_repeats.best,
            "window_ms": window_repeats.best,
            "global_repeats": global_repeats,
            "window_repeats": window_repeats,
            "memory_repeats_agree": all(row[key] == first[key] for row in same_size for key in _MEMORY_KEYS),
        })
    return rows


def _mib(value) -> str:
    return f"{'-':>11}" if value is None else f"{value / 2**20:>11.2f}"


def format_cost_table(rows: Sequence[dict]) -> str:
    """The table of ``repeat_global_vs_window``'s rows, with a legend line under it."""
    if not rows:
        raise ValueError("rows must hold at least one measurement (from repeat_global_vs_window)")
    lines = [f"{'map':>7} {'N':>6} {'global ms':>15} {'window ms':>13} {'global MiB':>11} {'window MiB':>11}"]
    for r in rows:
        g, w = r["global_repeats"], r["window_repeats"]
        lines.append(
            f"{r['side']:>4}x{r['side']:<2} {r['tokens']:>6} {g.cell():>15} {w.cell():>13} "
            f"{_mib(r['global_peak_bytes'])} {_mib(r['window_peak_bytes'])}{noisy_mark(g, w)}"
        )
    runs = rows[0]["global_repeats"].runs
    lines.append(
        f"ms: the best of {runs} runs, then how much slower the median run was; "
        f"<- noisy: the median run more than {100 * NOISY_SPREAD:.0f}% slower than the best"
    )
    return "\n".join(lines)
