"""The explorers driven from Python, without a browser: set a control, check what is drawn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dilate_lab.course import widgets
from dilate_lab.geometry import dilated_window

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cells(explorer, gid):
    """(row, col) of the squares the explorer's current figure drew under ``gid``."""
    found = [a for a in explorer.figure.findobj() if a.get_gid() == gid]
    assert len(found) == 1, f"one {gid!r} expected, found {len(found)}"
    out = []
    for path in found[0].get_paths():
        xs, ys = path.vertices[:, 0], path.vertices[:, 1]
        out.append((int(round((ys.min() + ys.max()) / 2)), int(round((xs.min() + xs.max()) / 2))))
    return out


def assert_shows_figure(explorer):
    assert explorer.error is None, explorer.error
    assert bytes(explorer.image.value).startswith(PNG_MAGIC)
    assert explorer.image.layout.display == ""
    assert explorer.message.layout.display == "none"
    assert "dl-error" not in explorer.message._dom_classes


def assert_shows_error(explorer, *words):
    assert explorer.error is not None
    for word in words:
        assert word in explorer.error
    assert "Traceback" not in explorer.message.value
    assert "dl-error" in explorer.message._dom_classes
    assert explorer.message.layout.display == ""
    assert explorer.image.layout.display == "none"


# ---------------------------------------------------------------------------
# receptive field explorer
# ---------------------------------------------------------------------------
def test_receptive_field_explorer_redraws_the_window_for_new_settings():
    explorer = widgets.receptive_field_explorer(kernel_size=3, dilation=1, row=4, col=4, size=9)
    assert_shows_figure(explorer)
    assert cells(explorer, "attended") == dilated_window(4, 4, 3, 1, 9, 9).inside_positions
    before = explorer.image.value

    explorer.controls["dilation"].value = 3
    assert_shows_figure(explorer)
    assert explorer.image.value != before
    # by hand: rows and cols {1, 4, 7}
    assert sorted(cells(explorer, "attended")) == [(r, c) for r in (1, 4, 7) for c in (1, 4, 7)]

    explorer.controls["row"].value = 0
    assert len(cells(explorer, "beyond-border")) == 3  # the row above the map
    explorer.controls["kernel_size"].value = 5
    assert cells(explorer, "attended") == dilated_window(0, 4, 5, 3, 9, 9).inside_positions
    assert "span (k-1)*r+1 = 13" in explorer.figure.axes[0].get_title()


def test_receptive_field_explorer_photo_and_size():
    explorer = widgets.receptive_field_explorer(size=9)
    explorer.controls["photo"].value = True
    assert_shows_figure(explorer)
    photo = [a for a in explorer.figure.findobj() if a.get_gid() == "photo"]
    assert len(photo) == 1 and photo[0].get_array().shape == (9, 9, 3)
    explorer.controls["row"].value = 8
    explorer.controls["size"].value = 5  # the query must follow onto the smaller map
    assert_shows_figure(explorer)
    assert explorer.controls["row"].value == 4 and explorer.controls["row"].max == 4
    assert explorer.figure.axes[0].images[0].get_array().shape == (5, 5, 3)
    explorer.controls["size"].value = 20
    assert explorer.controls["row"].max == 19 and explorer.controls["row"].value == 4


def test_receptive_field_explorer_every_control_combination_draws_without_error():
    explorer = widgets.receptive_field_explorer()
    explorer.render_png = False  # build every figure, skip the PNG encoding: fast
    size_control = explorer.controls["size"]
    sizes = [size_control.min, size_control.max]
    count = 0
    for dilation, kernel, photo, size in itertools.product(
        explorer.controls["dilation"].options, explorer.controls["kernel_size"].options, (False, True), sizes
    ):
        for row, col in {(0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1), (size // 2, size // 2)}:
            with explorer.hold_redraw():  # one redraw per combination
                for key, value in (("dilation", dilation), ("kernel_size", kernel), ("photo", photo),
                                   ("size", size), ("row", row), ("col", col)):
                    explorer.controls[key].value = value
            assert explorer.values() == dict(dilation=dilation, kernel_size=kernel, size=size, row=row, col=col, photo=photo)
            assert explorer.error is None, (dilation, kernel, photo, size, row, col, explorer.error)
            window = dilated_window(row, col, kernel, dilation, size, size)
            assert cells(explorer, "beyond-border") == window.outside_positions
            count += 1
    assert count == 4 * 3 * 2 * 2 * 5  # dilations x kernels x photo x sizes x query places


def test_receptive_field_explorer_png_at_the_extremes():
    explorer = widgets.receptive_field_explorer()
    for dilation, kernel, size, photo in [(4, 7, 3, True), (4, 7, 32, False), (1, 3, 32, True)]:
        explorer.controls["size"].value = size
        explorer.controls["dilation"].value = dilation
        explorer.controls["kernel_size"].value = kernel
        explorer.controls["photo"].value = photo
        explorer.controls["col"].value = size - 1
        assert_shows_figure(explorer)


def test_explorer_repr_is_short_and_classes_are_stable():
    explorer = widgets.receptive_field_explorer()
    assert repr(explorer) == (
        "Explorer(receptive-field: dilation=2, kernel_size=3, size=9, row=1, col=2, photo=False)"
    )
    assert {"dl-explorer", "dl-receptive-field"} <= set(explorer._dom_classes)
    for key, css in [("dilation", "dl-dilation"), ("kernel_size", "dl-kernel"), ("row", "dl-row"),
                     ("col", "dl-col"), ("size", "dl-size"), ("photo", "dl-photo")]:
        assert css in explorer.controls[key]._dom_classes
    assert "dl-figure" in explorer.image._dom_classes


# ---------------------------------------------------------------------------
# multi-scale explorer
# ---------------------------------------------------------------------------
def test_multi_scale_explorer_groups_follow_the_typed_dilations():
    explorer = widgets.multi_scale_explorer(dilations="1, 2, 3", num_heads=6, dim=144)
    assert_shows_figure(explorer)
    assert cells(explorer, "group-2") == dilated_window(7, 7, 3, 3, 15, 15).inside_positions

    explorer.controls["dilations"].value = "1, 2, 3, 4"  # 6 heads cannot split over 4 dilations
    assert_shows_error(explorer, "num_heads (6)", "len(dilations) (4")
    explorer.controls["num_heads"].value = 8
    assert_shows_figure(explorer)
    assert cells(explorer, "group-3") == dilated_window(7, 7, 3, 4, 15, 15).inside_positions

    explorer.controls["dilations"].value = "1, two"
    assert_shows_error(explorer, "dilations must be ints")
    explorer.controls["dilations"].value = "2, 4"
    assert_shows_figure(explorer)
    assert [a.get_gid() for a in explorer.figure.findobj() if str(a.get_gid()).startswith("group-")] == [
        "group-0", "group-1"
    ]


# ---------------------------------------------------------------------------
# shape tracer
# ---------------------------------------------------------------------------
def test_shape_tracer_table_and_library_errors():
    tracer = widgets.shape_tracer(batch=2, channels=72, height=14, width=14, num_heads=3)
    assert tracer.error is None and tracer.figure is None
    table = tracer.html
    assert "(2, 216, 14, 14)" in table  # qkv: B, 3*C, H, W
    assert table.count('class="dl-kk-row"') == 6  # unfolded K and V of 3 groups
    assert "(2, 1, 196, 9, 24)" in table  # an unfolded K: B, heads/group, H*W, k*k, head_dim
    assert tracer.table.layout.display == "" and tracer.image.layout.display == "none"

    tracer.controls["channels"].value = 70
    assert_shows_error(tracer, "dim (70) must be divisible by num_heads (3)")
    assert tracer.table.layout.display == "none"
    tracer.controls["channels"].value = 96
    tracer.controls["kernel_size"].value = 5
    assert tracer.error is None
    assert "(2, 1, 196, 25, 32)" in tracer.html
    assert "KiB" in tracer.html and " KB" not in tracer.html  # binary units: 1 KiB = 1024 bytes
    tracer.controls["impl"].value = "shift"
    assert 'class="dl-kk-row"' not in tracer.html  # the shift implementation makes no copies
    tracer.controls["dilations"].value = "1, 0, 2"
    assert_shows_error(tracer, "every dilation must be an int in [1, 8]")


# ---------------------------------------------------------------------------
# attention viewer, effective receptive field, border
# ---------------------------------------------------------------------------
def test_attention_viewer_follows_the_query():
    viewer = widgets.attention_viewer(image_size=64, row=3, col=4)
    assert_shows_figure(viewer)
    assert "seeded random weights" in viewer.figure._suptitle.get_text()
    weights = viewer.attention.weights  # heads, 16, 16, 9
    for row, col in [(0, 0), (15, 9)]:
        viewer.controls["row"].value = row
        viewer.controls["col"].value = col
        assert_shows_figure(viewer)
        for head, r in enumerate(viewer.attention.dilations):
            window = dilated_window(row, col, 3, r, 16, 16)
            assert cells(viewer, f"head-{head}") == window.inside_positions
            assert cells(viewer, f"head-{head}-padding") == window.outside_positions
            drawn = [a for a in viewer.figure.findobj() if a.get_gid() == f"head-{head}"][0].get_array()
            on_map = [o for o, out in enumerate(window.outside) if not out]
            np.testing.assert_allclose(drawn, weights[head, row, col, on_map])


def test_attention_viewer_starts_at_the_border_where_padding_shows():
    viewer = widgets.attention_viewer()  # 112 x 112 photograph: a 28 x 28 map
    assert viewer.values() == {"row": 1, "col": 13}
    # row 1: dilation 1 reaches row 0 (on the map), dilations 2 and 3 rows -1 and -2 (padding)
    padded = [len(cells(viewer, f"head-{h}-padding")) for h in range(3)]
    assert padded == [0, 3, 3]  # one window row above the map each
    assert "zero padding" in viewer.children[-4].value  # the note under the controls


def test_erf_explorer_shows_the_holes_of_equal_dilations():
    explorer = widgets.erf_explorer()
    assert_shows_figure(explorer)
    assert "dilations [1, 1, 1]" in explorer.figure.axes[0].get_title()
    explorer.controls["left"].value = "2, 2, 2"
    assert_shows_figure(explorer)
    assert "13x13, 49 pixels reached" in explorer.figure.axes[0].get_title()
    assert "13x13, 169 pixels reached" in explorer.figure.axes[1].get_title()
    explorer.controls["right"].value = "1, 3, 9"  # hybrid dilated convolution: no holes
    assert_shows_figure(explorer)
    assert "27x27, 729 pixels reached" in explorer.figure.axes[1].get_title()
    explorer.controls["right"].value = "0"
    assert_shows_error(explorer, "right")
    explorer.controls["right"].value = "1, 2, 3"
    assert_shows_figure(explorer)


def test_border_explorer_default_map_fits_the_lesson_experiment():
    # lesson 04 suggests dilation 3 with the query in the corner: NATTEN needs 3 * 3 = 9 <= size
    explorer = widgets.border_explorer()
    assert explorer.controls["size"].value == 10
    with explorer.hold_redraw():
        explorer.controls["dilation"].value = 3
        explorer.controls["row"].value = 0
        explorer.controls["col"].value = 0
    assert_shows_figure(explorer)
    assert len([a for a in explorer.figure.findobj() if a.get_gid() == "shifted-window"]) == 1


def test_border_explorer_every_rule_at_every_corner():
    explorer = widgets.border_explorer()
    assert_shows_figure(explorer)
    explorer.render_png = False
    for dilation, kernel in itertools.product((1, 2, 3, 4), (3, 5, 7)):
        for size in (3, 24):
            for row, col in [(0, 0), (size - 1, size - 1)]:
                with explorer.hold_redraw():
                    for key, value in (("dilation", dilation), ("kernel_size", kernel), ("size", size),
                                       ("row", row), ("col", col)):
                        explorer.controls[key].value = value
                assert explorer.error is None, (dilation, kernel, size, row, col, explorer.error)
                natten_fits = kernel * dilation <= size
                shifted = [a for a in explorer.figure.findobj() if a.get_gid() == "shifted-window"]
                assert len(shifted) == (1 if natten_fits else 0)


@pytest.mark.parametrize(
    "text, expected", [("1, 2, 3", (1, 2, 3)), (" 2;4 ", (2, 4)), ("1,", (1,))]
)
def test_parse_dilations(text, expected):
    assert widgets.parse_dilations(text) == expected


@pytest.mark.parametrize("text", ["", "a", "1.5", "0", "9", "1,1,1,1,1,1,1,1,1"])
def test_parse_dilations_refuses_with_a_message(text):
    with pytest.raises(ValueError, match="dilations"):
        widgets.parse_dilations(text)


# --------------------------------------------------------------------------- fast at every setting
def _chain_counts_by_enumeration(dilations, kernel_size, size):
    """Every chain of window positions from the centre output back to the input, walked one by one
    (the last layer's window first: each pixel on the way is an output of the layer before)."""
    counts = np.zeros((size, size), dtype=np.int64)
    half = kernel_size // 2
    steps = [(p * r, q * r) for r in reversed(dilations) for p in range(-half, half + 1) for q in range(-half, half + 1)]
    per_layer = (kernel_size * kernel_size,) * len(dilations)
    for choice in itertools.product(*(range(n) for n in per_layer)):
        row = col = size // 2
        on_map = True
        for layer, index in enumerate(choice):
            dr, dc = steps[layer * per_layer[0] + index]
            row, col = row + dr, col + dc
            on_map &= 0 <= row < size and 0 <= col < size
        if on_map:
            counts[row, col] += 1
    return counts


@pytest.mark.parametrize("dilations, kernel_size, size", [((1, 2), 3, None), ((2, 2, 2), 3, None), ((1, 3), 3, 7),
                                                         ((2,), 5, None), ((1, 1, 2), 3, 6)])
def test_window_chain_counts_match_enumeration_and_the_gradient_reach(dilations, kernel_size, size):
    from dilate_lab.course.figures.erf import effective_receptive_field, window_chain_counts

    counts = window_chain_counts(dilations, kernel_size, size)
    side = counts.shape[0]
    np.testing.assert_array_equal(counts, _chain_counts_by_enumeration(dilations, kernel_size, side))
    grad = effective_receptive_field(dilations, kernel_size, side)
    np.testing.assert_array_equal(counts > 0, grad > 0)


def test_erf_explorer_counts_chains_where_a_gradient_would_be_slow():
    from dilate_lab.course.figures.erf import GRADIENT_COST_LIMIT, gradient_cost

    explorer = widgets.erf_explorer()
    assert "log10 |grad|" in explorer.figure._suptitle.get_text()
    with explorer.hold_redraw():
        explorer.controls["kernel_size"].value = 7
        explorer.controls["left"].value = "9, 9, 9, 9, 9, 9, 9, 9"
    assert_shows_figure(explorer)
    assert gradient_cost(7, (9,) * 8, 1 + 8 * 6 * 9 + 4) > GRADIENT_COST_LIMIT
    assert "window chains" in explorer.figure._suptitle.get_text()
    # every step a multiple of 9: per axis the offsets -216, -207, ..., 216, 49 of them; 49^2 pixels
    assert "433x433, 2401 pixels reached" in explorer.figure.axes[0].get_title()
    assert explorer.render_seconds < 5  # was 26 s; the timing command measures it properly


def test_shifted_views_picture_redraws_only_the_query_and_matches_the_figure():
    from dilate_lab.course.figures.speed import ShiftedViewsPicture, plot_shifted_views

    picture = ShiftedViewsPicture(6, 6, 3, 2, dpi=96).prepare()
    first, second = picture.png(0, 0), picture.png(5, 3)
    assert first.startswith(PNG_MAGIC) and second.startswith(PNG_MAGIC) and first != second
    fig = picture.figure
    reference = plot_shifted_views(6, 6, 3, 2, 5, 3)
    for gid in ("key-0", "key-8", "shift-0", "legend", "query"):
        ours = [a for a in fig.findobj() if a.get_gid() == gid]
        theirs = [a for a in reference.findobj() if a.get_gid() == gid]
        assert len(ours) == len(theirs) >= 1, gid  # the previous query's artists are gone
    assert fig.get_suptitle() == reference.get_suptitle()
    explorer = widgets.shifted_views_explorer()
    explorer.controls["row"].value = 0
    assert_shows_figure(explorer)
    assert "[0, 4]" in explorer.figure.get_suptitle()


def test_cached_explorer_answers_a_revisited_setting_with_the_same_picture():
    calls = []

    def draw(size):
        calls.append(size)
        return widgets.figures.plot_receptive_field(3, 1, 0, 0, size, size)

    slider = widgets._slider(5, 3, 9, "map size", "dl-size")
    explorer = widgets.Explorer("cached", {"size": slider}, draw, cache=2)
    first_png, first_figure = explorer.image.value, explorer.figure
    slider.value = 6
    slider.value = 5  # back: from the cache, not drawn again
    assert calls == [5, 6] and explorer.image.value == first_png and explorer.figure is first_figure
    slider.value = 7
    slider.value = 8  # the cache holds two settings: 5 is dropped
    slider.value = 5
    assert calls == [5, 6, 7, 8, 5]
    assert_shows_figure(explorer)
