"""The compiled SWDA kernel on a quiet and on a busy CPU: a measurement, not a test.

    python tests/busy_cpu_bench.py                 # kernel calls, then the digits training
    python tests/busy_cpu_bench.py --calls-only    # kernel calls only (a few minutes)
    python tests/busy_cpu_bench.py --training-only --rounds 1
    python tests/busy_cpu_bench.py --kernel PATH   # another build of the kernel (a .so)

"Busy" is a second process running two pure-Python spin loops (one per core of a
2-core machine) for the whole measurement, as a learner's browser or a second
notebook would. Quiet and busy runs alternate, back to back, several times; the
medians are printed. Two things are timed:

- the kernel alone: ``swda(q, k, v, 3, r)`` for r in 1, 2, 3 at DilateFormer's
  stage-1 layout (batch 8, 3 heads of 24 channels, 56x56), forward and
  forward+backward, with ``impl="unfold"`` in the same run for the ratio; and the
  small calls a digits training makes (32 images, one head of 12 channels, 8x8);
- the 3-epoch digits training of ``dilate_lab.course.train`` (one arm, one seed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import torch

TRAIN = (
    "import sys\n"
    "from dilate_lab.course import train\n"
    "from busy_cpu_bench import use_kernel\n"
    "use_kernel(sys.argv[1])\n"
    "train.main(['--task', 'digits', '--arms', '1,2,3', '--seeds', '0', '--epochs', '3',"
    " '--quiet', '--out', sys.argv[2]])\n"
)


@contextmanager
def busy(on: bool):
    """Two pure-Python spin loops while the block runs (when on): two processes, as
    two threads of one process would share its GIL and keep only one core busy."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 if on else 0)]
    try:
        time.sleep(0.3 if on else 0)
        yield
    finally:
        for process in spinners:
            process.kill()
            process.wait()


def use_kernel(path: str) -> None:
    """Makes impl="cpp" use the kernel built at path ("" keeps the package's own build)."""
    if not path:
        return
    import importlib.util
    from pathlib import Path

    from dilate_lab.ops import cpp_build

    name = Path(path).name.split(".")[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cpp_build._state["module"] = module


def time_calls(shape, impl, backward, repeats):
    """Median seconds of one swda call (with its backward) per dilation 1, 2, 3."""
    from dilate_lab import swda

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen).requires_grad_(backward) for _ in range(3))
    times = []
    for dilation in (1, 2, 3):
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = swda(q, k, v, 3, dilation, impl=impl)
            if backward:
                torch.autograd.grad(out.sum(), (q, k, v))
            samples.append(time.perf_counter() - start)
        times.append(statistics.median(samples))
    return sum(times)


def measure_calls(rounds: int) -> None:
    """The kernel quiet and busy, unfold quiet (one call per dilation: it is ~50x slower)."""
    stage1, digits = (8, 3, 56, 56, 24), (32, 1, 8, 8, 12)
    cases = [
        ("stage-1 forward", stage1, False, 5),
        ("stage-1 fwd+bwd", stage1, True, 3),
        ("digits fwd+bwd x50", digits, True, 50),
    ]
    for label, shape, backward, repeats in cases:
        results = {}
        for _ in range(rounds):
            for on in (False, True):
                with busy(on):
                    results.setdefault(on, []).append(time_calls(shape, "cpp", backward, repeats))
            results.setdefault("unfold", []).append(time_calls(shape, "unfold", backward, 1))
        quiet, loaded, unfold = (statistics.median(results[key]) for key in (False, True, "unfold"))
        print(
            f"{label:20s} cpp quiet {quiet * 1e3:8.2f} ms  busy {loaded * 1e3:8.2f} ms ({loaded / quiet:.1f}x)"
            f" | unfold quiet {unfold * 1e3:9.2f} ms | cpp/unfold {quiet / unfold:.3f}  (sums over r = 1, 2, 3)",
            flush=True,
        )


def _load_so(path: str):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(Path(path).name.split(".")[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_steps(rounds: int, kernels: list[str], steps: int = 10) -> None:
    """Training steps of the digits model (batch 32), per kernel build and for "fused".

    The same work as the digits training, in one process and a fraction of its time:
    each kernel (a .so path), and the pure-PyTorch path ("fused"), quiet and busy.
    """
    from dilate_lab.course.loop import load_task
    from dilate_lab.course.small_models import build_model
    from dilate_lab.ops import cpp_build

    train, _ = load_task("digits", seed=0)
    images, labels = train.images[:32], train.labels[:32]
    arms = {path: _load_so(path) for path in kernels}
    arms["fused"] = None
    results = {}
    for _ in range(rounds):
        for label, module in arms.items():
            cpp_build._state.update(module=module, error=None if module else "off for the bench")
            torch.manual_seed(0)
            model = build_model("digits", "1,2,3")
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            torch.nn.functional.cross_entropy(model(images), labels).backward()  # warm-up, untimed
            for on in (False, True):
                with busy(on):
                    start = time.perf_counter()
                    for _ in range(steps):
                        loss = torch.nn.functional.cross_entropy(model(images), labels)
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                    results.setdefault((label, on), []).append(time.perf_counter() - start)
                print(f"  {os.path.basename(label)} {'busy ' if on else 'quiet'} "
                      f"{results[label, on][-1]:.2f} s", flush=True)
    for label in arms:
        quiet, loaded = (statistics.median(results[label, on]) for on in (False, True))
        print(f"{steps} digits training steps, {os.path.basename(label)}: quiet {quiet:.2f} s, "
              f"busy {loaded:.2f} s ({loaded / quiet:.1f}x)", flush=True)


def measure_training(rounds: int, kernel: str) -> None:
    import os
    import tempfile

    times = {False: [], True: []}
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as out:
        for _ in range(rounds):
            for on in (False, True):
                with busy(on):
                    start = time.perf_counter()
                    subprocess.run([sys.executable, "-c", TRAIN, kernel, os.path.join(out, "x.csv")],
                                   check=True, capture_output=True, env=env, timeout=600)
                    times[on].append(time.perf_counter() - start)
                print(f"training {'busy ' if on else 'quiet'} {times[on][-1]:6.1f} s", flush=True)
    quiet, loaded = statistics.median(times[False]), statistics.median(times[True])
    print(f"digits training, 3 epochs: quiet {quiet:.1f} s, busy {loaded:.1f} s ({loaded / quiet:.1f}x)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="", help="a built kernel (.so) to time instead of the package's")
    parser.add_argument("--calls-only", action="store_true")
    parser.add_argument("--training-only", action="store_true")
    parser.add_argument("--steps", nargs="*", metavar="KERNEL",
                        help="only time training steps in one process, with these kernel builds (.so) and fused")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.steps is not None:
        measure_steps(args.rounds, args.steps)
        return 0
    use_kernel(args.kernel)
    from dilate_lab.ops.cpp_build import load_kernel

    print("kernel:", getattr(load_kernel(), "__file__", "?"), "threads:", torch.get_num_threads(), flush=True)
    if not args.training_only:
        measure_calls(args.rounds)
    if not args.calls_only:
        measure_training(args.rounds, args.kernel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
