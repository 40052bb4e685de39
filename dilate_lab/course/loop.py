"""The training loop of lesson 07: seed, fit, evaluate.

- ``seed_everything(seed)``: torch, numpy and ``random`` in one call.
- ``fit(model, train, test, epochs=..., lr=..., seed=...)``: AdamW with a linear
  warm-up and a cosine decay, a progress bar while each epoch runs, and a
  ``History`` of loss and accuracy per epoch (train and test).
- ``evaluate(model, data)``: summed loss, number correct, number seen.
- ``load_task(task)``: the (train, test) data of ``"digits"`` or ``"longrange"``.

The loop is written out (no trainer library) so that a learner can read every
step of it; ``fit`` only orchestrates, the pieces it calls are named for what
they do.
"""

from __future__ import annotations

import math
import numbers
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import check_positive_int, check_seed
from .data import ImageSet, load_digits_data, make_longrange_data

__all__ = [
    "History",
    "Evaluation",
    "TASKS",
    "seed_everything",
    "evaluate",
    "fit",
    "load_task",
]

TASKS = ("digits", "longrange")
"""The data sets ``load_task`` and the command line know."""


def _check_real(value, name: str, low: float, *, inclusive: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < low if inclusive else value <= low):
        bound = f">= {low}" if inclusive else f"> {low}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's legacy global generator and ``random``."""
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def load_task(task: str, seed: int = 0, **kwargs) -> tuple[ImageSet, ImageSet]:
    """(train, test) for ``task``: ``"digits"`` or ``"longrange"``; kwargs go to the loader."""
    if task == "digits":
        return load_digits_data(seed=seed, **kwargs)
    if task == "longrange":
        return make_longrange_data(seed=seed, **kwargs)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _as_tensors(data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """An ImageSet or an (images, labels) pair -> (images, labels) tensors."""
    if isinstance(data, ImageSet):
        return data.images, data.labels
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
        isinstance(t, torch.Tensor) for t in data
    ):
        images, labels = data
        if images.shape[0] != labels.shape[0] or labels.dim() != 1:
            raise ValueError(
                f"{name}: labels must be (N,) with N = images.shape[0] = {images.shape[0]}, "
                f"got labels of shape {tuple(labels.shape)}"
            )
        return images, labels
    raise ValueError(
        f"{name} must be an ImageSet or an (images, labels) pair of tensors, "
        f"got {type(data).__name__}"
    )




# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """Cross-entropy summed over the examples, how many were right, how many were seen."""

    loss_sum: float
    correct: int
    total: int

    @property
    def loss(self) -> float:
        return self.loss_sum / self.total

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, data, batch_size: int = 256) -> Evaluation:
    """Run ``model`` in eval mode over ``data`` (ImageSet or (images, labels)); restore its mode.

    A prediction is the arg-max of the logits; ties go to the lower class index.
    """
    images, labels = _as_tensors(data, "data")
    check_positive_int(batch_size, "batch_size")
    device = _model_device(model)
    modes = {module: module.training for module in model.modules()}  # restored one by one
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for start in range(0, len(labels), batch_size):
            x = images[start : start + batch_size].to(device)
            y = labels[start : start + batch_size].to(device)
            logits = model(x)  # b, classes
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
            correct += (logits.argmax(dim=1) == y).sum().item()
    finally:
        for module, training in modes.items():
            module.training = training
    return Evaluation(loss_sum, int(correct), len(labels))


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------
@dataclass
class History:
    """Per-epoch curves of one training run; ``epoch`` counts from 1."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    """Mean training loss over the epoch's batches (the weights change meanwhile)."""
    train_accuracy: list[float] = field(default_factory=list)
    """Accuracy on the epoch's training batches, as they were seen (train mode, weights changing):
    cheaper than a second pass, and a little behind the weights at the epoch's end."""
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    """Wall-clock seconds since the start of training, at the end of each epoch."""

    @property
    def final_test_accuracy(self) -> float:
        return self.test_accuracy[-1] if self.test_accuracy else float("nan")

    def as_dict(self) -> dict[str, list]:
        return asdict(self)

    def _add(self, epoch: int, train_loss: float, train_accuracy: float, test, seconds: float):
        """One epoch's entries; ``test`` is the ``Evaluation`` on the test set."""
        self.epoch.append(epoch)
        self.train_loss.append(train_loss)
        self.train_accuracy.append(train_accuracy)
        self.test_loss.append(test.loss)
        self.test_accuracy.append(test.accuracy)
        self.seconds.append(seconds)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then a cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _progress_printer(stream=None) -> Callable[[str, bool], None]:
    """A line that rewrites itself (carriage return) while an epoch runs, kept when it ends."""
    stream = stream or sys.stdout

    rewrites = getattr(stream, "isatty", lambda: False)() or "ipykernel" in sys.modules

    def show(text: str, done: bool) -> None:
        if rewrites:
            stream.write("\r" + text + ("\n" if done else ""))
        elif done:  # a log file or a pipe: only the finished line, no carriage returns
            stream.write(text + "\n")
        stream.flush()

    return show


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"



def _check_progress(progress) -> None:
    """``progress`` of ``fit`` and ``run_ablation``: True, False/None, or a callable show(text, done)."""
    if not (progress is True or progress is False or progress is None or callable(progress)):
        raise ValueError(
            f"progress must be True, False or a callable show(text, done), got {progress!r}"
        )


def _fit_show(progress) -> Callable[[str, bool], None] | None:
    """What ``fit`` calls with its progress lines, or None to print nothing."""
    _check_progress(progress)
    if progress is True:
        return _progress_printer()
    if progress is False or progress is None:
        return None
    return progress


def _check_fit_args(
    train, test, epochs, lr, batch_size, weight_decay, warmup_fraction, seed
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every argument of ``fit`` checked before the first step; the training tensors back."""
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    _check_real(lr, "lr", 0.0)
    _check_real(weight_decay, "weight_decay", 0.0, inclusive=True)
    if not (isinstance(warmup_fraction, numbers.Real) and 0.0 <= warmup_fraction < 1.0):
        raise ValueError(f"warmup_fraction must be a number in [0, 1), got {warmup_fraction!r}")
    check_seed(seed)
    images, labels = _as_tensors(train, "train")
    _as_tensors(test, "test")
    n = len(labels)
    if n < batch_size:
        raise ValueError(
            f"batch_size ({batch_size}) must not exceed the number of training examples ({n})"
        )
    return images, labels


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimiser groups: matrices and kernels decayed, vectors and scalars not.

    Weight decay pulls a weight towards zero; that regularises the matrices and
    convolution kernels, but a bias or a norm's scale (``ndim <= 1``, position-embedding
    biases included) only shifts or scales a feature, and pulling it to zero just
    fights the optimiser (a LayerNorm scale of 0 switches a channel off). timm and
    nanoGPT leave them undecayed the same way. Frozen parameters are left out.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]] or [{"params": [], "weight_decay": 0.0}]


@dataclass
class _Run:
    """What one epoch of ``fit`` needs besides the model: data, optimiser, schedule, batch order."""

    images: torch.Tensor
    labels: torch.Tensor
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    order: torch.Generator
    batch_size: int
    steps_per_epoch: int


def _start_run(
    model, images, labels, epochs, lr, batch_size, weight_decay, warmup_fraction, seed
) -> _Run:
    """AdamW, its warm-up-then-cosine schedule over all the steps, and the seeded batch order."""
    steps_per_epoch = len(labels) // batch_size
    total = epochs * steps_per_epoch
    warmup = max(1, int(warmup_fraction * total))
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total, warmup)
    )
    order = torch.Generator().manual_seed(seed)
    return _Run(images, labels, optimizer, schedule, order, batch_size, steps_per_epoch)


def _train_epoch(model: nn.Module, run: _Run, show, header: str) -> tuple[float, float]:
    """One pass over the shuffled training set; (mean loss, accuracy) of its batches as seen.

    ``header`` starts each progress line ("arm  epoch 3/10"); the bar is redrawn
    every 8 steps and at the last one.
    """
    device = _model_device(model)
    model.train()
    permutation = torch.randperm(len(run.labels), generator=run.order)
    running, running_correct = 0.0, 0
    for step in range(run.steps_per_epoch):
        idx = permutation[step * run.batch_size : (step + 1) * run.batch_size]
        x, y = run.images[idx].to(device), run.labels[idx].to(device)
        logits = model(x)  # b, classes
        loss = F.cross_entropy(logits, y)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.schedule.step()
        running += loss.item()
        running_correct += (logits.argmax(dim=1) == y).sum().item()
        if show is not None and (step % 8 == 0 or step == run.steps_per_epoch - 1):
            show(
                f"{header} {_bar((step + 1) / run.steps_per_epoch)} "
                f"loss {running / (step + 1):.3f}",
                False,
            )
    seen = run.steps_per_epoch * run.batch_size
    return running / run.steps_per_epoch, running_correct / seen


def fit(
    model: nn.Module,
    train,
    test,
    *,
    epochs: int = 10,
    lr: float = 3e-3,
    batch_size: int = 32,
    weight_decay: float = 0.05,
    warmup_fraction: float = 0.1,
    seed: int = 0,
    progress: bool | Callable[[str, bool], None] = True,
    label: str = "",
) -> History:
    """Train ``model`` in place with AdamW; evaluate on ``test`` after every epoch.

    Args:
        model: any classifier (B, C, H, W) -> (B, classes) logits, on the device to train on
            (the data is moved batch by batch). Its initial weights are the caller's:
            seed before building it (``seed_everything``) for a reproducible run.
        train, test: ``ImageSet`` s or (images, labels) pairs.
        epochs, batch_size: passes over ``train``; the last short batch is dropped.
        lr: peak learning rate, reached after ``warmup_fraction`` of the steps
            (linear warm-up), then a cosine decay to zero.
        weight_decay: AdamW's decoupled weight decay, on the weight matrices and
            convolution kernels only; biases and norm weights are not decayed
            (``param_groups``).
        seed: seeds the batch order and everything random in the forward pass
            (dropout): the same model, data and seed give the same run on one machine.
        progress: True prints a progress bar while each epoch runs and one line
            at its end; False prints nothing; a callable ``show(text, done)`` gets the lines.
        label: a prefix for the progress lines (e.g. the ablation arm).

    Returns:
        a ``History`` with one entry per epoch.
    """
    images, labels = _check_fit_args(
        train, test, epochs, lr, batch_size, weight_decay, warmup_fraction, seed
    )
    show = _fit_show(progress)
    run = _start_run(model, images, labels, epochs, lr, batch_size, weight_decay, warmup_fraction, seed)
    torch.manual_seed(seed)  # dropout, drop path
    prefix = f"{label}  " if label else ""
    history = History()
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        train_loss, train_accuracy = _train_epoch(model, run, show, f"{prefix}epoch {epoch}/{epochs}")
        test_eval = evaluate(model, test)
        history._add(epoch, train_loss, train_accuracy, test_eval, time.perf_counter() - start)
        if show is not None:
            show(
                f"{prefix}epoch {epoch}/{epochs}  loss {train_loss:.3f}  "
                f"train acc {train_accuracy:.3f}  test acc {test_eval.accuracy:.3f}  "
                f"({history.seconds[-1]:.1f} s)",
                True,
            )
    model.eval()
    return history
