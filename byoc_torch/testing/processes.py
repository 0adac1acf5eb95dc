"""Fresh Python processes for tests that load, export or print in a process of their own.

Place in the data flow: beside the tests. :func:`fresh_python` runs this interpreter with the
checkout that holds this package first on ``PYTHONPATH`` (so the child uses the code under test)
and byoc_torch's logging off unless asked (``BYOC_TORCH_LOG``), capturing stdout and stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["fresh_python"]

ROOT = Path(__file__).resolve().parents[2]


def fresh_python(*args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``python *args`` in a new process (text output captured); ``env`` adds variables."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "BYOC_TORCH_LOG": "", **env},
    )
