"""Lesson 00's payoff: a small DilateFormer learns handwritten digits in a few seconds.

``train_first_model()`` loads scikit-learn's bundled digits (``load_digits_data``,
nothing is downloaded), builds lesson 07's digits model (``build_model("digits")``:
a patch stem, two DilateFormer blocks of 36 channels, three heads with dilations
1, 2 and 3), measures it untrained on the held-out digits, trains it with ``fit``
and returns everything a lesson needs to show what happened: the trained model,
an untrained copy, the per-epoch ``History`` and the data. The trained heads'
attention weights come from ``SmallDilateFormer.attention_maps``, which reads
them during a forward pass with ``trace_tensors``.

The run is seeded (the data split, the initial weights, the batch order) and
uses one CPU thread by default: on one machine it repeats bit for bit, and its
result does not depend on how many cores the machine has.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._checks import check_positive_int, check_positive_real, check_seed
from .data import ImageSet, load_digits_data
from .loop import Evaluation, History, evaluate, fit, seed_everything
from .small_models import TASK_MODELS, SmallDilateFormer, build_model

__all__ = ["FirstRun", "train_first_model"]


@dataclass(frozen=True)
class FirstRun:
    """What ``train_first_model`` returns: both models, how training went, and the data."""

    model: SmallDilateFormer
    """The trained model, in eval mode."""
    untrained: SmallDilateFormer
    """A copy of the same model before its first training step (same seed, same initial weights)."""
    history: History
    """Loss and accuracy after every epoch, on the training batches and on the test set."""
    before: Evaluation
    """The untrained model on the test set: about one digit in ten right, a guess."""
    train: ImageSet
    test: ImageSet
    """The held-out digits: never used for a training step."""


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Run the block with ``threads`` CPU threads (None: leave the setting alone); restore it after."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or a torch.device, got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but no CUDA device is available here; use 'cpu'")
    return device


def train_first_model(
    epochs: int = 4,
    lr: float = TASK_MODELS["digits"]["lr"],
    seed: int = 0,
    device="cpu",
    threads: int | None = 1,
    progress: bool | Callable[[str, bool], None] = True,
) -> FirstRun:
    """Train lesson 07's small DilateFormer on scikit-learn's digits for a few epochs.

    Args:
        epochs: passes over the 1,347 training digits (4: about 4 seconds on one
            laptop core, and about nine test digits in ten right).
        lr: peak learning rate of ``fit``'s warm-up-then-cosine schedule.
        seed: seeds the train/test split, the initial weights and the batch order.
        device: where to train ("cpu", "cuda" or a ``torch.device``).
        threads: CPU threads while training, restored afterwards; None leaves
            PyTorch's setting alone. One thread is the default because this model
            is too small to gain from a second: with both cores of a 2-core
            machine busy elsewhere, two threads waited on each other at every
            step (110 s instead of 6 s for three epochs), one thread did not.
        progress: as in ``fit``: True prints a bar per epoch and one line at its
            end, False prints nothing, a callable ``show(text, done)`` gets the lines.

    Returns:
        a ``FirstRun``: the trained model, an untrained copy, the ``History``,
        the untrained model's ``Evaluation`` on the test set, and the data.
    """
    check_positive_int(epochs, "epochs")
    check_positive_real(lr, "lr")
    check_seed(seed)
    if threads is not None:
        check_positive_int(threads, "threads")
    device = _check_device(device)
    train, test = load_digits_data(size=32, test_fraction=0.25, seed=seed)
    with _torch_threads(threads):
        seed_everything(seed)
        model = build_model("digits", "1,2,3").to(device)  # B, 1, 32, 32 -> B, 10 logits
        untrained = copy.deepcopy(model).eval()
        before = evaluate(model, test)
        history = fit(model, train, test, epochs=epochs, lr=lr, seed=seed, progress=progress)
    return FirstRun(model, untrained, history, before, train, test)
