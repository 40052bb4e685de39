"""Tensor sizes through MSDA: every tensor of a forward pass, and how much the k*k copies take.

The rows come from ``dilate_lab.course.shapes.trace_msda_shapes``; each has a
``step``, a ``shape``, a ``dtype``, its size ``nbytes`` and ``kk_copy`` (True for
the k*k copies of K and V that the paper's unfold makes).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._style import _BEYOND_COLOR

__all__ = [
    "format_bytes",
    "MemoryTotals",
    "memory_totals",
    "memory_ticks",
    "plot_shape_trace",
    "shape_table_html",
]


def _binary_unit(nbytes: float) -> tuple[int, str]:
    """The largest binary unit (bytes per unit, name) that ``nbytes`` reaches, up to GiB."""
    names = ("B", "KiB", "MiB", "GiB")
    power = 0
    while power < len(names) - 1 and abs(nbytes) >= 1024 ** (power + 1):
        power += 1
    return 1024**power, names[power]


def format_bytes(nbytes: float) -> str:
    """1536 -> '1.5 KiB': a size in bytes, in the largest binary unit (B, KiB, MiB, GiB) it reaches.

    Binary units (1 KiB = 1024 bytes, 1 MiB = 1024 KiB), as PyTorch's memory
    statistics count.
    """
    unit, name = _binary_unit(nbytes)
    return f"{nbytes:.0f} B" if unit == 1 else f"{nbytes / unit:.1f} {name}"


@dataclass(frozen=True)
class MemoryTotals:
    """The memory of a traced forward pass, and the part the k*k copies of K and V take."""

    total: int
    copies: int

    @property
    def copies_percent(self) -> float:
        return 100 * self.copies / self.total

    def summary(self) -> str:
        """'1.5 MiB in all, 1.1 MiB (73%) in k*k copies': the line both views print."""
        return f"{format_bytes(self.total)} in all, {format_bytes(self.copies)} ({self.copies_percent:.0f}%)"


def memory_totals(rows) -> MemoryTotals:
    """The bytes of all rows, and of the rows that are k*k copies."""
    rows = list(rows)
    if not rows:
        raise ValueError("rows must be a non-empty list of ShapeRow, from trace_msda_shapes(...)")
    return MemoryTotals(sum(row.nbytes for row in rows), sum(row.nbytes for row in rows if row.kk_copy))


def memory_ticks(largest: float) -> tuple[list[float], int, str]:
    """Round ticks for a memory axis from 0 to ``largest`` bytes: (ticks in the unit, bytes per unit, unit name).

    The unit is the largest binary unit ``largest`` reaches; the ticks are at most
    five multiples of 1, 2, 2.5 or 5 times a power of ten of that unit.
    """
    unit, name = _binary_unit(largest)
    ticks = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(0, largest / unit)
    return [t for t in ticks if 0 <= t <= largest / unit * 1.001], unit, name


def plot_shape_trace(rows) -> Figure:
    """Memory of every tensor of an MSDA forward pass, as horizontal bars (rows of ``trace_msda_shapes``).

    The k*k copies of K and V that the paper's unfold makes are red; the label of
    each bar gives the tensor's shape. The memory axis is in binary units (KiB,
    MiB) with round ticks.

    Artists: the bars, rectangles with gid ``"k*k copies"`` or ``"other tensors"``;
    a bar's width is the tensor's size in bytes, its y the row's index.
    """
    rows = list(rows)
    totals = memory_totals(rows)
    fig = Figure(figsize=(7.5, 0.24 * len(rows) + 1.0), dpi=80)
    ax = fig.add_axes((0.5, 0.6 / (0.24 * len(rows) + 1.0), 0.46, 1 - 0.9 / (0.24 * len(rows) + 1.0)))
    positions = np.arange(len(rows))
    for flag, gid, color in ((True, "k*k copies", _BEYOND_COLOR), (False, "other tensors", "0.6")):
        chosen = [i for i, row in enumerate(rows) if row.kk_copy == flag]
        bars = ax.barh(positions[chosen], [rows[i].nbytes for i in chosen], color=color, label=gid)
        for bar in bars:
            bar.set_gid(gid)
    ax.set_yticks(positions, [f"{row.step}  {tuple(row.shape)}" for row in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    largest = max(max(row.nbytes for row in rows), 1)
    ticks, unit, name = memory_ticks(largest)
    ax.set_xticks([t * unit for t in ticks], [f"{t:g} {name}" for t in ticks])
    ax.set_xlim(0, largest * 1.05)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("memory (1 KiB = 1024 bytes)", fontsize=8)
    ax.set_title(f"{totals.summary()} in k*k copies of K and V", fontsize=8, y=1.01)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def shape_table_html(rows) -> str:
    """An HTML table of ``trace_msda_shapes`` rows, the k*k copies of K and V in red, under a summary line.

    The shape tracer widget shows this instead of a figure: a table can be read
    and copied, and every row's size relative to the input says what unfold costs.
    """
    rows = list(rows)
    totals = memory_totals(rows)
    input_bytes = rows[0].nbytes
    lines = [
        '<table class="dl-shape-table" style="border-collapse: collapse; font-family: monospace; font-size: 12px">',
        "<tr><th align='left'>step</th><th align='left'>shape</th><th>dtype</th>"
        "<th align='right'>memory (1 KiB = 1024 B)</th><th align='right'>x input</th></tr>",
    ]
    for row in rows:
        style = ' style="background: #fdd; color: #a00"' if row.kk_copy else ""
        css = "dl-kk-row" if row.kk_copy else "dl-row"
        lines.append(
            f'<tr class="{css}"{style}><td>{html.escape(row.step)}</td><td>{tuple(row.shape)}</td>'
            f"<td>{str(row.dtype).replace('torch.', '')}</td>"
            f"<td align='right'>{format_bytes(row.nbytes)}</td>"
            f"<td align='right'>{row.nbytes / input_bytes:.2f}</td></tr>"
        )
    lines.append("</table>")
    summary = (
        f"<p class='dl-shape-summary'>{len(rows)} tensors, {format_bytes(totals.total)} in all; "
        f"<b style='color: #a00'>{format_bytes(totals.copies)} ({totals.copies_percent:.0f}%)</b> "
        "in the k*k copies of K and V that unfold makes (red rows)."
        " Shapes from a real forward pass on the meta device."
        "</p>"
    )
    return summary + "\n".join(lines)
