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
round-robin on the example inputs (the least per-round median; a second set of rounds confirms
a result that overrules the region timings), and keeps the fastest. The model compiled in the
end is therefore never slower, as measured at compile time, than the better of the two
single-backend placements among those built.

Deterministic given the measurements: ties keep the order of :data:`CANDIDATES` (the searched
assignment first).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .. import _defaults
from ..records import FallbackRecord, Reason
from ..reporting import PlacementResult, format_ms
from ..timing import interleaved_samples
from .search import TORCH, TVM

logger = logging.getLogger(__name__)

__all__ = ["CANDIDATES", "Candidate", "candidates", "choose", "time_candidates"]

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


def _records(
    result: PlacementResult, side_of: Callable, candidate: str
) -> dict[str, FallbackRecord]:
    """Fallback records moving every region ``side_of(region)`` puts in LibTorch."""
    records: dict[str, FallbackRecord] = {}
    for r in result.regions:
        if side_of(r) != TORCH:
            continue
        detail = (
            f"{candidate} placement; region {r.index}: LibTorch {format_ms(r.torch_ms)} ms, "
            f"TVM {format_ms(r.tvm_ms)} ms"
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
    all_torch = _records(result, lambda r: TORCH if r.torch_ms is not None else TVM, ALL_TORCH)
    found = [
        Candidate(SEARCHED, searched, result.modelled_ms),
        Candidate(ALL_TORCH, all_torch, result.all_torch_ms),
    ]
    if aot_inductor:  # no region timing models it: always built and timed
        found.append(Candidate(ALL_AOTI, all_torch, None, AOT_INDUCTOR))
    found.append(Candidate(ALL_TVM, {}, result.all_tvm_ms))
    unique: list[Candidate] = []
    for c in found:
        if all((set(c.records), c.executor) != (set(u.records), u.executor) for u in unique):
            unique.append(c)
    return unique


def choose(
    options: list[Candidate],
    build: Callable[[dict[str, FallbackRecord]], Callable[[], object]],
    *,
    factor: float = _defaults.PLACEMENT_CHECK_FACTOR,
    rounds: int = _defaults.PLACEMENT_CHECK_ROUNDS,
) -> tuple[Candidate, dict[str, float | None], dict[str, str]]:
    """Build and time the candidates worth timing; return the fastest.

    "all-libtorch" is always timed: it is the model as eager PyTorch runs it (one TorchScript),
    cheap to build, and its modelled time is the least reliable (each region timed alone pays
    LibTorch's pool wake-up, which back-to-back ops do not).

    ``build(records)`` compiles the model with ``records`` moved to LibTorch and returns a
    function that runs it once on the example inputs; it may raise (the candidate then loses).
    A candidate whose subgraphs run another executor is built ``build(records, executor)``.
    Returns (the chosen candidate, name -> measured ms or None, name -> why it was not timed).
    """
    estimates = [c.modelled_ms for c in options if c.modelled_ms is not None]
    best_estimate = min(estimates, default=math.inf)
    runs: dict[str, Callable[[], object]] = {}
    first_ms: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for c in options:
        too_slow = c.modelled_ms is not None and c.modelled_ms > factor * best_estimate
        if too_slow and c.name != ALL_TORCH:
            skipped[c.name] = (
                f"modelled {c.modelled_ms:.3f} ms, over {factor:g}x the best "
                f"({best_estimate:.3f} ms)"
            )
            continue
        try:
            run = build(c.records) if c.executor == TORCHSCRIPT else build(c.records, c.executor)
            t0 = time.perf_counter()
            run()  # first call: lazy initialization, and errors surface here
            first_ms[c.name] = (time.perf_counter() - t0) * 1e3
        except Exception as err:  # a candidate that does not build or run just loses
            skipped[c.name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            logger.debug("placement check: candidate %s failed: %s", c.name, err)
            continue
        runs[c.name] = run
    # A first call far slower than another candidate's (lazy initialization included, hence
    # the wide factor) is not worth timing: e.g. untuned all-TVM transformers, ~60x.
    fastest_first = min(first_ms.values(), default=math.inf)
    for name, ms in first_ms.items():
        if ms > _defaults.PLACEMENT_CHECK_FIRST_CALL_FACTOR * fastest_first:
            del runs[name]
            skipped[name] = (
                f"first call {ms:.3f} ms, over {_defaults.PLACEMENT_CHECK_FIRST_CALL_FACTOR:g}x "
                f"the fastest ({fastest_first:.3f} ms)"
            )
    measured: dict[str, float | None] = {c.name: None for c in options}
    if len(runs) > 1:
        measured.update(time_candidates(runs, options, rounds))
    chosen = _fastest(options, measured, runs)
    expected = _modelled_best(options, runs)
    if len(runs) > 1 and expected is not None and chosen.name != expected.name:
        # Timing overrules the model: confirm it with as many rounds again (a burst of load
        # during the first rounds must not decide), keeping each candidate's least time.
        for name, ms in time_candidates(runs, options, rounds).items():
            measured[name] = min(measured[name], ms)
        chosen = _fastest(options, measured, runs)
    logger.debug("placement check: %s -> %s", _summary(measured, skipped), chosen.name)
    return chosen, measured, skipped


def time_candidates(
    runs: Mapping[str, Callable[[], object]], options: list[Candidate], rounds: int
) -> dict[str, float]:
    """End-to-end latency (ms) of each built candidate: the least of its per-round medians,
    timed round-robin (load on a shared machine only ever adds time, so the least round is the
    estimate least disturbed by it). The seam tests replace with a fake cost model (hence
    ``options``, which real timing ignores)."""
    samples, _ = interleaved_samples(runs, rounds, budget_s=_defaults.PLACEMENT_CHECK_BUDGET_S)
    return {name: min(values) for name, values in samples.items()}


def _modelled_best(options: list[Candidate], runs: Mapping[str, object]) -> Candidate | None:
    """The built candidate the region timings predict to be fastest."""
    modelled = [c for c in options if c.name in runs and c.modelled_ms is not None]
    return min(modelled, key=lambda c: c.modelled_ms) if modelled else None


def _fastest(
    options: list[Candidate], measured: Mapping[str, float | None], runs: Mapping[str, object]
) -> Candidate:
    """The fastest timed candidate; without timings, the first that runs (else the first)."""
    timed = [c for c in options if measured.get(c.name) is not None]
    if timed:
        return min(timed, key=lambda c: measured[c.name])  # min keeps the first of equals
    return next((c for c in options if c.name in runs), options[0])


def _summary(measured: Mapping[str, float | None], skipped: Mapping[str, str]) -> str:
    parts = [f"{k} {format_ms(v)} ms" for k, v in measured.items() if v is not None]
    parts += [f"{k} not timed ({why})" for k, why in skipped.items()]
    return ", ".join(parts)
