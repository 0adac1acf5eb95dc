"""Environment byoc_torch sets before torch loads OpenMP.

Place in the data flow: the first import of ``byoc_torch/__init__``, before anything imports
torch. LibTorch's OpenMP runtime (libgomp) reads ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT``
once, when torch is loaded. Its default lets an idle worker spin for a long while at each
barrier (300,000 rounds); on a machine where other processes (or TVM's pool) want the same
cores, a spinning worker holds a core its sibling needs: an eager 64x512 MLP took 16 ms instead
of 0.4 ms at 2 threads beside two busy processes on the 2-core machine, the built-in demo model
48 ms instead of 0.2. ``OMP_WAIT_POLICY=PASSIVE`` (no spinning) survives that, but every
worker then sleeps between two kernels and the next kernel waits for it to wake: the demo model
took 0.58-0.69 ms eager on a quiet machine instead of 0.21. A short spin, ``GOMP_SPINCOUNT=3000``,
keeps both: 0.25 ms quiet, 0.25-0.27 ms busy (MLP 0.41 / 0.41-0.51 ms;
``benchmarks/wait_policy.py``, docs/performance.md). So byoc_torch sets it unless the user
chose a policy or a spin count -- and only when torch is not loaded yet (then the setting would
not change this process, only its children). :data:`OMP_POLICY_SET` says whether it did.
"""

from __future__ import annotations

import os
import sys

__all__ = ["GOMP_SPINCOUNT", "OMP_POLICY_SET"]

GOMP_SPINCOUNT = "3000"

OMP_POLICY_SET = "torch" not in sys.modules and not (
    {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ)
)
if OMP_POLICY_SET:
    os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
