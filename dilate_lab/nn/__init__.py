"""The attention modules, the blocks and the DilateFormer models (``torch.nn`` modules).

- ``msda``: ``MultiDilateAttention``, DilateFormer eq. (4)-(5), channels-last (B, H, W, C).
- ``attention``: ``GlobalAttention``, ordinary multi-head self-attention.
- ``layers``: ``DropPath``, ``Mlp``, ``PatchEmbed`` (the stem), ``PatchMerging``.
- ``blocks``: ``DilateBlock`` and ``GlobalBlock``, channels-first (B, C, H, W).
- ``dilateformer``: the stages, ``DilateFormer`` and ``dilateformer_tiny/small/base``.
"""

from .attention import GlobalAttention
from .blocks import DilateBlock, GlobalBlock
from .dilateformer import (
    DilateFormer,
    DilateFormerStage,
    dilateformer_base,
    dilateformer_small,
    dilateformer_tiny,
)
from .layers import MERGING_WAYS, DropPath, Mlp, PatchEmbed, PatchMerging, drop_path
from .msda import MultiDilateAttention

__all__ = [
    "MultiDilateAttention",
    "GlobalAttention",
    "DropPath",
    "drop_path",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "MERGING_WAYS",
    "DilateBlock",
    "GlobalBlock",
    "DilateFormerStage",
    "DilateFormer",
    "dilateformer_tiny",
    "dilateformer_small",
    "dilateformer_base",
]
