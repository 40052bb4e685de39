"""A real photograph for the figures, without downloading anything.

Matplotlib ships a portrait of Grace Hopper (``grace_hopper.jpg``, 600 x 512
pixels, in its ``mpl-data/sample_data`` folder). The explorers draw windows over
it and the attention viewer feeds it through a DilateFormer block, so that a
learner sees attention on a picture rather than on random numbers.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from matplotlib import cbook
from PIL import Image

from .._checks import check_positive_int

__all__ = ["SAMPLE_IMAGE_NAME", "load_sample_image", "sample_image_tensor"]

SAMPLE_IMAGE_NAME = "grace_hopper.jpg"
"""The file, in matplotlib's bundled sample data, that these helpers load."""


@functools.lru_cache(maxsize=8)
def _resized_pixels(height: int, width: int) -> np.ndarray:
    """Decode and resize once per size: both are slow next to a widget's 0.2 s budget."""
    with cbook.get_sample_data(SAMPLE_IMAGE_NAME) as handle:
        photo = Image.open(handle).convert("RGB")
        # Image.resize takes (width, height); LANCZOS keeps a small copy sharp
        photo = photo.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(photo, dtype=np.float32) / 255.0  # height, width, 3 in [0, 1]
    pixels.setflags(write=False)  # shared by the cache: nobody may change it
    return pixels


def load_sample_image(height: int = 64, width: int | None = None) -> np.ndarray:
    """Matplotlib's bundled photograph of Grace Hopper, resized, as float32 (height, width, 3) in [0, 1].

    ``width`` defaults to ``height`` (a square crop is not taken: the portrait is
    squeezed a little, which is harmless for showing windows on it). The array
    is a fresh copy, so the caller may modify it.

    >>> load_sample_image(32).shape
    (32, 32, 3)
    """
    width = height if width is None else width
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    return _resized_pixels(int(height), int(width)).copy()


def sample_image_tensor(height: int = 224, width: int | None = None, device=None) -> torch.Tensor:
    """The same photograph as a (1, 3, height, width) float32 tensor in [0, 1], ready for a conv stem."""
    pixels = load_sample_image(height, width)  # H, W, 3
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # 1, 3, H, W
    return tensor.contiguous().to(device)
