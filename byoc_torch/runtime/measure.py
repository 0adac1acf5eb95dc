"""Measurement switches and counters of ONE torch runtime module instance.

Place in the data flow: benchmarks (``benchmarks/end_to_end.py``, ``benchmarks/crossing.py``)
and tests reach a compiled model's torch runtime modules (``compiled.running_torch_modules``) and
switch them here. Everything is per module instance: two models, or two modules, never affect
each other. Production code never calls this module.

Modes: ``"normal"``; ``"record"`` (run LibTorch and keep each subgraph's last outputs and input
shapes); ``"replay"`` (return the recorded outputs without running LibTorch, so that a benchmark
times the TVM part alone; a call whose input shapes or dtypes differ from the recorded call
raises ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import tvm_ffi

from .module import TorchRuntime

__all__ = ["MODES", "SubgraphStats", "mode", "reset_stats", "set_fast_path", "set_mode", "stats"]

MODES = ("normal", "record", "replay")


class SubgraphStats(NamedTuple):
    """Counters of one subgraph since the last reset."""

    calls: int
    torch_ns: int  # nanoseconds inside LibTorch (the work, not the crossing)
    single_op: bool  # eligible for the dispatcher fast path


def set_mode(module: tvm_ffi.Module, mode_name: str) -> str:
    """Set the measurement mode of ``module``; returns the previous one."""
    return TorchRuntime(module).set_mode(mode_name)


def set_fast_path(module: tvm_ffi.Module, enabled: bool) -> bool:
    """Turn the single-op dispatcher fast path of ``module`` on or off; returns the previous."""
    return TorchRuntime(module).set_fast_path(enabled)


def stats(module: tvm_ffi.Module) -> dict[str, SubgraphStats]:
    """Per symbol: calls, nanoseconds in LibTorch, fast-path eligibility."""
    return {sym: SubgraphStats(*v) for sym, v in TorchRuntime(module).stats().items()}


def reset_stats(module: tvm_ffi.Module) -> None:
    """Zero the counters of ``module`` and drop its recorded outputs."""
    TorchRuntime(module).reset_stats()


@contextmanager
def mode(modules: Iterable[tvm_ffi.Module], mode_name: str) -> Iterator[None]:
    """Run a block with every module of ``modules`` in ``mode_name``; restores their modes."""
    mods = list(modules)
    previous: list[str] = []
    try:
        for m in mods:
            previous.append(set_mode(m, mode_name))
        yield
    finally:
        for m, p in zip(mods, previous, strict=False):
            set_mode(m, p)
