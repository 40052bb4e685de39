"""The paper's dilation ablation, small: the same model with dilations (1, 2, 3), (1, 1, 1) or global attention.

- ``run_ablation(task, arms, seeds, ...)``: one training run per arm and seed, same
  data, depth and width for all; a ``RunResult`` per run.
- ``summarize`` gives mean, standard deviation, min and max per arm,
  ``format_summary`` a Markdown table, ``write_results`` a CSV file.
- ``plot_history(history)`` and ``plot_ablation(results)``: pure figure functions
  (they build a ``Figure`` and never show it, so they run headless and in tests).
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from matplotlib.figure import Figure

from .._checks import check_seed
from .data import ImageSet
from .loop import TASKS, History, _check_progress, fit, load_task, seed_everything
from .small_models import ARMS, TASK_MODELS, build_model, check_arm

__all__ = [
    "RunResult",
    "ArmSummary",
    "run_ablation",
    "summarize",
    "format_summary",
    "write_results",
    "plot_history",
    "plot_ablation",
]


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



def _check_ablation_args(task, arms, seeds, train, test, keep_models, progress) -> list[str]:
    """Everything ``run_ablation`` is given, checked before the first run; the arms normalised."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    arms = [check_arm(arm) for arm in arms]
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")
    for seed in seeds:
        check_seed(seed)
    if (train is None) != (test is None):
        raise ValueError("give both train and test, or neither (then load_task(task) is used)")
    if keep_models is not None and not isinstance(keep_models, dict):
        raise ValueError(f"keep_models must be None or a dict, got {type(keep_models).__name__}")
    _check_progress(progress)
    return arms


def _announce_run(label: str, history: History, epochs: int) -> None:
    """The one line ``run_ablation(progress=True)`` prints when a run ends."""
    curve = " ".join(f"{a:.2f}" for a in history.test_accuracy)
    print(
        f"{label}: test accuracy {history.test_accuracy[-1]:.3f} after {epochs} epochs "
        f"({history.seconds[-1]:.1f} s); by epoch: {curve}",
        flush=True,
    )


def _result(task: str, arm: str, seed: int, epochs: int, history: History, model) -> RunResult:
    return RunResult(
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
    arms = _check_ablation_args(task, arms, seeds, train, test, keep_models, progress)
    if train is None:
        train, test = load_task(task)
    settings = TASK_MODELS[task]
    epochs = settings["epochs"] if epochs is None else epochs
    lr = settings["lr"] if lr is None else lr
    fit_progress = progress if callable(progress) else False  # True: only _announce_run
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
            if progress is True:  # one finished line per run, nothing while it trains
                _announce_run(label, history, epochs)
            if keep_models is not None:
                keep_models[(arm, int(seed))] = model
            results.append(_result(task, arm, seed, epochs, history, model))
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


