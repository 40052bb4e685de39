"""Build the C++ SWDA kernel now, instead of at the first ``swda`` call on a CPU.

    python -m dilate_lab.build_kernel            # build (or load from the cache) and say so
    python -m dilate_lab.build_kernel --verbose  # with the compiler's output

For instructors: run it once on each machine before a class, so that no learner
waits half a minute in lesson 00. Exit status 1 where it cannot be built (the
course then runs on the pure-PyTorch ``"fused"`` path).
"""

from __future__ import annotations

import sys
import time

from .ops.cpp_build import load_kernel


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    unknown = [a for a in argv if a != "--verbose"]
    if unknown:
        print(f"unknown arguments {unknown}; the only option is --verbose", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        load_kernel(verbose="--verbose" in argv)
    except RuntimeError as error:
        print(f"not available: {error}")
        return 1
    print(f"C++ SWDA kernel ready ({time.perf_counter() - start:.1f} s); swda(impl='auto') uses it on CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
