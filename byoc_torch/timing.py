"""Latency sampling shared by the demo, the overhead study and the benchmarks.

:func:`latency_samples` times one callable; :func:`interleaved_samples` times several in one
process, round-robin, so that drifts of a shared machine hit every contestant alike
(benchmarks/peers.py).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

__all__ = ["interleaved_samples", "latency_samples", "measure_latency"]


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


def interleaved_samples(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    *,
    warmup: int = 2,
    budget_s: float = 0.2,
    max_calls: int = 100,
    on_round: Callable[[int], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Latency of several callables measured round-robin in one process, in milliseconds.

    Warm-up: each callable runs ``warmup`` (at least 1) times in turn, untimed for the result;
    the fastest warm-up call sets its calls per round, as many as fit in ``budget_s`` (at
    least 1, at most ``max_calls``), so slow callables get fewer repetitions. Then ``rounds``
    rounds: in each, every callable runs its calls in turn and contributes their median.

    Returns (name -> one median per round, name -> calls per round); the median of the
    per-round medians is the figure to report.
    """
    calls: dict[str, int] = {}
    for name, fn in fns.items():
        fastest_s = min(latency_samples(fn, 0, max(1, warmup))) / 1e3
        calls[name] = max(1, min(max_calls, int(budget_s / max(fastest_s, 1e-9))))
    per_round: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            per_round[name].append(statistics.median(latency_samples(fn, 0, calls[name])))
        if on_round is not None:
            on_round(r)
    return per_round, calls
