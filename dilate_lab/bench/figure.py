"""The scaling figure: time and peak memory as the map grows (rows of ``run_scaling``).

matplotlib is imported inside the function: ``import dilate_lab`` and the
benchmark's tables must not load it.
"""

from __future__ import annotations

__all__ = ["scaling_figure"]


def scaling_figure(rows: list[dict]):
    """Two panels against the map side: forward+backward time, and its peak memory."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    ax_time, ax_mem = fig.subplots(1, 2)
    for device in sorted({r["device"] for r in rows}):
        for impl in dict.fromkeys(r["impl"] for r in rows if r["device"] == device):
            points = [
                r for r in rows if r["device"] == device and r["impl"] == impl and "fwd_bwd_ms" in r
            ]
            label = f"{impl} ({device})"
            sides = [r["side"] for r in points]
            ax_time.plot(sides, [r["fwd_bwd_ms"] for r in points], marker="o", label=label)
            if all(r["fwd_bwd_peak_mb"] is not None for r in points):
                ax_mem.plot(sides, [r["fwd_bwd_peak_mb"] for r in points], marker="o", label=label)
    ax_time.set(
        xlabel="map side H = W",
        ylabel="forward+backward (ms)",
        yscale="log",
        title="time as the map grows",
    )
    ax_mem.set(
        xlabel="map side H = W",
        ylabel="peak memory (MB)",
        yscale="log",
        title="peak memory, forward+backward",
    )
    for ax in (ax_time, ax_mem):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


