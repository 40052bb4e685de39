"""The whole model: a DilateBlock as a block diagram, and DilateFormer's four-stage pyramid.

Everything is read from the model's own modules (its stages, their blocks, the
blocks' attention and MLP), so the figure of a model with other depths,
dilations or widths is that model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

from ..._checks import check_positive_int
from ...geometry import downsampled_side
from ._style import _footer

__all__ = [
    "StageShape",
    "dilateformer_stage_shapes",
    "block_branches",
    "PyramidLayout",
    "pyramid_layout",
    "plot_dilateformer_architecture",
]


@dataclass(frozen=True)
class StageShape:
    """One stage of a DilateFormer: the map its blocks work on, and what the blocks are."""

    index: int
    channels: int
    height: int
    width: int
    depth: int
    kind: str
    """``"DilateBlock"`` or ``"GlobalBlock"``."""
    num_heads: int
    dilation: tuple[int, ...] | None
    """The dilation groups of a DilateBlock stage; None for global attention."""


def dilateformer_stage_shapes(model, image_size: int = 224) -> list[StageShape]:
    """Per stage of ``model`` (a ``DilateFormer``), the (C, H, W) its blocks see for a square image.

    Read from the model's own modules: the stem's two stride-2 convolutions and
    every stage's downsampling (a stride-2 3x3 convolution, padding 1) each turn
    a side of n pixels into ceil(n / 2); the channels are the blocks' ``dim``.
    """
    stages = getattr(model, "stages", None)
    if stages is None or not hasattr(model, "patch_embed"):
        raise ValueError(f"model must be a DilateFormer (with patch_embed and stages), got {type(model).__name__}")
    check_positive_int(image_size, "image_size")
    side = downsampled_side(downsampled_side(image_size))  # the stem: two stride-2 convolutions
    shapes = []
    for i, stage in enumerate(stages):
        block = stage.blocks[0]
        attention = block.attn
        dilated = hasattr(attention, "dilation")
        shapes.append(
            StageShape(
                i, block.dim, side, side, len(stage.blocks), type(block).__name__, attention.num_heads,
                tuple(attention.dilation) if dilated else None,
            )
        )
        if not isinstance(stage.downsample, torch.nn.Identity):
            side = downsampled_side(side)
    return shapes


# ---------------------------------------------------------------------------
# what the figure lays out: computed, then drawn
# ---------------------------------------------------------------------------
def block_branches(block, dilation: tuple[int, ...] | None) -> list[tuple[float, list[tuple[str, str, str]]]]:
    """The three residual branches of ``block``: (y of the branch, its boxes as (module name, text, colour)).

    The texts come from the block itself: its dilations (``dilation``, None for
    global attention) and kernel, and the width of its MLP's hidden layer.
    """
    attention_text = (
        f"MSDA\nr = {', '.join(map(str, dilation))}, k = {block.attn.kernel_size}"
        if dilation else "global\nattention"
    )
    hidden = block.mlp.fc1.out_features
    return [
        (0.76, [("pos_embed", "DWConv 3x3\n(position embedding)", "#dfe9f5")]),
        (0.47, [("norm1", "LN", "#eeeeee"), ("attn", attention_text, "#c6dbef")]),
        (0.18, [("norm2", "LN", "#eeeeee"), ("mlp", f"MLP\nC -> {hidden} -> C", "#fdd0a2")]),
    ]


@dataclass(frozen=True)
class PyramidLayout:
    """Where the pyramid panel puts each stage's square, in its data coordinates (image box at x = 0)."""

    stage_x: tuple[float, ...]
    """Left edge of each stage's square."""
    sides: tuple[float, ...]
    """Side of each stage's square: 0.42 for the first stage, then proportional to the map's side (at least 0.03)."""
    arrow_x: tuple[float, ...]
    """Start of the arrow from stage i to stage i + 1 (one fewer than the stages)."""
    right: float
    """Right edge of the last stage's column."""


_IMAGE_BOX = 0.3  # width of the image's box; the stem's arrow and its label take 0.22 after it
_STAGE_COLUMN = 0.3  # the least width of a stage's column, so that its four-line label fits
_ARROW_STEP = 0.14  # an arrow between two stages


def pyramid_layout(stages: list[StageShape]) -> PyramidLayout:
    """Left to right: the image (0.3 wide), the stem's arrow (0.22), then each stage's square in a
    column at least 0.3 wide, 0.14 for the arrow between two stages."""
    scale = 0.42 / stages[0].height  # the first stage's square is 0.42 high
    x = _IMAGE_BOX + 0.22
    stage_x, sides, arrow_x = [], [], []
    for s in stages:
        side = max(s.height * scale, 0.03)
        stage_x.append(x)
        sides.append(side)
        x += max(side, _STAGE_COLUMN)
        if s.index < len(stages) - 1:
            arrow_x.append(x)
            x += _ARROW_STEP
    return PyramidLayout(tuple(stage_x), tuple(sides), tuple(arrow_x), x)


# ---------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------
def _box(ax, x, y, w, h, text, gid, color, fontsize=7, text_gid=None):
    """A rounded box with centred text, in data coordinates."""
    box = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01,rounding_size=0.015", facecolor=color,
                         edgecolor="0.25", lw=0.8, zorder=2)
    box.set_gid(gid)
    ax.add_patch(box)
    label = ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, zorder=3)
    label.set_gid(text_gid or f"{gid}-label")
    return box


def _arrow(ax, start, end, **style):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, lw=0.9, color="0.25",
                                 shrinkA=0, shrinkB=0, zorder=1, **style))


def plot_dilateformer_architecture(model, image_size: int = 224) -> Figure:
    """A DilateBlock as a block diagram, and the model's four-stage pyramid, drawn from ``model``.

    Left: the DilateBlock of the first stage, as the residual stream x and its
    three branches: a depthwise 3x3 convolution (the conditional position
    embedding), LayerNorm then MSDA, LayerNorm then the MLP, each added back
    to x. The labels come from the block's own modules (its dilations, its MLP width).
    Right: the image, the stem (/4), and one square per stage, its side
    proportional to the map's, blue for DilateBlock stages, orange for global
    attention, labelled with the depth, the heads and (C, H, W)
    (``dilateformer_stage_shapes``).

    Artists: ``"block-pos_embed"``, ``"block-norm1"``, ``"block-attn"``,
    ``"block-norm2"``, ``"block-mlp"`` (boxes); ``"image"``, ``"stem"``,
    ``"stage-0"``, ``"stage-1"``, ... (boxes, with ``"stage-0-label"``, ... texts).
    """
    stages = dilateformer_stage_shapes(model, image_size)
    fig = Figure(figsize=(11.0, 4.3), dpi=80)
    _draw_block_diagram(fig.add_axes((0.01, 0.04, 0.33, 0.84)), model, stages)
    _draw_pyramid(fig.add_axes((0.36, 0.04, 0.63, 0.84)), model, stages, image_size)
    _footer(fig, f"plot_dilateformer_architecture(model, image_size={image_size}): "
                 f"depths {tuple(s.depth for s in stages)}, embed_dim {stages[0].channels}", y=0.005)
    return fig


def _draw_block_diagram(ax, model, stages: list[StageShape]) -> None:
    """The first DilateBlock (else the first block): the residual stream and its three branches."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    dilated = [s for s in stages if s.kind == "DilateBlock"]
    example = dilated[0] if dilated else stages[0]
    block = model.stages[example.index].blocks[0]
    stream_x = 0.12
    ax.add_line(Line2D([stream_x, stream_x], [0.93, 0.06], color="0.25", lw=1.2, zorder=1))
    ax.text(stream_x, 0.96, "x: (B, C, H, W)", ha="center", fontsize=7)
    ax.text(stream_x, 0.01, "to the next block", ha="center", fontsize=7)
    for y, boxes in block_branches(block, example.dilation):
        _draw_branch(ax, stream_x, y, boxes)
    ax.set_title(f"one {type(block).__name__} (stage {example.index + 1}): three residual branches", fontsize=9)


def _draw_branch(ax, stream_x: float, y: float, boxes) -> None:
    """One branch: out of the stream, through its boxes left to right, back into the stream at a +."""
    x = 0.3
    _arrow(ax, (stream_x, y + 0.06), (x, y + 0.06))
    for name, text, color in boxes:
        w = 0.16 if name.startswith("norm") else 0.38
        _box(ax, x, y, w, 0.12, text, f"block-{name}", color)
        if name != boxes[-1][0]:
            _arrow(ax, (x + w, y + 0.06), (x + w + 0.05, y + 0.06))
        x += w + 0.05
    # back to the stream, added to x
    ax.add_line(Line2D([x - 0.05 - 0.19, x - 0.05 - 0.19], [y, y - 0.07], color="0.25", lw=0.9))
    _arrow(ax, (x - 0.05 - 0.19, y - 0.07), (stream_x + 0.025, y - 0.07))
    ax.add_patch(Circle((stream_x, y - 0.07), 0.022, facecolor="white", edgecolor="0.25", zorder=3))
    ax.text(stream_x, y - 0.07, "+", ha="center", va="center", fontsize=9, zorder=4)


def _draw_downsampling(ax, x: float, downsample) -> None:
    """The arrow from one stage to the next, labelled when the stage ends with a strided convolution."""
    downsampled = not isinstance(downsample, torch.nn.Identity)
    _arrow(ax, (x + 0.01, 0.05), (x + 0.12, 0.05))
    ax.text(x + 0.065, 0.08, "conv 3x3\nstride 2" if downsampled else "", ha="center", va="bottom", fontsize=6)


def _draw_pyramid(ax, model, stages: list[StageShape], image_size: int) -> None:
    """The image, the stem, and one square per stage (``pyramid_layout``), labelled, with the arrows between."""
    ax.axis("off")
    layout = pyramid_layout(stages)
    ax.set_ylim(-0.3, 0.5)
    _box(ax, 0.0, 0.0, _IMAGE_BOX, 0.42, f"image\n3 x {image_size} x {image_size}", "image", "white")
    _arrow(ax, (_IMAGE_BOX + 0.02, 0.21), (_IMAGE_BOX + 0.2, 0.21))
    ax.text(_IMAGE_BOX + 0.11, 0.25, "stem\n4 convs, /4", ha="center", va="bottom", fontsize=7, gid="stem")
    colors = {"DilateBlock": "tab:blue", "GlobalBlock": "tab:orange"}
    for s, x, side in zip(stages, layout.stage_x, layout.sides):
        box = Rectangle((x, 0.0), side, side, facecolor=colors.get(s.kind, "0.6"), alpha=0.75, edgecolor="0.2")
        box.set_gid(f"stage-{s.index}")
        ax.add_patch(box)
        kind = "Dilate" if s.kind == "DilateBlock" else "Global"
        detail = f"r = {','.join(map(str, s.dilation))}" if s.dilation else "global"
        label = ax.text(
            x + side / 2, -0.03,
            f"stage {s.index + 1}\n{s.depth} x {kind}\n{s.num_heads} heads, {detail}\n"
            f"{s.channels} x {s.height} x {s.width}",
            ha="center", va="top", fontsize=7,
        )
        label.set_gid(f"stage-{s.index}-label")
        if s.index < len(layout.arrow_x):
            _draw_downsampling(ax, layout.arrow_x[s.index], model.stages[s.index].downsample)
    ax.set_xlim(-0.02, layout.right + 0.02)
    ax.set_aspect("equal")
    ax.set_title(
        "the pyramid: each square's side is proportional to its map's side\n"
        "blue: DilateBlock stages (MSDA), orange: GlobalBlock stages; last line (C, H, W)",
        fontsize=9,
    )
