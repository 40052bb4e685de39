"""Small image classification data for lesson 07, built in memory: nothing is downloaded.

Two tasks:

- ``load_digits_data``: the 1,797 handwritten digits (8 x 8 pixels, values
  0 to 16) that scikit-learn ships inside its package (``sklearn.datasets.load_digits``,
  a copy of the UCI "Optical Recognition of Handwritten Digits" test set),
  upsampled to 32 x 32 so that a stride-4 stem gives one token per original pixel.
- ``make_longrange_data``: a generated task whose label depends on two marks
  far apart. The image is a grid of ``cell`` x ``cell`` pixel cells; two cells,
  exactly ``distance`` cells apart along a row or a column, hold a coloured mark;
  the label is 1 when the two marks have the same colour and 0 when they differ.
  Grey distractor blocks and faint noise fill the rest. A model none of whose
  tokens sees both marks scores each mark separately: of the four colourings
  of one layout it gets at most three right (at most 75 % accuracy), and since
  swapping red and blue leaves the data unchanged, its lowest expected
  cross-entropy is that of answering 50/50 (lesson 07 proves both). To do better
  a model must compare two things ``distance`` cells apart.

Both return a ``(train, test)`` pair of ``ImageSet`` s: float32 images
(N, C, H, W) and int64 labels (N,), on the CPU, reproducible from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from .._checks import check_positive_int, check_seed

__all__ = [
    "ImageSet",
    "MARK_COLOURS",
    "LongRangeLayout",
    "load_digits_data",
    "make_longrange_data",
    "render_longrange",
    "display_array",
    "plot_examples",
]


@dataclass(frozen=True)
class ImageSet:
    """Images and labels held in memory, with the names of the classes and where they come from."""

    images: torch.Tensor
    """(N, C, H, W) float32."""
    labels: torch.Tensor
    """(N,) int64, each in ``range(len(classes))``."""
    classes: tuple[str, ...]
    source: str
    """One sentence: where the data comes from."""
    layouts: tuple | None = None
    """For generated data: how each image was drawn (``LongRangeLayout``), else None."""

    def __post_init__(self):
        if self.images.dim() != 4:
            raise ValueError(
                f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be (N,) with N = {self.images.shape[0]} images, "
                f"got shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    def subset(self, n: int) -> "ImageSet":
        """The first ``n`` examples (the sets are already shuffled)."""
        check_positive_int(n, "n")
        layouts = None if self.layouts is None else self.layouts[:n]
        return ImageSet(self.images[:n], self.labels[:n], self.classes, self.source, layouts)


def _check_fraction(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")


# ---------------------------------------------------------------------------
# scikit-learn's digits
# ---------------------------------------------------------------------------
def load_digits_data(
    size: int = 32, test_fraction: float = 0.25, seed: int = 0, standardize: bool = True
) -> tuple[ImageSet, ImageSet]:
    """scikit-learn's bundled 8 x 8 digits, upsampled to ``size`` x ``size``, split per class.

    Pixel values 0..16 are scaled to [0, 1] and resized bilinearly. The split
    is stratified: each digit contributes ``test_fraction`` of its images to
    the test set, chosen by a generator seeded with ``seed``; both sets are
    then shuffled. One channel: images are (N, 1, size, size).
    ``standardize``: subtract the training pixels' mean and divide by their
    standard deviation (both sets, the training statistics), which a small
    model without a normalised stem trains on noticeably faster.
    """
    if not isinstance(standardize, bool):
        raise ValueError(f"standardize must be True or False, got {standardize!r}")
    check_positive_int(size, "size")
    _check_fraction(test_fraction, "test_fraction")
    check_seed(seed)
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - scikit-learn is in requirements.txt
        raise ImportError(
            "load_digits_data needs scikit-learn (pip install scikit-learn): "
            "its digits ship inside that package"
        ) from error

    digits = load_digits()
    pixels = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # N, 8, 8
    images = pixels.unsqueeze(1)  # N, 1, 8, 8
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.int64)  # N

    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == digit))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.extend(idx[:n_test])
        train_idx.extend(idx[n_test:])
    train_idx = torch.as_tensor(rng.permutation(np.array(train_idx)))
    test_idx = torch.as_tensor(rng.permutation(np.array(test_idx)))
    if standardize:
        train_pixels = images[train_idx]
        images = (images - train_pixels.mean()) / train_pixels.std()
    classes = tuple(str(d) for d in range(10))
    source = (
        "scikit-learn's bundled digits (sklearn.datasets.load_digits: 1,797 scans of "
        f"handwritten digits, 8x8 pixels valued 0-16), upsampled to {size}x{size}"
        + (", standardized" if standardize else "")
    )
    return (
        ImageSet(images[train_idx], labels[train_idx], classes, source),
        ImageSet(images[test_idx], labels[test_idx], classes, source),
    )


# ---------------------------------------------------------------------------
# the long-range task: are two distant marks the same colour?
# ---------------------------------------------------------------------------
MARK_COLOURS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("red", (1.0, 0.1, 0.1)),
    ("blue", (0.15, 0.3, 1.0)),
    ("green", (0.1, 0.9, 0.1)),
    ("yellow", (1.0, 0.9, 0.1)),
    ("magenta", (1.0, 0.1, 1.0)),
    ("cyan", (0.1, 0.9, 1.0)),
)
"""The marks' palette, (name, RGB). Distractors are grey, so only the marks carry colour."""


@dataclass(frozen=True)
class LongRangeLayout:
    """Where one long-range image's marks and distractors are, in cell coordinates (row, col)."""

    marks: tuple[tuple[int, int], tuple[int, int]]
    colours: tuple[int, int]
    """Indices into ``MARK_COLOURS``."""
    distractors: tuple[tuple[int, int], ...]
    distractor_greys: tuple[float, ...]

    @property
    def label(self) -> int:
        return int(self.colours[0] == self.colours[1])


def render_longrange(
    layout: LongRangeLayout, cells: int, cell: int, noise: np.ndarray | None = None
) -> torch.Tensor:
    """Draw one layout as a (3, cells*cell, cells*cell) float32 image.

    Each mark and distractor fills the inner (cell - 2) x (cell - 2) pixels of
    its cell (the whole cell when ``cell`` < 3), so that it never touches a
    neighbouring cell. ``noise``, if given, is added (shape (3, size, size)).
    """
    size = cells * cell
    image = np.zeros((3, size, size), dtype=np.float32)
    inset = 1 if cell >= 3 else 0

    def paint(row, col, rgb):
        top, left = row * cell + inset, col * cell + inset
        colour = np.asarray(rgb, dtype=np.float32).reshape(3, 1, 1)  # 3, 1, 1: one RGB per block
        image[:, top : top + cell - 2 * inset, left : left + cell - 2 * inset] = colour

    for (row, col), grey in zip(layout.distractors, layout.distractor_greys):
        paint(row, col, (grey, grey, grey))
    for (row, col), colour in zip(layout.marks, layout.colours):
        paint(row, col, MARK_COLOURS[colour][1])
    if noise is not None:
        image = image + noise.astype(np.float32)
    return torch.from_numpy(image)


def _random_layout(rng, cells, distance, n_distractors, n_colours, same) -> LongRangeLayout:
    """Two marks ``distance`` cells apart along a row or a column, at a random place."""
    along_rows = bool(rng.integers(2))
    first = int(rng.integers(cells - distance))  # along the direction of separation
    other = int(rng.integers(cells))  # across it
    if along_rows:  # same row, columns distance apart
        marks = ((other, first), (other, first + distance))
    else:  # same column
        marks = ((first, other), (first + distance, other))
    if bool(rng.integers(2)):  # which of the two comes first is random too
        marks = (marks[1], marks[0])
    c1 = int(rng.integers(n_colours))
    c2 = c1 if same else int((c1 + rng.integers(1, n_colours)) % n_colours)
    free = [(r, c) for r in range(cells) for c in range(cells) if (r, c) not in marks]
    picks = rng.choice(len(free), size=n_distractors, replace=False)
    distractors = tuple(free[i] for i in sorted(picks))
    greys = tuple(float(g) for g in rng.uniform(0.3, 0.8, size=n_distractors))
    return LongRangeLayout(marks, (c1, c2), distractors, greys)


def _check_longrange_args(n_train, n_test, cells, cell, distance, n_colours, n_distractors, noise, seed):
    """Every argument of ``make_longrange_data``, checked before anything is drawn."""
    for name, value in (("n_train", n_train), ("n_test", n_test), ("cells", cells), ("cell", cell)):
        check_positive_int(value, name)
    check_positive_int(distance, "distance")
    if isinstance(n_colours, bool) or not isinstance(n_colours, int) or not (
        2 <= n_colours <= len(MARK_COLOURS)
    ):
        raise ValueError(
            f"n_colours must be an int in [2, {len(MARK_COLOURS)}] (the first n_colours of "
            f"MARK_COLOURS), got {n_colours!r}"
        )
    if distance >= cells:
        raise ValueError(
            f"distance must be smaller than cells ({cells}), so that both marks fit on the "
            f"grid; got {distance!r}"
        )
    if isinstance(n_distractors, bool) or not isinstance(n_distractors, int) or not (
        0 <= n_distractors <= cells * cells - 2
    ):
        raise ValueError(
            f"n_distractors must be an int in [0, {cells * cells - 2}] (the cells left after "
            f"the two marks), got {n_distractors!r}"
        )
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise must be a number >= 0 (a standard deviation), got {noise!r}")
    check_seed(seed)


def _build_longrange(rng, cells, cell, distance, n_colours, n_distractors, noise, n):
    """``n`` images of the long-range task drawn from ``rng``: (images, labels, layouts).

    The draws come in a fixed order (labels, layouts, then all the noise at once),
    so that a seed gives the same tensors on every machine.
    """
    size = cells * cell
    same = rng.permutation(np.arange(n) % 2 == 0)  # exactly half "same" (n even)
    layouts = tuple(
        _random_layout(rng, cells, distance, n_distractors, n_colours, bool(s)) for s in same
    )
    noise_all = rng.normal(0.0, noise, size=(n, 3, size, size)) if noise > 0 else None
    images = torch.stack(
        [
            render_longrange(lay, cells, cell, None if noise_all is None else noise_all[i])
            for i, lay in enumerate(layouts)
        ]
    )  # N, 3, size, size
    labels = torch.tensor([lay.label for lay in layouts], dtype=torch.int64)  # N
    return images, labels, layouts


def make_longrange_data(
    n_train: int = 2000,
    n_test: int = 500,
    cells: int = 6,
    cell: int = 4,
    distance: int = 3,
    n_colours: int = 2,
    n_distractors: int = 3,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[ImageSet, ImageSet]:
    """The "same colour?" task: two coloured marks exactly ``distance`` cells apart.

    Images are (N, 3, cells*cell, cells*cell): a ``cells`` x ``cells`` grid of
    ``cell``-pixel cells, so that a model whose stem has stride ``cell`` puts
    one token on every cell. Two cells in one row (or one column),
    ``distance`` apart, hold marks coloured with one of the first ``n_colours``
    of ``MARK_COLOURS`` (red and blue by default); label 1 ("same") when the
    colours are equal, 0 ("different") otherwise, half and half. With two
    colours the label is the parity of the two marks' colours: either mark
    alone says nothing about it. ``n_distractors`` other cells hold grey blocks; Gaussian noise of
    standard deviation ``noise`` covers everything. Seeded: the same
    arguments give the same tensors on every machine (numpy's generator).
    """
    _check_longrange_args(n_train, n_test, cells, cell, distance, n_colours, n_distractors, noise, seed)
    rng = np.random.default_rng(seed)
    build = partial(_build_longrange, rng, cells, cell, distance, n_colours, n_distractors, noise)

    source = (
        f"generated by dilate_lab.make_longrange_data: {cells}x{cells} cells of {cell}x{cell} "
        f"pixels, two coloured marks {distance} cells apart, {n_distractors} grey distractors; "
        "label = do the marks have the same colour"
    )
    classes = ("different", "same")
    train_images, train_labels, train_layouts = build(n_train)
    test_images, test_labels, test_layouts = build(n_test)
    return (
        ImageSet(train_images, train_labels, classes, source, train_layouts),
        ImageSet(test_images, test_labels, classes, source, test_layouts),
    )


# ---------------------------------------------------------------------------
# looking at the data
# ---------------------------------------------------------------------------
def display_array(image: torch.Tensor) -> np.ndarray:
    """One image (C, H, W) as an array ``imshow`` shows faithfully.

    Three channels: (H, W, 3) clipped to [0, 1]. One channel: (H, W, 3) grey,
    rescaled so that its smallest value is black and its largest white.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be one image (1 or 3, H, W), got {shape}")
    pixels = image.detach().float().cpu()
    if pixels.shape[0] == 1:
        low, high = pixels.min(), pixels.max()
        pixels = ((pixels - low) / (high - low if high > low else 1.0)).expand(3, -1, -1)  # 3, H, W
    return pixels.clamp(0, 1).permute(1, 2, 0).numpy()  # H, W, 3


def plot_examples(
    data: ImageSet, n: int = 8, columns: int = 8, predictions=None, title: str = ""
) -> Figure:
    """The first ``n`` images of ``data``, each titled with its class name.

    With ``predictions`` (class indices, one per shown image) each title reads
    "label / predicted" and the wrong ones are red.
    """
    if not isinstance(data, ImageSet):
        raise ValueError(f"data must be an ImageSet, got {type(data).__name__}")
    check_positive_int(n, "n")
    check_positive_int(columns, "columns")
    n = min(n, len(data))
    if predictions is not None:
        predictions = [int(p) for p in predictions]
        if len(predictions) < n:
            raise ValueError(f"predictions must give one class per shown image ({n}), got {len(predictions)}")
    rows = -(-n // columns)
    columns = min(columns, n)
    fig = Figure(figsize=(1.2 * columns, 1.35 * rows + (0.3 if title else 0.0)), dpi=80)
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(display_array(data.images[i]), interpolation="nearest")
        label = data.classes[int(data.labels[i])]
        if predictions is None:
            ax.set_title(label, fontsize=9)
        else:
            guess = data.classes[predictions[i]]
            wrong = predictions[i] != int(data.labels[i])
            ax.set_title(f"{label} / {guess}", fontsize=9, color="red" if wrong else "black")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
