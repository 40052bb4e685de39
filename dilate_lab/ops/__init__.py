"""The SWDA implementations, one module each, and the registry that chooses among them.

- ``registry``: ``register``, ``choose_impl``, ``explain_choice``, ``available_impls``.
- ``reference``: ``"naive"`` (Python loops), ``"unfold"`` (the paper), ``"shift"``.
- ``fused``: ``"fused"``, a PyTorch operator with a hand-written backward, in plain PyTorch (any device).
- ``cpp`` and ``cpp_build``: ``"cpp"``, the compiled CPU kernel in ``csrc/``.
- ``flex``: ``"flex"``, FlexAttention on CUDA.
- ``triton`` and ``triton_kernels``: ``"triton"``, one fused Triton kernel on CUDA (any
  per-head dilations in one launch).

Importing this package registers them all, in the order above.
"""

from . import reference, fused, cpp, flex, triton  # noqa: F401  (each registers itself)
from .registry import (
    ImplChoice,
    SwdaImpl,
    available_impls,
    choose_impl,
    explain_choice,
    get_impl,
    impl_names,
    register,
)

__all__ = [
    "ImplChoice",
    "SwdaImpl",
    "available_impls",
    "choose_impl",
    "explain_choice",
    "get_impl",
    "impl_names",
    "register",
]
