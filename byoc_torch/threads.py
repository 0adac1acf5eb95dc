"""One thread budget for TVM's CPU thread pool and LibTorch's intra-op pool.

Place in the data flow: beside the pipeline. ``compile`` checks the ``num_threads`` option
(:class:`byoc_torch.Options`) with :func:`check_num_threads` and stores it in the model's
:class:`~byoc_torch.signature.Signature`, which travels inside the exported artifact; every
:class:`~byoc_torch.compiled.CompiledModule`, compiled or loaded, calls
:func:`apply_thread_budget` with it when it is created. ``byoc_torch/__init__`` sets
:data:`ENV_DEFAULTS` first, before TVM can start a pool.

A compiled model alternates between TVM kernels and LibTorch subgraphs, never running both at
once, so both pools may use the same ``n`` threads; what must not happen is one pool's idle
threads spinning (or being pinned) while the other works. On a loaded machine that costs
milliseconds per call (``benchmarks/threads.py``, docs/performance.md).

Both settings are process-wide and stay in force after the model is gone: the budget last
applied wins, and nothing is restored.

* LibTorch: ``torch.set_num_threads(n)``. This is also the budget of AOTInductor-compiled
  kernels, which run on LibTorch's OpenMP pool: one budget for TVM, TorchScript and AOTInductor.
* TVM: each OS thread has its own TVM pool, sized when the thread first launches a parallel
  kernel from ``TVM_NUM_THREADS``, which TVM also reads at every launch (1 runs the kernel
  inline, with no pool). :func:`apply_thread_budget` sets that variable for every thread and
  sizes the calling thread's pool with TVM's ``runtime.config_threadpool``. A pool can shrink
  but never grow: a thread whose pool was created under a smaller budget keeps it.
* LibTorch's idle OpenMP workers spin briefly at barriers, then sleep (``GOMP_SPINCOUNT=3000``),
  set by :mod:`byoc_torch._env` when byoc_torch is imported before torch and the user set no
  wait policy or spin count.
* The default budget (``num_threads=None``) is the process's own ``torch.get_num_threads()``
  (so ``torch.set_num_threads(1)`` before a compile or a load is kept), capped by the cores
  available: the process's affinity mask (``os.sched_getaffinity``) and a cgroup CPU quota
  (``cpu.max``, as containers set it), so a container limited to 2 CPUs on a 64-core host
  gets 2 threads, not 64.
* TVM's idle workers spin-yield for ``TVM_THREAD_POOL_SPIN_COUNT`` rounds (default 300000)
  before they sleep, read once when the first pool starts, so only the environment can set it;
  and a new pool pins its threads, the caller's included, to cores unless
  ``TVM_BIND_THREADS`` is not 1 (TVM 0.27 pins the calling Python thread to core 0, and
  every thread it starts afterwards inherits that). :data:`ENV_DEFAULTS` turns both off
  unless the user set them (:func:`set_env_defaults`, called by ``byoc_torch/__init__``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import tvm_ffi

from . import _defaults

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_DEFAULTS",
    "ThreadBudget",
    "apply_thread_budget",
    "budget_threads",
    "check_num_threads",
    "last_applied",
    "one_thread",
    "set_env_defaults",
]

# Environment TVM's thread pool reads; set by byoc_torch/__init__ unless already set.
ENV_DEFAULTS = {
    "TVM_THREAD_POOL_SPIN_COUNT": str(_defaults.TVM_THREAD_POOL_SPIN_COUNT),
    "TVM_BIND_THREADS": "0",
}

# runtime.config_threadpool's affinity mode: 1 = "big" cores (all cores on x86), the default.
_AFFINITY_BIG = 1


@dataclass(frozen=True)
class ThreadBudget:
    """What :func:`apply_thread_budget` applied."""

    requested: int | None  # the option's value (None: threads.default_threads)
    torch_threads: int  # torch.get_num_threads() afterwards
    tvm_threads: int  # threads a TVM parallel kernel launched by the applying thread uses


_last: ThreadBudget | None = None


def set_env_defaults() -> None:
    """Set each of :data:`ENV_DEFAULTS` the user has not set."""
    for name, value in ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


def check_num_threads(value: object, what: str = "num_threads") -> int | None:
    """``value`` if it is None or a positive int, else a TypeError / ValueError naming
    ``what``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be a positive int or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    return value


def default_threads() -> int:
    """The budget of ``num_threads=None``: the process's own LibTorch thread count
    (``torch.get_num_threads()``, which a user's ``torch.set_num_threads(1)`` or
    ``OMP_NUM_THREADS`` set), capped by :func:`available_cores` (torch counts the host's
    cores, not a container's quota). A compile never raises the threads the process chose:
    with 2 threads it made every model of a one-thread process wait on woken OpenMP
    workers, eager PyTorch code included."""
    return max(1, min(torch.get_num_threads(), available_cores()))


def available_cores() -> int:
    """The cores this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(CGROUP_CPU_MAX)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


# cgroup v2's CPU limit of this process ("<quota> <period>" in microseconds, or "max ...").
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def cgroup_cpu_quota(path: str) -> float | None:
    """The CPUs a cgroup v2 quota grants this process (quota / period), None when unlimited or
    unreadable."""
    try:
        with open(path) as f:
            fields = f.read().split()
        if len(fields) != 2 or fields[0] == "max":
            return None
        return int(fields[0]) / int(fields[1])
    except (OSError, ValueError, ZeroDivisionError):
        return None


def budget_threads(num_threads: int | None) -> int:
    """The threads ``num_threads`` (``Options.num_threads``) gives each pool in this process:
    itself, or :func:`default_threads` for None."""
    n = check_num_threads(num_threads)
    return default_threads() if n is None else n


def apply_thread_budget(num_threads: int | None) -> ThreadBudget:
    """Give LibTorch and TVM ``num_threads`` threads each (None: :func:`default_threads`).

    Process-wide and not undone (see the module docstring).
    """
    n = budget_threads(num_threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    os.environ["TVM_NUM_THREADS"] = str(n)
    if n == 1:
        # TVM reads TVM_NUM_THREADS at every parallel launch and runs the kernel inline when
        # it is 1: no pool is needed, so none is created (a pool never grows once created).
        tvm_threads = 1
    else:
        tvm_ffi.get_global_func("runtime.config_threadpool")(_AFFINITY_BIG, n)
        tvm_threads = tvm_num_threads()
    budget = ThreadBudget(num_threads, torch.get_num_threads(), tvm_threads)
    global _last
    _last = budget
    logger.debug("thread budget applied: %s", budget)
    return budget


def tvm_num_threads() -> int:
    """The threads TVM's pool of the calling thread uses."""
    return int(tvm_ffi.get_global_func("runtime.NumThreads")())


def last_applied() -> ThreadBudget | None:
    """The budget this process applied last, if any."""
    return _last


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run timings on one thread on every side: LibTorch's intra-op pool (so also
    AOTInductor's kernels) and TVM's kernels (``TVM_NUM_THREADS``, which TVM reads at every
    launch). A region costs what its work costs, and other processes cannot turn a kernel's
    wait for a descheduled worker into its time: with OpenMP's default wait policy (torch
    imported before byoc_torch, so its short spin count came too late), a 0.02 ms
    TorchScript region timed 24 ms per call at 2 threads while two busy processes held the two
    cores. Measured placement times its regions and its whole-model candidates so
    (:mod:`byoc_torch.placement.measure`), and :mod:`byoc_torch.aot_inductor` its matrix
    multiplies. Both settings are restored afterwards."""
    threads = torch.get_num_threads()
    tvm_threads = os.environ.get("TVM_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["TVM_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if tvm_threads is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = tvm_threads
