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

__all__ = ["TracedTensor", "record", "trace_tensors"]


@dataclass(frozen=True)
class TracedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int
    note: str = ""


_active: list[list[TracedTensor]] = []


def record(name: str, tensor: torch.Tensor, note: str = "") -> torch.Tensor:
    """Store ``tensor``'s shape under ``name`` if a trace is active; return the tensor unchanged."""
    if _active:
        _active[-1].append(
            TracedTensor(
                name,
                tuple(tensor.shape),
                tensor.dtype,
                tensor.numel() * tensor.element_size(),
                note,
            )
        )
    return tensor


@contextlib.contextmanager
def trace_tensors():
    """Collect every ``record`` call made inside the block, in order."""
    steps: list[TracedTensor] = []
    _active.append(steps)
    try:
        yield steps
    finally:
        _active.pop()
