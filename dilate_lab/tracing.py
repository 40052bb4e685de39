"""Record the tensors a forward pass makes, by name, for the shape tracer.

Code that wants to be traced calls ``record("name", tensor)`` at the points a
learner should see. Outside a ``trace_tensors()`` block that call does nothing
but one ``if``; inside, it stores the tensor's shape, dtype and size.

>>> import torch
>>> with trace_tensors() as steps:
...     record("x", torch.zeros(2, 3))
>>> steps[0].name, steps[0].shape
('x', (2, 3))
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

__all__ = ["TracedTensor", "record", "trace_tensors", "tracing"]


@dataclass(frozen=True)
class TracedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int
    note: str = ""
    tensor: torch.Tensor | None = None
    """A detached copy of the tensor, kept only under ``trace_tensors(keep=True)``."""


_active: list[tuple[list[TracedTensor], bool]] = []


def tracing() -> bool:
    """True inside a ``trace_tensors()`` block: code may skip work only a trace would see."""
    return bool(_active)


def record(name: str, tensor: torch.Tensor, note: str = "") -> torch.Tensor:
    """Store ``tensor``'s shape under ``name`` if a trace is active; return the tensor unchanged."""
    if _active:
        steps, keep = _active[-1]
        steps.append(
            TracedTensor(
                name,
                tuple(tensor.shape),
                tensor.dtype,
                tensor.numel() * tensor.element_size(),
                note,
                tensor.detach().clone() if keep else None,
            )
        )
    return tensor


@contextlib.contextmanager
def trace_tensors(keep: bool = False):
    """Collect every ``record`` call made inside the block, in order.

    With ``keep=True`` each entry also holds a detached copy of its tensor
    (for figures that show values, e.g. attention weights).
    """
    steps: list[TracedTensor] = []
    _active.append((steps, keep))
    try:
        yield steps
    finally:
        _active.pop()
