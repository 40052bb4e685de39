"""The data of lesson 07: scikit-learn's digits, and a task only a wide enough view can solve."""

import numpy as np
import pytest
import torch

from dilate_lab import dilated_window
from dilate_lab.course.data import (
    MARK_COLOURS,
    ImageSet,
    LongRangeLayout,
    display_array,
    load_digits_data,
    make_longrange_data,
    plot_examples,
    render_longrange,
)

sklearn_datasets = pytest.importorskip("sklearn.datasets")


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------
def test_digits_at_8x8_are_exactly_sklearns_images_split_without_loss_or_overlap():
    train, test = load_digits_data(size=8, standardize=False)
    digits = sklearn_datasets.load_digits()
    assert len(train) + len(test) == len(digits.images) == 1797

    def keyed(images, labels):
        return sorted((img.tobytes(), int(lab)) for img, lab in zip(images, labels))

    ours = keyed(
        np.concatenate([train.images.numpy(), test.images.numpy()])[:, 0] * 16.0,
        np.concatenate([train.labels.numpy(), test.labels.numpy()]),
    )
    theirs = keyed(digits.images.astype(np.float32), digits.target)
    assert ours == theirs


def test_digits_split_is_stratified_a_quarter_of_each_digit():
    train, test = load_digits_data(size=8, standardize=False, test_fraction=0.25)
    target = sklearn_datasets.load_digits().target
    for digit in range(10):
        n = int((target == digit).sum())
        assert int((test.labels == digit).sum()) == round(n * 0.25)
        assert int((train.labels == digit).sum()) == n - round(n * 0.25)


def test_digits_are_upsampled_and_standardized_with_training_statistics():
    train, test = load_digits_data(size=32)
    assert train.images.shape[1:] == (1, 32, 32) and test.images.shape[1:] == (1, 32, 32)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert abs(train.images.mean().item()) < 1e-4
    assert abs(train.images.std().item() - 1.0) < 1e-4
    assert abs(test.images.mean().item()) < 0.1  # same statistics, other images
    assert train.classes == tuple("0123456789")
    assert "sklearn.datasets.load_digits" in train.source


def test_digits_split_follows_the_seed():
    a_train, a_test = load_digits_data(size=8, seed=3)
    b_train, b_test = load_digits_data(size=8, seed=3)
    c_train, _ = load_digits_data(size=8, seed=4)
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_test.labels, b_test.labels)
    assert not torch.equal(a_train.images, c_train.images)


@pytest.mark.parametrize(
    "kwargs,name",
    [({"size": 0}, "size"), ({"test_fraction": 1.0}, "test_fraction"), ({"seed": -1}, "seed"),
     ({"standardize": "yes"}, "standardize")],
)
def test_digits_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        load_digits_data(**kwargs)


# ---------------------------------------------------------------------------
# the long-range task: what the images and labels are
# ---------------------------------------------------------------------------
def test_longrange_labels_are_colour_equality_half_and_half():
    train, test = make_longrange_data(n_train=200, n_test=100, seed=0)
    for data in (train, test):
        assert int(data.labels.sum()) == len(data) // 2
        for layout, label in zip(data.layouts, data.labels.tolist()):
            assert label == int(layout.colours[0] == layout.colours[1])
            assert all(0 <= c < 2 for c in layout.colours)  # red and blue by default


@pytest.mark.parametrize("cells,distance", [(6, 3), (8, 5), (10, 2)])
def test_longrange_marks_are_exactly_distance_apart_along_a_row_or_column(cells, distance):
    train, _ = make_longrange_data(n_train=100, n_test=2, cells=cells, distance=distance, seed=1)
    orientations = set()
    for layout in train.layouts:
        (r1, c1), (r2, c2) = layout.marks
        assert (r1 == r2 and abs(c1 - c2) == distance) or (c1 == c2 and abs(r1 - r2) == distance)
        assert all(0 <= v < cells for v in (r1, c1, r2, c2))
        assert not set(layout.distractors) & set(layout.marks)
        orientations.add(r1 == r2)
    assert orientations == {True, False}  # both directions occur


def test_longrange_pixels_show_the_layout():
    """Without noise: mark cells hold their palette colour, distractors are grey, the rest black."""
    cell = 4
    train, _ = make_longrange_data(n_train=20, n_test=2, cell=cell, noise=0.0, seed=2)
    for image, layout in zip(train.images, train.layouts):
        assert image.shape == (3, 24, 24)
        painted = set()
        for (row, col), colour in zip(layout.marks, layout.colours):
            block = image[:, row * cell + 1 : row * cell + 3, col * cell + 1 : col * cell + 3]
            expected = torch.tensor(MARK_COLOURS[colour][1]).view(3, 1, 1).expand(3, 2, 2)
            assert torch.equal(block, expected)
            painted.add((row, col))
        for (row, col), grey in zip(layout.distractors, layout.distractor_greys):
            block = image[:, row * cell + 1 : row * cell + 3, col * cell + 1 : col * cell + 3]
            assert torch.allclose(block, torch.full_like(block, grey))
            painted.add((row, col))
        # the one-pixel frame of every cell, and every cell nothing was painted in, is black
        for row in range(6):
            for col in range(6):
                cell_pixels = image[:, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell]
                assert cell_pixels[:, 0].abs().sum() == 0 and cell_pixels[:, :, 0].abs().sum() == 0
                if (row, col) not in painted:
                    assert cell_pixels.abs().sum() == 0


def test_longrange_is_reproducible_and_train_differs_from_test():
    a_train, a_test = make_longrange_data(n_train=50, n_test=50, seed=7)
    b_train, b_test = make_longrange_data(n_train=50, n_test=50, seed=7)
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_test.images, b_test.images)
    assert not torch.equal(a_train.images, a_test.images)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"distance": 6}, "distance"),  # cells is 6: the marks would not fit
        ({"n_colours": 1}, "n_colours"),
        ({"n_colours": 7}, "n_colours"),
        ({"n_distractors": 35}, "n_distractors"),
        ({"noise": -0.1}, "noise"),
        ({"n_train": 0}, "n_train"),
        ({"cell": 0}, "cell"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_longrange_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_longrange_data(**kwargs)


def test_imageset_checks_shapes():
    with pytest.raises(ValueError, match="images"):
        ImageSet(torch.zeros(4, 8, 8), torch.zeros(4, dtype=torch.int64), ("a",), "")
    with pytest.raises(ValueError, match="labels"):
        ImageSet(torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.int64), ("a",), "")


# ---------------------------------------------------------------------------
# the long-range task needs a wide view, by construction
# ---------------------------------------------------------------------------
def _seen_cells(row, col, cells, dilations):
    """Cells a token at (row, col) sees through one block of dilated attention (geometry only)."""
    seen = set()
    for r in dilations:
        seen.update(dilated_window(row, col, 3, r, cells, cells).inside_positions)
    return seen


def test_no_token_of_one_dilation_1_block_sees_both_marks_but_a_dilation_3_head_does():
    """From the window geometry alone: with one block of 3x3 windows and patch tokens,
    dilation 1 never puts both marks in any token's view; dilation 3 puts the
    second mark in the first mark's own window."""
    cells = 6
    train, _ = make_longrange_data(n_train=300, n_test=2, cells=cells, distance=3, seed=3)
    for layout in train.layouts:
        first, second = layout.marks
        for row in range(cells):
            for col in range(cells):
                seen = _seen_cells(row, col, cells, (1, 1, 1))
                assert not (first in seen and second in seen)
        assert second in _seen_cells(*first, cells, (1, 2, 3))
        assert first in _seen_cells(*second, cells, (1, 2, 3))


def test_recolouring_the_far_mark_flips_the_label_and_changes_nothing_near_the_other():
    """Everything a dilation-1 token next to mark A sees is identical, yet the label flips."""
    cells, cell = 6, 4
    rng = np.random.default_rng(0)
    train, _ = make_longrange_data(n_train=40, n_test=2, cells=cells, cell=cell, seed=4)
    for layout in train.layouts:
        noise = rng.normal(0, 0.05, size=(3, cells * cell, cells * cell))
        flipped = LongRangeLayout(
            layout.marks, (layout.colours[0], 1 - layout.colours[1]),
            layout.distractors, layout.distractor_greys,
        )
        assert flipped.label != layout.label
        a = render_longrange(layout, cells, cell, noise)
        b = render_longrange(flipped, cells, cell, noise)
        changed_cells = {
            (int(y) // cell, int(x) // cell) for y, x in zip(*np.nonzero((a != b).any(0).numpy()))
        }
        assert changed_cells == {layout.marks[1]}  # only the far mark's pixels differ
        first = layout.marks[0]
        for row in range(cells):
            for col in range(cells):
                seen = _seen_cells(row, col, cells, (1,))
                if first in seen:  # a token that sees mark A sees the very same pixels
                    for r, c in seen:
                        window = (slice(None), slice(r * cell, (r + 1) * cell), slice(c * cell, (c + 1) * cell))
                        assert torch.equal(a[window], b[window])


# ---------------------------------------------------------------------------
# looking at the data
# ---------------------------------------------------------------------------
def test_display_array_shows_colour_as_is_and_grey_rescaled():
    rgb = torch.tensor([[[2.0, -1.0]], [[0.5, 0.5]], [[0.0, 1.0]]])  # 3, 1, 2
    shown = display_array(rgb)
    assert shown.shape == (1, 2, 3)
    assert shown[0, 0].tolist() == [1.0, 0.5, 0.0] and shown[0, 1].tolist() == [0.0, 0.5, 1.0]
    grey = torch.tensor([[[-2.0, 0.0, 2.0]]])  # 1, 1, 3
    shown = display_array(grey)
    assert shown[0, :, 0].tolist() == [0.0, 0.5, 1.0]
    assert (shown[..., 0] == shown[..., 1]).all() and (shown[..., 1] == shown[..., 2]).all()
    with pytest.raises(ValueError, match="image"):
        display_array(torch.zeros(2, 4, 4))


def test_plot_examples_titles_each_image_and_marks_wrong_predictions_red():
    train, _ = make_longrange_data(n_train=6, n_test=2, seed=0)
    fig = plot_examples(train, n=6, columns=4)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == [train.classes[y] for y in train.labels.tolist()]
    assert len(fig.axes) == 8  # a 2 x 4 grid, the last two empty
    wrong = [1 - y for y in train.labels.tolist()]
    wrong[0] = int(train.labels[0])  # the first prediction is right
    fig = plot_examples(train, n=6, predictions=wrong)
    colours = [ax.title.get_color() for ax in fig.axes if ax.get_title()]
    assert colours[0] == "black" and colours[1:] == ["red"] * 5
    with pytest.raises(ValueError, match="predictions"):
        plot_examples(train, n=6, predictions=[0])
