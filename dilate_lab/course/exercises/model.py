"""Lesson 05's exercises: the receptive field of stacked windows, the feature-map
sizes through DilateFormer's stages, and a DilateBlock assembled from the learner's
own pieces (its checker lives in ``block``).

In a notebook::

    from dilate_lab.course.exercises import lesson05
    lesson05.stage_shapes.check(my_stage_shapes)   # feedback
    lesson05.stage_shapes.hint()                   # a nudge
    lesson05.stage_shapes.solution()               # the worked answer

The expected shapes are measured on a real ``DilateFormer`` on the meta device,
not computed by a formula that could share the learner's mistake; the assembled
block is compared with the package's ``DilateBlock`` carrying the same weights.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import torch

from ..checking import Exercise, Incorrect, as_whole_number, call_answer
from ...geometry import downsampled_side, window_offsets
from ...nn import DilateFormer
from .block import BLOCK_HINTS, BLOCK_SOLUTION, check_dilate_block

__all__ = ["lesson05"]


def _span_by_growing(kernel_size: int, dilations) -> int:
    """Receptive field of a stack, by growing the set of reachable offsets layer by layer."""
    reach = {0}
    for dilation in dilations:
        reach = {x + dr for x in reach for dr, _ in window_offsets(kernel_size, dilation)}
    return max(reach) - min(reach) + 1


_SPAN_CASES = [(3, [1]), (3, [1, 1, 1]), (3, [1, 2, 3]), (5, [2, 2]), (3, [3, 1])]

_SPAN_MISTAKES = [  # (a wrong formula, what it gets wrong); no two agree on every case
    (lambda k, rs: sum((k - 1) * r + 1 for r in rs),
     "you added the layers' spans, (k - 1) * r + 1 each, which counts the centre pixel once per "
     "layer. Consecutive layers share it: add the reaches (k - 1) * r and count the centre once."),
    (lambda k, rs: (k - 1) * max(rs) + 1,
     "that is the span of the widest layer alone. Stacked layers add up: the next layer's window "
     "is centred on every pixel the previous one reached, so each layer widens the span."),
    (lambda k, rs: sum((k - 1) * r for r in rs),
     "off by one: the reaches (k - 1) * r add up to the distance between the outermost pixels; "
     "the span counts pixels, both ends included, so add 1."),
    (lambda k, rs: sum(k * r for r in rs),
     "one layer does not span k * r pixels: its k positions have k - 1 gaps of r pixels, so it "
     "spans (k - 1) * r + 1."),
    (lambda k, rs: 1 + sum(k * r for r in rs),
     "each layer widens the span by (k - 1) * r, not k * r: k positions have k - 1 gaps of r pixels."),
    (lambda k, rs: 1 + sum((k // 2) * r for r in rs),
     "that counts one side only: a layer reaches (k // 2) * r pixels to the left and as many to the "
     "right, so it widens the span by (k - 1) * r."),
    (lambda k, rs: math.prod((k - 1) * r + 1 for r in rs),
     "spans do not multiply: a second layer does not repeat the whole first window at each of its "
     "positions side by side, it shifts it, so the reaches add: 1 + sum((k - 1) * r)."),
]


def _check_stacked_span(fn) -> str:
    answers = [
        as_whole_number(call_answer(fn, k, rs), f"stacked_span({k}, {rs})") for k, rs in _SPAN_CASES
    ]
    expected = [_span_by_growing(k, rs) for k, rs in _SPAN_CASES]
    wrong = [i for i, (got, want) in enumerate(zip(answers, expected)) if got != want]
    if wrong:
        (k, rs), got, want = _SPAN_CASES[wrong[0]], answers[wrong[0]], expected[wrong[0]]
        why = next(
            (message for formula, message in _SPAN_MISTAKES
             if all(formula(*case) == a for case, a in zip(_SPAN_CASES, answers))),
            "each layer widens the reach by (kernel_size - 1) * dilation pixels in all.",
        )
        raise Incorrect(f"stacked_span({k}, {rs}) returned {got!r}, expected {want}: {why}")
    return "spans add: 1 + sum((k - 1) * r). Three 3x3 layers with dilations [1, 2, 3] reach 13 pixels."


_STAGES = 4
_STAGE_CASES = [(224, 72), (256, 96), (64, 72), (384, 96), (200, 72), (240, 96)]
"""(image_size, embed_dim): multiples of 32 first, then 200 and 240, where a stride-2
convolution meets an odd side (25 -> 13, 15 -> 8) and rounds up."""


@functools.lru_cache(maxsize=16)
def _stage_shapes(image_size: int, embed_dim: int) -> tuple[tuple[int, int, int], ...]:
    """(channels, height, width) entering the first block of each stage, measured on a real model.

    A DilateFormer with ``embed_dim`` (one block per stage: depth changes no shape)
    runs on PyTorch's meta device (shapes only, no memory or time). Its stem and
    stages are called directly, because ``DilateFormer.forward`` insists on sides
    that are multiples of 32 while the convolutions take any size.
    """
    model = DilateFormer(embed_dim=embed_dim, depths=(1,) * _STAGES, num_classes=0, drop_path_rate=0.0)
    model = model.to("meta").eval()
    x = torch.zeros(1, 3, image_size, image_size, device="meta")  # B, 3, H, W
    shapes = []
    with torch.no_grad():
        x = model.patch_embed(x)  # B, embed_dim, H/4, W/4 (rounded up)
        for stage in model.stages:
            shapes.append(tuple(int(n) for n in x.shape[1:]))  # C, H, W
            x = stage(x)
    return tuple(shapes)


def _pyramid(image_size: int, channels: int, divisor: int) -> list[tuple[int, int, int]]:
    """Four (channels, side, side) maps from (channels, image_size // divisor), halving (rounding
    down) and doubling: the answers of common mistakes."""
    return [
        (channels * 2**i, image_size // (divisor * 2**i), image_size // (divisor * 2**i))
        for i in range(_STAGES)
    ]


def _check_stage_shapes(fn) -> str:
    for image_size, embed_dim in _STAGE_CASES:
        got = call_answer(fn, image_size, embed_dim)
        try:
            got = [tuple(int(n) for n in shape) for shape in got]
        except (TypeError, ValueError):
            raise Incorrect(
                f"stage_shapes({image_size}, {embed_dim}) returned {got!r}: return a list of four "
                "(channels, height, width) tuples."
            ) from None
        expected = list(_stage_shapes(image_size, embed_dim))
        if got == expected:
            continue
        call = f"stage_shapes({image_size}, {embed_dim}) returned {got}, expected {expected}"
        if len(got) != _STAGES:
            raise Incorrect(f"{call}: DilateFormer has {_STAGES} stages, one shape each.")
        if got == [(h, w, c) for c, h, w in expected]:
            raise Incorrect(f"{call}: order each shape (channels, height, width), like PyTorch's (B, C, H, W).")
        if got == _pyramid(image_size, embed_dim, 1):
            raise Incorrect(
                f"{call}: the stem has two stride-2 convolutions, so stage 1 already works at 1/4 "
                "of the image side."
            )
        if [shape[1:] for shape in got] == [shape[1:] for shape in expected]:
            raise Incorrect(f"{call}: the channels double at every downsampling (embed_dim, 2x, 4x, 8x).")
        if got == _pyramid(image_size, 2 * embed_dim, 8):
            raise Incorrect(
                f"{call}: those are the maps after each stage's downsampling. The blocks of stage 1 work "
                "on the stem's output; the last stage does not downsample."
            )
        if got == _pyramid(image_size, embed_dim, 4):
            odd = next(side for _, side, _ in expected if side % 2)
            halved = downsampled_side(odd)
            raise Incorrect(
                f"{call}: a 3x3 convolution with stride 2 and padding 1 turns n pixels into "
                f"ceil(n / 2) = (n + 1) // 2, not n // 2; a side of {odd} becomes {halved}. "
                "Halve step by step, rounding up, rather than dividing the image side once."
            )
        raise Incorrect(f"{call}.")
    return (
        "each stride-2 convolution halves the side (rounding up) and each downsampling doubles the "
        "channels: the attention works on 56x56, 28x28, 14x14 and 7x7 maps of a 224x224 image (13x13 "
        "and 7x7 in the last two stages at 200), and only the first two (the large ones) use dilated windows."
    )


lesson05 = SimpleNamespace(
    stacked_span=Exercise(
        "the receptive field of stacked windows",
        _check_stacked_span,
        hints=[
            "One layer with kernel k and dilation r reaches (k - 1) * r // 2 pixels on each side.",
            "Each further layer adds its own reach to every position already reached.",
        ],
        solution='''
def stacked_span(kernel_size, dilations):
    return 1 + sum((kernel_size - 1) * r for r in dilations)
''',
    ),
    stage_shapes=Exercise(
        "feature-map sizes through the stages",
        _check_stage_shapes,
        hints=[
            "The stem divides the side by 4 (two stride-2 convolutions); every downsampling between "
            "stages halves it and doubles the channels. Stage i (from 0) has embed_dim * 2**i channels.",
            "A 3x3 convolution with stride 2 and padding 1 turns a side of n into (n + 1) // 2 (it rounds "
            "up: 25 becomes 13). Apply that twice for the stem, then once between stages: "
            "side = (side + 1) // 2.",
        ],
        solution='''
def stage_shapes(image_size, embed_dim):
    side = image_size
    for _ in range(2):                    # the stem's two stride-2 convolutions
        side = (side + 1) // 2            # 3x3, stride 2, padding 1: ceil(side / 2)
    shapes = []
    for i in range(4):
        shapes.append((embed_dim * 2**i, side, side))
        side = (side + 1) // 2            # the downsampling after the stage
    return shapes
''',
    ),
    dilate_block=Exercise(
        "a DilateBlock from your own pieces",
        check_dilate_block,
        hints=BLOCK_HINTS,
        solution=BLOCK_SOLUTION,
    ),
)
