"""Build the C++ SWDA kernel now, instead of at the first ``swda`` call on a CPU.

    python -m dilate_lab.build_kernel                # build (or load from the cache) and say so
    python -m dilate_lab.build_kernel --verbose      # with the compiler's output
    python -m dilate_lab.build_kernel --dir FOLDER   # build into FOLDER, to share it

For instructors: run it once on each machine before a class, so that no learner
waits half a minute in lesson 00. To build once for a room of identical machines,
build into a shared folder with ``--dir FOLDER`` and give every learner's session
``DILATE_LAB_KERNEL_DIR=FOLDER`` in its environment: the folder may be read-only
for them, and any checkout of the same dilate-lab source uses the same build.
Exit status 1 where it cannot be built (the course then runs on the pure-PyTorch
``"fused"`` path).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .ops.cpp_build import _DIR_VARIABLE, load_kernel


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dilate_lab.build_kernel",
        description="Build the C++ SWDA kernel now (once per machine, about half a minute).",
    )
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")
    parser.add_argument(
        "--dir", metavar="FOLDER",
        help=f"build into FOLDER (a kernel cache to share; learners then set {_DIR_VARIABLE}=FOLDER)",
    )
    return parser


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:  # argparse has printed the usage and the unknown option
        return int(exit_.code or 0)
    if args.dir:
        folder = os.path.abspath(args.dir)
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            print(f"cannot write to {folder}; --dir needs a folder you can write", file=sys.stderr)
            return 2
        os.environ[_DIR_VARIABLE] = folder
        # PyTorch's cache too, so that a build already there is not taken instead of one here
        os.environ["TORCH_EXTENSIONS_DIR"] = folder
    start = time.perf_counter()
    try:
        module = load_kernel(verbose=args.verbose)
    except RuntimeError as error:
        print(f"not available: {error}")
        return 1
    print(f"C++ SWDA kernel ready ({time.perf_counter() - start:.1f} s, {module.__file__}); "
          "swda(impl='auto') uses it on CPU")
    if args.dir:
        print(f"share it: {_DIR_VARIABLE}={os.environ[_DIR_VARIABLE]} in each learner's environment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
