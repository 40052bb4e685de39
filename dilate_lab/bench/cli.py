"""The benchmark's command line: ``python -m dilate_lab.bench --help``.

It prints, per device, the layouts and a Markdown table of every
implementation; without ``--quick`` it then says which targets the fast path
meets. ``--model`` measures the whole DilateFormer-Tiny instead (``model.py``). ``--json`` keeps every row, ``--plot`` adds the scaling sweep and its figure.
"""

from __future__ import annotations

import argparse
import json

import torch

from ..functional import ALL_IMPLS
from .benchmark import _fmt, check_targets, format_table, run_benchmark, run_scaling
from .gpu import DTYPES, gpu_suite

__all__ = ["main"]


def _devices(choice: str) -> list[torch.device]:
    if choice == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [torch.device(choice)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dilate_lab.bench",
        description="Time and peak memory of the SWDA implementations, DilateFormer-Tiny layouts.",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: the CPU, and the GPU when there is one (default)",
    )
    parser.add_argument(
        "--impls",
        default=None,
        help="comma-separated implementations (default: unfold,shift,fused, cpp on CPU, flex on CUDA)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument(
        "--repeats", type=int, default=None,
        help="timed runs per case; the median is shown (default 10; 5 with --model)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and 2 repeats: checks it runs"
    )
    parser.add_argument(
        "--suite",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="auto: the CPU table on the CPU, the GPU suite (triton, flex, fused, unfold against "
        "the measured copy bandwidth's floor, per dtype) on CUDA; gpu: the GPU suite on any device",
    )
    parser.add_argument(
        "--dtype",
        choices=("both", *DTYPES),
        default="both",
        help="the GPU suite's dtypes (default: both float32 and bfloat16)",
    )
    parser.add_argument(
        "--model", action="store_true",
        help="the whole DilateFormer-Tiny instead: images/s for inference and a training step "
        "against the official code path (unfold attention) on the same weights, the sgemm "
        "roofline, bfloat16 autocast and where the forward's time goes",
    )
    parser.add_argument(
        "--compile", action="store_true", help="with --model: also time torch.compile of the model"
    )
    parser.add_argument("--json", metavar="PATH", help="also write every row as JSON")
    parser.add_argument("--plot", metavar="PATH", help="also sweep the map side and save a figure")
    return parser


def _impls_option(parser: argparse.ArgumentParser, args) -> list[str] | None:
    """The checked options; ``--impls`` split into names (None: the device's defaults)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.threads < 1 or (args.repeats is not None and args.repeats < 1):
        parser.error("--threads and --repeats must be >= 1")
    if args.impls is None:
        return None
    impls = [n.strip() for n in args.impls.split(",") if n.strip()]
    known = set(ALL_IMPLS)
    unknown = [n for n in impls if n not in known]
    if unknown:
        parser.error(f"--impls: unknown {unknown}; choose from {sorted(known)}")
    return impls


def _print_device_table(device: torch.device, rows: list[dict]) -> None:
    print(f"\n## {device.type}: {rows[0]['device_name'] if rows else device.type}\n")
    for layout in dict.fromkeys(r["layout"] for r in rows):
        print(f"- {layout}: {next(r['layout_desc'] for r in rows if r['layout'] == layout)}")
    print("\n" + format_table(rows))
    print(
        "(speed-up: unfold's time / this time; memory: this peak / unfold's; "
        "floor: one addcmul pass over q, k, v and the output)"
    )


def _print_targets(targets: list[dict], quick: bool) -> None:
    if targets and quick:
        print("\n(--quick: tiny maps, where fixed per-call costs dominate; the targets apply to the "
              "full layouts and are checked only without --quick)")
    elif targets:
        print("\nTargets (fast path against unfold, same run):")
        for t in targets:
            verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            print(
                f"- {t['device']} {t['layout']} {t['impl']}: {t['target']} {t['comparison']} "
                f"{t['goal']}: {_fmt(t['value'], 3)} -> {verdict}"
            )


def _write_scaling(devices, impls, args, report: dict) -> None:
    """``--plot``: the map-side sweep on every device, its figure saved, its rows kept."""
    from .figure import scaling_figure  # matplotlib only when a figure is asked for

    scaling = []
    for device in devices:
        scaling.extend(run_scaling(device, impls, quick=args.quick, threads=args.threads))
    report["scaling"] = scaling
    scaling_figure(scaling).savefig(args.plot, dpi=120)
    print(f"\nscaling figure written to {args.plot}")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    impls = _impls_option(parser, args)
    if args.compile and not args.model:
        parser.error("--compile goes with --model")
    if args.model:
        from .model import main_model

        return main_model(args)
    args.repeats = 10 if args.repeats is None else args.repeats
    devices = _devices(args.device)
    cuda_device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s)")
    print(f"CUDA device: {cuda_device}" if cuda_device else "no CUDA device: CPU only")
    report = {
        "torch": torch.__version__,
        "threads": args.threads,
        "cuda_device": cuda_device,
        "quick": args.quick,
        "rows": [],
    }
    for device in devices:
        if args.suite == "gpu" or (args.suite == "auto" and device.type == "cuda"):
            dtypes = tuple(DTYPES) if args.dtype == "both" else (args.dtype,)
            report.setdefault("gpu", []).append(
                gpu_suite(device, impls, dtypes, args.repeats, args.quick, args.threads)
            )
            continue
        rows = run_benchmark(
            device, impls, repeats=args.repeats, quick=args.quick, threads=args.threads
        )
        report["rows"].extend(rows)
        _print_device_table(device, rows)
    report["targets"] = check_targets(report["rows"])
    _print_targets(report["targets"], args.quick)
    if args.plot:
        _write_scaling(devices, impls, args, report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"rows written to {args.json}")
    return 0
