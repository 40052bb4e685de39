"""Shared test set-up.

- Tests parametrized with impl="cpp" need the compiled kernel (skipped where it cannot
  be built, unless DILATE_LAB_REQUIRE_COMPILED=1).
- ``make_qkv`` and ``out_and_grads``: the inputs and the measurement every SWDA test
  uses (``from conftest import make_qkv, out_and_grads``).
"""

import pytest
import torch

from compiled import compiled_or_skip


@pytest.fixture(autouse=True)
def _compiled_kernel_for_cpp(request):
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("impl") == "cpp":
        compiled_or_skip()


def make_qkv(shape, dtype=torch.float64, seed=0, requires_grad=False, device="cpu"):
    """Three seeded standard-normal tensors of ``shape`` (q, k, v)."""
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(shape, generator=gen, dtype=dtype).to(device).requires_grad_(requires_grad)
        for _ in range(3)
    ]


def out_and_grads(fn, q, k, v, weight):
    """fn(q, k, v) and the gradients of sum(out * weight) with respect to q, k and v."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    (out * weight).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad
