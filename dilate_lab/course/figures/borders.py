"""The border: the paper's zero padding, masking the padded keys, and NATTEN's window shifted inward.

- ``shifted_window``: the k*k positions NATTEN's neighbourhood attention gives a
  query; inside the map the dilated window of SWDA, at the border shifted inward.
- ``border_attention``: the softmax weights of one query under one border rule.
- ``border_modes`` / ``plot_border_modes``: the three rules side by side.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from ..._checks import check_dilation, check_kernel_size, check_positive_int, check_seed
from ...geometry import dilated_window
from ._style import _BEYOND_COLOR, _call_text, _cells, _check_query, _draw_map, _footer, _mark_query, _no_ticks

__all__ = [
    "BORDER_MODES",
    "shifted_window",
    "BorderAttention",
    "border_attention",
    "border_modes",
    "plot_border_modes",
]

BORDER_MODES = ("zeros", "mask", "shifted")
"""The border rules compared by ``plot_border_modes``: the paper's zero padding,
masking the padded keys out, and NATTEN's window shifted inward."""

_MODE_TITLES = {"zeros": "zero padding (paper)", "mask": "masking", "shifted": "NATTEN: shifted inward"}


def _shifted_start(index: int, length: int, kernel_size: int, dilation: int) -> int:
    """First position, along one axis, of NATTEN's window for the query at ``index``.

    NATTEN keeps the window inside the map: along an axis, the positions with
    the query's residue modulo ``dilation`` form a sub-grid; the window is k
    consecutive sub-grid positions, centred on the query where it fits and
    pushed inward at the border.
    """
    residue = index % dilation
    subgrid_length = (length - residue + dilation - 1) // dilation
    centred = index // dilation - kernel_size // 2
    start = min(max(centred, 0), subgrid_length - kernel_size)
    return residue + start * dilation


def shifted_window(
    row: int, col: int, kernel_size: int, dilation: int, height: int, width: int
) -> list[tuple[int, int]]:
    """The k*k positions NATTEN's neighbourhood attention gives the query at (row, col).

    Inside the map it is exactly the dilated window of SWDA; near a border it is
    shifted inward so that every position is on the map and no padding is needed.
    Like NATTEN, it needs ``kernel_size * dilation <= height`` and ``<= width``.
    Positions are in window (row-major) order.
    """
    _check_query(row, col, height, width)
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    for name, size in (("height", height), ("width", width)):
        if kernel_size * dilation > size:
            raise ValueError(
                f"NATTEN's shifted window needs kernel_size * dilation <= {name}; "
                f"got {kernel_size} * {dilation} = {kernel_size * dilation} > {name} = {size}"
            )
    top = _shifted_start(row, height, kernel_size, dilation)
    left = _shifted_start(col, width, kernel_size, dilation)
    steps = range(kernel_size)
    return [(top + a * dilation, left + b * dilation) for a in steps for b in steps]


@dataclass(frozen=True)
class BorderAttention:
    """The softmax weights of one query under one border rule."""

    mode: str
    positions: tuple[tuple[int, int], ...]
    """Every position that takes part in the softmax, in window order (may lie beyond the border)."""
    weights: np.ndarray
    """Softmax weight of each position, summing to 1."""
    outside: tuple[bool, ...]

    @property
    def padding_mass(self) -> float:
        """The share of the softmax that goes to zero-padded keys."""
        return float(sum(w for w, out in zip(self.weights, self.outside) if out))


def _mode_positions(row, col, kernel_size, dilation, height, width, mode):
    """The positions that take part in the softmax under ``mode``, and which of them are padding."""
    if mode == "shifted":
        positions = shifted_window(row, col, kernel_size, dilation, height, width)
        return positions, [False] * len(positions)
    window = dilated_window(row, col, kernel_size, dilation, height, width)
    if mode == "mask":
        return window.inside_positions, [False] * window.n_inside
    return list(window.positions), list(window.outside)


def _check_map_tensors(queries, keys, height: int, width: int) -> None:
    for name, tensor in (("queries", queries), ("keys", keys)):
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape[:2]) != (height, width) or tensor.dim() != 3:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be a tensor (height, width, head_dim) = ({height}, {width}, d), got {shape}")


def border_attention(
    row: int,
    col: int,
    kernel_size: int,
    dilation: int,
    height: int,
    width: int,
    mode: str = "zeros",
    seed: int = 0,
    head_dim: int = 8,
    queries: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
) -> BorderAttention:
    """Softmax weights of the query at (row, col) over its window, under one border rule.

    ``queries`` and ``keys``: (height, width, head_dim) tensors; by default seeded
    random vectors (``seed``, ``head_dim`` channels). Logits are
    ``q . k / sqrt(head_dim)``, as in ``swda``. ``mode``:
    ``"zeros"``: the paper; positions beyond the border are zero keys with logit
    exactly 0, and they keep their share of the softmax. ``"mask"``: they are left
    out and the rest renormalised. ``"shifted"``: NATTEN's window, shifted inward,
    so that all k*k keys are real.
    """
    if mode not in BORDER_MODES:
        raise ValueError(f"mode must be one of {BORDER_MODES}, got {mode!r}")
    check_positive_int(head_dim, "head_dim")
    positions, outside = _mode_positions(row, col, kernel_size, dilation, height, width, mode)
    if queries is None or keys is None:
        check_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        queries = torch.randn(height, width, head_dim, generator=generator, dtype=torch.float64)
        keys = torch.randn(height, width, head_dim, generator=generator, dtype=torch.float64)
    _check_map_tensors(queries, keys, height, width)
    head_dim = queries.shape[-1]
    query = queries[row, col]  # head_dim
    logits = torch.stack(
        [
            query.new_zeros(()) if out else (query * keys[r, c]).sum() * head_dim**-0.5
            for (r, c), out in zip(positions, outside)
        ]
    )  # n
    weights = torch.softmax(logits, dim=0).numpy()
    return BorderAttention(mode, tuple(positions), weights, tuple(outside))


def border_modes(
    row: int, col: int, kernel_size: int, dilation: int, height: int, width: int, seed: int = 0
) -> dict[str, BorderAttention | str]:
    """``border_attention`` of one query under every rule of ``BORDER_MODES``, same seeded q and k.

    Where the map is too small for NATTEN's window (kernel_size * dilation > its
    side) the ``"shifted"`` entry is the message saying why, not an error: the
    other two rules still apply.
    """
    check_seed(seed)
    _check_query(row, col, height, width)
    results: dict[str, BorderAttention | str] = {}
    for mode in BORDER_MODES:
        try:
            results[mode] = border_attention(row, col, kernel_size, dilation, height, width, mode, seed)
        except ValueError as error:
            if mode != "shifted":
                raise
            results[mode] = str(error)
    return results


def plot_border_modes(
    row: int = 0,
    col: int = 1,
    kernel_size: int = 3,
    dilation: int = 2,
    height: int = 10,
    width: int = 10,
    seed: int = 0,
) -> Figure:
    """Zero padding vs masking vs NATTEN's shifted window for one query near the border.

    Each panel colours the window positions by their softmax weight (seeded random
    queries and keys) and says how much of the softmax goes to padding. Weights
    are printed in the cells (as percentages) for kernels up to 5, the query's
    own weight included: the query is marked by a gold outline and a small star
    in the corner of its cell, so that its number stays readable.

    Artists: ``"zeros-window"``, ``"mask-window"``, ``"shifted-window"``
    (PatchCollections, one square per position that takes part in the softmax,
    coloured by weight: ``get_array()`` holds the weights), ``"query"`` and
    ``"query-cell"`` in each panel. If the map is too small for NATTEN
    (kernel_size * dilation > map size), its panel says so, in a box wrapped to
    the panel, instead of drawing.
    """
    results = border_modes(row, col, kernel_size, dilation, height, width, seed)
    margin = dilation * (kernel_size // 2)
    fig = Figure(figsize=(10.2, 4.0), dpi=80)
    annotate = kernel_size <= 5
    for i, mode in enumerate(BORDER_MODES):
        ax = fig.add_axes((0.03 + i * 0.33, 0.12, 0.29, 0.7))
        _draw_map(ax, height, width, margin)
        if i > 0:  # same coordinates as the first panel
            _no_ticks(ax)
        _mark_query(ax, row, col, corner=annotate)
        result = results[mode]
        if isinstance(result, str):
            _draw_impossible(ax, mode, result)
        else:
            _draw_weights(ax, result, annotate)
    fig.suptitle(
        f"query ({row}, {col}), kernel {kernel_size}, dilation {dilation}; weights in %, seeded random q and k",
        fontsize=9, y=0.98,
    )
    _footer(
        fig,
        _call_text("plot_border_modes", row=row, col=col, kernel_size=kernel_size, dilation=dilation,
                   height=height, width=width, seed=seed),
        y=0.02,
    )
    return fig


def _draw_impossible(ax, mode: str, message: str) -> None:
    """The panel of a rule that does not apply here: its title and why, in a box."""
    ax.set_title(f"{_MODE_TITLES[mode]}\nnot possible here", fontsize=9, y=1.01)
    # one clause a paragraph, each wrapped to the panel's width (about 34 characters at 7 pt)
    text = "\n".join(textwrap.fill(part, 34) for part in message.split("; "))
    ax.text(
        0.5, 0.5, text + "\n(make the map larger)", transform=ax.transAxes, ha="center",
        va="center", fontsize=7, clip_on=True, bbox=dict(facecolor="white", edgecolor="0.5"),
    )


def _draw_weights(ax, result: BorderAttention, annotate: bool) -> None:
    """The positions of one rule coloured by softmax weight, padded ones hatched, weights in % if ``annotate``."""
    cells = _cells(result.positions, f"{result.mode}-window", inset=0.04, cmap="viridis", edgecolor="black",
                   lw=0.5, zorder=2)
    cells.set_array(result.weights)
    cells.set_clim(0.0, max(float(result.weights.max()), 1e-9))
    if result.mode == "zeros":
        outside_cells = [p for p, out in zip(result.positions, result.outside) if out]
        ax.add_collection(
            _cells(outside_cells, "beyond-border", inset=0.04, facecolor="none", edgecolor=_BEYOND_COLOR,
                   hatch="///", lw=1.0, zorder=3)
        )
    ax.add_collection(cells)
    if annotate:
        for (r, c), w in zip(result.positions, result.weights):
            ax.text(c + 0.08, r + 0.08, f"{100 * w:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if w < 0.6 * result.weights.max() else "black", zorder=8)
    n_keys = len(result.positions) - sum(result.outside)
    ax.set_title(
        f"{_MODE_TITLES[result.mode]}\n{n_keys} real keys; {100 * result.padding_mass:.1f}% of the softmax on padding",
        fontsize=9, y=1.01,
    )
