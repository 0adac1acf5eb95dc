"""Latency sampling shared by measured placement, the demo, the overhead study and the
benchmarks.

:func:`latency_samples` times one callable; :func:`interleaved_samples` times several in one
process, round-robin, so that drifts of a shared machine hit every contestant alike
(benchmarks/peers.py).

Placement decides on timings taken while other work may share the machine, so it uses
:func:`robust_times`, which is built to be trusted there:

* **many short samples**, round-robin over the contestants, each sample a few calls lasting
  about ``sample_ms`` (``_defaults.TIMING_SAMPLE_MS``);
* **a CPU-time cross-check**: each sample also reads the process's CPU time
  (``time.process_time``); a sample whose wall time exceeds its CPU time by much more than the
  contestant's best samples do was descheduled (another process ran) and is dropped. Load only
  ever adds wall time, so what is left is the kernel's own;
* **a low quantile** (``_defaults.TIMING_QUANTILE``) of what is left, not the mean or the median;
* **re-measuring when the spread is high**: while a contestant's spread (its
  ``TIMING_SPREAD_QUANTILE`` over its low quantile) is above ``TIMING_NOISY_SPREAD``, more
  rounds are taken, up to ``TIMING_MAX_ROUNDS``; a contestant still that spread is *noisy*;
* :func:`choose` keeps the simplest contestant unless another is faster beyond the noise:
  its best sample below the simplest's less a margin (``_defaults.TIMING_MARGIN``) in both
  halves of the rounds, or its time up to its own spread still below the simplest's less the
  margin. Load only adds time, and hits some kernels harder than others (beside two busy
  processes on the 2-core host, the built-in demo as one AOTInductor package timed 30-40 %
  above its quiet low quantile through a whole check, all-tvm 4-10 %, and a placement
  1.36-1.45x slower on a quiet machine was kept); the best samples are what load disturbs
  least. A difference inside the noise never changes a choice, wide spreads never hide a
  large one, and it says when noise was too high to trust one.

The clocks are a parameter (:class:`Clocks`; default :data:`DEFAULT_CLOCKS`, read at each
call), so tests inject a noisy timer.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from . import _defaults

__all__ = [
    "DEFAULT_CLOCKS",
    "Choice",
    "Clocks",
    "Timing",
    "choose",
    "interleaved_samples",
    "latency_samples",
    "measure_latency",
    "robust_time",
    "robust_times",
    "summarize",
]


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


# --------------------------------------------------------------------------------------------
# Robust timing (measured placement)


@dataclass(frozen=True)
class Clocks:
    """The clocks :func:`robust_times` reads (seconds): wall time and this process's CPU time;
    and how it pauses between passes."""

    wall: Callable[[], float] = time.perf_counter
    cpu: Callable[[], float] = time.process_time
    pause: Callable[[float], None] = time.sleep


# The clocks robust_times reads when given none (tests replace it with a fake, noisy timer).
DEFAULT_CLOCKS = Clocks()


@dataclass(frozen=True)
class Timing:
    """One contestant's robust time.

    ``ms``: the low quantile of its kept samples (ms per call); ``spread``: how far its upper
    samples lie above that, relative (0.1 = 10 %); ``cpu_ms``: the same quantile of CPU time
    per call (all of the process's threads); ``samples`` kept of ``taken`` (the rest were
    descheduled, by the CPU-time cross-check); ``noisy``: the spread stayed above
    ``_defaults.TIMING_NOISY_SPREAD`` after re-measuring. ``halves``: the best kept sample of
    the even-numbered rounds and of the odd-numbered ones (None: a half kept none), what
    :func:`choose` compares first.
    """

    ms: float
    spread: float
    cpu_ms: float | None = None
    samples: int = 0
    taken: int = 0
    noisy: bool = False
    halves: tuple[float, float] | None = None

    def describe(self) -> str:
        text = f"{self.ms:.4f} ms (spread {self.spread:.0%}, {self.samples}/{self.taken} samples"
        return text + (", noisy)" if self.noisy else ")")


def _quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation between order statistics)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _descheduled(wall: Sequence[float], cpu: Sequence[float]) -> list[bool]:
    """Which samples were descheduled: wall over CPU time by much more than the best samples'
    ratio (a multi-threaded kernel has a ratio below 1, a sleeping wait above; only a ratio far
    above the contestant's own usual one means someone else ran)."""
    ratios = [w / c if c > 0 else math.inf for w, c in zip(wall, cpu, strict=True)]
    finite = [r for r in ratios if math.isfinite(r)]
    if not finite:
        return [False] * len(wall)  # a CPU clock too coarse to tell: keep every sample
    usual = _quantile(finite, _defaults.TIMING_QUANTILE)
    limit = usual * _defaults.TIMING_DESCHEDULED_FACTOR
    return [math.isfinite(r) and r > limit for r in ratios]


def summarize(wall: Sequence[float], cpu: Sequence[float] | None = None) -> Timing:
    """A :class:`Timing` from per-call samples (ms), one per round: descheduled samples dropped
    when CPU times are given, then the low quantile, the spread and the two halves' best of
    the rest."""

    def kept_in(values: Sequence[float], mask: Sequence[bool]) -> list[float]:
        return [v for v, k in zip(values, mask, strict=True) if k]

    keep = [True] * len(wall)
    if cpu is not None:
        drop = _descheduled(wall, cpu)
        if not all(drop):
            keep = [not d for d in drop]
    kept = kept_in(wall, keep)
    kept_cpu = kept_in(cpu, keep) if cpu is not None else None
    low = _quantile(kept, _defaults.TIMING_QUANTILE)
    high = _quantile(kept, _defaults.TIMING_SPREAD_QUANTILE)
    spread = (high - low) / low if low > 0 else 0.0
    cpu_ms = _quantile(kept_cpu, _defaults.TIMING_QUANTILE) if kept_cpu else None
    even, odd = kept_in(wall[0::2], keep[0::2]), kept_in(wall[1::2], keep[1::2])
    halves = (min(even), min(odd)) if even and odd else None
    noisy = spread > _defaults.TIMING_NOISY_SPREAD
    return Timing(low, spread, cpu_ms, len(kept), len(wall), noisy, halves)


@dataclass
class _Samples:
    calls: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def robust_times(
    fns: Mapping[str, Callable[[], object]],
    *,
    sample_ms: float = _defaults.TIMING_SAMPLE_MS,
    rounds: int = _defaults.TIMING_ROUNDS,
    max_rounds: int = _defaults.TIMING_MAX_ROUNDS,
    passes: int = 1,
    pause_s: float = 0.0,
    clocks: Clocks | None = None,
) -> dict[str, Timing]:
    """Robust per-call time of each callable, measured round-robin (see module doc).

    Each callable runs once untimed (warm-up and calibration: a sample makes as many calls as
    fit in ``sample_ms``, at least 1); then ``passes`` passes of ``rounds`` rounds of one
    sample each, ``pause_s`` apart (a burst of load that covers a whole pass rarely covers
    the next), and more rounds, up to ``max_rounds`` in all (at least the passes' rounds),
    while a contestant's spread is high.
    """
    clocks = clocks or DEFAULT_CLOCKS
    state: dict[str, _Samples] = {}
    for name, fn in fns.items():
        fn()
        t0 = clocks.wall()
        fn()
        first_ms = max((clocks.wall() - t0) * 1e3, 1e-6)
        state[name] = _Samples(max(1, min(10_000, int(sample_ms / first_ms))))

    def one_round() -> None:
        for name, fn in fns.items():
            s = state[name]
            w0, c0 = clocks.wall(), clocks.cpu()
            for _ in range(s.calls):
                fn()
            w1, c1 = clocks.wall(), clocks.cpu()
            s.wall.append((w1 - w0) * 1e3 / s.calls)
            s.cpu.append((c1 - c0) * 1e3 / s.calls)

    for p in range(passes):
        if p:
            clocks.pause(pause_s)
        for _ in range(rounds):
            one_round()
    done, limit = rounds * passes, max(max_rounds, rounds * passes)
    while done < limit:
        if not any(summarize(s.wall, s.cpu).noisy for s in state.values()):
            break
        for _ in range(min(rounds, limit - done)):
            one_round()
        done += min(rounds, limit - done)
    return {name: summarize(s.wall, s.cpu) for name, s in state.items()}


def robust_time(fn: Callable[[], object], **kwargs) -> Timing:
    """:func:`robust_times` of one callable."""
    return robust_times({"fn": fn}, **kwargs)["fn"]


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` chose, and whether noise kept it from trusting a difference."""

    name: str
    noisy: bool  # a contestant's time was noisy, or a difference lay inside the spread
    why: str


def choose(
    timings: Mapping[str, Timing | float | None],
    order: Sequence[str],
    *,
    margin: float = _defaults.TIMING_MARGIN,
) -> Choice:
    """The contestant to keep: the first of ``order`` (simplest first) that has a time, unless
    another is faster than it beyond the noise. Faster beyond the noise means either

    * its best sample is below the simplest's less ``margin`` in both halves of the rounds
      (:attr:`Timing.halves`): other processes only ever add time, so a contestant's best
      samples are the least disturbed, and the two halves must agree. On a busy machine the
      kernels more exposed to contention (multi-threaded, vectorized) lose more of their
      typical samples than the others, which the best ones do not show; or
    * its time up to its own spread (the upper quantile, ``ms * (1 + spread)``) is below the
      simplest's time less ``margin``: the measured intervals do not overlap (a spread of
      200 % does not hide a 3x difference). The rule for timings without samples.

    Among those faster, the fastest (ties: the earlier in ``order``). A contestant faster than
    the simplest by the margin on one rule's measure but not faster beyond the noise makes the
    choice ``noisy``. Deterministic given the timings.

    ``timings`` values: :class:`Timing`, a plain time in ms (no spread known), or None
    (not measured: never chosen while another has a time).
    """
    timed = [n for n in order if timings.get(n) is not None]
    if not timed:
        return Choice(order[0], False, "nothing timed: the simplest kept")

    def ms(name: str) -> float:
        t = timings[name]
        return t.ms if isinstance(t, Timing) else float(t)

    def spread(name: str) -> float:
        t = timings[name]
        return t.spread if isinstance(t, Timing) else 0.0

    def halves(name: str) -> tuple[float, float] | None:
        t = timings[name]
        return t.halves if isinstance(t, Timing) else None

    base = timed[0]
    bar = ms(base) * (1 - margin)

    def best_below(name: str) -> list[bool]:
        """Per half of the rounds, whether ``name``'s best sample beats the base's by the
        margin (empty without halves on both sides)."""
        mine, theirs = halves(name), halves(base)
        if mine is None or theirs is None:
            return []
        return [m < t * (1 - margin) for m, t in zip(mine, theirs, strict=True)]

    def win(name: str) -> tuple[float, str] | None:
        """(the time ``name`` wins with, how) if faster than the base beyond the noise."""
        below = best_below(name)
        if below and all(below):
            mine, theirs = max(halves(name)), max(halves(base))
            return mine, (
                f"{name} faster than {base} by {1 - mine / theirs:.0%} in its best samples, "
                f"beyond the {margin:.0%} margin in both halves of the rounds"
            )
        if ms(name) * (1 + spread(name)) < bar:
            return ms(name), (
                f"{name} faster than {base} by {1 - ms(name) / ms(base):.0%}, beyond the "
                f"{margin:.0%} margin and its {spread(name):.0%} spread"
            )
        return None

    noisy = any(isinstance(timings[n], Timing) and timings[n].noisy for n in timed)
    best, best_low, why = base, math.inf, f"{base} is the simplest"
    inside_noise = []
    for name in timed[1:]:
        won = win(name)
        if won is None:
            if any(best_below(name)) or ms(name) < bar:
                inside_noise.append(name)  # faster by the margin, but not beyond the noise
        elif won[0] < best_low:
            best_low, why = won
            best = name
    if inside_noise and best == base:
        noisy = True
        why += f"; {', '.join(inside_noise)} faster only within the measured noise"
    return Choice(best, noisy, why)
