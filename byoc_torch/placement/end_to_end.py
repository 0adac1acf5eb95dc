"""The whole-model check of measured placement: the searched assignment against "everything in
LibTorch" and "everything TVM converts in TVM", each built and timed end to end.

Place in the data flow: the last step of measured placement, called by the driver after
:func:`byoc_torch.placement.place` has searched an assignment from region timings. Region
timings are taken one region at a time; in the whole model the kernels run back to back, with
caches and thread pools in another state. The clearest case: LibTorch's OpenMP workers go to
sleep while a TVM region runs and must be woken for the next LibTorch op, which on a loaded
machine costs milliseconds per call (``benchmarks/threads.py``) -- a cost no region timing
sees. So the driver builds "all-libtorch" and each other candidate whose modelled time is
within ``_defaults.PLACEMENT_CHECK_FACTOR`` of the best modelled time, times the built models
round-robin on the example inputs with :func:`byoc_torch.timing.robust_times` (short samples,
descheduled ones dropped by a CPU-time cross-check, a low quantile, re-measured while the
spread is high), and keeps the simplest candidate unless another is faster beyond the noise:
its best samples below the simplest's less ``_defaults.TIMING_MARGIN`` in both halves of the
rounds, or its time up to its own measured spread below the simplest's less the margin
(:func:`byoc_torch.timing.choose`).
Simplest first: the single-backend candidates (no crossings to wake a pool across), in the
order of their modelled times, then the searched one; "all-aot-inductor" is all-libtorch's
placement under another executor, and the faster of the two takes its rank
(:func:`simplest_first`). The model compiled in the end is
therefore never slower, beyond the margin, than the better of the two single-backend
placements among those built, and a difference inside the noise never changes the choice.

Deterministic given the measurements.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .. import _defaults
from ..errors import first_line
from ..records import FallbackRecord, Reason
from ..reporting import PlacementResult, format_ms
from ..timing import Timing, robust_times
from ..timing import choose as choose_timed
from .search import TORCH, TVM

logger = logging.getLogger(__name__)

__all__ = [
    "CANDIDATES",
    "Candidate",
    "all_aot_inductor",
    "all_libtorch",
    "candidates",
    "choose",
    "time_candidates",
]

SEARCHED, ALL_TORCH, ALL_AOTI, ALL_TVM = "searched", "all-libtorch", "all-aot-inductor", "all-tvm"
CANDIDATES = (SEARCHED, ALL_TORCH, ALL_AOTI, ALL_TVM)
# The executors of LibTorch subgraphs (byoc_torch.aot_inductor names them the same).
TORCHSCRIPT, AOT_INDUCTOR = "torchscript", "aot_inductor"


@dataclass(frozen=True)
class Candidate:
    """One whole-model placement: the nodes it moves to LibTorch, its modelled time, and what
    runs its LibTorch subgraphs (``"aot_inductor"``: each compiled into an AOTInductor
    package; for "all-aot-inductor" that is the whole model as one package)."""

    name: str
    records: dict[str, FallbackRecord]
    modelled_ms: float | None  # None: the region timings give no estimate
    executor: str = TORCHSCRIPT
    # Without an estimate, a least time the region timings still prove (None: none).
    floor_ms: float | None = None


def _records(
    result: PlacementResult, side_of: Callable, candidate: str
) -> dict[str, FallbackRecord]:
    """Fallback records moving every region ``side_of(region)`` puts in LibTorch."""
    records: dict[str, FallbackRecord] = {}
    for r in result.regions:
        if side_of(r) != TORCH:
            continue
        tvm = (
            f"TVM {format_ms(r.tvm_ms)} ms"
            if r.tvm_ms is not None
            else "TVM not timed (the region does not build or run in TVM alone)"
        )
        detail = (
            f"{candidate} placement; region {r.index}: LibTorch {format_ms(r.torch_ms)} ms, {tvm}"
        )
        for name, op in zip(r.nodes, r.ops, strict=True):
            if op == "getitem":
                continue  # an element of a LibTorch tuple goes with its producer
            records[name] = FallbackRecord(name, op, Reason.PLACEMENT, detail)
    return records


def candidates(
    searched: dict[str, FallbackRecord], result: PlacementResult, aot_inductor: bool = False
) -> list[Candidate]:
    """The searched assignment, all regions LibTorch can run in LibTorch, with ``aot_inductor``
    the same as AOTInductor packages, and none moved; a candidate equal to an earlier one is
    dropped."""
    found = [Candidate(SEARCHED, searched, result.modelled_ms), all_libtorch(result)]
    if aot_inductor:  # no region timing models it: always built and timed
        found.append(all_aot_inductor(result))
    # Some region cannot be timed in TVM alone (so no estimate); those that can bound it.
    tvm_times = [r.tvm_ms for r in result.regions if r.tvm_ms is not None]
    floor = sum(tvm_times) if result.all_tvm_ms is None and tvm_times else None
    found.append(Candidate(ALL_TVM, {}, result.all_tvm_ms, floor_ms=floor))
    unique: list[Candidate] = []
    for c in found:
        if all((set(c.records), c.executor) != (set(u.records), u.executor) for u in unique):
            unique.append(c)
    return unique


def all_libtorch(result: PlacementResult) -> Candidate:
    """Every region LibTorch can run in LibTorch (placement may build it before the check:
    the same records make the same build)."""
    records = _records(result, lambda r: TORCH if r.torch_ms is not None else TVM, ALL_TORCH)
    return Candidate(ALL_TORCH, records, result.all_torch_ms)


def all_aot_inductor(result: PlacementResult) -> Candidate:
    """:func:`all_libtorch` with its LibTorch subgraph (all of them) as AOTInductor packages."""
    records = _records(result, lambda r: TORCH if r.torch_ms is not None else TVM, ALL_AOTI)
    return Candidate(ALL_AOTI, records, None, AOT_INDUCTOR)


def choose(
    options: list[Candidate],
    build: Callable[[dict[str, FallbackRecord]], Callable[[], object]],
    *,
    factor: float = _defaults.PLACEMENT_CHECK_FACTOR,
    rounds: int = _defaults.PLACEMENT_CHECK_ROUNDS,
    noise: list[str] | None = None,
) -> tuple[Candidate, dict[str, float | None], dict[str, str]]:
    """Build and time the candidates worth timing; return the one to keep (the simplest,
    unless another is faster beyond the margin and the noise: :func:`simplest_first`,
    :func:`byoc_torch.timing.choose`).

    "all-libtorch" is always timed: it is the model as eager PyTorch runs it (one TorchScript),
    cheap to build, and its modelled time is the least reliable (each region timed alone pays
    LibTorch's pool wake-up, which back-to-back ops do not).

    ``build(records)`` compiles the model with ``records`` moved to LibTorch and returns a
    function that runs it once on the example inputs; it may raise (the candidate then loses).
    A candidate whose subgraphs run another executor is built ``build(records, executor)``.
    Returns (the chosen candidate, name -> measured ms or None, name -> why it was not timed);
    when the timings were too noisy to trust a difference, says why in ``noise`` (if given).
    """
    estimates = [c.modelled_ms for c in options if c.modelled_ms is not None]
    best_estimate = min(estimates, default=math.inf)
    runs: dict[str, Callable[[], object]] = {}
    first_ms: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for c in options:
        estimate = c.modelled_ms if c.modelled_ms is not None else c.floor_ms
        too_slow = estimate is not None and estimate > factor * best_estimate
        if too_slow and c.name != ALL_TORCH:
            what = "modelled" if c.modelled_ms is not None else "its regions alone take"
            skipped[c.name] = (
                f"{what} {estimate:.3f} ms, over {factor:g}x the best ({best_estimate:.3f} ms)"
            )
            continue
        try:
            run = build(c.records) if c.executor == TORCHSCRIPT else build(c.records, c.executor)
            t0 = time.perf_counter()
            run()  # first call: lazy initialization, and errors surface here
            first_ms[c.name] = (time.perf_counter() - t0) * 1e3
        except Exception as err:  # a candidate that does not build or run just loses
            skipped[c.name] = first_line(err)
            logger.debug("placement check: candidate %s failed: %s", c.name, err)
            continue
        runs[c.name] = run
    # A first call far slower than another candidate's (lazy initialization included, hence
    # the wide factor) is not worth timing: e.g. untuned all-TVM transformers, ~60x. One
    # sample can be a burst of load or a first-call compile (TorchScript profiles its first
    # runs: 190 ms seen on a loaded machine for a 0.3 ms model), so a candidate over the
    # factor is called once more and keeps its faster call.
    limit = _defaults.PLACEMENT_CHECK_FIRST_CALL_FACTOR

    def too_slow(ms: float) -> bool:  # and slow enough that timing it would cost time
        return ms > limit * min(first_ms.values()) and ms > _defaults.PLACEMENT_CHECK_SLOW_MS

    for name in list(first_ms):
        if too_slow(first_ms[name]):
            t0 = time.perf_counter()
            runs[name]()
            first_ms[name] = min(first_ms[name], (time.perf_counter() - t0) * 1e3)
    fastest_first = min(first_ms.values(), default=math.inf)
    for name, ms in first_ms.items():
        if too_slow(ms):
            del runs[name]
            skipped[name] = (
                f"first call {ms:.3f} ms, over {_defaults.PLACEMENT_CHECK_FIRST_CALL_FACTOR:g}x "
                f"the fastest ({fastest_first:.3f} ms)"
            )
    timings: dict[str, Timing | float | None] = {c.name: None for c in options}
    if len(runs) > 1:
        timings.update(time_candidates(runs, options, rounds))
    measured = {name: (t.ms if isinstance(t, Timing) else t) for name, t in timings.items()}
    order = [c.name for c in simplest_first(options, measured) if c.name in runs]
    by_name = {c.name: c for c in options}
    if not order:
        return options[0], {c.name: None for c in options}, skipped
    verdict = choose_timed(timings, order)
    if noise is not None and verdict.noisy:
        noise.append(verdict.why)
    logger.debug(
        "placement check: %s -> %s (%s)", _summary(measured, skipped), verdict.name, verdict.why
    )
    return by_name[verdict.name], measured, skipped


def simplest_first(
    options: list[Candidate], measured: Mapping[str, float | None] | None = None
) -> list[Candidate]:
    """The candidates in order of simplicity: single-backend ones (all-libtorch, all-tvm) by
    modelled time, then the searched mix; ties in :data:`CANDIDATES` order.

    One placement under two executors (all-aot-inductor moves what all-libtorch moves) is one
    placement, as simple either way: it takes the place of its simpler form, and of the two
    the one ``measured`` faster (ms) comes first. A margin between them would only decide
    which of two equally simple forms a near tie keeps, and a gap of about the margin would
    flip between compiles: the built-in `gpt` kept all-libtorch (0.93x eager) in one of three
    compiles and its package (0.79x) in the others, the package faster in every timing."""
    measured = measured or {}

    def modelled(c: Candidate) -> float:
        same = [o.modelled_ms for o in options if set(o.records) == set(c.records)]
        return min((ms for ms in same if ms is not None), default=math.inf)

    def key(c: Candidate) -> tuple:
        ms = measured.get(c.name)
        placement = min(
            (o for o in options if set(o.records) == set(c.records)),
            key=lambda o: CANDIDATES.index(o.name),
        )
        return (
            placement.name == SEARCHED,
            modelled(c),
            CANDIDATES.index(placement.name),
            ms if ms is not None else math.inf,
            CANDIDATES.index(c.name),
        )

    return sorted(options, key=key)


def time_candidates(
    runs: Mapping[str, Callable[[], object]], options: list[Candidate], rounds: int
) -> dict[str, Timing | float]:
    """End-to-end robust latency of each built candidate (:func:`byoc_torch.timing.
    robust_times`, at least ``rounds`` rounds in each of ``_defaults.PLACEMENT_CHECK_PASSES``
    passes). The seam tests replace with a fake cost model
    (hence ``options``, which real timing ignores); a fake may return plain ms."""
    return robust_times(
        runs,
        rounds=max(rounds, _defaults.TIMING_ROUNDS),
        passes=_defaults.PLACEMENT_CHECK_PASSES,
        pause_s=_defaults.PLACEMENT_CHECK_PAUSE_S,
    )


def _summary(measured: Mapping[str, float | None], skipped: Mapping[str, str]) -> str:
    parts = [f"{k} {format_ms(v)} ms" for k, v in measured.items() if v is not None]
    parts += [f"{k} not timed ({why})" for k, why in skipped.items()]
    return ", ".join(parts)
