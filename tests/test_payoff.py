"""Lesson 00's payoff: the first model trains, and the head-attention figure shows its windows.

The window positions are worked out here from eq. (3) of the paper,
(row + p*r, col + q*r) for p, q in [-(k//2), k//2], not taken from the package.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure

from dilate_lab.course.data import load_digits_data
from dilate_lab.course.figures.head_attention import head_attention, plot_head_attention
from dilate_lab.course.loop import evaluate, seed_everything
from dilate_lab.course.payoff import train_first_model
from dilate_lab.course.small_models import build_model


def window_by_definition(row, col, k, r):
    """Every window position of eq. (3), in the paper's order (p over rows, then q over columns)."""
    half = k // 2
    return [(row + p * r, col + q * r) for p in range(-half, half + 1) for q in range(-half, half + 1)]


def on_the_map(position, height, width):
    return 0 <= position[0] < height and 0 <= position[1] < width


def artists(fig: Figure, gid: str) -> list:
    return [a for a in fig.findobj() if getattr(a, "get_gid", lambda: None)() == gid]


def only(fig: Figure, gid: str):
    found = artists(fig, gid)
    assert len(found) == 1, f"expected one artist {gid!r}, found {len(found)}"
    return found[0]


def drawn_cells(collection: PatchCollection) -> list[tuple[int, int]]:
    """The (row, col) of every square in a collection, from each square's centre."""
    cells = []
    for path in collection.get_paths():
        x0, y0 = path.vertices.min(axis=0)
        x1, y1 = path.vertices.max(axis=0)
        cells.append((round((y0 + y1) / 2), round((x0 + x1) / 2)))
    return cells


# ---------------------------------------------------------------------------
# one short training run, shared by the tests that only read it
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run():
    return train_first_model(epochs=2, seed=0, progress=False)


def test_training_beats_guessing_by_a_wide_margin(run):
    chance = 1 / 10  # ten digits, each a tenth of the test set
    assert run.before.accuracy < 2 * chance  # untrained: a guess
    assert run.history.final_test_accuracy > 5 * chance  # two epochs, seconds: most digits right
    assert run.history.epoch == [1, 2]
    # the reported accuracy is the trained model's on the held-out digits, measured again here
    assert evaluate(run.model, run.test).accuracy == run.history.final_test_accuracy
    assert not run.model.training


def test_the_test_digits_are_held_out_scikit_learn_digits(run):
    train, test = load_digits_data(size=32, test_fraction=0.25, seed=0)
    assert torch.equal(run.test.images, test.images) and torch.equal(run.test.labels, test.labels)
    assert len(run.train) + len(run.test) == 1797  # every digit scikit-learn ships, once
    assert "sklearn.datasets.load_digits" in run.train.source
    # no test image is also a training image
    train_rows = {tuple(image.flatten().tolist()) for image in run.train.images}
    assert not any(tuple(image.flatten().tolist()) in train_rows for image in run.test.images)


def test_untrained_copy_holds_the_seeded_initial_weights(run):
    seed_everything(0)
    fresh = build_model("digits", "1,2,3")
    for name, value in fresh.state_dict().items():
        assert torch.equal(run.untrained.state_dict()[name], value), name
    assert evaluate(run.untrained, run.test) == run.before
    changed = [name for name, value in run.model.state_dict().items()
               if not torch.equal(value, run.untrained.state_dict()[name])]
    assert "head.weight" in changed and "blocks.0.attn.qkv.weight" in changed


def test_trained_attention_sums_to_one_inside_each_dilated_window(run):
    image = run.test.images[0]
    weights, dilations = run.model.attention_maps(image, block=0)  # heads, 8, 8, 9
    assert dilations == (1, 2, 3)
    heads, height, width, kk = weights.shape
    torch.testing.assert_close(weights.sum(-1), torch.ones(heads, height, width))  # softmax over the window
    for row, col in [(0, 0), (3, 4), (7, 2), (5, 7)]:
        view = head_attention(weights, row, col, 3, dilations)
        for head, r in zip(view.heads, dilations):
            window = window_by_definition(row, col, 3, r)
            inside = [p for p in window if on_the_map(p, height, width)]
            # zero on every map cell outside the dilated window ...
            outside_window = np.ones((height, width), dtype=bool)
            for i, j in inside:
                outside_window[i, j] = False
            assert (head.on_map[outside_window] == 0).all()
            # ... the model's own weight on every cell inside it ...
            for o, (i, j) in enumerate(window):
                if on_the_map((i, j), height, width):
                    assert head.on_map[i, j] == pytest.approx(weights[head.head, row, col, o].item())
            # ... and what the map misses went to zero padding: together, 1
            padded = [o for o, p in enumerate(window) if not on_the_map(p, height, width)]
            assert head.padding == pytest.approx(weights[head.head, row, col, padded].sum().item(), abs=1e-7)
            assert head.on_map.sum() + head.padding == pytest.approx(1.0, abs=1e-5)


def test_trained_heads_are_far_from_uniform_where_untrained_ones_are_near_it(run):
    image = run.test.images[0]
    uniform = 1 / 9
    trained, _ = run.model.attention_maps(image, block=0)
    untrained, _ = run.untrained.attention_maps(image, block=0)
    # the largest weight of each query's window, averaged over the 64 queries, per head
    assert (trained.amax(-1).mean((1, 2)) > 2 * uniform).all()
    assert (untrained.amax(-1).mean((1, 2)) < 2 * uniform).all()


def test_same_seed_same_run_and_threads_are_restored():
    threads_seen = []

    def show(text, done):
        threads_seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    first = train_first_model(epochs=1, seed=3, progress=show)
    second = train_first_model(epochs=1, seed=3, progress=False)
    assert first.history.test_loss == second.history.test_loss  # bit for bit on one machine
    assert first.history.train_loss == second.history.train_loss
    assert threads_seen and set(threads_seen) == {1}  # trained on one thread ...
    assert torch.get_num_threads() == before  # ... and the setting is back afterwards


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(epochs=0), "epochs"),
        (dict(epochs=1.5), "epochs"),
        (dict(seed=-1), "seed"),
        (dict(threads=0), "threads"),
        (dict(device="tpu"), "device"),
        (dict(lr=0.0), "lr"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        train_first_model(progress=False, **kwargs)


# ---------------------------------------------------------------------------
# the figure
# ---------------------------------------------------------------------------
def random_softmax(heads, height, width, k, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(heads, height, width, k * k))
    weights = np.exp(logits)
    return weights / weights.sum(-1, keepdims=True)  # heads, H, W, k*k


@pytest.mark.parametrize("row, col", [(3, 4), (0, 0), (7, 5), (2, 7)])
def test_figure_colours_each_head_window_with_its_weights(row, col):
    k, dilations, height, width = 3, (1, 2, 3), 8, 8
    weights = random_softmax(3, height, width, k)
    image = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    fig = plot_head_attention(image, weights, row, col, k, dilations, title="test")
    assert fig._suptitle.get_text() == "test"
    for h, r in enumerate(dilations):
        window = window_by_definition(row, col, k, r)
        inside = [p for p in window if on_the_map(p, height, width)]
        outside = [p for p in window if not on_the_map(p, height, width)]
        cells = only(fig, f"head-{h}")
        assert drawn_cells(cells) == inside
        np.testing.assert_allclose(cells.get_array(), [weights[h, row, col, window.index(p)] for p in inside])
        padded = only(fig, f"head-{h}-padding")
        assert drawn_cells(padded) == outside
        np.testing.assert_allclose(padded.get_array(), [weights[h, row, col, window.index(p)] for p in outside])
        # one colour scale for every head, up to the largest weight shown
        assert cells.get_clim() == padded.get_clim() == (0.0, pytest.approx(weights[:, row, col].max()))
        # the dashed square is the span, (k - 1) * r + 1 cells, centred on the query
        span = only(fig, f"span-{h}")
        side = (k - 1) * r + 1
        assert (span.get_width(), span.get_height()) == (side, side)
        assert (span.get_x() + side / 2, span.get_y() + side / 2) == (col, row)
        # every window position, padded ones included, is on screen
        ax = cells.axes
        (x0, x1), (y1, y0) = ax.get_xlim(), ax.get_ylim()
        assert all(x0 < j < x1 and y0 < i < y1 for i, j in window)
    assert len(artists(fig, "query")) == 3
    assert len(artists(fig, "colorbar")) == 1
    assert "plot_head_attention(" in " ".join(t.get_text() for t in fig.texts)


def test_figure_shows_the_whole_map_when_no_window_leaves_it():
    weights = random_softmax(3, 8, 8, 3)
    fig = plot_head_attention(None, weights, 3, 4, 3, (1, 2, 3))  # reaches rows 0-6, columns 1-7
    for h in range(3):
        ax = only(fig, f"head-{h}").axes
        assert ax.get_xlim() == (-0.5, 7.5) and ax.get_ylim() == (7.5, -0.5)
        assert len(only(fig, f"head-{h}-padding").get_paths()) == 0


def test_head_attention_says_what_uniform_weights_would_be():
    view = head_attention(np.full((1, 5, 5, 25), 1 / 25), 2, 2, 5, (1,))
    assert view.uniform == pytest.approx(1 / 25)
    assert view.heads[0].on_map.sum() == pytest.approx(1.0) and view.heads[0].padding == 0


def test_figure_colour_scale_can_be_fixed_and_checks_it():
    weights = np.full((1, 5, 5, 9), 1 / 9)
    fig = plot_head_attention(None, weights, 2, 2, 3, (1,), vmax=0.5)
    assert only(fig, "head-0").get_clim() == (0.0, 0.5)
    with pytest.raises(ValueError, match="vmax"):
        plot_head_attention(None, weights, 2, 2, 3, (1,), vmax=0)


@pytest.mark.parametrize(
    "args, word",
    [
        ((np.ones((2, 4, 4, 9)), 0, 0, 3, (1, 2, 3)), "dilations"),
        ((np.ones((2, 4, 4, 8)), 0, 0, 3, (1, 2)), "weights"),
        ((np.ones((1, 4, 4, 9)), 4, 0, 3, (1,)), "row"),
        ((np.ones((1, 4, 4, 9)), 0, -1, 3, (1,)), "col"),
    ],
)
def test_figure_bad_arguments_name_the_argument(args, word):
    with pytest.raises(ValueError, match=word):
        plot_head_attention(None, *args)
