"""Why a GPU timer must synchronise, and why many small operators are slow there (lesson 06).

A model, not a measurement: the CPU runs the Python and *launches* each kernel
(a fixed cost per launch); the GPU runs the kernels one after another, each as soon
as it has been launched and the one before it has finished. A Python call returns
when its last launch is done, usually long before the GPU has finished.

- ``launch_timeline``: the CPU's launches and the GPU's kernels for a list of kernel
  durations, when the call returns and when the work is done.
- ``plot_launch_timeline``: one panel per case, a lane for the CPU and one for the GPU,
  and where a timer stops with and without ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ._style import _call_text, _footer

__all__ = ["LaunchTimeline", "launch_timeline", "plot_launch_timeline", "DEFAULT_TIMELINE_CASES"]

_CPU_COLOR = "tab:orange"
_GPU_COLOR = "tab:blue"

DEFAULT_TIMELINE_CASES = {
    "3 large kernels": (60.0, 60.0, 60.0),
    "30 small kernels": (2.0,) * 30,
}
"""A few large operators (like unfold's copies and matrix products) against many small ones
(like a loop of k*k small operators), in microseconds of GPU time."""


@dataclass(frozen=True)
class LaunchTimeline:
    """The CPU's launches and the GPU's kernels of one call, in microseconds from its start."""

    launches: tuple[tuple[float, float], ...]
    """(start, end) of each launch on the CPU, one after another."""
    kernels: tuple[tuple[float, float], ...]
    """(start, end) of each kernel on the GPU: after its launch and after the kernel before it."""
    returned: float
    """When the Python call returns (its last launch is done): where a timer without synchronize stops."""
    finished: float
    """When the GPU has finished the last kernel: where a timer after ``torch.cuda.synchronize()`` stops."""

    @property
    def gpu_busy(self) -> float:
        """The share of the call's time (0 to ``finished``) in which the GPU computes."""
        return sum(end - start for start, end in self.kernels) / self.finished


def _check_durations(kernel_us) -> tuple[float, ...]:
    try:
        durations = tuple(float(t) for t in kernel_us)
    except (TypeError, ValueError):
        durations = ()
    if not durations or any(not t > 0 for t in durations):
        raise ValueError(f"kernel_us must be a non-empty list of positive durations (microseconds), got {kernel_us!r}")
    return durations


def _check_launch(launch_us) -> float:
    if isinstance(launch_us, bool) or not isinstance(launch_us, (int, float)) or not launch_us > 0:
        raise ValueError(f"launch_us must be a positive number of microseconds, got {launch_us!r}")
    return float(launch_us)


def launch_timeline(kernel_us: Sequence[float], launch_us: float = 5.0) -> LaunchTimeline:
    """The timeline of one call that launches one kernel per entry of ``kernel_us``.

    Launch i occupies the CPU from ``i * launch_us`` to ``(i + 1) * launch_us``;
    kernel i starts when its launch is done and kernel i - 1 has finished, and runs
    ``kernel_us[i]`` microseconds.
    """
    durations, launch = _check_durations(kernel_us), _check_launch(launch_us)
    launches, kernels, gpu_free = [], [], 0.0
    for i, duration in enumerate(durations):
        launched = (i + 1) * launch
        launches.append((i * launch, launched))
        start = max(launched, gpu_free)
        gpu_free = start + duration
        kernels.append((start, gpu_free))
    return LaunchTimeline(tuple(launches), tuple(kernels), launches[-1][1], gpu_free)


def plot_launch_timeline(
    cases: Mapping[str, Sequence[float]] | None = None, launch_us: float = 5.0
) -> Figure:
    """One panel per case (name -> kernel durations in microseconds): the CPU lane, the GPU lane,
    and where a timer stops without and with ``torch.cuda.synchronize()``.

    Artists, per panel i: ``"launches-i"`` and ``"kernels-i"`` (the bars' patches),
    ``"returned-i"`` and ``"finished-i"`` (the two timer lines).
    """
    cases = DEFAULT_TIMELINE_CASES if cases is None else cases
    if not isinstance(cases, Mapping) or not cases:
        raise ValueError(f"cases must be a non-empty dict of name -> kernel durations, got {cases!r}")
    timelines = {name: launch_timeline(durations, launch_us) for name, durations in cases.items()}
    end = max(t.finished for t in timelines.values()) * 1.04
    fig = Figure(figsize=(8.4, 1.0 + 1.35 * len(timelines)), dpi=80)
    axes = fig.subplots(len(timelines), 1, squeeze=False)[:, 0]
    for i, (ax, (name, timeline)) in enumerate(zip(axes, timelines.items())):
        _draw_lanes(ax, i, timeline)
        ax.set_xlim(0, end)
        ax.set_title(
            f"{name}: the call returns after {timeline.returned:g} µs, the GPU finishes at "
            f"{timeline.finished:g} µs (busy {timeline.gpu_busy:.0%} of that time)",
            fontsize=8,
        )
    axes[-1].set_xlabel("time since the call started (µs; a model, not a measurement)", fontsize=8)
    handles = [
        Patch(facecolor=_CPU_COLOR), Patch(facecolor=_GPU_COLOR),
        *(ax.lines[0], ax.lines[1]),
    ]
    labels = [
        f"CPU: launch one kernel ({launch_us:g} µs each)", "GPU: run the kernel",
        "a timer without synchronize stops here", "torch.cuda.synchronize(): the work is done",
    ]
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.06))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.36 if len(timelines) == 1 else 0.27, hspace=0.75)
    given = {} if cases is DEFAULT_TIMELINE_CASES else {"cases": {n: tuple(c) for n, c in cases.items()}}
    _footer(fig, _call_text("plot_launch_timeline", **given, launch_us=launch_us))
    return fig


def _draw_lanes(ax, index: int, timeline: LaunchTimeline) -> None:
    """The CPU lane (y = 1) and the GPU lane (y = 0) of one timeline, and the two timer lines."""
    for y, spans, color, gid in (
        (1, timeline.launches, _CPU_COLOR, f"launches-{index}"),
        (0, timeline.kernels, _GPU_COLOR, f"kernels-{index}"),
    ):
        bars = ax.broken_barh([(start, end - start) for start, end in spans], (y - 0.35, 0.7),
                              facecolors=color, edgecolors="white", linewidth=0.5)
        bars.set_gid(gid)
    ax.axvline(timeline.returned, color="black", ls="--", lw=1.2, gid=f"returned-{index}")
    ax.axvline(timeline.finished, color="black", ls="-", lw=1.6, gid=f"finished-{index}")
    ax.set_yticks([0, 1], ["GPU", "CPU"], fontsize=8)
    ax.set_ylim(-0.6, 1.6)
    ax.tick_params(axis="x", labelsize=7)
