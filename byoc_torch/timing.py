"""Latency sampling shared by the demo, the overhead study and the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["latency_samples", "measure_latency"]


def latency_samples(fn: Callable[[], object], warmup: int, repeat: int) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times; milliseconds per run."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def measure_latency(fn: Callable[[], object], warmup: int, repeat: int) -> tuple[float, float]:
    """Median and spread (max - min) of ``fn``'s latency in milliseconds."""
    samples = latency_samples(fn, warmup, repeat)
    return statistics.median(samples), max(samples) - min(samples)
