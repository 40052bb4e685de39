"""What the benchmark runs: the layouts (one MSDA layer's attention each), their inputs, the implementations.

A ``Layout`` is DilateFormer-Tiny's attention at one stage: ``len(dilations)``
groups of (batch, heads, H, W, head_dim) tensors, each a ``swda`` call. A
``_Case`` holds one layout's inputs on one device and the three calls the
benchmark times: forward, forward+backward, and the memory-traffic floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..functional import ALL_IMPLS, NAIVE_MAX_STEPS, swda
from ..ops import available_impls
from ..ops.cpp_build import compiled_available
from ..ops.flex import flex_available
from .measure import _progress

__all__ = [
    "Layout",
    "LAYOUTS",
    "QUICK_LAYOUTS",
    "GPU_LAYOUTS",
    "QUICK_GPU_LAYOUTS",
    "SCALING_SIDES",
    "QUICK_SCALING_SIDES",
]


@dataclass(frozen=True)
class Layout:
    """One MSDA layer's attention: ``len(dilations)`` groups of (batch, heads, H, W, head_dim)."""

    name: str
    batch: int
    height: int
    width: int
    heads_per_group: int
    head_dim: int = 24
    dilations: tuple[int, ...] = (1, 2, 3)
    kernel_size: int = 3

    @property
    def channels(self) -> int:
        return len(self.dilations) * self.heads_per_group * self.head_dim

    def describe(self) -> str:
        return (
            f"B{self.batch} C{self.channels} {self.height}x{self.width}: "
            f"{len(self.dilations)} groups x {self.heads_per_group} head(s) x {self.head_dim}, "
            f"r={','.join(map(str, self.dilations))}, k={self.kernel_size}"
        )


LAYOUTS = (
    Layout("stage1", batch=8, height=56, width=56, heads_per_group=1),
    Layout("stage2", batch=8, height=28, width=28, heads_per_group=2),
)
"""DilateFormer-Tiny at 224 x 224: stage 1 (C = 72, 3 heads) and stage 2 (C = 144, 6 heads)."""

QUICK_LAYOUTS = (
    Layout("quick1", batch=1, height=8, width=8, heads_per_group=1, head_dim=8),
    Layout("quick2", batch=1, height=6, width=5, heads_per_group=2, head_dim=8),
)
"""Tiny layouts for ``--quick``: they check that everything runs, not how fast."""

GPU_LAYOUTS = LAYOUTS + (
    Layout("128x128", batch=8, height=128, width=128, heads_per_group=1),
    Layout("256x256", batch=8, height=256, width=256, heads_per_group=1),
)
"""The GPU suite: stage 1 and stage 2, then stage 1's batch, heads and head_dim
(B = 8, 3 heads of 24) on 128 x 128 and 256 x 256 maps, where the kernels' time
is far above the fixed cost of a launch (stage 1 in bfloat16 moves only 14 MB)."""

QUICK_GPU_LAYOUTS = (
    QUICK_LAYOUTS[0],
    Layout("quick16", batch=1, height=16, width=16, heads_per_group=1, head_dim=8),
)
"""Tiny layouts for the GPU suite under ``--quick`` (and its tests on the CPU)."""

SCALING_SIDES = (28, 56, 84, 112)
QUICK_SCALING_SIDES = (6, 8, 12)


class _Case:
    """Inputs of one layout on one device, and the three calls to time."""

    def __init__(self, layout: Layout, device: torch.device, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        shape = (layout.batch, layout.heads_per_group, layout.height, layout.width, layout.head_dim)
        self.layout = layout
        self.groups = []
        for _ in layout.dilations:
            q, k, v, grad = (torch.randn(shape, generator=gen).to(device) for _ in range(4))
            self.groups.append(([t.requires_grad_(True) for t in (q, k, v)], grad))
        self.floor_out = [torch.empty(shape, device=device) for _ in layout.dilations]

    def _outputs(self, impl):
        lay = self.layout
        return [
            swda(q, k, v, lay.kernel_size, r, impl=impl)
            for ((q, k, v), _), r in zip(self.groups, lay.dilations)
        ]

    def forward(self, impl) -> None:
        with torch.no_grad():
            self._outputs(impl)

    def forward_backward(self, impl) -> None:
        outs = self._outputs(impl)
        inputs = [t for qkv, _ in self.groups for t in qkv]
        torch.autograd.grad(outs, inputs, [grad for _, grad in self.groups])

    def floor(self) -> None:
        for ((q, k, v), _), out in zip(self.groups, self.floor_out):
            torch.addcmul(q.detach(), k.detach(), v.detach(), out=out)


class _HeadsCase:
    """One layout's attention as one ``swda`` call over all its heads, in one dtype.

    The GPU suite's case. All ``len(dilations) * heads_per_group`` heads sit in one
    (B, heads, H, W, head_dim) tensor and ``dilation`` is the per-head tuple, as an
    MSDA layer would call it: ``triton`` runs every dilation group in one launch;
    the others get one call per group from ``swda`` (and a concatenation), which
    is what a practitioner calling them would get. Inputs are drawn in float32 on
    the CPU (the same numbers on every device) and then cast to ``dtype``.
    """

    def __init__(self, layout: Layout, device: torch.device, dtype: torch.dtype, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        heads = len(layout.dilations) * layout.heads_per_group
        shape = (layout.batch, heads, layout.height, layout.width, layout.head_dim)
        q, k, v, grad = (torch.randn(shape, generator=gen).to(device, dtype) for _ in range(4))
        self.layout = layout
        self.qkv = [t.requires_grad_(True) for t in (q, k, v)]
        self.grad = grad
        self.dilation = tuple(r for r in layout.dilations for _ in range(layout.heads_per_group))

    @property
    def elements(self) -> int:
        """Elements of one of q, k, v, out (and of each gradient)."""
        return self.grad.numel()

    @property
    def element_size(self) -> int:
        return self.grad.element_size()

    def _output(self, impl) -> torch.Tensor:
        q, k, v = self.qkv
        return swda(q, k, v, self.layout.kernel_size, self.dilation, impl=impl)

    def forward(self, impl) -> None:
        with torch.no_grad():
            self._output(impl)

    def forward_backward(self, impl) -> None:
        torch.autograd.grad(self._output(impl), self.qkv, self.grad)


def _naive_too_big(layout: Layout) -> bool:
    return layout.height * layout.width * layout.kernel_size**2 > NAIVE_MAX_STEPS


def _default_impls(device: torch.device) -> list[str]:
    """unfold, shift, fused, and the compiled kernel of the device where it runs (not naive: too slow)."""
    names = ["unfold", "shift", "fused"]
    if device.type == "cpu" and compiled_available():
        names.append("cpp")
    return names + (["flex"] if flex_available(device) else [])


def _impls_for(device: torch.device, impls, progress=None) -> list[str]:
    """The requested implementations that run on ``device``, with unfold (the baseline) first."""
    names = _default_impls(device) if impls is None else list(impls)
    known = set(ALL_IMPLS)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"impls must be among {sorted(known)}, got {unknown}")
    allowed = available_impls(device)
    for name in names:
        if name not in allowed:
            _progress(progress, f"{device.type}: {name} does not run on this device, left out")
    names = [name for name in names if name in allowed]
    return ["unfold"] + [name for name in names if name != "unfold"]


