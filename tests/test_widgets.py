"""The tensor explorers (ipywidgets) driven from Python, without a browser: set a control, check what is drawn.

The window explorers are browser-native: tests/test_explorers.py and tests/test_browser_explorers.py."""

from __future__ import annotations

import gc
import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from dilate_lab.course import widgets
from dilate_lab.course._controls import _slider, _text, _toggle
from dilate_lab.course.figures._pictures import figure_png
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
# attention viewer, effective receptive field
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


def test_explorer_repr_is_short_and_classes_are_stable():
    explorer = widgets.erf_explorer()
    assert repr(explorer) == "Explorer(erf: left='1, 1, 1', right='1, 2, 3', kernel_size=3)"
    assert {"dl-explorer", "dl-erf"} <= set(explorer._dom_classes)
    for key, css in [("left", "dl-left"), ("right", "dl-right"), ("kernel_size", "dl-kernel")]:
        assert css in explorer.controls[key]._dom_classes
    assert "dl-figure" in explorer.image._dom_classes


def test_the_geometry_explorers_are_browser_native_only():
    """The Python versions of the window explorers are gone; the tensor explorers stay, and are what
    widget_timing sweeps."""
    import dilate_lab
    from dilate_lab.course import explorers
    from dilate_lab.course.widget_timing import EXPLORERS

    assert EXPLORERS == ("attention_viewer", "erf_explorer", "shifted_views_explorer", "block_mask_explorer")
    for name in ("receptive_field_explorer", "multi_scale_explorer", "border_explorer", "coverage_explorer",
                 "unfold_explorer", "shape_tracer"):
        assert not hasattr(widgets, name) and name not in dir(dilate_lab), name
    for name in ("ReceptiveFieldExplorer", "MultiScaleExplorer", "BorderExplorer", "CoverageExplorer",
                 "UnfoldExplorer", "ShapeTracerExplorer"):
        assert hasattr(explorers, name), name


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

    slider = _slider(5, 3, 9, "map size", "dl-size")
    explorer = widgets.Explorer("cached", {"size": slider}, draw, cache=2)
    first_png, first_width = explorer.image.value, explorer.image.width
    assert explorer.figure.axes[0].get_xlim()[1] > 4  # a 5 x 5 map
    slider.value = 6
    slider.value = 5  # back: the PNG from the cache, nothing drawn
    assert calls == [5, 6] and explorer.image.value == first_png and explorer.image.width == first_width
    assert_shows_figure(explorer)
    figure = explorer.figure  # the cache keeps no figure: asked for, it is drawn again, once
    assert calls == [5, 6, 5] and explorer.figure is figure
    assert figure.axes[0].get_title() == draw(5).axes[0].get_title()
    calls.clear()
    slider.value = 7
    slider.value = 8  # the cache holds two settings: 5 is dropped
    slider.value = 5
    assert calls == [7, 8, 5]
    assert_shows_figure(explorer)
    explorer.release()
    assert explorer.figure is None and not explorer._pictures


def test_cached_pictures_keep_no_figures_alive():
    """A full garbage collection scans every live object: cached figures (some ten thousand objects
    each) would make it slower with every setting a learner visits."""
    import gc
    import weakref

    drawn = []

    def draw(size):
        figure = widgets.figures.plot_receptive_field(3, 1, 0, 0, size, size)
        drawn.append(weakref.ref(figure))
        return figure

    slider = _slider(3, 3, 9, "map size", "dl-size")
    explorer = widgets.Explorer("cached", {"size": slider}, draw, cache=8)
    for size in range(4, 10):
        slider.value = size
    gc.collect()
    alive = [ref() for ref in drawn if ref() is not None]
    assert alive == [explorer.figure] and len(explorer._pictures) == 7


# --------------------------------------------------------------------------- one reused picture per explorer
def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(bytes(png))))  # rows, cols, 4


def static_pixels(explorer) -> np.ndarray:
    """``explorer.figure`` (drawn anew by the figure function of the lesson) at the widget's dpi."""
    figure = explorer.figure
    figure.set_dpi(96)
    return pixels(figure_png(figure))


# each control to its extremes, impossible settings included, in an order that changes the picture's layout
CHANGES = {
    "attention_viewer": [("row", 0), ("col", 27), ("row", 27), ("col", 0), ("row", 1)],
    "erf_explorer": [("kernel_size", 7), ("left", "9, 9, 9, 9, 9, 9, 9, 9"), ("right", "0"), ("right", "1"),
                     ("kernel_size", 5), ("left", "2, 2, 2")],
    "shifted_views_explorer": [("kernel_size", 5), ("dilation", 3), ("row", 0), ("col", 0), ("kernel_size", 3),
                               ("row", 5)],
    "block_mask_explorer": [("side", 32), ("block_size", 16), ("dilation", 3), ("side", 8), ("block_size", 128),
                            ("side", 20)],
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_explorer_shows_the_static_figure_of_its_setting_after_any_changes(name):
    """The picture an explorer redraws in place is, pixel for pixel, the figure its figure function
    draws anew for the same setting: no artist keeps the state of an earlier setting."""
    explorer = getattr(widgets, name)()
    for key, value in CHANGES[name]:
        explorer.controls[key].value = value
        if explorer.error is not None:  # a refused schedule: the message, never a traceback
            assert_shows_error(explorer, key)
            continue
        assert_shows_figure(explorer)
        np.testing.assert_array_equal(pixels(explorer.image.value), static_pixels(explorer), err_msg=f"{key}={value!r}")


def new_container_objects(change) -> int:
    """Objects the garbage collector tracks that ``change()`` leaves alive or as cyclic garbage."""
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        change()
        return gc.get_count()[0] - before
    finally:
        gc.enable()


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_change_leaves_almost_nothing_for_the_garbage_collector(name):
    """A new figure per change leaves some 10,000 objects behind, and Python's full garbage collection
    (0.05-0.15 s) then falls on every few changes; a reused picture leaves a few dozen (a few hundred
    for the shifted views' arrows)."""
    explorer = getattr(widgets, name)()
    explorer.cache_size = 0  # every change draws
    key, value = next((k, v) for k, v in CHANGES[name] if not (k == "right" and v == "0"))
    values = [value, explorer.controls[key].value]
    for setting in values:  # both settings drawn once: ticks and text layouts made
        explorer.controls[key].value = setting
    for setting in values:
        left = new_container_objects(lambda: setattr(explorer.controls[key], "value", setting))
        assert explorer.error is None and left < 1000, (key, setting, left)
    new_figure = new_container_objects(lambda: figure_png(widgets.figures.plot_block_mask(32, 32, 3, 3, 16)))
    assert new_figure > 5000  # what the explorers did before


def test_a_figure_taken_from_an_explorer_stays_as_it_was():
    explorer = widgets.block_mask_explorer()
    kept = explorer.figure
    title = kept.axes[0].get_title()
    assert "of 32x32 computed" in title
    explorer.controls["block_size"].value = 16
    assert kept.axes[0].get_title() == title  # not the explorer's own picture, which the change redrew
    assert explorer.figure is not kept and "of 16x16 computed" in explorer.figure.axes[0].get_title()
    assert explorer.figure is explorer.figure  # drawn once per change


def test_trained_attention_explorer_shows_the_static_figure_of_each_image():
    from dilate_lab.course.trained_attention import trained_attention_explorer

    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.random((4, 1, 16, 16)) * np.arange(1, 5)[:, None, None, None])  # N, 1, H, W
    weights = {label: rng.dirichlet(np.ones(9), size=(4, 3, 4, 4)) for label in ("untrained", "trained")}
    explorer = trained_attention_explorer(weights, images, (1, 2, 3), row=1, col=2)
    for key, value in [("image", 3), ("row", 0), ("col", 3), ("image", 1)]:
        explorer.controls[key].value = value
        assert_shows_figure(explorer)
        np.testing.assert_array_equal(pixels(explorer.image.value), static_pixels(explorer))


# --------------------------------------------------------------------------- the timing command
def test_widget_timing_sweeps_the_extremes_of_every_control(monkeypatch):
    from dilate_lab.course.widget_timing import GC_COUNT_CHANGES, extreme_values, format_timings, measure_explorers

    drawn = []

    def tiny_explorer():
        """A toggle, a slider and a schedule box whose eight-entry extreme is refused."""
        controls = {
            "kernel_size": _toggle((3, 5, 7), 3, "kernel k", "dl-kernel"),
            "size": _slider(8, 3, 16, "map size", "dl-size"),
            "left": _text("1, 2", "left", "dl-left"),
        }

        def draw(kernel_size, size, left):
            schedule = widgets.parse_dilations(left, "left", max_count=4, max_dilation=9)
            drawn.append((kernel_size, size, schedule))
            return f"<p>{kernel_size} {size} {schedule}</p>"

        return widgets.Explorer("tiny", controls, draw)

    monkeypatch.setattr(widgets, "tiny_explorer", tiny_explorer, raising=False)
    # The tool collects all garbage before each timed change; in the test process (every
    # test's objects alive) a full collection takes a good part of a second, so here the
    # collections are of the youngest generation only. What is counted stays the same.
    import types

    import dilate_lab.course.widget_timing as widget_timing

    young_only = types.SimpleNamespace(collect=lambda *_: gc.collect(0), callbacks=gc.callbacks)
    monkeypatch.setattr(widget_timing, "gc", young_only)
    expected = {"kernel_size": [5, 7], "size": [3, 16], "left": ["1", "1, 2, 5", "9, 9, 9, 9, 9, 9, 9, 9"]}
    explorer = tiny_explorer()
    assert {key: extreme_values(key, control) for key, control in explorer.controls.items()} == expected
    drawn.clear()
    (row,) = measure_explorers(["tiny_explorer"], rounds=2)
    for value in (5, 7):
        assert (value, 8, (1, 2)) in drawn
    assert (3, 3, (1, 2)) in drawn and (3, 16, (1, 2)) in drawn and (3, 8, (1, 2, 5)) in drawn
    swept = 2 * sum(len(values) for values in expected.values())  # to each extreme and back
    corner = 1 + 2 * len(expected)  # all at once, then each control away and back
    assert 2 * (swept + 1) <= row["changes"] <= 2 * (swept + corner)
    assert row["errors"] is None  # back at the defaults
    assert any("at most 4" in message for message in row["messages"])  # eight dilations: refused, shown
    assert 0 < row["median_change_s"] <= row["worst_single_change_s"]
    assert row["slowest_best_s"] <= row["slowest_change_s"] <= row["worst_single_change_s"]
    assert row["slowest_setting"] and row["rounds"] == 2 and row["full_collection_s"] > 0
    # the full collections are counted over whole sweeps, drawn in a row, GC_COUNT_CHANGES changes at least
    drawn_in_a_row = swept * -(-GC_COUNT_CHANGES // swept)
    assert row["full_collections_over"] == drawn_in_a_row and row["full_collections"] >= 0
    table = format_timings([row])
    assert "tiny_explorer" in table and "median of 2" in table and table.count("\n") == 2
    assert f"{row['full_collections']} in {drawn_in_a_row} changes" in table
