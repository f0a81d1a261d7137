"""``python -m symbackprop ...``: the same command line as ``symbackprop ...``."""

import sys

from symbackprop.cli import main

if __name__ == "__main__":
    sys.exit(main())
