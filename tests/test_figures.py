"""The figures draw exactly the cells the geometry says, read back from the drawn artists.

Expected cells are computed here from the definition (DilateFormer eq. 3:
positions (i + p*r, j + q*r), p, q in [-(k//2), k//2]), not from the code
under test; the geometry helper is checked to agree as well.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from PIL import Image

from dilate_lab import DilateFormer, dilateformer_tiny
from dilate_lab.course import figures
from dilate_lab.geometry import dilated_window
from dilate_lab.course.figures._pictures import figure_png
from dilate_lab.course.figures.attention_heads import (
    AttentionPicture,
    attention_entropy,
    head_sharpness,
    plot_attention_comparison,
    plot_head_sharpness,
)
from dilate_lab.course.images import load_sample_image
from dilate_lab.course.shapes import trace_msda_shapes
from dilate_lab.functional import swda
from dilate_lab.tracing import trace_tensors

HEIGHT, WIDTH = 9, 11  # not square, so that a row/column swap shows


# ---------------------------------------------------------------------------
# reading drawn data back
# ---------------------------------------------------------------------------
def artists(fig: Figure, gid: str) -> list:
    return [a for a in fig.findobj() if a.get_gid() == gid]


def only(fig: Figure, gid: str):
    found = artists(fig, gid)
    assert len(found) == 1, f"expected one artist with gid {gid!r}, found {len(found)}"
    return found[0]


def drawn_cells(collection: PatchCollection) -> list[tuple[int, int]]:
    """(row, col) of every square in a collection, from the squares' corners in data coordinates."""
    cells = []
    for path in collection.get_paths():
        xs, ys = path.vertices[:, 0], path.vertices[:, 1]
        cells.append((int(round((ys.min() + ys.max()) / 2)), int(round((xs.min() + xs.max()) / 2))))
    return cells


def cells_of(fig: Figure, gid: str, axes_index: int | None = None) -> list[tuple[int, int]]:
    found = artists(fig, gid)
    if axes_index is not None:
        found = [a for a in found if a.axes is fig.axes[axes_index]]
    assert len(found) == 1, f"expected one collection {gid!r}, found {len(found)}"
    return drawn_cells(found[0])


def by_definition(row, col, k, r, height, width):
    """(on the map, beyond the border) from the definition, in row-major window order."""
    half = k // 2
    positions = [(row + p * r, col + q * r) for p in range(-half, half + 1) for q in range(-half, half + 1)]
    inside = [(i, j) for i, j in positions if 0 <= i < height and 0 <= j < width]
    outside = [(i, j) for i, j in positions if not (0 <= i < height and 0 <= j < width)]
    return inside, outside


QUERIES = [  # corners, edges and centre of the 9 x 11 map
    (0, 0), (0, WIDTH - 1), (HEIGHT - 1, 0), (HEIGHT - 1, WIDTH - 1),
    (0, 5), (4, 0), (HEIGHT - 1, 5), (4, WIDTH - 1), (4, 5),
]


# ---------------------------------------------------------------------------
# 1. receptive field
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_receptive_field_draws_the_window_of_every_query(kernel_size, dilation):
    for row, col in QUERIES:
        fig = figures.plot_receptive_field(kernel_size, dilation, row, col, HEIGHT, WIDTH)
        inside, outside = by_definition(row, col, kernel_size, dilation, HEIGHT, WIDTH)
        window = dilated_window(row, col, kernel_size, dilation, HEIGHT, WIDTH)
        assert cells_of(fig, "attended") == inside == window.inside_positions
        assert cells_of(fig, "beyond-border") == outside == window.outside_positions
        assert len(inside) + len(outside) == kernel_size**2

        query = only(fig, "query")
        assert (query.get_xdata()[0], query.get_ydata()[0]) == (col, row)
        span = only(fig, "span")
        expected_span = (kernel_size - 1) * dilation + 1
        assert span.get_width() == span.get_height() == expected_span
        assert span.get_x() + expected_span / 2 == col and span.get_y() + expected_span / 2 == row
        title = fig.axes[0].get_title()
        assert f"span (k-1)*r+1 = {expected_span}" in title
        assert f"{len(inside)} of {kernel_size**2} positions on the map" in title
        assert f"{len(outside)} beyond the border" in title
        # the axes show the whole padded margin, so every beyond-border cell is visible
        margin = dilation * (kernel_size // 2)
        assert fig.axes[0].get_xlim() == (-0.5 - margin, WIDTH - 0.5 + margin)


def test_receptive_field_hand_example_corner():
    # k=3, r=2, query (0, 0): the window rows and cols are {-2, 0, 2}: 4 on the map, 5 beyond
    fig = figures.plot_receptive_field(3, 2, 0, 0, 8, 8)
    assert sorted(cells_of(fig, "attended")) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    assert len(cells_of(fig, "beyond-border")) == 5


def test_receptive_field_over_the_photo_shows_the_photo_and_the_same_cells():
    photo = load_sample_image(12, 10)
    fig = figures.plot_receptive_field(5, 2, 3, 9, 12, 10, image=photo)
    image = only(fig, "photo")
    np.testing.assert_array_equal(image.get_array(), photo)
    assert image.get_extent() == [-0.5, 9.5, 11.5, -0.5]
    inside, outside = by_definition(3, 9, 5, 2, 12, 10)
    assert cells_of(fig, "attended") == inside
    assert cells_of(fig, "beyond-border") == outside
    assert artists(fig, "map") == []


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(kernel_size=4), "kernel_size"),
        (dict(dilation=0), "dilation"),
        (dict(row=9), "row"),
        (dict(col=-1), "col"),
        (dict(height=0), "height"),
        (dict(image=np.zeros(5)), "image"),
    ],
)
def test_receptive_field_bad_arguments_name_the_argument(kwargs, word):
    arguments = dict(kernel_size=3, dilation=1, row=0, col=0, height=9, width=9)
    with pytest.raises(ValueError, match=word):
        figures.plot_receptive_field(**{**arguments, **kwargs})


# ---------------------------------------------------------------------------
# 2. multi-scale
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_multi_scale_draws_each_group_window_in_its_own_colour(kernel_size):
    dilations = (1, 2, 3)
    for row, col in QUERIES:
        fig = figures.plot_multi_scale(row, col, HEIGHT, WIDTH, kernel_size, dilations, dim=72, num_heads=3)
        colours = []
        for i, r in enumerate(dilations):
            inside, _ = by_definition(row, col, kernel_size, r, HEIGHT, WIDTH)
            collection = only(fig, f"group-{i}")
            assert drawn_cells(collection) == inside
            colours.append(tuple(collection.get_facecolor()[0]))
            assert drawn_cells(only(fig, f"padding-{i}")) == by_definition(row, col, kernel_size, r, HEIGHT, WIDTH)[1]
        assert len(set(colours)) == len(dilations)
        assert artists(fig, "group-3") == []
        # the padded margin of the widest group is on screen, so every padded square is visible
        margin = max(dilations) * (kernel_size // 2)
        assert fig.axes[0].get_xlim() == (-0.5 - margin, WIDTH - 0.5 + margin)


def test_multi_scale_corner_query_by_hand_and_the_legend():
    # query (0, 0), k = 3, dilations (1, 2): 4 + 4 positions on the map, 5 + 5 beyond the border
    fig = figures.plot_multi_scale(0, 0, 8, 8, 3, (1, 2), dim=8, num_heads=2)
    assert sorted(cells_of(fig, "group-0")) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sorted(cells_of(fig, "group-1")) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    assert sorted(cells_of(fig, "padding-1")) == [(-2, -2), (-2, 0), (-2, 2), (0, -2), (2, -2)]
    legend = only(fig, "legend-text").get_text()
    assert "nested" in legend and "zero padding (5, 5 positions per group)" in legend.replace("\n", " ")
    outline = only(fig, "query-cell")
    assert (outline.get_x(), outline.get_y(), outline.get_width()) == (-0.5, -0.5, 1)


def test_multi_scale_table_gives_heads_and_channels_by_hand():
    # dim 144, 6 heads: 24 channels a head; 3 dilations: 2 heads and 48 channels each
    fig = figures.plot_multi_scale(7, 7, 15, 15, 3, (1, 2, 3), dim=144, num_heads=6)
    table = only(fig, "groups-table")
    text = {key: cell.get_text().get_text() for key, cell in table.get_celld().items()}
    rows = [[text[(i, j)] for j in range(4)] for i in range(4)]
    assert rows == [
        ["dilation", "heads", "channels", "span"],
        ["1", "0-1", "0-47", "3x3"],
        ["2", "2-3", "48-95", "5x5"],
        ["3", "4-5", "96-143", "7x7"],
    ]


def test_head_groups_match_the_groups_msda_actually_makes():
    # the traced per-group q of MultiDilateAttention: (B, heads per group, H, W, head_dim)
    rows = trace_msda_shapes(1, 96, 5, 5, 8, 3, (1, 3))
    traced_q = [r for r in rows if " q (" in r.step]
    groups = figures.head_groups(96, 8, (1, 3))
    assert [g.dilation for g in groups] == [1, 3]
    for group, q in zip(groups, traced_q):
        assert q.shape[1] == len(group.heads) == 4
        assert q.shape[1] * q.shape[4] == len(group.channels) == 48


@pytest.mark.parametrize(
    "kwargs, word",
    [(dict(num_heads=6, dilations=(1, 2, 3, 4)), "num_heads"), (dict(dim=100), "dim"), (dict(dilations=()), "dilation")],
)
def test_multi_scale_impossible_split_names_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        figures.plot_multi_scale(**{"dim": 144, "num_heads": 6, **kwargs})


# ---------------------------------------------------------------------------
# 3. border rules
# ---------------------------------------------------------------------------
def natten_window_start(index, length, kernel_size, dilation):
    """NATTEN's get_window_start (neighborhood attention), written from its published definition."""
    half = kernel_size // 2
    if dilation <= 1:
        return max(index - half, 0) + (index + half >= length) * (length - index - half - 1)
    if index - half * dilation < 0:
        return index % dilation
    if index + half * dilation >= length:
        residue = index % dilation
        full = (length // dilation) * dilation
        rest = length - full
        if residue < rest:
            return length - rest + residue - 2 * half * dilation
        return full + residue - kernel_size * dilation
    return index - half * dilation


@pytest.mark.parametrize("kernel_size, dilation, length", [(3, 1, 7), (3, 2, 8), (5, 2, 11), (3, 3, 9), (7, 2, 16), (5, 3, 17)])
def test_shifted_window_matches_natten_and_stays_on_the_map(kernel_size, dilation, length):
    for row, col in itertools.product(range(length), repeat=2):
        positions = figures.shifted_window(row, col, kernel_size, dilation, length, length)
        top = natten_window_start(row, length, kernel_size, dilation)
        left = natten_window_start(col, length, kernel_size, dilation)
        expected = [(top + a * dilation, left + b * dilation) for a in range(kernel_size) for b in range(kernel_size)]
        assert positions == expected
        assert all(0 <= i < length and 0 <= j < length for i, j in positions)
        assert (row, col) in positions
        inside, outside = by_definition(row, col, kernel_size, dilation, length, length)
        if not outside:  # away from the border it is exactly SWDA's window
            assert positions == inside


def test_shifted_window_refuses_maps_smaller_than_kernel_times_dilation():
    with pytest.raises(ValueError, match="kernel_size \\* dilation"):
        figures.shifted_window(0, 0, 7, 3, 16, 16)


@pytest.mark.parametrize("mode", ["zeros", "mask"])
@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (3, 2), (5, 2), (7, 1)])
def test_border_attention_weights_equal_swda_weights(mode, kernel_size, dilation):
    height, width, d = 7, 8, 4
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(height, width, d, generator=generator, dtype=torch.float64)
    keys = torch.randn(height, width, d, generator=generator, dtype=torch.float64)
    q = queries.reshape(1, 1, height, width, d)  # B, heads, H, W, d
    k = keys.reshape(1, 1, height, width, d)
    with trace_tensors(keep=True) as steps:
        swda(q, k, torch.zeros_like(k), kernel_size, dilation, padding=mode, impl="unfold")
    weights = next(s.tensor for s in steps if s.name == "attention weights")  # 1, 1, H*W, 1, k*k
    weights = weights.reshape(height, width, kernel_size**2)  # H, W, k*k
    for row, col in [(0, 0), (0, 7), (6, 0), (6, 7), (0, 3), (3, 0), (3, 4)]:
        result = figures.border_attention(row, col, kernel_size, dilation, height, width, mode, queries=queries, keys=keys)
        expected = weights[row, col].numpy()
        if mode == "mask":
            inside = [not out for out in dilated_window(row, col, kernel_size, dilation, height, width).outside]
            expected = expected[inside]
        np.testing.assert_allclose(result.weights, expected, atol=1e-12)
        assert abs(result.weights.sum() - 1) < 1e-12


def test_padding_mass_with_equal_logits_is_the_share_of_padded_positions():
    # q = 0: every logit is 0, so zero padding gives each of the k*k positions 1/(k*k)
    height = width = 8
    zeros = torch.zeros(height, width, 4, dtype=torch.float64)
    result = figures.border_attention(0, 0, 3, 3, height, width, "zeros", queries=zeros, keys=zeros)
    assert result.padding_mass == pytest.approx(5 / 9)
    assert figures.border_attention(0, 0, 3, 3, height, width, "mask", queries=zeros, keys=zeros).padding_mass == 0
    shifted = figures.border_attention(0, 0, 3, 2, height, width, "shifted", queries=zeros, keys=zeros)
    assert shifted.padding_mass == 0 and len(shifted.positions) == 9
    np.testing.assert_allclose(shifted.weights, np.full(9, 1 / 9))


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (3, 2), (5, 2), (7, 2)])
def test_border_figure_draws_each_rule_window_with_its_weights(kernel_size, dilation):
    size = 14
    for row, col in [(0, 0), (0, 6), (6, 6), (13, 2)]:
        fig = figures.plot_border_modes(row, col, kernel_size, dilation, size, size, seed=3)
        for mode in figures.BORDER_MODES:
            result = figures.border_attention(row, col, kernel_size, dilation, size, size, mode, seed=3)
            collection = only(fig, f"{mode}-window")
            assert drawn_cells(collection) == list(result.positions)
            np.testing.assert_allclose(collection.get_array(), result.weights)
        inside, outside = by_definition(row, col, kernel_size, dilation, size, size)
        assert drawn_cells(only(fig, "zeros-window")) == [
            p for p in by_definition_in_order(row, col, kernel_size, dilation)
        ]
        assert drawn_cells(only(fig, "mask-window")) == inside
        assert drawn_cells(only(fig, "beyond-border")) == outside
        mass = figures.border_attention(row, col, kernel_size, dilation, size, size, "zeros", seed=3).padding_mass
        assert f"{100 * mass:.1f}% of the softmax on padding" in fig.axes[0].get_title()


def by_definition_in_order(row, col, k, r):
    half = k // 2
    return [(row + p * r, col + q * r) for p in range(-half, half + 1) for q in range(-half, half + 1)]


def test_border_figure_explains_when_natten_cannot_run():
    fig = figures.plot_border_modes(0, 0, 7, 3, 16, 16)
    assert artists(fig, "shifted-window") == []
    assert "not possible" in fig.axes[2].get_title()
    texts = " ".join(t.get_text() for t in fig.axes[2].texts)
    assert "kernel_size * dilation" in texts and "21" in texts
    assert drawn_cells(only(fig, "zeros-window")) == by_definition_in_order(0, 0, 7, 3)


def test_border_figure_message_is_wrapped_inside_its_panel():
    fig = figures.plot_border_modes(0, 0, 3, 3, 8, 8)  # NATTEN needs 3 * 3 = 9 > 8
    (message,) = fig.axes[2].texts
    assert all(len(line) <= 34 for line in message.get_text().splitlines())
    renderer = FigureCanvasAgg(fig).get_renderer()
    box = message.get_window_extent(renderer=renderer)  # the text, in pixels
    panel = fig.axes[2].get_window_extent()
    assert panel.x0 <= box.x0 and box.x1 <= panel.x1


def test_border_defaults_leave_room_for_natten_with_dilation_three():
    # the lesson's experiment: dilation 3, query in the corner; 3 * 3 = 9 <= 10
    fig = figures.plot_border_modes(row=0, col=0, dilation=3)
    assert len(artists(fig, "shifted-window")) == 1
    assert "height=10, width=10" in fig.texts[-1].get_text()


def test_border_figure_prints_the_query_own_weight_beside_its_star():
    fig = figures.plot_border_modes(2, 3, 3, 2, 10, 10, seed=1)
    result = figures.border_attention(2, 3, 3, 2, 10, 10, "zeros", seed=1)
    own = result.weights[result.positions.index((2, 3))]
    ax = fig.axes[0]
    near = [t.get_text() for t in ax.texts if abs(t.get_position()[0] - 3) < 0.5 and abs(t.get_position()[1] - 2) < 0.5]
    assert near == [f"{100 * own:.0f}"]
    (star,) = [line for line in ax.get_lines() if line.get_gid() == "query"]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (3 - 0.3, 2 - 0.3)  # in the corner, not on the number


# ---------------------------------------------------------------------------
# 4. effective receptive field
# ---------------------------------------------------------------------------
def reachable(dilations, kernel_size):
    """Offsets reachable through one window per layer: sums of one offset from each layer."""
    half = kernel_size // 2
    offsets = {(0, 0)}
    for r in dilations:
        steps = [(p * r, q * r) for p in range(-half, half + 1) for q in range(-half, half + 1)]
        offsets = {(a + c, b + d) for a, b in offsets for c, d in steps}
    return offsets


@pytest.mark.parametrize("dilations, span", [((1, 1, 1), 7), ((1, 2, 3), 13), ((2, 2, 2), 13), ((1, 3), 9)])
def test_effective_receptive_field_reaches_exactly_the_chained_windows(dilations, span):
    size = 17
    grad = figures.effective_receptive_field(dilations, 3, size)
    centre = size // 2
    expected = {(centre + a, centre + b) for a, b in reachable(dilations, 3)}
    assert {tuple(p) for p in np.argwhere(grad > 0)} == expected
    assert figures.theoretical_span(3, dilations) == span
    rows, cols = zip(*expected)
    assert max(rows) - min(rows) + 1 == span  # the reachable set spans the theoretical span


def test_effective_receptive_field_figure_shows_the_support_and_the_span():
    fig = figures.plot_effective_receptive_field([(1, 1, 1), (1, 2, 3), (2, 2, 2)], 3)
    size = 13 + 4
    centre = size // 2
    # the colour scale starts at the smallest value drawn, rounded down to half a decade
    grads = [figures.effective_receptive_field(s, 3, size) for s in [(1, 1, 1), (1, 2, 3), (2, 2, 2)]]
    lowest = min(np.log10(g[g > 0].min() / g.max()) for g in grads)
    floor = np.floor(2 * lowest) / 2
    assert -6.0 < floor < lowest < floor + 0.5
    for i, (dilations, span) in enumerate([((1, 1, 1), 7), ((1, 2, 3), 13), ((2, 2, 2), 13)]):
        shown = only(fig, f"erf-{i}").get_array()
        assert shown.shape == (size, size)
        drawn = {tuple(p) for p in np.argwhere(~np.ma.getmaskarray(shown))}
        assert drawn == {(centre + a, centre + b) for a, b in reachable(dilations, 3)}
        assert shown.max() == 0.0 and shown.min() >= -6.0  # log10 of |grad| / max
        assert only(fig, f"erf-{i}").get_clim() == (floor, 0.0)
        assert tuple(only(fig, f"erf-{i}").get_extent()) == (-0.5, size - 0.5, size - 0.5, -0.5)  # the whole map
        rect = only(fig, f"span-{i}")
        assert rect.get_width() == span
        assert rect.get_x() == centre - span / 2
    # [2, 2, 2] has holes: 49 of its 169 span pixels, while [1, 2, 3] covers all 169
    assert "169 pixels reached" in fig.axes[1].get_title()
    assert "49 pixels reached" in fig.axes[2].get_title()


@pytest.mark.parametrize(
    "dilations, kernel_size, size",
    [((1, 2, 3), 3, None), ((2, 2, 2), 5, None), ((1, 3), 3, 7), ((3, 1), 5, 4), ((1, 1, 2), 3, 6), ((9, 9), 3, None)],
)
def test_effective_receptive_field_is_the_gradient_over_the_whole_map(dilations, kernel_size, size):
    """The package computes only the pixels that reach the centre output; the gradient over the whole
    map, taken here plainly (with unfold, not the package's shift form), is the same, also where the
    windows reach the border (sizes 4 to 7)."""
    side = size or figures.theoretical_span(kernel_size, dilations) + 4
    generator = torch.Generator().manual_seed(0)  # the random draws the docstring describes, in its order
    x = torch.randn(1, 1, side, side, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    h = x
    for r in dilations:
        wq, wk, wv = torch.randn(3, 4, 4, generator=generator, dtype=torch.float64) / 2  # / sqrt(channels)
        h = swda(h @ wq, h @ wk, h @ wv, kernel_size, r, impl="unfold")  # 1, 1, side, side, 4
    h[0, 0, side // 2, side // 2].sum().backward()
    whole_map = x.grad[0, 0].abs().sum(-1).numpy()  # side, side
    grad = figures.effective_receptive_field(dilations, kernel_size, size)
    np.testing.assert_array_equal(grad > 0, whole_map > 0)
    np.testing.assert_allclose(grad, whole_map, rtol=1e-9, atol=0)


def picture_pixels(figure) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(figure_png(figure))))  # rows, cols, 4


def test_erf_picture_redrawn_for_other_schedules_is_the_new_figure():
    from dilate_lab.course.figures.erf import ErfPicture

    picture = ErfPicture(2)
    for schedules, kernel_size, size, measure in [
        (((9,) * 8, (1, 2, 3)), 7, None, "auto"),  # window chains on a 433 x 433 map
        (((1,), (2, 2)), 5, 30, "chains"),
        (((1, 1, 1), (2, 2, 2)), 3, None, "gradient"),  # back to the gradient: its title and colour bar
    ]:
        picture.draw(schedules, kernel_size, size, measure=measure)
        fresh = figures.plot_effective_receptive_field(schedules, kernel_size, size, measure=measure)
        np.testing.assert_array_equal(picture_pixels(picture.figure), picture_pixels(fresh))
    with pytest.raises(ValueError, match="2 schedules"):
        picture.draw([(1, 2)], 3)


# ---------------------------------------------------------------------------
# 5. attention heads on the photo
# ---------------------------------------------------------------------------
def test_attention_heads_draws_each_head_window_with_its_weights():
    rng = np.random.default_rng(0)
    heads, height, width, k = 3, 6, 7, 3
    weights = rng.random((heads, height, width, k * k))
    weights /= weights.sum(-1, keepdims=True)  # softmax-like: each window sums to 1
    dilations = (1, 2, 3)
    photo = load_sample_image(24, 28)
    for row, col in [(0, 0), (2, 3), (5, 6)]:
        fig = figures.plot_attention_heads(photo, weights, row, col, k, dilations, title="test")
        for h, r in enumerate(dilations):
            inside, outside = by_definition(row, col, k, r, height, width)
            window = dilated_window(row, col, k, r, height, width)
            order = by_definition_in_order(row, col, k, r)
            collection = only(fig, f"head-{h}")
            assert drawn_cells(collection) == inside
            np.testing.assert_allclose(collection.get_array(), [weights[h, row, col, order.index(p)] for p in inside])
            padded = only(fig, f"head-{h}-padding")
            assert drawn_cells(padded) == outside == window.outside_positions
            np.testing.assert_allclose(padded.get_array(), [weights[h, row, col, order.index(p)] for p in outside])
            # one fixed colour scale for every head: 0 to 1, not each head's own min-max
            assert collection.get_clim() == padded.get_clim() == (0.0, 1.0)
            # zoomed on the widest window (reach 3) and one cell more
            ax = collection.axes
            assert ax.get_xlim() == (col - 4.5, col + 4.5) and ax.get_ylim() == (row + 4.5, row - 4.5)
            labels = sorted(t.get_text() for t in ax.texts)
            assert labels == sorted(f"{100 * w:.1f}" for w in weights[h, row, col])
        assert fig._suptitle.get_text() == "test"
        zoom = only(fig, "zoom-box")
        assert (zoom.get_x(), zoom.get_y(), zoom.get_width()) == (col - 4.5, row - 4.5, 9)
        assert len(artists(fig, "colorbar")) == 1


def test_attention_heads_colour_scale_can_be_narrowed():
    weights = np.full((1, 5, 5, 9), 1 / 9)
    fig = figures.plot_attention_heads(None, weights, 2, 2, 3, (1,), vmax=0.25)
    assert only(fig, "head-0").get_clim() == (0.0, 0.25)
    with pytest.raises(ValueError, match="vmax"):
        figures.plot_attention_heads(None, weights, 2, 2, 3, (1,), vmax=0)


def test_attention_heads_checks_shapes():
    with pytest.raises(ValueError, match="dilations"):
        figures.plot_attention_heads(None, np.ones((2, 4, 4, 9)), 0, 0, 3, (1, 2, 3))
    with pytest.raises(ValueError, match="weights"):
        figures.plot_attention_heads(None, np.ones((2, 4, 4, 8)), 0, 0, 3, (1, 2))


def test_attention_comparison_draws_each_model_in_its_own_row():
    rng = np.random.default_rng(1)
    heads, height, width, k = 3, 8, 8, 3
    untrained = np.full((heads, height, width, k * k), 1 / 9)
    trained = rng.random((heads, height, width, k * k))
    trained /= trained.sum(-1, keepdims=True)
    dilations = (1, 2, 3)
    row, col = 0, 6  # near a corner: every dilated head pads
    fig = plot_attention_comparison(None, {"untrained": untrained, "trained": trained}, row, col, k, dilations)
    for m, weights in enumerate((untrained, trained)):
        for h, r in enumerate(dilations):
            inside, outside = by_definition(row, col, k, r, height, width)
            order = by_definition_in_order(row, col, k, r)
            cells = only(fig, f"m{m}-head-{h}")
            assert drawn_cells(cells) == inside
            np.testing.assert_allclose(cells.get_array(), [weights[h, row, col, order.index(p)] for p in inside])
            padded = only(fig, f"m{m}-head-{h}-padding")
            assert drawn_cells(padded) == outside
            assert cells.get_clim() == padded.get_clim() == (0.0, 1.0)  # one scale for every panel
        assert len(artists(fig, f"m{m}-zoom-box")) == 1
    assert artists(fig, "head-0") == []  # every gid carries its row
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("untrained") and titles[len(dilations) + 1].startswith("trained")
    with pytest.raises(ValueError, match="one shape"):
        plot_attention_comparison(None, {"a": untrained, "b": untrained[:, :4]}, 0, 0, k, dilations)
    with pytest.raises(ValueError, match="non-empty dict"):
        plot_attention_comparison(None, {}, 0, 0, k, dilations)


def test_attention_picture_redrawn_for_other_queries_and_data_is_the_new_figure():
    rng = np.random.default_rng(2)
    heads, height, width, k, dilations = 3, 6, 7, 3, (1, 2, 3)

    def softmax_like(*shape):
        w = rng.random(shape)
        return w / w.sum(-1, keepdims=True)

    photo = load_sample_image(24, 28)
    weights = softmax_like(heads, height, width, k * k)
    picture = AttentionPicture(photo, weights, k, dilations, vmax=0.5)
    for row, col in [(0, 0), (5, 6), (2, 3)]:
        picture.draw(row, col, title=f"query {row}, {col}")
        fresh = figures.plot_attention_heads(photo, weights, row, col, k, dilations, title=f"query {row}, {col}",
                                             vmax=0.5)
        np.testing.assert_array_equal(picture_pixels(picture.figure), picture_pixels(fresh))
    # several models, another image and other weights: a grey image is coloured by its own range, as imshow does
    grey = [rng.random((24, 28)), 3 + 5 * rng.random((24, 28))]
    models = [{"a": softmax_like(heads, height, width, k * k), "b": softmax_like(heads, height, width, k * k)}
              for _ in range(2)]
    picture = AttentionPicture(grey[0], models[0], k, dilations)
    picture.draw(0, 6)
    picture.draw(4, 1, "other", image=grey[1], weights=models[1])
    fresh = plot_attention_comparison(grey[1], models[1], 4, 1, k, dilations, title="other")
    np.testing.assert_array_equal(picture_pixels(picture.figure), picture_pixels(fresh))
    with pytest.raises(ValueError, match="shape"):
        picture.draw(0, 0, image=grey[0][:-1])
    with pytest.raises(ValueError, match="labels"):
        picture.draw(0, 0, weights={"a": models[0]["a"]})
    with pytest.raises(ValueError, match="row"):
        picture.draw(height, 0)
    np.testing.assert_array_equal(picture_pixels(picture.figure), picture_pixels(fresh))  # refused: nothing drawn


def test_attention_entropy_by_hand():
    np.testing.assert_allclose(attention_entropy(np.full(9, 1 / 9)), np.log(9))
    np.testing.assert_allclose(attention_entropy([1.0, 0.0, 0.0]), 0.0)  # 0 log 0 counts as 0
    np.testing.assert_allclose(attention_entropy([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]]),
                               [np.log(2), 1.5 * np.log(2)])
    with pytest.raises(ValueError, match="negative"):
        attention_entropy([-0.5, 1.5])


def test_head_sharpness_averages_every_query_of_every_image():
    uniform = np.full((2, 3, 4, 5, 9), 1 / 9)  # N, heads, H, W, k*k
    one_hot = np.zeros((2, 3, 4, 5, 9))
    one_hot[..., 4] = 1.0
    half = np.concatenate([uniform[:1], one_hot[:1]])  # one image of each
    for weights, largest, entropy in ((uniform, 1 / 9, np.log(9)), (one_hot, 1.0, 0.0),
                                      (half, (1 / 9 + 1) / 2, np.log(9) / 2)):
        stats = head_sharpness(weights, (1, 2, 3))
        assert [(s.head, s.dilation) for s in stats] == [(0, 1), (1, 2), (2, 3)]
        for s in stats:
            assert s.max_weight == pytest.approx(largest) and s.entropy == pytest.approx(entropy)
            assert s.positions == pytest.approx(np.exp(entropy))
    # one image, (heads, H, W, k*k), gives the same as a batch of one
    assert head_sharpness(half[1], (1, 2, 3)) == head_sharpness(half[1:], (1, 2, 3))
    with pytest.raises(ValueError, match="one dilation per head"):
        head_sharpness(uniform, (1, 2))


def test_head_sharpness_figure_draws_the_numbers_it_is_given():
    before = head_sharpness(np.full((1, 3, 4, 4, 9), 1 / 9), (1, 2, 3))
    peaked = np.full((1, 3, 4, 4, 9), 0.05)
    peaked[..., 0] = 0.6
    after = head_sharpness(peaked, (1, 2, 3))
    fig = plot_head_sharpness({"untrained": before, "trained": after}, kernel_size=3)
    for label, stats in (("untrained", before), ("trained", after)):
        heights = [bar.get_height() for bar in artists(fig, f"bars-{label}-max")]
        np.testing.assert_allclose(heights, [s.max_weight for s in stats])
        heights = [bar.get_height() for bar in artists(fig, f"bars-{label}-positions")]
        np.testing.assert_allclose(heights, [s.positions for s in stats])
    np.testing.assert_allclose([bar.get_height() for bar in artists(fig, "bars-untrained-positions")], 9.0)
    with pytest.raises(ValueError, match="same heads"):
        plot_head_sharpness({"a": before, "b": before[:2]}, kernel_size=3)


# ---------------------------------------------------------------------------
# 6. shape trace
# ---------------------------------------------------------------------------
def test_shape_trace_bars_are_the_traced_sizes_with_kk_copies_in_red():
    rows = trace_msda_shapes(2, 48, 6, 5, 4, 5, (1, 2))
    fig = figures.plot_shape_trace(rows)
    red = sorted(artists(fig, "k*k copies"), key=lambda bar: bar.get_y())
    grey = sorted(artists(fig, "other tensors"), key=lambda bar: bar.get_y())
    assert len(red) + len(grey) == len(rows)
    assert [bar.get_width() for bar in red] == [r.nbytes for r in rows if r.kk_copy]
    assert [bar.get_width() for bar in grey] == [r.nbytes for r in rows if not r.kk_copy]
    # the unfolded K and V of 2 groups; each 25 (= k*k) times its group's K: 2*2*30*12 floats
    assert len(red) == 4 and all(bar.get_width() == 25 * 2 * 2 * 30 * 12 * 4 for bar in red)


def test_shape_trace_ticks_are_round_binary_units():
    rows = trace_msda_shapes(1, 72, 14, 14, 3)  # the largest tensor: 216 * 196 * 4 bytes = 165.4 KiB
    fig = figures.plot_shape_trace(rows)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0 KiB", "50 KiB", "100 KiB", "150 KiB"]
    assert list(ax.get_xticks()) == [0, 50 * 1024, 100 * 1024, 150 * 1024]
    assert "1.5 MiB in all" in ax.get_title()  # 1 601 712 bytes / 1024**2


def test_format_bytes():
    assert figures.format_bytes(100) == "100 B"
    assert figures.format_bytes(1023) == "1023 B"
    assert figures.format_bytes(1536) == "1.5 KiB"
    assert figures.format_bytes(165.375 * 1024) == "165.4 KiB"
    assert figures.format_bytes(5 * 1024**2) == "5.0 MiB"
    assert figures.format_bytes(3 * 1024**3) == "3.0 GiB"
    assert figures.format_bytes(2048 * 1024**3) == "2048.0 GiB"


# ---------------------------------------------------------------------------
# 7. the whole model: block diagram and pyramid
# ---------------------------------------------------------------------------
def measured_stages(model, image_size):
    """(C, H, W) entering each stage's first block, caught by hooks on a real forward pass (CPU)."""
    seen = []
    hooks = [
        stage.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[1:])))
        for stage in model.stages
    ]
    with torch.no_grad():
        x = model.patch_embed(torch.zeros(1, 3, image_size, image_size))
        for stage in model.stages:
            x = stage(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return dilateformer_tiny().eval()


def test_architecture_pyramid_of_tiny_by_hand(tiny):
    fig = figures.plot_dilateformer_architecture(tiny, 224)
    labels = [only(fig, f"stage-{i}-label").get_text() for i in range(4)]
    # the paper's Tiny: 56^2 x 72 -> 28^2 x 144 -> 14^2 x 288 -> 7^2 x 576; Dilate, Dilate, Global, Global
    assert labels[0].splitlines() == ["stage 1", "2 x Dilate", "3 heads, r = 1,2,3", "72 x 56 x 56"]
    assert labels[1].splitlines()[1:] == ["2 x Dilate", "6 heads, r = 1,2,3", "144 x 28 x 28"]
    assert labels[2].splitlines()[1:] == ["6 x Global", "12 heads, global", "288 x 14 x 14"]
    assert labels[3].splitlines()[1:] == ["2 x Global", "24 heads, global", "576 x 7 x 7"]
    sides = [only(fig, f"stage-{i}").get_width() for i in range(4)]
    assert sides == pytest.approx([sides[0] / 2**i for i in range(4)])  # each stage halves the side
    colours = [tuple(only(fig, f"stage-{i}").get_facecolor()) for i in range(4)]
    assert colours[0] == colours[1] != colours[2] == colours[3]
    assert "3 x 224 x 224" in only(fig, "image-label").get_text()
    assert "r = 1, 2, 3" in only(fig, "block-attn-label").get_text()
    assert "C -> 288 -> C" in only(fig, "block-mlp-label").get_text()  # mlp_ratio 4 of 72 channels
    for name in ("pos_embed", "norm1", "norm2"):
        assert len(artists(fig, f"block-{name}")) == 1


@pytest.mark.parametrize("image_size", [64, 72, 200])
def test_architecture_labels_are_the_shapes_a_real_model_makes(image_size):
    torch.manual_seed(0)
    model = DilateFormer(
        img_size=64, embed_dim=24, depths=(1, 2, 1), num_heads=(2, 6, 12), dilation=(1, 3), num_classes=0,
        dilate_attention=(True, False, False),
    ).eval()
    shapes = measured_stages(model, image_size)
    stages = figures.dilateformer_stage_shapes(model, image_size)
    assert [(s.channels, s.height, s.width) for s in stages] == shapes
    assert [s.kind for s in stages] == ["DilateBlock", "GlobalBlock", "GlobalBlock"]
    assert [s.depth for s in stages] == [1, 2, 1] and stages[0].dilation == (1, 3)
    fig = figures.plot_dilateformer_architecture(model, image_size)
    for i, (c, h, w) in enumerate(shapes):
        assert only(fig, f"stage-{i}-label").get_text().splitlines()[-1] == f"{c} x {h} x {w}"
    assert artists(fig, "stage-3") == []


def test_architecture_refuses_what_is_not_a_dilateformer():
    with pytest.raises(ValueError, match="model"):
        figures.plot_dilateformer_architecture(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="image_size"):
        figures.dilateformer_stage_shapes(DilateFormer(img_size=32, embed_dim=6, depths=(1,), num_heads=(3,)), 0)
