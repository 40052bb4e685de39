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
import threading
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


class _Traces(threading.local):
    """This thread's open ``trace_tensors()`` blocks, innermost last.

    Thread-local so that a forward pass running in another thread (a data loader, a
    second model, a web server's worker) never lands in this thread's trace, and
    never makes code here keep tensors only a trace would want.
    """

    def __init__(self):
        self.stack: list[tuple[list[TracedTensor], bool]] = []


_traces = _Traces()


def tracing() -> bool:
    """True inside a ``trace_tensors()`` block of this thread: code may skip work only
    a trace would see. Always False while ``torch.compile``/``torch.export`` trace
    a graph (a recorded shape is a Python side effect that a graph cannot hold)."""
    if torch.compiler.is_compiling():
        return False
    return bool(_traces.stack)


def record(name: str, tensor: torch.Tensor, note: str = "") -> torch.Tensor:
    """Store ``tensor``'s shape under ``name`` if a trace is active in this thread;
    return the tensor unchanged. Skipped while ``torch.compile`` traces a graph."""
    if torch.compiler.is_compiling():
        return tensor
    active = _traces.stack
    if active:
        steps, keep = active[-1]
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
    active = _traces.stack
    active.append((steps, keep))
    try:
        yield steps
    finally:
        active.pop()
