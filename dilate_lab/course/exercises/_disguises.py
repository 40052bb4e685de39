"""Modules in disguise, so that lesson 04's bug checks must judge behaviour, not names.

A learner's check could tell ``InPlaceMultiDilateAttention`` from
``MultiDilateAttention`` by its class (``isinstance``), its name, its ``bug``
attribute, its repr or an attribute only it has (``FixedRateMultiDilateAttention.unfold``),
and pass every case of the exercise without running the module. So each check also
meets modules whose looks and behaviour disagree:

- a bug in disguise: a subclass of ``MultiDilateAttention``, named like it (or
  blandly), with the repr of a correct module and none of the buggy class's marks,
  whose forward has the bug;
- a clean module with a misleading name: a subclass of a buggy class, keeping its
  name and attributes, whose forward is correct;
- for the gradient check, a module whose qkv projection gets a gradient of zeros
  rather than None (it takes part in the graph, multiplied by zero).

Only a check that runs the module and looks at what happens gets all of them right.
"""

from __future__ import annotations

import torch

from ..bugs import (
    DetachedMultiDilateAttention,
    FixedRateMultiDilateAttention,
    InPlaceMultiDilateAttention,
    _BuggyMultiDilateAttention,
    _unfold_attention,
)
from ...nn import MultiDilateAttention

__all__ = ["disguised_bug", "misleading_name", "zero_gradient"]


def _group_outputs(module, x, dilations, cut=None):
    """Each group's attention, out of place: (B, H, W, C) -> a list of (B, H, W, C/groups).

    ``cut(qkv)`` may change the qkv tensor first (to detach it, or scale its gradient).
    """
    qkv = _BuggyMultiDilateAttention._qkv_groups(module, x.permute(0, 3, 1, 2))  # groups, 3, B, C/groups, H, W
    if cut is not None:
        qkv = cut(qkv)
    return [
        _unfold_attention(qkv[i][0], qkv[i][1], qkv[i][2], module.head_dim, module.kernel_size, r, module.scale)
        for i, r in enumerate(dilations)
    ]  # each B, H, W, C/groups


def _correct_forward(self, x: torch.Tensor) -> torch.Tensor:
    """MSDA done right, for any module with the shared attributes and parameters."""
    _BuggyMultiDilateAttention._check_input(self, x)
    return self.proj(torch.cat(_group_outputs(self, x, self.dilation), dim=-1))  # B, H, W, C


def _fixed_rate_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The fixed-rate bug without its ``unfold`` attribute: every group attends with dilation 1."""
    _BuggyMultiDilateAttention._check_input(self, x)
    return self.proj(torch.cat(_group_outputs(self, x, [1] * self.num_dilation), dim=-1))


def _zero_gradient_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Right output; the qkv projection stays in the graph but its gradient is multiplied by zero."""
    _BuggyMultiDilateAttention._check_input(self, x)
    outputs = _group_outputs(self, x, self.dilation, cut=lambda qkv: qkv.detach() + 0.0 * qkv)
    return self.proj(torch.cat(outputs, dim=-1))


_BUGGY_FORWARD = {
    InPlaceMultiDilateAttention: InPlaceMultiDilateAttention.forward,
    DetachedMultiDilateAttention: DetachedMultiDilateAttention.forward,
    FixedRateMultiDilateAttention: _fixed_rate_forward,
}


def disguised_bug(bug: type, name: str = "MultiDilateAttention") -> type:
    """A subclass of ``MultiDilateAttention`` called ``name`` whose forward has ``bug``'s bug.

    Its constructor, attributes, parameters and repr are those of the correct module;
    the buggy forward needs only what both share (``qkv``, ``proj``, ``dim`` ...).
    """
    namespace = {
        "forward": _BUGGY_FORWARD[bug],
        "_check_input": _BuggyMultiDilateAttention._check_input,
        "_qkv_groups": _BuggyMultiDilateAttention._qkv_groups,
        "__module__": MultiDilateAttention.__module__,
        "__doc__": MultiDilateAttention.__doc__,
    }
    return type(name, (MultiDilateAttention,), namespace)


def misleading_name(bug: type) -> type:
    """A subclass of the buggy class ``bug``, with its name and attributes, that is correct."""
    return type(bug.__name__, (bug,), {"forward": _correct_forward, "__module__": bug.__module__})


def zero_gradient(name: str = "MultiDilateAttention") -> type:
    """A subclass of ``MultiDilateAttention`` whose qkv weight gets a gradient of zeros, not None."""
    namespace = {
        "forward": _zero_gradient_forward,
        "_qkv_groups": _BuggyMultiDilateAttention._qkv_groups,
        "__module__": MultiDilateAttention.__module__,
    }
    return type(name, (MultiDilateAttention,), namespace)
