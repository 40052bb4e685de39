"""The official MSDA forward pass, one step at a time, beside the paper (lesson 04).

The official DilateFormer repository (JIAOJIAYUASD/dilateformer, models/dilateformer.py)
computes MSDA in two classes. ``MultiDilatelocalAttention.forward`` makes Q, K and V with
one 1x1 convolution, cuts them into one group of heads per dilation, hands each group to a
``DilateAttention``, merges the groups and applies a Linear. ``DilateAttention.forward`` is
SWDA in the unfold form of lesson 03. This module restates both forward passes in the
course's own code, step for step and in the official layout (channels first inside the
attention: B, C, H, W), and records after every step:

- what the step does, in words;
- the part of the paper it implements: eq. (3) (each query's softmax over its dilated
  window), eq. (4) (SWDA of group i with its own dilation r_i; the paper writes it per head,
  the code per group of ``num_heads / n`` heads sharing r_i), eq. (5) (concatenation, Linear);
- the shape the paper's symbols predict (``"B, h, N, 1, d"``), checked against the tensor;
- which of the three circulating bugs (``dilate_lab.course.bugs``) sits at that step.

One step differs from the official code on purpose: the groups' outputs are stacked into a
new tensor, where the official code writes them in place into a view of its own input
(bug 1). Dropout is left out (the official default is 0; in eval mode it does nothing).

Symbols: B batch, H x W map, N = H*W pixels, C channels, n = len(dilation) groups,
h = heads per group, d = head_dim, k = kernel_size.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._checks import check_dilations, check_head_split, check_kernel_size, check_positive_int

__all__ = [
    "BUG_NOTES",
    "ShapeCheck",
    "Step",
    "annotated_dilate_attention",
    "annotated_msda",
    "dims_to_shape",
    "format_steps",
    "symbol_sizes",
]

BUG_NOTES = {
    1: "in place: the official code writes x[i] = h_i into a view of its input, the tensor "
       "the qkv convolution saved for backward -> backward() raises (official issues #2, #13)",
    2: "detach: a copied 'fix' detaches q, k, v here -> backward runs, but the qkv "
       "convolution never gets a gradient",
    3: "fixed rate: a port unfolds with dilation 1 here for every group -> r_i is silently ignored",
}
"""Where each circulating bug sits, by its number in lesson 04 (``Step.bug``)."""


@dataclass(frozen=True)
class Step:
    """One step of the annotated forward pass."""

    what: str
    """What the step does, in words."""
    paper: str
    """The symbol or equation of the paper that the step computes."""
    dims: str
    """The shape after the step, in the paper's symbols: ``"B, h, N, 1, d"``."""
    shape: tuple[int, ...]
    """The shape the tensor really had (equal to ``dims`` evaluated, or the step raised)."""
    group: int | None = None
    """The group of heads (0 .. n-1) for the steps of ``DilateAttention``, else None."""
    dilation: int | None = None
    """That group's dilation r_i."""
    bug: int = 0
    """The circulating bug (1, 2 or 3, see ``BUG_NOTES``) that sits at this step; 0 for none."""


_TOKEN = re.compile(r"\d+|[A-Za-z_]\w*|\S")


def _dimension(term: str, sizes: Mapping[str, int], dims: str) -> int:
    """One entry of ``dims`` (``"C/n*k*k"``), evaluated left to right."""
    tokens = _TOKEN.findall(term)
    allowed = f"integers and the symbols {', '.join(sizes)}, joined by * and /"
    if len(tokens) % 2 == 0:
        raise ValueError(f"dims must be comma-separated products like 'C/n*k*k' ({allowed}); got {dims!r}")
    value = 1
    for position in range(0, len(tokens), 2):
        name, operator = tokens[position], "*" if position == 0 else tokens[position - 1]
        if operator not in "*/":
            raise ValueError(f"dims may join symbols with * and / only; got {operator!r} in {dims!r}")
        if name.isdigit():
            operand = int(name)
        elif name in sizes:
            operand = sizes[name]
        else:
            raise ValueError(f"dims may use {allowed}; got {name!r} in {dims!r}")
        if operator == "*":
            value *= operand
        elif operand == 0 or value % operand:
            raise ValueError(f"dims {dims!r}: {value} is not divisible by {name} = {operand}")
        else:
            value //= operand
    return value


def dims_to_shape(dims: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """The shape that ``dims`` (``"B, h, N, 1, d"``) names, with the symbols' ``sizes``."""
    if not isinstance(dims, str) or not dims.strip():
        raise ValueError(f"dims must be a non-empty string like 'B, h, N, 1, d'; got {dims!r}")
    return tuple(_dimension(term, sizes, dims) for term in dims.split(","))


def symbol_sizes(x: torch.Tensor, num_heads: int, kernel_size: int, dilation: Sequence[int]) -> dict[str, int]:
    """The size of every symbol the shapes use, for a channels-last input ``x`` (B, H, W, C)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a channels-last map (B, H, W, C); got {shape}")
    B, H, W, C = x.shape
    check_positive_int(num_heads, "num_heads")
    check_kernel_size(kernel_size)
    dilation = check_dilations(dilation)
    check_head_split(C, num_heads, dilation)
    n = len(dilation)
    return {"B": B, "H": H, "W": W, "N": H * W, "C": C, "n": n, "h": num_heads // n,
            "d": C // num_heads, "k": kernel_size}


class ShapeCheck:
    """Checks each step's shape against the paper's symbols, keeps the steps, returns the tensor.

    ``check = ShapeCheck(sizes)``, then ``y = check(y, "B, h, N, 1, d", ...)`` after each line:
    an AssertionError if the shape is not the one the symbols name. With ``echo=True`` every
    check prints ``dims = shape``.
    """

    def __init__(self, sizes: Mapping[str, int], echo: bool = False):
        self.sizes = dict(sizes)
        self.echo = echo
        self.steps: list[Step] = []

    def __call__(self, tensor: torch.Tensor, dims: str, what: str = "", paper: str = "",
                 bug: int = 0, group: int | None = None, dilation: int | None = None) -> torch.Tensor:
        if bug not in (0, *BUG_NOTES):
            raise ValueError(f"bug must be 0 (none) or one of {sorted(BUG_NOTES)}; got {bug!r}")
        expected, actual = dims_to_shape(dims, self.sizes), tuple(tensor.shape)
        if actual != expected:
            raise AssertionError(f"{what or 'step'}: shape {actual}, but ({dims}) = {expected}")
        self.steps.append(Step(what, paper, dims, actual, group, dilation, bug))
        if self.echo:
            print(f"{dims:<20} = {actual}")
        return tensor


def _unchecked(tensor, *args, **kwargs):
    return tensor


def annotated_dilate_attention(q, k, v, head_dim: int, kernel_size: int, dilation: int, scale: float,
                               check=None, group: int | None = None) -> torch.Tensor:
    """``DilateAttention.forward``: SWDA of one group, q, k, v (B, C/n, H, W) -> (B, H, W, C/n).

    ``check`` (a ``ShapeCheck``) checks and records every step; None checks nothing.
    """
    check = check or _unchecked
    at = {"group": group, "dilation": dilation}
    B, channels, H, W = q.shape  # channels = C/n: the h heads of this group
    heads, window, N = channels // head_dim, kernel_size * kernel_size, H * W
    padding = dilation * (kernel_size // 2)  # zero padding keeps one window per pixel
    q = check(q.reshape(B, heads, head_dim, 1, N).permute(0, 1, 4, 3, 2), "B, h, N, 1, d",
              "queries: one row per pixel, head", "q_ij", **at)  # B, h, N, 1, d
    k = check(F.unfold(k, kernel_size, dilation=dilation, padding=padding), "B, C/n*k*k, N",
              f"unfold K: k x k window, {dilation} apart", f"K_r, r = {dilation}, zero-padded",
              bug=3, **at)  # B, C/n*k*k, N: rows are (h, d, k*k)
    k = check(k.reshape(B, heads, head_dim, window, N).permute(0, 1, 4, 2, 3), "B, h, N, d, k*k",
              "keys of each query's window", "K_r^T", **at)  # B, h, N, d, k*k
    attn = check((q @ k) * scale, "B, h, N, 1, k*k",
                 "one logit per window position", "q_ij K_r^T / sqrt(d)", **at)  # B, h, N, 1, k*k
    attn = check(attn.softmax(dim=-1), "B, h, N, 1, k*k",
                 "softmax over the k*k positions", "softmax(...), eq. (3)", **at)  # B, h, N, 1, k*k
    v = check(F.unfold(v, kernel_size, dilation=dilation, padding=padding), "B, C/n*k*k, N",
              "unfold V: the same windows", f"V_r, r = {dilation}, zero-padded", bug=3, **at)  # B, C/n*k*k, N
    v = check(v.reshape(B, heads, head_dim, window, N).permute(0, 1, 4, 3, 2), "B, h, N, k*k, d",
              "values of each query's window", "V_r", **at)  # B, h, N, k*k, d
    out = check(attn @ v, "B, h, N, 1, d",
                "weighted sum of the values", "x_ij, eq. (3)", **at)  # B, h, N, 1, d
    out = out.transpose(1, 2).reshape(B, H, W, channels)  # B, N, h, 1, d -> B, H, W, C/n
    return check(out, "B, H, W, C/n", "heads side by side, channels last",
                 f"h_{group + 1}, eq. (4)" if group is not None else "h_i, eq. (4)", **at)


def annotated_msda(module, x: torch.Tensor, echo: bool = False) -> tuple[torch.Tensor, list[Step]]:
    """``MultiDilatelocalAttention.forward`` with the weights of ``module``: (B, H, W, C) -> (B, H, W, C).

    ``module`` is a ``MultiDilateAttention`` (or any module with its attributes and its
    ``qkv``/``proj`` parameters) with zero padding. Returns the output and every ``Step``.
    """
    if getattr(module, "padding", "zeros") != "zeros":
        raise ValueError(f"module must zero-pad like the official code (padding='zeros'); got {module.padding!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != module.dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be channels-last (B, H, W, C) with C = module.dim = {module.dim}; got {shape}")
    sizes = symbol_sizes(x, module.num_heads, module.kernel_size, module.dilation)
    check = ShapeCheck(sizes, echo=echo)
    B, H, W, C = x.shape
    n = len(module.dilation)
    x = check(x.permute(0, 3, 1, 2), "B, C, H, W", "channels first, for the 1x1 conv", "X")  # B, C, H, W
    qkv = check(module.qkv(x), "B, 3*C, H, W", "one 1x1 conv makes Q, K and V",
                "Q, K, V (linear maps of X)")  # B, 3*C, H, W: channels [q | k | v]
    qkv = qkv.reshape(B, 3, n, C // n, H, W).permute(2, 1, 0, 3, 4, 5)  # n, 3, B, C/n, H, W
    qkv = check(qkv, "n, 3, B, C/n, H, W", "q, k, v each cut into n groups",
                "Q_i, K_i, V_i, eq. (4)")
    outputs = []
    for i, r in enumerate(module.dilation):
        q, k, v = qkv[i]  # each B, C/n, H, W
        check(q, "B, C/n, H, W", f"group {i}'s q, k, v (each)",
              f"Q_{i + 1}, K_{i + 1}, V_{i + 1}", bug=2, group=i, dilation=r)
        outputs.append(annotated_dilate_attention(q, k, v, module.head_dim, module.kernel_size, r,
                                                  module.scale, check, group=i))  # B, H, W, C/n
    x = check(torch.stack(outputs), "n, B, H, W, C/n", "groups' outputs, in a new tensor",
              "h_1, ..., h_n", bug=1)  # n, B, H, W, C/n
    x = x.permute(1, 2, 3, 0, 4).reshape(B, H, W, C)  # B, H, W, n, C/n -> B, H, W, C
    x = check(x, "B, H, W, C", "groups side by side (channels)", "Concat[h_1, ..., h_n], eq. (5)")
    x = check(module.proj(x), "B, H, W, C", "proj: a Linear over channels", "Linear(Concat), eq. (5)")
    return x, check.steps


def format_steps(steps: Sequence[Step], groups: Sequence[int] | None = None) -> str:
    """The steps as a text table (step | paper | shape in symbols | shape), bugs marked.

    ``groups``: the groups whose steps are listed (all when None); the others are summed up
    in one line, since every group makes the same shapes. Groups count from 0 as in the
    code; the paper counts heads from 1 (group 0 computes the paper's h_1).
    """
    row = "{:<38} {:<30} {:<18} {}"
    lines = [row.format("step", "paper", "shape", "").rstrip(), "MultiDilatelocalAttention.forward"]
    skipped: dict[int, int | None] = {}
    current = None
    for step in steps:
        if step.group is not None and groups is not None and step.group not in groups:
            skipped[step.group] = step.dilation
            continue
        if step.group is not None and step.group != current:
            lines.append(f"  DilateAttention.forward, group {step.group} (dilation {step.dilation})")
        elif step.group is None and current is not None and skipped:
            lines.append(f"  (groups {', '.join(map(str, skipped))}: the same steps, "
                         f"dilations {', '.join(map(str, skipped.values()))})")
        current = step.group
        indent = "    " if step.group is not None else "  "
        mark = f"  <- bug {step.bug}" if step.bug else ""
        lines.append(row.format(indent + step.what, step.paper, step.dims, str(step.shape)) + mark)
    shown = sorted({step.bug for step in steps if step.bug})
    if shown:
        lines.append("bugs:")
        for bug in shown:
            lines += textwrap.wrap(BUG_NOTES[bug], 96, initial_indent=f"  {bug}. ", subsequent_indent="     ")
    return "\n".join(lines)
