"""Train small DilateFormers and run the paper's dilation ablation; the command line.

The pieces live in three modules, all importable from here as before:

- ``dilate_lab.course.loop``: ``seed_everything``, ``fit``, ``evaluate``,
  ``History``, ``Evaluation``, ``load_task``;
- ``dilate_lab.course.ablation``: ``run_ablation``, ``RunResult``, ``summarize``,
  ``format_summary``, ``write_results``, ``plot_history``, ``plot_ablation``;
- ``dilate_lab.course.exercises.training``: ``lesson07`` (how many blocks until a
  token sees two cells d apart).

This module keeps the command line. From a shell (results: one CSV row per
run; the summary is printed as Markdown)::

    python -m dilate_lab.course.train --task longrange --arms 1,2,3 1,1,1 global \\
        --seeds 0 1 2 --epochs 12 --out results.csv --summary results.md
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

from .._checks import check_positive_int, check_seed
from .ablation import (
    ArmSummary,
    RunResult,
    format_summary,
    plot_ablation,
    plot_history,
    run_ablation,
    summarize,
    write_results,
)
from .exercises.training import lesson07
from .loop import TASKS, Evaluation, History, evaluate, fit, load_task, seed_everything
from .small_models import ARMS, build_model, check_arm

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


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m dilate_lab.course.train",
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


def _device(choice: str) -> str:
    """``--device``: 'auto' takes CUDA where there is one."""
    device = choice
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be 'auto', 'cpu' or 'cuda', got {choice!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    return device


def _loader_kwargs(args) -> dict:
    """The options that go to the long-range loader; refused for the other task."""
    loader_kwargs = {}
    for option, key in (("--n-train", "n_train"), ("--distance", "distance")):
        value = getattr(args, key)
        if value is not None:
            if args.task != "longrange":
                raise ValueError(f"{option} applies to --task longrange only")
            loader_kwargs[key] = value
    return loader_kwargs


def _check_args(args) -> tuple[list[str], str, dict]:
    """Every option checked, every arm built once, the output files writable: before any training.

    Returns the normalised arms, the device and the loader's keyword arguments.
    Raises ValueError naming the option at fault.
    """
    arms = [check_arm(arm) for arm in args.arms]
    for seed in args.seeds:
        check_seed(seed)
    if args.threads is not None:
        check_positive_int(args.threads, "--threads")
        torch.set_num_threads(args.threads)
    loader_kwargs = _loader_kwargs(args)
    if args.epochs is not None:
        check_positive_int(args.epochs, "--epochs")
    check_positive_int(args.batch_size, "--batch-size")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    device = _device(args.device)
    for arm in arms:  # every arm builds before any training starts
        try:
            build_model(args.task, arm, **_model_kwargs(args))
        except ValueError as error:
            raise ValueError(f"--arms {arm}: {error}") from None
    for name, path in (("--out", args.out), ("--summary", args.summary)):
        if path is not None:
            _check_writable(path, name)
    return arms, device, loader_kwargs


def _model_kwargs(args) -> dict:
    return {"official_init": True} if args.official_init else {}


def main(argv=None) -> int:
    """The command line: ``python -m dilate_lab.course.train --help``."""
    args = _parse_args(argv)
    try:
        arms, device, loader_kwargs = _check_args(args)
        train, test = load_task(args.task, **loader_kwargs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.task}: {len(train)} training, {len(test)} test images; {train.source}")
    results = run_ablation(
        args.task, arms, args.seeds, train=train, test=test, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, device=device, progress=not args.quiet,
        model_kwargs=_model_kwargs(args) or None,
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
