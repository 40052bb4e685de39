"""``python -m dilate_lab.bench``: the benchmark's command line (see ``cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
