"""How much memory traffic an SWDA forward pass makes, counted (lesson 06b).

A count, not a measurement, in units of ``N * d`` numbers (N queries, head size d),
and an upper bound: neighbouring queries share keys, and the caches catch part of the
re-reads. The floor is what any SWDA forward must do: read q, k and v, write the output.

- ``forward_traffic``: the parts of the count for the floor, ``"fused"`` and ``"cpp"``.
- ``plot_forward_traffic``: one stacked bar per implementation, its total against the floor.
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.figure import Figure

from ..._checks import check_kernel_size, check_positive_int
from ._style import _call_text, _footer

__all__ = ["ForwardTraffic", "forward_traffic", "plot_forward_traffic"]

_PART_COLORS = {
    "read q, k, v": "tab:blue",
    "dot products: q and K read": "tab:cyan",
    "write the output": "tab:orange",
    "logits: written, scaled, softmax, masked": "tab:purple",
    "weighted sum: k*k passes over the output": "tab:green",
    "write the weights": "0.55",
}


@dataclass(frozen=True)
class ForwardTraffic:
    """Memory traffic of one forward pass, in N * d numbers, part by part."""

    kernel_size: int
    head_dim: int
    parts: dict[str, tuple[tuple[str, float], ...]]
    """implementation -> ((what, N*d numbers), ...); ``"floor"`` first."""
    flops_per_output: dict[str, int]
    """floating-point operations per output number: the floor's and cpp's."""

    def total(self, name: str) -> float:
        return sum(amount for _, amount in self.parts[name])

    def vs_floor(self, name: str) -> float:
        return self.total(name) / self.total("floor")


def forward_traffic(kernel_size: int = 3, head_dim: int = 24) -> ForwardTraffic:
    """The count for kernel ``kernel_size`` and head size ``head_dim`` (DilateFormer: 3 and 24).

    - floor: read q, k and v (3), write the output (1);
    - fused: one ``bmm`` per window row reads q (k times) and K (up to k*k times); the
      (k*k, N) logits, k*k/d of N*d, are written, then read and written again by the scaling,
      the softmax and the padding mask (7 k*k/d); the weighted sum is one ``mul`` (read V,
      write the output) and k*k - 1 ``addcmul_`` (read the output and V, write the output);
    - cpp: read q, k, v once (the cache keeps the rows that neighbouring image rows share),
      write the output, and write the (k*k, N) weights for the backward (k*k/d).
    """
    check_kernel_size(kernel_size)
    check_positive_int(head_dim, "head_dim")
    kk, d = kernel_size * kernel_size, head_dim
    parts = {
        "floor": (("read q, k, v", 3.0), ("write the output", 1.0)),
        "fused": (
            ("dot products: q and K read", float(kernel_size + kk)),
            ("logits: written, scaled, softmax, masked", 7 * kk / d),
            ("weighted sum: k*k passes over the output", float(2 + 3 * (kk - 1))),
        ),
        "cpp": (("read q, k, v", 3.0), ("write the output", 1.0), ("write the weights", kk / d)),
    }
    return ForwardTraffic(kernel_size, head_dim, parts, {"floor": 2, "cpp": 4 * kk})


def plot_forward_traffic(kernel_size: int = 3, head_dim: int = 24) -> Figure:
    """One horizontal stacked bar per implementation (the floor on top), each part labelled,
    the total and its ratio to the floor at the bar's end.

    Artists: ``"traffic-<name>"`` on every segment of that implementation's bar.
    """
    count = forward_traffic(kernel_size, head_dim)
    names = list(count.parts)
    fig = Figure(figsize=(8.4, 3.4), dpi=80)
    ax = fig.subplots()
    widest = max(count.total(name) for name in names)
    legend = {}
    for y, name in enumerate(names):
        left = 0.0
        for what, amount in count.parts[name]:
            (bar,) = ax.barh(y, amount, left=left, color=_PART_COLORS[what], edgecolor="white")
            bar.set_gid(f"traffic-{name}")
            legend.setdefault(what, bar)
            if amount >= 0.12 * widest:
                ax.text(left + amount / 2, y, f"{amount:.1f}", ha="center", va="center", fontsize=7)
            left += amount
        ax.text(left, y, f"  {left:.1f} N·d = {count.vs_floor(name):.1f}x the floor", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.set_ylim(len(names) - 0.5, -0.5)  # the floor on top
    ax.set_xlim(0, widest * 1.3)
    ax.set_xlabel("memory traffic of one forward pass, in N·d numbers (a count, an upper bound)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(f"kernel {kernel_size}, head size {head_dim}: the floor reads q, k, v and writes the output once",
                 fontsize=9)
    fig.legend(list(legend.values()), list(legend),
               loc="lower center", ncol=3, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.06))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.38)
    _footer(fig, _call_text("plot_forward_traffic", kernel_size=kernel_size, head_dim=head_dim))
    return fig
