"""Lessons 06 and 06b's figures, checked on what they draw against independent computations."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from dilate_lab.bench import OpTime
from dilate_lab.course.figures import (
    plot_block_mask,
    plot_shifted_views,
    plot_time_breakdown,
    window_block_usage,
)
from dilate_lab.course.figures._pictures import figure_png
from dilate_lab.course.figures.blocks import BlockMaskPicture
from dilate_lab.course.figures.speed import ShiftedViewsPicture


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))  # rows, cols, 4


def artists(fig, gid):
    found = []
    for ax in fig.axes:
        for artist in list(ax.patches) + list(ax.collections) + list(ax.texts) + list(ax.lines):
            if artist.get_gid() == gid:
                found.append((ax, artist))
    return found


def one(fig, gid):
    found = artists(fig, gid)
    assert len(found) == 1, f"expected one artist {gid!r}, found {len(found)}"
    return found[0][1]


def cell_centres(collection):
    """(row, col) of each square of a PatchCollection drawn on the map (x = col, y = row)."""
    return {
        (round(path.vertices[:, 1].mean()), round(path.vertices[:, 0].mean()))
        for path in collection.get_paths()
    }


# --------------------------------------------------------------------------- shifted views
@pytest.mark.parametrize(
    "H,W,kernel_size,dilation,row,col",
    [(6, 6, 3, 2, 1, 4), (5, 7, 3, 1, 0, 0), (4, 5, 5, 1, 3, 2), (7, 7, 3, 3, 3, 3)],
)
def test_each_view_puts_the_query_on_its_unfold_key(H, W, kernel_size, dilation, row, col):
    """View o, read at the query's [row, col] on the padded map, is row o of F.unfold's column.

    The unfold of the pixel numbers 1..H*W (0 = padding) is computed here, independently.
    """
    fig = plot_shifted_views(H, W, kernel_size, dilation, row, col)
    kk = kernel_size * kernel_size
    pad = dilation * (kernel_size // 2)
    numbers = torch.arange(1, H * W + 1, dtype=torch.float64).reshape(1, 1, H, W)
    column = F.unfold(numbers, kernel_size, dilation=dilation, padding=pad)[0, :, row * W + col]  # k*k
    padded = np.pad(np.arange(1, H * W + 1).reshape(H, W), pad)  # H+2p, W+2p, 0 = padding
    assert len(fig.axes) == kk
    for o in range(kk):
        view = one(fig, f"view-{o}")
        assert (view.get_width(), view.get_height()) == (W, H)
        top, left = view.get_y() + 0.5 + pad, view.get_x() + 0.5 + pad  # in padded coordinates
        assert padded[int(top) + row, int(left) + col] == int(column[o])
        key = one(fig, f"key-{o}")
        (key_row, key_col), = cell_centres(key)
        assert padded[key_row + pad, key_col + pad] == int(column[o])
        # zero padding is drawn hatched, keys on the map are not
        assert bool(key.get_hatch()) == (int(column[o]) == 0)
        assert len(artists(fig, f"shift-{o}")) == (0 if o == kk // 2 else 1)


def legend_entries(legend):
    """label -> legend handle."""
    return dict(zip([t.get_text() for t in legend.get_texts()], legend.legend_handles))


def test_shifted_views_legend_names_what_the_panels_draw():
    fig = plot_shifted_views(6, 6, 3, 2, row=0, col=4)  # query on the top edge: some keys are padding
    (legend,) = fig.legends
    assert legend.get_gid() == "legend"
    entries = legend_entries(legend)
    # the legend's swatches look like the artists they name
    padding = entries["zero padding of K (logit 0, value 0)"]
    assert {artist.get_hatch() for _, artist in artists(fig, "padded-K")} == {padding.get_hatch()} == {".."}
    on_map_key, padded_key = entries["key o of the query, on the map"], entries["key o of the query, a zero of the padding"]
    # window position o = 0 is (-2, -2) from (0, 4): off the map; o = 6 is (+2, -2), pixel (2, 2): on it
    assert one(fig, "key-0").get_hatch() == padded_key.get_hatch() == "xxx"
    np.testing.assert_allclose(one(fig, "key-0").get_edgecolor()[0], padded_key.get_edgecolor())
    np.testing.assert_allclose(one(fig, "key-6").get_edgecolor()[0], on_map_key.get_edgecolor())
    view = entries["view o: a 6 x 6 slice of padded K"]
    np.testing.assert_allclose(view.get_facecolor(), one(fig, "view-0").get_facecolor())
    assert "the query (0, 4)" in entries
    assert "element under the star's index [0, 4] is the key at the arrow's head" in fig.get_suptitle()


@pytest.mark.parametrize("H,W,kernel_size,dilation", [(6, 6, 5, 3), (16, 16, 3, 3), (5, 7, 3, 1)])
def test_shifted_views_picture_redrawn_for_other_queries_is_the_new_figure(H, W, kernel_size, dilation):
    """The picture draws the panels once and, per query, only the keys, arrows, stars and texts over
    them: the PNG is the whole figure drawn anew for that query (keys moving on and off the map)."""
    picture = ShiftedViewsPicture(H, W, kernel_size, dilation, dpi=96).prepare()
    for row, col in [(0, 0), (H - 1, W - 1), (H // 2, 0), (0, W - 1)]:
        shown = picture.png(row, col)
        fresh = plot_shifted_views(H, W, kernel_size, dilation, row, col)
        fresh.set_dpi(96)
        np.testing.assert_array_equal(pixels(shown), pixels(figure_png(fresh)), err_msg=f"query {(row, col)}")


def test_shifted_views_rejects_bad_arguments():
    with pytest.raises(ValueError, match="row"):
        plot_shifted_views(6, 6, 3, 1, row=6, col=0)
    with pytest.raises(ValueError, match="kernel_size must be at most 5"):
        plot_shifted_views(8, 8, 7, 1, 1, 1)
    with pytest.raises(ValueError, match="kernel_size"):
        plot_shifted_views(8, 8, 4, 1, 1, 1)
    with pytest.raises(ValueError, match="dilation"):
        plot_shifted_views(8, 8, 3, 0, 1, 1)
    with pytest.raises(ValueError, match="height and width must be at most 16"):
        plot_shifted_views(17, 8, 3, 1, 1, 1)


# --------------------------------------------------------------------------- block usage
def dense_blocks(H, W, kernel_size, dilation, block_size):
    """Brute force: the full (N, N) window mask from pixel coordinates, then any() per tile."""
    n = H * W
    ys, xs = np.divmod(np.arange(n), W)
    d_row = ys[None, :] - ys[:, None]  # query (dim 0) to key (dim 1)
    d_col = xs[None, :] - xs[:, None]
    reach = dilation * (kernel_size // 2)
    allowed = (
        (np.abs(d_row) <= reach)
        & (np.abs(d_col) <= reach)
        & (d_row % dilation == 0)
        & (d_col % dilation == 0)
    )
    nb = -(-n // block_size)
    blocks = np.zeros((nb, nb), dtype=bool)
    computed = 0
    for qb in range(nb):
        for kb in range(nb):
            tile = allowed[qb * block_size : (qb + 1) * block_size, kb * block_size : (kb + 1) * block_size]
            blocks[qb, kb] = tile.any()
            computed += tile.size if tile.any() else 0
    return blocks, int(allowed.sum()), computed


@pytest.mark.parametrize(
    "H,W,kernel_size,dilation,block_size",
    [(16, 16, 3, 2, 32), (9, 7, 3, 1, 8), (12, 10, 5, 2, 16), (14, 14, 3, 3, 128), (5, 5, 3, 1, 1)],
)
def test_block_usage_matches_brute_force(H, W, kernel_size, dilation, block_size):
    usage = window_block_usage(H, W, kernel_size, dilation, block_size)
    blocks, pairs, computed = dense_blocks(H, W, kernel_size, dilation, block_size)
    np.testing.assert_array_equal(usage.blocks, blocks)
    assert usage.window_pairs == pairs
    assert usage.computed_pairs == computed
    assert usage.block_fraction == pytest.approx(blocks.mean())
    assert usage.useful_fraction == pytest.approx(pairs / computed)


def test_block_usage_of_one_pixel_blocks_is_the_mask_itself():
    usage = window_block_usage(5, 5, 3, 1, block_size=1)
    assert usage.useful_fraction == 1.0
    # 9 interior queries see 9 keys, 12 edge queries 6, 4 corners 4
    assert usage.computed_blocks == usage.window_pairs == 9 * 9 + 12 * 6 + 4 * 4


def test_block_usage_agrees_with_flex_attention_block_mask():
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    H, W, kernel_size, dilation, block_size = 20, 20, 3, 2, 32
    reach = dilation * (kernel_size // 2)

    def mask_mod(b, h, q_idx, kv_idx):  # written here from the definition, not the package's
        dr = kv_idx // W - q_idx // W
        dc = kv_idx % W - q_idx % W
        return (dr.abs() <= reach) & (dc.abs() <= reach) & (dr % dilation == 0) & (dc % dilation == 0)

    block_mask = flex.create_block_mask(
        mask_mod, None, None, H * W, H * W, device="cpu", BLOCK_SIZE=block_size, _compile=False
    )
    theirs = block_mask.to_dense()[0, 0].numpy().astype(bool)  # query blocks, key blocks
    np.testing.assert_array_equal(window_block_usage(H, W, kernel_size, dilation, block_size).blocks, theirs)


def test_block_usage_rejects_bad_arguments():
    with pytest.raises(ValueError, match="block_size"):
        window_block_usage(8, 8, 3, 1, block_size=0)
    with pytest.raises(ValueError, match="height"):
        window_block_usage(0, 8)


# --------------------------------------------------------------------------- block mask figure
def test_block_mask_figure_draws_the_usage():
    H, W, kernel_size, dilation, block_size, row, col = 12, 10, 3, 2, 16, 6, 3
    fig = plot_block_mask(H, W, kernel_size, dilation, block_size, row, col)
    usage = window_block_usage(H, W, kernel_size, dilation, block_size)
    assert len(one(fig, "computed-blocks").get_paths()) == usage.computed_blocks
    dots = one(fig, "window-pairs")
    assert len(dots.get_xdata()) == usage.window_pairs
    # the query block's members and the keys their windows read, by hand
    query_block = (row * W + col) // block_size
    members = range(query_block * block_size, min(H * W, (query_block + 1) * block_size))
    assert cell_centres(one(fig, "query-block")) == {divmod(n, W) for n in members}
    read = set()
    for n in members:
        i, j = divmod(n, W)
        for p in (-dilation, 0, dilation):
            for s in (-dilation, 0, dilation):
                if 0 <= i + p < H and 0 <= j + s < W:
                    read.add((i + p, j + s))
    assert cell_centres(one(fig, "read-keys")) == read
    loaded = {divmod(n, W) for b in {(i * W + j) // block_size for i, j in read}
              for n in range(b * block_size, min(H * W, (b + 1) * block_size))}
    assert cell_centres(one(fig, "loaded-blocks")) == loaded


def test_block_mask_legend_names_the_grey_and_white_key_bands():
    H, W, block_size = 10, 9, 12
    fig = plot_block_mask(H, W, 3, 1, block_size, row=4, col=4)
    map_legend = one_legend(fig, "legend-map")
    labels = [t.get_text() for t in map_legend.get_texts()]
    assert labels[0] == "key blocks: bands of 12 consecutive pixels, white and grey in turn"
    # the map image: pixel n belongs to key block n // 12, even blocks one colour, odd blocks the other
    ax_map = fig.axes[1]
    (image,) = [im for im in ax_map.images if im.get_gid() == "key-bands"]
    pixels = np.asarray(image.get_array())  # H, W, 4
    block = (np.arange(H * W) // block_size).reshape(H, W)
    even, odd = pixels[block % 2 == 0], pixels[block % 2 == 1]
    assert (even == even[0]).all() and (odd == odd[0]).all() and not np.allclose(even[0], odd[0])
    assert even[0][:3].mean() > odd[0][:3].mean()  # even blocks the lighter ("white"), odd ones grey
    np.testing.assert_allclose(map_legend.legend_handles[0].get_facecolor(), even[0])  # the white swatch
    assert "the 12 queries of block 3" in labels  # query (4, 4) is pixel 40: block 40 // 12 = 3
    mask_labels = [t.get_text() for t in one_legend(fig, "legend-mask").get_texts()]
    assert "a tile the kernel computes whole" in mask_labels
    assert "a (query, key) pair in a window" in mask_labels


def one_legend(fig, gid):
    found = [ax.get_legend() for ax in fig.axes if ax.get_legend() and ax.get_legend().get_gid() == gid]
    assert len(found) == 1, gid
    return found[0]


def test_block_mask_figure_skips_the_dots_on_big_maps():
    fig = plot_block_mask(40, 40, 3, 1, 128)
    assert artists(fig, "window-pairs") == []
    assert "a (query, key) pair in a window" not in [t.get_text() for t in one_legend(fig, "legend-mask").get_texts()]
    usage = window_block_usage(40, 40, 3, 1, 128)
    assert len(one(fig, "computed-blocks").get_paths()) == usage.computed_blocks


def test_block_mask_picture_redrawn_for_other_arguments_is_the_new_figure():
    """Big maps without dots and small ones with them, in turn: the reused picture is each time the
    figure drawn anew (the dots come back under the tile grid, the legend with their entry)."""
    picture = BlockMaskPicture()
    for args in [(40, 40, 3, 1, 128), (8, 8, 3, 1, 16), (12, 10, 5, 2, 16, 6, 3), (40, 40, 3, 2, 64),
                 (10, 9, 3, 1, 12, 4, 4)]:
        picture.draw(*args)
        np.testing.assert_array_equal(pixels(figure_png(picture.figure)), pixels(figure_png(plot_block_mask(*args))),
                                      err_msg=str(args))
        assert len(artists(picture.figure, "window-pairs")) == (args[0] * args[1] <= 1024)
    with pytest.raises(ValueError, match="row"):
        picture.draw(8, 8, 3, 1, 16, row=8, col=0)


# --------------------------------------------------------------------------- time breakdown
def test_time_breakdown_bars_and_other():
    ops = [OpTime("aten::bmm", 3, 4.0, 0.5), OpTime("aten::copy_", 2, 2.0, 0.25),
           OpTime("aten::mul", 1, 1.5, 0.1875), OpTime("aten::add", 1, 0.5, 0.0625)]
    fig = plot_time_breakdown({"unfold": ops, "fused": ops[:1]}, top=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    unfold_bars = [artist for _, artist in artists(fig, "bars-unfold")]
    assert [bar.get_width() for bar in unfold_bars] == [4.0, 2.0, 2.0]  # the last is (other): 1.5 + 0.5
    assert len(artists(fig, "bars-fused")) == 1
    assert "8.0 ms per run" in fig.axes[0].get_title()


def test_time_breakdown_rejects_empty_profiles():
    with pytest.raises(ValueError, match="profiles"):
        plot_time_breakdown({})
    with pytest.raises(ValueError, match="profiles"):
        plot_time_breakdown({"fused": []})
    with pytest.raises(ValueError, match="top"):
        plot_time_breakdown({"fused": [OpTime("x", 1, 1.0, 1.0)]}, top=0)


# --------------------------------------------------------------------------- launch timeline (lesson 06, §1)
def test_launch_timeline_of_a_few_long_kernels_by_hand():
    from dilate_lab.course.figures.timeline import launch_timeline

    timeline = launch_timeline((60, 60, 60), launch_us=5)
    # launches back to back on the CPU; the GPU starts after the first launch, then runs without a gap
    assert timeline.launches == ((0, 5), (5, 10), (10, 15))
    assert timeline.kernels == ((5, 65), (65, 125), (125, 185))
    assert (timeline.returned, timeline.finished) == (15, 185)
    assert timeline.gpu_busy == pytest.approx(180 / 185)


@pytest.mark.parametrize("kernels, launch", [((2.0,) * 30, 5.0), ((1, 50, 1, 1, 30), 4.0), ((7,), 0.5)])
def test_launch_timeline_runs_each_kernel_after_its_launch_and_the_one_before(kernels, launch):
    from dilate_lab.course.figures.timeline import launch_timeline

    timeline = launch_timeline(kernels, launch)
    assert len(timeline.kernels) == len(kernels)
    previous_end = 0.0
    for (launch_start, launch_end), (start, end), duration in zip(timeline.launches, timeline.kernels, kernels):
        assert launch_end - launch_start == pytest.approx(launch)
        assert end - start == pytest.approx(duration)
        assert start == pytest.approx(max(launch_end, previous_end))  # not before, and never idle when it could run
        previous_end = end
    assert timeline.returned == pytest.approx(len(kernels) * launch)  # the call returns after its launches
    assert timeline.finished == pytest.approx(previous_end) and timeline.finished > timeline.returned
    assert timeline.gpu_busy == pytest.approx(sum(kernels) / timeline.finished)


def test_launch_timeline_figure_draws_the_lanes_and_the_two_timer_lines():
    from dilate_lab.course.figures.timeline import DEFAULT_TIMELINE_CASES, launch_timeline, plot_launch_timeline

    fig = plot_launch_timeline(launch_us=5)
    assert len(fig.axes) == len(DEFAULT_TIMELINE_CASES)
    for i, kernels in enumerate(DEFAULT_TIMELINE_CASES.values()):
        timeline = launch_timeline(kernels, 5)
        for gid, spans in ((f"launches-{i}", timeline.launches), (f"kernels-{i}", timeline.kernels)):
            drawn = sorted((p.vertices[:, 0].min(), p.vertices[:, 0].max()) for p in one(fig, gid).get_paths())
            np.testing.assert_allclose(drawn, sorted(spans))
        assert one(fig, f"returned-{i}").get_xdata()[0] == timeline.returned
        assert one(fig, f"finished-{i}").get_xdata()[0] == timeline.finished
    assert "plot_launch_timeline(launch_us=5)" in [t.get_text() for t in fig.texts]


def test_launch_timeline_rejects_bad_arguments():
    from dilate_lab.course.figures.timeline import launch_timeline, plot_launch_timeline

    for bad in ((), (1, 0), (1, -2), "ab", None):
        with pytest.raises(ValueError, match="kernel_us"):
            launch_timeline(bad)
    for bad in (0, -1, True, "5"):
        with pytest.raises(ValueError, match="launch_us"):
            launch_timeline((1, 2), launch_us=bad)
    with pytest.raises(ValueError, match="cases"):
        plot_launch_timeline({})
