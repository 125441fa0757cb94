"""``python -m lrc_kernels``: the same command line as ``lrc`` (see :mod:`lrc_kernels.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
