"""Train small DilateFormers and run the paper's dilation ablation; also a command line.

- ``fit(model, train, test, epochs=..., lr=..., seed=...)``: AdamW with a linear
  warm-up and a cosine decay, a progress bar while each epoch runs, and a
  ``History`` of loss and accuracy per epoch (train and test).
- ``evaluate(model, data)``: summed loss, number correct, number seen.
- ``run_ablation(task, arms, seeds, ...)``: the same small model with dilations
  (1, 2, 3), (1, 1, 1) or global attention, same depth and width, several seeds;
  ``summarize`` gives mean, standard deviation, min and max per arm,
  ``format_summary`` a Markdown table, ``write_results`` a CSV file.
- ``plot_history(history)`` and ``plot_ablation(results)``: pure figure functions.
- ``lesson07``: lesson 07's exercise (how many blocks until a token sees two cells d apart).

From a shell (results: one CSV row per run; the summary is printed as Markdown)::

    python -m dilate_lab.train --task longrange --arms 1,2,3 1,1,1 global \\
        --seeds 0 1 2 --epochs 12 --out results.csv --summary results.md
"""

from __future__ import annotations

import argparse
import csv
import math
import numbers
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure

from .._checks import check_positive_int
from .checking import Exercise, Incorrect, NotAttempted, is_blank
from .data import ImageSet, load_digits_data, make_longrange_data
from .small_models import ARMS, TASK_MODELS, build_model, check_arm

__all__ = [
    "History",
    "Evaluation",
    "RunResult",
    "ArmSummary",
    "TASKS",
    "seed_everything",
    "evaluate",
    "fit",
    "load_task",
    "run_ablation",
    "summarize",
    "format_summary",
    "write_results",
    "plot_history",
    "plot_ablation",
    "lesson07",
    "main",
]

TASKS = ("digits", "longrange")
"""The data sets ``load_task`` and the command line know."""


def _check_real(value, name: str, low: float, *, inclusive: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < low if inclusive else value <= low):
        bound = f">= {low}" if inclusive else f"> {low}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's legacy global generator and ``random``."""
    import random

    _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


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
        weight_decay: AdamW's decoupled weight decay.
        seed: seeds the batch order and everything random in the forward pass
            (dropout): the same model, data and seed give the same run on one machine.
        progress: True prints a progress bar while each epoch runs and one line
            at its end; False prints nothing; a callable ``show(text, done)`` gets the lines.
        label: a prefix for the progress lines (e.g. the ablation arm).

    Returns:
        a ``History`` with one entry per epoch.
    """
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    _check_real(lr, "lr", 0.0)
    _check_real(weight_decay, "weight_decay", 0.0, inclusive=True)
    if not (isinstance(warmup_fraction, numbers.Real) and 0.0 <= warmup_fraction < 1.0):
        raise ValueError(f"warmup_fraction must be a number in [0, 1), got {warmup_fraction!r}")
    _check_seed(seed)
    images, labels = _as_tensors(train, "train")
    _as_tensors(test, "test")
    n = len(labels)
    if n < batch_size:
        raise ValueError(
            f"batch_size ({batch_size}) must not exceed the number of training examples ({n})"
        )
    if progress is True:
        show = _progress_printer()
    elif progress is False or progress is None:
        show = None
    elif callable(progress):
        show = progress
    else:
        raise ValueError(f"progress must be True, False or a callable show(text, done), got {progress!r}")

    device = _model_device(model)
    steps_per_epoch = n // batch_size
    total = epochs * steps_per_epoch
    warmup = max(1, int(warmup_fraction * total))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total, warmup)
    )
    order = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout, drop path
    prefix = f"{label}  " if label else ""
    history = History()
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        permutation = torch.randperm(n, generator=order)
        running, running_correct = 0.0, 0
        for step in range(steps_per_epoch):
            idx = permutation[step * batch_size : (step + 1) * batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)
            logits = model(x)  # b, classes
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item()
            running_correct += (logits.argmax(dim=1) == y).sum().item()
            if show is not None and (step % 8 == 0 or step == steps_per_epoch - 1):
                show(
                    f"{prefix}epoch {epoch}/{epochs} {_bar((step + 1) / steps_per_epoch)} "
                    f"loss {running / (step + 1):.3f}",
                    False,
                )
        test_eval = evaluate(model, test)
        history.epoch.append(epoch)
        history.train_loss.append(running / steps_per_epoch)
        history.train_accuracy.append(running_correct / (steps_per_epoch * batch_size))
        history.test_loss.append(test_eval.loss)
        history.test_accuracy.append(test_eval.accuracy)
        history.seconds.append(time.perf_counter() - start)
        if show is not None:
            show(
                f"{prefix}epoch {epoch}/{epochs}  loss {history.train_loss[-1]:.3f}  "
                f"train acc {history.train_accuracy[-1]:.3f}  test acc {test_eval.accuracy:.3f}  "
                f"({history.seconds[-1]:.1f} s)",
                True,
            )
    model.eval()
    return history


# ---------------------------------------------------------------------------
# the ablation
# ---------------------------------------------------------------------------
def load_task(task: str, seed: int = 0, **kwargs) -> tuple[ImageSet, ImageSet]:
    """(train, test) for ``task``: ``"digits"`` or ``"longrange"``; kwargs go to the loader."""
    if task == "digits":
        return load_digits_data(seed=seed, **kwargs)
    if task == "longrange":
        return make_longrange_data(seed=seed, **kwargs)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


@dataclass(frozen=True)
class RunResult:
    """One training run of the ablation."""

    task: str
    arm: str
    seed: int
    epochs: int
    test_accuracy: float
    train_accuracy: float
    test_loss: float
    parameters: int
    seconds: float


def run_ablation(
    task: str,
    arms: Sequence[str] = ARMS,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    train: ImageSet | None = None,
    test: ImageSet | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int = 32,
    device="cpu",
    progress: bool | Callable[[str, bool], None] = True,
    model_kwargs: dict | None = None,
    keep_models: dict | None = None,
) -> list[RunResult]:
    """Train ``build_model(task, arm)`` once per arm and seed; same data, depth and width for all.

    ``arms``: strings from ``ARMS`` ("1,2,3", "1,1,1", "global") or any
    comma-separated dilations. The seed sets the model's initial weights and
    the batch order; the data is the same for every run (``train``/``test``,
    or ``load_task(task)`` when they are None). ``epochs`` and ``lr`` default to
    the task's settings in ``TASK_MODELS``; ``model_kwargs`` override the model's.
    ``progress``: True prints one line per run when it ends (final test
    accuracy, seconds, and the test accuracy after every epoch); a callable
    ``show(text, done)`` gets fit's progress lines instead; False prints nothing.
    ``keep_models``: a dict to receive the trained models, keyed by (arm, seed).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    arms = [check_arm(arm) for arm in arms]
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")
    for seed in seeds:
        _check_seed(seed)
    if (train is None) != (test is None):
        raise ValueError("give both train and test, or neither (then load_task(task) is used)")
    if train is None:
        train, test = load_task(task)
    settings = TASK_MODELS[task]
    epochs = settings["epochs"] if epochs is None else epochs
    lr = settings["lr"] if lr is None else lr
    if keep_models is not None and not isinstance(keep_models, dict):
        raise ValueError(f"keep_models must be None or a dict, got {type(keep_models).__name__}")
    if progress is True:  # one finished line per run, nothing while it trains
        announce, fit_progress = print, False
    elif progress is False or progress is None:
        announce, fit_progress = None, False
    elif callable(progress):
        announce, fit_progress = None, progress
    else:
        raise ValueError(f"progress must be True, False or a callable show(text, done), got {progress!r}")

    results = []
    for arm in arms:
        for seed in seeds:
            seed_everything(seed)
            model = build_model(task, arm, **(model_kwargs or {})).to(device)
            label = f"{task} {arm:>7} seed {seed}"
            history = fit(
                model, train, test, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                progress=fit_progress, label=label,
            )
            if announce is not None:
                curve = " ".join(f"{a:.2f}" for a in history.test_accuracy)
                announce(
                    f"{label}: test accuracy {history.test_accuracy[-1]:.3f} after {epochs} epochs "
                    f"({history.seconds[-1]:.1f} s); by epoch: {curve}",
                    flush=True,
                )
            if keep_models is not None:
                keep_models[(arm, int(seed))] = model
            results.append(
                RunResult(
                    task=task,
                    arm=arm,
                    seed=int(seed),
                    epochs=epochs,
                    test_accuracy=history.test_accuracy[-1],
                    train_accuracy=history.train_accuracy[-1],
                    test_loss=history.test_loss[-1],
                    parameters=sum(p.numel() for p in model.parameters()),
                    seconds=history.seconds[-1],
                )
            )
    return results


@dataclass(frozen=True)
class ArmSummary:
    """Test accuracy of one arm over its seeds."""

    arm: str
    runs: int
    mean: float
    std: float
    """Sample standard deviation over seeds (0 for a single run)."""
    low: float
    high: float
    parameters: int


def summarize(results: Sequence[RunResult]) -> list[ArmSummary]:
    """One ``ArmSummary`` per arm, in the order the arms first appear."""
    arms: dict[str, list[RunResult]] = {}
    for r in results:
        arms.setdefault(r.arm, []).append(r)
    summary = []
    for arm, runs in arms.items():
        acc = [r.test_accuracy for r in runs]
        summary.append(
            ArmSummary(
                arm=arm,
                runs=len(acc),
                mean=statistics.fmean(acc),
                std=statistics.stdev(acc) if len(acc) > 1 else 0.0,
                low=min(acc),
                high=max(acc),
                parameters=runs[0].parameters,
            )
        )
    return summary


def format_summary(summary: Sequence[ArmSummary], digits: int = 3) -> str:
    """A Markdown table: arm, runs, mean +- std, min, max test accuracy, parameters.

    The std is the sample standard deviation over seeds; a single run has none:
    "± -", not a misleading "± 0.000".
    """
    lines = [
        "| attention | runs | test accuracy, mean ± std | min | max | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary:
        spread = f"± {s.std:.{digits}f}" if s.runs > 1 else "± -"
        lines.append(
            f"| {s.arm} | {s.runs} | {s.mean:.{digits}f} {spread} | "
            f"{s.low:.{digits}f} | {s.high:.{digits}f} | {s.parameters:,} |"
        )
    return "\n".join(lines)


def write_results(results: Sequence[RunResult], path) -> None:
    """Write one CSV row per run (the columns of ``RunResult``)."""
    columns = list(RunResult.__dataclass_fields__)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r))


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------
def plot_history(history: History, title: str = "") -> Figure:
    """Loss (left) and accuracy (right) per epoch, train and test."""
    if not isinstance(history, History) or not history.epoch:
        raise ValueError("history must be a History with at least one epoch (what fit returns)")
    fig = Figure(figsize=(8, 3), dpi=80)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(history.epoch, history.train_loss, "o-", ms=3, label="train (during epoch)")
    loss_ax.plot(history.epoch, history.test_loss, "s-", ms=3, label="test")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.set_yscale("log")
    loss_ax.legend(fontsize=8)
    acc_ax.plot(history.epoch, history.train_accuracy, "o-", ms=3, label="train")
    acc_ax.plot(history.epoch, history.test_accuracy, "s-", ms=3, label="test")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    acc_ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8, loc="lower right")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_ablation(
    results: Sequence[RunResult], chance: float | None = None, title: str = ""
) -> Figure:
    """Test accuracy per arm: one dot per seed, a bar at the mean, error bars of one std."""
    if not results:
        raise ValueError("results must hold at least one RunResult (what run_ablation returns)")
    summary = summarize(results)
    fig = Figure(figsize=(4.8, 3.2), dpi=80)
    ax = fig.subplots()
    x = np.arange(len(summary))
    ax.bar(
        x, [s.mean for s in summary], yerr=[s.std for s in summary], capsize=6,
        color="tab:blue", alpha=0.35, gid="mean",
    )
    for i, s in enumerate(summary):
        acc = [r.test_accuracy for r in results if r.arm == s.arm]
        ax.plot([i] * len(acc), acc, "o", color="tab:blue", ms=5, gid=f"runs-{s.arm}")
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.2f})")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xticks(x, [f"dilation {s.arm}" if s.arm != "global" else "global" for s in summary])
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or f"{results[0].task}: mean ± std over {summary[0].runs} seeds", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# the lesson's exercise: how many blocks until some token sees both marks?
# ---------------------------------------------------------------------------
def _blocks_needed(distance: int, dilations, limit: int = 64) -> int | None:
    """Fewest blocks after which some token sees two cells ``distance`` apart in a row (brute force).

    One block (kernel 3, no position embedding) moves information by 0 or +-r
    cells for a dilation r of the block; after L blocks a token sees the
    offsets that are sums of L such steps. Two cells d apart are both seen by
    one token iff d is the difference of two offsets it sees.
    """
    steps = {0} | {s * r for r in dilations for s in (-1, 1)}
    reach = {0}
    for blocks in range(1, limit + 1):
        reach = {a + b for a in reach for b in steps}
        if any(a + distance in reach for a in reach):
            return blocks
    return None


_BLOCKS_CASES = (
    (3, (1, 1, 1)), (3, (1, 2, 3)), (6, (1, 2, 3)), (7, (1, 2, 3)), (13, (1, 2, 3)),
    (1, (1,)), (2, (1,)), (5, (1, 1, 1)), (4, (2, 2, 2)), (3, (2, 2, 2)), (6, (3,)),
    (5, (3,)), (9, (2, 3)), (1, (2, 4)), (7, (1, 2, 4)), (6, (1, 4)),
)
"""(distance, dilations) pairs the checker tries. The last two catch the closed form
``ceil(d / (2 * max(r)))``: one (1, 2, 4) block reaches offsets {0, +-1, +-2, +-4},
whose differences include 8 but not 7; one (1, 4) block reaches {0, +-1, +-4}: 8 but not 6."""


def _reachable_offsets(dilations, blocks: int) -> list[int]:
    """Offsets along a row that a token sees after ``blocks`` blocks (sums of steps 0, +-r)."""
    steps = {0} | {s * r for r in dilations for s in (-1, 1)}
    reach = {0}
    for _ in range(blocks):
        reach = {a + b for a in reach for b in steps}
    return sorted(reach)


def _call_blocks_needed(fn, distance, dilations):
    """The learner's answer for one case; None is a legitimate answer here ("never")."""
    try:
        answer = fn(distance, dilations)
    except NotImplementedError:
        raise NotAttempted("blocks_needed still raises NotImplementedError.") from None
    except Exception as error:  # the learner's bug: report it, do not crash the notebook
        raise Incorrect(
            f"blocks_needed({distance}, {dilations}) raised {type(error).__name__}: {error}"
        ) from None
    if answer is Ellipsis:
        raise NotAttempted("blocks_needed returns ...: fill in the body.")
    return answer


def _check_blocks_needed(fn) -> str:
    if is_blank(fn):
        raise NotAttempted("blocks_needed is still the template.")
    if not callable(fn):
        raise Incorrect(f"expected a function blocks_needed(distance, dilations), got {type(fn).__name__}.")
    for distance, dilations in _BLOCKS_CASES:
        expected = _blocks_needed(distance, dilations)
        answer = _call_blocks_needed(fn, distance, dilations)
        if answer is not None and (isinstance(answer, bool) or not isinstance(answer, int)):
            raise Incorrect(
                f"blocks_needed({distance}, {dilations}) returned {answer!r}: expected an int "
                "(a number of blocks) or None (no number of blocks is enough)."
            )
        if answer == expected:
            continue
        call = f"blocks_needed({distance}, {dilations})"
        if expected is None:
            raise Incorrect(
                f"{call} returned {answer}, but no number of blocks is enough: every step is a "
                f"multiple of {math.gcd(*dilations)} cells, and {distance} is not. Dilated layers "
                "that share a factor leave holes (the 'gridding' effect); mixing dilations fills them."
            )
        if answer is None:
            raise Incorrect(f"{call} returned None, but {expected} block(s) are enough.")
        if 0 < answer < expected:
            offsets = _reachable_offsets(dilations, answer)
            shown = offsets if len(offsets) <= 15 else f"{offsets[:7]} ... {offsets[-7:]}"
            raise Incorrect(
                f"{call} returned {answer}, but after {answer} block(s) a token sees the offsets "
                f"{shown} along the row, and no two of them are {distance} apart. "
                "How far the offsets spread is not enough: the distance itself must be a "
                f"difference of two reachable offsets. {expected} block(s) are needed."
            )
        if answer == -(-distance // max(dilations)) and answer > expected:
            raise Incorrect(
                f"{call} returned {answer}: that many blocks let mark A's own token reach mark B. "
                f"But a token between the marks can see both sooner: {expected} block(s) suffice."
            )
        raise Incorrect(f"{call} returned {answer}, expected {expected}.")
    return (
        "every case matches. One (1, 2, 3) block sees cells 3 apart; (1, 1, 1) blocks need 2, "
        "and all-even dilations never see odd distances."
    )


lesson07 = SimpleNamespace(
    blocks_needed=Exercise(
        "blocks_needed(distance, dilations): how many blocks until some token sees both marks?",
        _check_blocks_needed,
        hints=[
            "Think in one dimension, along the row of the two marks. One block lets a token "
            "take in cells 0 or +-r away, for each dilation r of its heads; a second block "
            "adds another such step.",
            "After L blocks a token sees the offsets you can write as a sum of L steps from "
            "{0, +-r1, +-r2, ...}. The token need not sit on a mark: cells d apart are both "
            "seen iff d = (one reachable offset) - (another).",
            "Build the set of reachable offsets block by block (a Python set) and stop at the "
            "first L where some pair differs by d. If every dilation shares a factor that d "
            "lacks, no L works: return None (stop after, say, 64 blocks).",
        ],
        solution="""
def blocks_needed(distance, dilations):
    steps = {0} | {s * r for r in dilations for s in (-1, 1)}
    reach = {0}                        # offsets a token sees, after 0 blocks: itself
    for blocks in range(1, 65):
        reach = {a + b for a in reach for b in steps}
        if any(a + distance in reach for a in reach):
            return blocks              # some token sees cells a and a + distance
    return None                        # a shared factor of the dilations: never

# blocks_needed(3, (1, 1, 1)) == 2, blocks_needed(3, (1, 2, 3)) == 1,
# blocks_needed(3, (2, 2, 2)) is None
""",
    )
)
"""Lesson 07's exercise, in the form of ``dilate_lab.exercises``:
``lesson07.blocks_needed.check(fn)``, ``.hint()``, ``.solution()``."""


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m dilate_lab.train",
        description=(
            "Train a small DilateFormer with each attention arm over several seeds and write "
            "the results: one CSV row per run (--out); the per-arm summary is printed as a "
            "Markdown table (and written next to the CSV with --summary)."
        ),
    )
    parser.add_argument("--task", choices=TASKS, default="longrange")
    parser.add_argument(
        "--arms", nargs="+", default=list(ARMS),
        help="attention per arm: comma-separated dilations (e.g. 1,2,3 1,1,1) or 'global'",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the task's setting")
    parser.add_argument("--lr", type=float, default=None, help="default: the task's setting")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=None, help="long-range task: training images")
    parser.add_argument(
        "--distance", type=int, default=None,
        help="long-range task: cells between the two marks (default 3)",
    )
    parser.add_argument(
        "--official-init", action="store_true",
        help="the official DilateFormer initialisation (Linear weights truncated normal, std 0.02)",
    )
    parser.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda'")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default="results.csv", help="CSV file, one row per run")
    parser.add_argument("--summary", default=None, help="also write the Markdown summary here")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    return parser.parse_args(argv)


def _check_writable(path: str, name: str) -> None:
    """Fail before hours of training, not after, when a results file cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{name}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{name}: {path} cannot be written")


def main(argv=None) -> int:
    """The command line: ``python -m dilate_lab.train --help``."""
    args = _parse_args(argv)
    try:
        arms = [check_arm(arm) for arm in args.arms]
        for seed in args.seeds:
            _check_seed(seed)
        if args.threads is not None:
            check_positive_int(args.threads, "--threads")
            torch.set_num_threads(args.threads)
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        loader_kwargs = {}
        if args.n_train is not None:
            if args.task != "longrange":
                raise ValueError("--n-train applies to --task longrange only")
            loader_kwargs["n_train"] = args.n_train
        if args.distance is not None:
            if args.task != "longrange":
                raise ValueError("--distance applies to --task longrange only")
            loader_kwargs["distance"] = args.distance
        if args.epochs is not None:
            check_positive_int(args.epochs, "--epochs")
        check_positive_int(args.batch_size, "--batch-size")
        if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
            raise ValueError(f"--lr must be a positive number, got {args.lr}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be 'auto', 'cpu' or 'cuda', got {args.device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
        for arm in arms:  # every arm builds before any training starts
            try:
                build_model(args.task, arm, **({"official_init": True} if args.official_init else {}))
            except ValueError as error:
                raise ValueError(f"--arms {arm}: {error}") from None
        for name, path in (("--out", args.out), ("--summary", args.summary)):
            if path is not None:
                _check_writable(path, name)
        train, test = load_task(args.task, **loader_kwargs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.task}: {len(train)} training, {len(test)} test images; {train.source}")
    results = run_ablation(
        args.task, arms, args.seeds, train=train, test=test, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, device=device, progress=not args.quiet,
        model_kwargs={"official_init": True} if args.official_init else None,
    )
    write_results(results, args.out)
    table = format_summary(summarize(results))
    print(table)
    print(f"wrote {len(results)} runs to {args.out}")
    if args.summary:
        with open(args.summary, "w") as handle:
            handle.write(table + "\n")
        print(f"wrote the summary to {args.summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
