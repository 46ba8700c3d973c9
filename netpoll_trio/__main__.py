"""``python -m netpoll_trio``: the self-contained demo and benchmark.

See :mod:`netpoll_trio._bench.cli` for the options.
"""

from __future__ import annotations

import sys

from ._bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
