"""Environment byoc_torch sets before torch loads OpenMP.

Place in the data flow: the first import of ``byoc_torch/__init__``, before anything imports
torch. LibTorch's OpenMP runtime (libgomp) reads ``OMP_WAIT_POLICY`` once, when torch is
loaded. Its default lets idle workers spin for a while at each barrier; on a machine where
other processes (or TVM's pool) want the same cores, a spinning worker holds a core its
sibling needs, and a 1 ms eager MLP took 32-59 ms at 2 threads on a loaded 2-core machine,
1.0 ms with ``PASSIVE`` (docs/performance.md). So byoc_torch asks for ``PASSIVE`` unless the
user chose a policy -- and only when torch is not loaded yet (then the setting would not
change this process, only its children). :data:`OMP_POLICY_SET` says whether it did.
"""

from __future__ import annotations

import os
import sys

__all__ = ["OMP_POLICY_SET", "OMP_WAIT_POLICY"]

OMP_WAIT_POLICY = "PASSIVE"

OMP_POLICY_SET = "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ
if OMP_POLICY_SET:
    os.environ["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY
