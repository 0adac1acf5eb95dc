"""``python -m benchmarks.sweep``: see benchmarks/sweep/__init__.py."""

import sys

from .runner import main

sys.exit(main(sys.argv[1:]))
