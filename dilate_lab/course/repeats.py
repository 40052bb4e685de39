"""Timings repeated on a shared machine: the best run, how far the others spread, and a flag.

A lesson that times something runs it several times and reports the *best* run, the one
least disturbed by whatever else the machine was doing. The other runs say how far to
trust it. ``Repeats.spread`` is how much slower the median run was than the best one
(0.25: a quarter slower); a row whose repeats disagree by more than ``NOISY_SPREAD`` is
flagged ``<- noisy``: something else was running meanwhile, so read that row's numbers
(and any ratio taken from them) with care, or run the cell again when the machine is
quieter.

- ``Repeats``: the times of one thing, in milliseconds: ``best``, ``median``, ``spread``,
  ``noisy``, and ``cell()`` for a table.
- ``time_in_turns(calls, repeats, device)``: every call timed ``repeats`` times, taking
  turns, so that a burst of load elsewhere hits them alike.
- ``noisy_mark(*repeats)``: the flag for one row of a printed table.
- ``best_ratio(slow, fast)``: how many times as long one best run took as another.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .._checks import check_positive_int
from ..bench.measure import NOISY_SPREAD  # the benchmark's tables flag rows by the same rule

__all__ = ["NOISY_SPREAD", "NOISY_MARK", "Repeats", "best_ratio", "noisy_mark", "time_in_turns"]


NOISY_MARK = "  <- noisy"


@dataclass(frozen=True)
class Repeats:
    """The times of one thing, in milliseconds, in the order they were measured."""

    times_ms: tuple[float, ...]

    def __post_init__(self):
        times = tuple(self.times_ms)
        if not times:
            raise ValueError("times_ms must hold at least one time in milliseconds, got none")
        for t in times:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
                raise ValueError(f"times_ms must hold finite times >= 0 in milliseconds, got {t!r}")
        object.__setattr__(self, "times_ms", times)

    @property
    def runs(self) -> int:
        return len(self.times_ms)

    @property
    def best(self) -> float:
        """The fastest run: the one least disturbed by the rest of the machine."""
        return min(self.times_ms)

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def spread(self) -> float:
        """How much slower the median run was than the best: median / best - 1 (0 when they agree)."""
        if self.best == 0:
            return 0.0 if self.median == 0 else math.inf
        return self.median / self.best - 1

    def is_noisy(self, tolerance: float = NOISY_SPREAD) -> bool:
        """True when the repeats disagree by more than ``tolerance`` (a fraction of the best run)."""
        return self.spread > tolerance

    @property
    def noisy(self) -> bool:
        return self.is_noisy()

    def cell(self, digits: int = 2) -> str:
        """'12.34 +8%': the best run, then how much slower the median run was."""
        spread = "+inf%" if math.isinf(self.spread) else f"+{100 * self.spread:.0f}%"
        return f"{self.best:.{digits}f} {spread:>5}"

    def __str__(self) -> str:
        return (f"best {self.best:.3g} ms of {self.runs}, median {self.median:.3g} ms"
                + (" (noisy)" if self.noisy else ""))


def noisy_mark(*repeats: Repeats, tolerance: float = NOISY_SPREAD) -> str:
    """``NOISY_MARK`` when any of a row's timings is noisy, else ''."""
    return NOISY_MARK if any(r.is_noisy(tolerance) for r in repeats) else ""


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_in_turns(
    calls: Mapping[str, Callable[[], object]], repeats: int, device=None
) -> dict[str, Repeats]:
    """Time every call ``repeats`` times, taking turns (a, b, a, b, ...); one ``Repeats`` each.

    Taking turns means a burst of load elsewhere lands on one repeat of each call rather
    than on every repeat of one of them. ``device``: synchronise this CUDA device around
    each call, so that the clock sees the GPU's work and not only its launch.
    """
    if not isinstance(calls, Mapping) or not calls:
        raise ValueError("calls must be a non-empty dict of name -> function of no arguments")
    for name, call in calls.items():
        if not callable(call):
            raise ValueError(f"calls[{name!r}] must be a function of no arguments, got {call!r}")
    check_positive_int(repeats, "repeats")
    device = None if device is None else torch.device(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            _sync(device)
            start = time.perf_counter()
            call()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: Repeats(tuple(ms)) for name, ms in times.items()}


def best_ratio(slow: Repeats, fast: Repeats) -> float:
    """How many times as long ``slow``'s best run took as ``fast``'s (inf when ``fast`` took no time)."""
    return slow.best / fast.best if fast.best > 0 else math.inf
