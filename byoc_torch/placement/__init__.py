"""Measured placement: every region runs where it measured faster, TVM or LibTorch.

Place in the data flow: inside ``byoc_torch.compile`` (``placement="measured"``, the default),
after a first import and before partitioning. Untuned TVM on CPU is far slower than LibTorch on
matmuls and convolutions and can be faster on fused elementwise chains; every region of a model
can run on either side, so byoc_torch measures and chooses, as Collage (TVM RFC 0062) does
across backends:

1. :mod:`.regions` groups the TVM-converted nodes into regions (about one TVM fused kernel
   each) and gives each a Relax and a TorchScript form;
2. :mod:`.measure` times both forms on the real intermediate values of the example inputs
   (medians of repeated runs, cached), and the cost of one crossing;
3. :mod:`.search` picks the assignment of least modelled time, crossings included (an exact
   minimum cut);
4. :mod:`.end_to_end` (run by the driver, which can build models) builds the searched
   assignment, all-LibTorch and all-TVM, times them whole and keeps the fastest.

The regions chosen for LibTorch come back as fallback records (``Reason.PLACEMENT``); the
normal pipeline then runs, so partitioning keeps the torch groups maximal and verification
still checks whatever stays in TVM.
"""

from __future__ import annotations

import contextlib
import logging
import math
import operator
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import tvm
from torch import fx

from .. import _defaults
from ..aot_inductor import AOT_INDUCTOR, AUTO, TORCHSCRIPT, compiler_missing, nothing_to_gain
from ..compile_cache import CompileCache
from ..frontend import ImportResult
from ..frontend.torchscript import output_metas
from ..names import op_key
from ..options import Options
from ..records import FallbackRecord, Reason
from ..reporting import PlacementResult, RegionDecision
from ..tensors import target_device_type
from ..threads import budget_threads
from ..verify import reference_values
from .measure import (
    CompileModel,
    MeasurementCache,
    crossing_ms,
    model_key,
    one_thread,
    region_key,
    time_aot_inductor,
    time_torch,
    time_tvm,
)
from .regions import Region, form_regions, region_module, region_scripts
from .search import TORCH, TVM, Assignment, Unit, assignment_cost, best_assignment

if TYPE_CHECKING:  # tuning imports MetaSchedule: only when a compile tunes
    from ..tuning import TrialBudget

logger = logging.getLogger(__name__)

__all__ = ["PlacementResult", "RegionDecision", "place"]


def _native_nodes(imported: ImportResult) -> set[str]:
    fallback = {r.node for r in imported.records}
    native = set()
    for n in imported.graph.nodes:
        if n.op != "call_function" or n.name in fallback or output_metas(n) is None:
            continue
        if n.target is operator.getitem and n.args[0].name not in native:
            continue  # an element of a LibTorch tuple
        native.add(n.name)
    return native


def place(
    imported: ImportResult,
    inputs: Sequence[torch.Tensor],
    opts: Options,
    *,
    compile_model: CompileModel,
    tuning_budget: TrialBudget | None = None,
    references: Callable[[], dict] | None = None,
    whole_models_ms: Callable[[PlacementResult], tuple[float, float] | None] | None = None,
) -> tuple[dict[str, FallbackRecord], PlacementResult]:
    """Measure every region of ``imported`` on both sides and choose; return the records of
    the nodes that go to LibTorch and what was measured.

    ``opts`` gives the target, the measurement cache (``placement_cache``) and the tuning:
    with ``tune_trials`` or a ``tuning_database``, the regions' TVM kernels are tuned (or the
    database's schedules applied) before they are timed, so tuned kernels compete; the tuned
    regions' measurements are not cached (they depend on the database), and neither is the
    whole-model check (``result.model_key`` stays empty). ``tuning_budget``: the compile's
    trials left (:class:`byoc_torch.tuning.TrialBudget`), spent here first. ``compile_model``
    builds the small model the crossing cost is timed on (:data:`.measure.CompileModel`).
    ``references``: PyTorch's value of every node on ``inputs`` (computed here without it).

    Regions of one kind (the same :func:`.measure.region_key`: ops, shapes, dtypes, target;
    a model's repeated layers) are measured once, on the first of them, and share the times.

    ``opts.torch_executor``: unless ``"torchscript"``, a region's LibTorch side may also be an
    AOTInductor package: the regions whose TorchScript takes at least
    ``_defaults.AOTI_MIN_SUBGRAPH_MS`` and with something a package can gain
    (:func:`byoc_torch.aot_inductor.nothing_to_gain`), of the slowest
    ``_defaults.AOTI_MAX_REGIONS`` kinds, are compiled (through the compile cache of
    ``opts.cache_dir``) and timed, and the LibTorch side costs the faster of the two
    (``"auto"``) or the package's (``"aot_inductor"``). Under ``"auto"`` the search runs
    first on the TorchScript times, and no region package is compiled when none can matter:

    * that search places every region in LibTorch (a package only makes LibTorch cheaper);
    * the whole model as one package is faster than region packages could make the search:
      ``whole_models_ms(first)`` gives the whole model measured all-LibTorch and as one
      package (the whole-model check builds both anyway; None: it has no package candidate;
      ``first``: the placement of the search on TorchScript times); that search's modelled
      time less the whole TorchScript time of every region worth a package bounds what
      packages could give it from below, in the search's model; scaled by all-LibTorch's
      measured over its modelled time (regions timed alone overstate a whole model's time:
      4x on HF GPT-2), it is compared with the package's measured time.
    """
    tuned = bool(opts.tune_trials or opts.tuning_database)
    serial = budget_threads(opts.num_threads) == 1  # packages as the model's (Pipeline)
    target = opts.tvm_target()
    device = tvm.device(target_device_type(target))
    t0 = time.perf_counter()
    cache = MeasurementCache(opts.placement_cache)
    graph = imported.graph
    regions = form_regions(graph, _native_nodes(imported))
    if not regions:
        return {}, PlacementResult(seconds=time.perf_counter() - t0)
    keys = {r.index: region_key(r, target, serial) for r in regions}
    tvm_ms: dict[int, float] = {}
    torch_ms: dict[int, float] = {}
    for r in regions:
        for side, store in ((TVM, tvm_ms), (TORCH, torch_ms)):
            if side == TVM and tuned:
                continue
            value = cache.get(keys[r.index], side)
            if value is not None:
                store[r.index] = value
    todo_tvm = [r for r in regions if r.index not in tvm_ms]
    todo_torch = [r for r in regions if r.index not in torch_ms]
    values: dict | None = None  # every node's value on the example inputs, when computed
    if todo_tvm or todo_torch:
        values = references() if references is not None else reference_values(imported.ep, inputs)
        var_node = {v: name for name, v in imported.native_vars.items()}
    # One thread on every side while regions are timed (measure.one_thread), except when
    # tuning: MetaSchedule tunes for the target's cores and must measure with them.
    # Regions of the same key (a model's repeated layers) are timed once, the first of them.
    with one_thread() if not tuned else contextlib.nullcontext():
        if todo_torch:
            first = _first_of_each_key(todo_torch, keys)
            measured = time_torch(region_scripts(list(first.values())), values)
            for r in todo_torch:
                torch_ms[r.index] = measured.get(first[keys[r.index]].index, math.inf)
                cache.put(keys[r.index], TORCH, torch_ms[r.index])
        if todo_tvm:
            first = _first_of_each_key(todo_tvm, keys)
            measured = _time_tvm_regions(
                imported,
                list(first.values()),
                var_node,
                values,
                opts,
                device,
                tuning_budget,
                torch_ms,
            )
            for r in todo_tvm:
                tvm_ms[r.index] = measured.get(first[keys[r.index]].index, math.inf)
                if not tuned:
                    cache.put(keys[r.index], TVM, tvm_ms[r.index])

    crossing = crossing_ms(target, cache, compile_model)
    torch_executor = opts.torch_executor
    aoti_ms: dict[int, float] = {}
    aoti_why: dict[int, str] = {}
    if torch_executor != TORCHSCRIPT:
        worth, aoti_why = _worth_a_package(regions, keys, torch_ms, device)
        why_none = None
        if worth and torch_executor == AUTO:
            scripts_only = _search(imported, regions, tvm_ms, torch_ms, crossing)
            why_none = _no_region_package(
                scripts_only,
                [r for r in regions if keys[r.index] in worth],
                torch_ms,
                whole_models_ms,
                lambda: _outcome(
                    imported, regions, keys, tvm_ms, torch_ms, {}, {}, scripts_only, crossing, tuned
                )[1],
                tuned,
            )
        if why_none is not None:
            aoti_why.update({r.index: why_none for r in regions if keys[r.index] in worth})
            worth = {}
        if worth:

            def region_values() -> dict:
                if values is not None:
                    return values
                if references is not None:
                    return references()
                return reference_values(imported.ep, inputs)

            compile_cache = CompileCache(opts.cache_dir) if opts.cache_dir is not None else None
            with one_thread() if not tuned else contextlib.nullcontext():
                timed, failed = _time_aot_inductor_regions(
                    list(worth.values()),
                    keys,
                    region_values,
                    imported.ep,
                    cache,
                    compile_cache,
                    serial,
                )
            for r in regions:  # every region of a kind compiled has its first one's outcome
                rep = worth.get(keys[r.index])
                if rep is not None and rep.index in timed:
                    aoti_ms[r.index] = timed[rep.index]
                elif rep is not None and rep.index in failed:
                    aoti_why[r.index] = failed[rep.index]
    libtorch_ms = {
        r.index: _libtorch_side(torch_ms[r.index], aoti_ms.get(r.index), torch_executor)
        for r in regions
    }
    cache.save()

    searched = _search(imported, regions, tvm_ms, libtorch_ms, crossing)
    records, result = _outcome(
        imported, regions, keys, tvm_ms, torch_ms, aoti_ms, aoti_why, searched, crossing, tuned
    )
    result.cache_hits, result.cache_misses = cache.hits, cache.misses
    result.seconds = time.perf_counter() - t0
    moved = sum(1 for r in result.regions if r.side == TORCH)
    logger.debug("placement: %d of %d region(s) to LibTorch", moved, len(regions))
    return records, result


def _outcome(
    imported: ImportResult,
    regions: list[Region],
    keys: dict[int, str],
    tvm_ms: dict[int, float],
    torch_ms: dict[int, float],
    aoti_ms: dict[int, float],
    aoti_why: dict[int, str],
    searched: tuple[list[Region], list[Unit], list[tuple[int, int]], Assignment],
    crossing: float,
    tuned: bool,
) -> tuple[dict[str, FallbackRecord], PlacementResult]:
    """The records of the nodes a searched assignment moves to LibTorch, and the result that
    reports it (its cache counts and seconds left to the caller)."""
    movable, unit_list, edge_list, choice = searched
    side_of = {r.index: side for r, side in zip(movable, choice.sides, strict=True)}
    records: dict[str, FallbackRecord] = {}
    decisions = []
    for r in regions:
        side = side_of.get(r.index, TVM)
        decisions.append(
            RegionDecision(
                r.index,
                r.names,
                [op_key(n.target) for n in r.nodes],
                _finite(tvm_ms[r.index]),
                _finite(torch_ms[r.index]),
                side,
                aoti_ms.get(r.index),
                aoti_why.get(r.index, ""),
            )
        )
        if side == TORCH:
            aoti = aoti_ms.get(r.index)
            detail = (
                f"searched placement; region {r.index}: LibTorch {torch_ms[r.index]:.4f} ms"
                + (f" (AOTInductor {aoti:.4f} ms)" if aoti is not None else "")
                + (
                    f", TVM {tvm_ms[r.index]:.4f} ms"
                    if not math.isinf(tvm_ms[r.index])
                    else ", TVM not timed (the region does not build or run in TVM alone)"
                )
            )
            for n in r.nodes:
                if n.target is operator.getitem:
                    continue  # an element of a torch tuple is LibTorch's with its producer
                records[n.name] = FallbackRecord(n.name, op_key(n.target), Reason.PLACEMENT, detail)
    result = PlacementResult(
        decisions,
        crossing,
        choice.total_ms,
        _total(unit_list, edge_list, crossing, TVM),
        _total(unit_list, edge_list, crossing, TORCH),
    )
    # Tuned TVM timings are never cached (the database decides them), so neither is the
    # whole-model check that follows: no key.
    if not tuned:
        result.model_key = model_key([keys[r.index] for r in regions], imported.records)
    return records, result


def _libtorch_side(torchscript: float, aot_inductor: float | None, executor: str) -> float:
    """A region's LibTorch time as the search sees it: its TorchScript's, or its AOTInductor
    package's where that was timed and the executor allows it."""
    if aot_inductor is None or executor == TORCHSCRIPT:
        return torchscript
    return aot_inductor if executor == AOT_INDUCTOR else min(torchscript, aot_inductor)


_NO_REGION_PACKAGE = (
    "not compiled: the search places every region in LibTorch without packages, so none can "
    "change it (the whole model is tried as one package)"
)


def _no_region_package(
    first: tuple[list[Region], list[Unit], list[tuple[int, int]], Assignment],
    worth: list[Region],
    torch_ms: dict[int, float],
    whole_models_ms: Callable[[PlacementResult], tuple[float, float] | None] | None,
    first_result: Callable[[], PlacementResult],
    tuned: bool,
) -> str | None:
    """Why no region package can change what placement keeps (see :func:`place`), or None.
    ``first``: the search on TorchScript times; ``worth``: every region of the kinds worth a
    package."""
    if _all_in_libtorch(first):
        return _NO_REGION_PACKAGE
    if whole_models_ms is None:
        return None
    result = first_result()
    if not result.all_torch_ms:
        return None
    # Cheaper LibTorch sides lower every assignment's modelled time by at most the sum of
    # what they save, so the search's least time by at most that too.
    bound = first[3].total_ms - sum(torch_ms[r.index] for r in worth)
    with one_thread() if not tuned else contextlib.nullcontext():
        measured = whole_models_ms(result)
    if measured is None:
        return None
    all_libtorch, package = measured
    scaled = bound * all_libtorch / result.all_torch_ms
    logger.debug(
        "placement: whole model as one package %.4f ms; region packages could give the search "
        "%.4f ms modelled, %.4f ms scaled by all-LibTorch's %.4f ms measured / %.4f modelled",
        package,
        bound,
        scaled,
        all_libtorch,
        result.all_torch_ms,
    )
    if package >= scaled:
        return None
    return (
        f"not compiled: the whole model as one package ({package:.4f} ms) is faster than region "
        f"packages could make the search (at best {scaled:.4f} ms, scaled to measured time)"
    )


def _first_of_each_key(regions: list[Region], keys: dict[int, str]) -> dict[str, Region]:
    """The first of ``regions`` with each key, by key (in order): the one timed for all."""
    first: dict[str, Region] = {}
    for r in regions:
        first.setdefault(keys[r.index], r)
    return first


def _worth_a_package(
    regions: list[Region], keys: dict[int, str], torch_ms: dict[int, float], device
) -> tuple[dict[str, Region], dict[int, str]]:
    """The kinds of region (keys) worth compiling into an AOTInductor package to time, each
    with the first region of its kind, slowest first (at most ``_defaults.AOTI_MAX_REGIONS``
    kinds), and why each region of another kind is not."""
    if device.dlpack_device_type() != tvm.cpu().dlpack_device_type():
        return {}, {r.index: "packages are compiled for the CPU" for r in regions}
    why: dict[int, str] = {}
    for r in regions:
        pointless = nothing_to_gain(r.nodes)
        if torch_ms[r.index] < _defaults.AOTI_MIN_SUBGRAPH_MS:
            why[r.index] = f"not compiled: LibTorch under {_defaults.AOTI_MIN_SUBGRAPH_MS} ms"
        elif pointless is not None:
            why[r.index] = f"not compiled: {pointless}"
    slowest_first = sorted(
        (r for r in regions if r.index not in why and torch_ms[r.index] < math.inf),
        key=lambda r: (-torch_ms[r.index], r.index),
    )
    worth: dict[str, Region] = {}
    for r in slowest_first:
        if len(worth) < _defaults.AOTI_MAX_REGIONS or keys[r.index] in worth:
            worth.setdefault(keys[r.index], r)
    for r in regions:
        if keys[r.index] not in worth and r.index not in why:
            why[r.index] = f"not compiled: {_defaults.AOTI_MAX_REGIONS} slower regions were"
    return worth, why


def _time_aot_inductor_regions(
    worth, keys, region_values, ep, cache, compile_cache, serial
) -> tuple[dict[int, float], dict[int, str]]:
    """AOTInductor times (ms) of the ``worth`` regions, from ``cache`` or compiled (kernels
    for one thread when ``serial``) and measured on ``region_values()`` (every node's value on
    the example inputs), and why a region has none."""
    out: dict[int, float] = {}
    todo = []
    for r in worth:
        cached = cache.get(keys[r.index], AOT_INDUCTOR)
        if cached is not None:
            out[r.index] = cached
        else:
            todo.append(r)
    if not todo:
        return out, {}
    missing = compiler_missing()
    if missing is not None:
        return out, {r.index: missing for r in todo}
    why: dict[int, str] = {}
    measured, failed = time_aot_inductor(
        region_scripts(todo), region_values(), ep, compile_cache, serial
    )
    for r in todo:
        if r.index in measured:
            out[r.index] = measured[r.index]
            cache.put(keys[r.index], AOT_INDUCTOR, measured[r.index])
        else:
            why[r.index] = failed.get(r.index, "no AOTInductor form")
    return out, why


def _search(
    imported: ImportResult,
    regions: list[Region],
    tvm_ms: dict[int, float],
    libtorch_ms: dict[int, float],
    crossing: float,
) -> tuple[list[Region], list[Unit], list[tuple[int, int]], Assignment]:
    """The least-time assignment of the regions that can run on some side (``movable``, in
    order), with the units and edges it was searched over."""
    units, edges = _units_and_edges(imported, regions, tvm_ms, libtorch_ms, crossing)
    movable = [
        r for r in regions if not (math.isinf(tvm_ms[r.index]) and math.isinf(libtorch_ms[r.index]))
    ]
    index_of = {r.index: k for k, r in enumerate(movable)}
    unit_list = [units[r.index] for r in movable]
    edge_list = [(index_of[a], index_of[b]) for a, b in edges if a in index_of and b in index_of]
    return movable, unit_list, edge_list, best_assignment(unit_list, edge_list, crossing)


def _all_in_libtorch(searched: tuple[list[Region], list, list, Assignment]) -> bool:
    movable, _, _, choice = searched
    return bool(movable) and all(side == TORCH for side in choice.sides)


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


def _total(units: list[Unit], edges: list, crossing: float, side: str) -> float | None:
    value = assignment_cost(units, edges, crossing, [side] * len(units))
    return _finite(value)


def _time_tvm_regions(
    imported, regions, var_node, values, opts: Options, device, budget=None, torch_ms=None
) -> dict[int, float]:
    """TVM's time of each region, its kernels tuned as ``opts`` says (within ``budget``);
    a region hopeless against its LibTorch time in ``torch_ms`` is timed briefly
    (:func:`.measure.time_tvm`)."""
    main = imported.mod["main"]
    target = opts.tvm_target()

    def tuned(mod):
        if not (opts.tune_trials or opts.tuning_database):
            return mod
        from ..tuning import tune_with_options

        return tune_with_options(mod, opts, budget)

    def value_of(var) -> torch.Tensor | None:
        name = var_node.get(var, var.name)
        value = values.get(name)
        return value if isinstance(value, torch.Tensor) else None

    mod, functions = region_module(main, regions, var_node)
    try:
        return time_tvm(tuned(mod), functions, value_of, target, device, torch_ms)
    except Exception as err:  # one region breaks the joint build: build them one by one
        logger.debug("placement: joint region build failed (%s); building one by one", err)
    out: dict[int, float] = {}
    for r in regions:
        mod, functions = region_module(main, [r], var_node)
        try:
            out.update(time_tvm(tuned(mod), functions, value_of, target, device, torch_ms))
        except Exception as err:
            logger.debug("placement: region %d does not build alone: %s", r.index, err)
    return out


def _with_margin(torch_ms: float, tvm_ms: float) -> float:
    """LibTorch's time as the search sees it: a region moves only for a saving beyond timing
    noise (``_defaults.PLACEMENT_MARGIN`` of its TVM time and ``PLACEMENT_MARGIN_MS``)."""
    if math.isinf(torch_ms) or math.isinf(tvm_ms):
        return torch_ms
    return torch_ms + max(_defaults.PLACEMENT_MARGIN * tvm_ms, _defaults.PLACEMENT_MARGIN_MS)


def _units_and_edges(
    imported: ImportResult,
    regions: list[Region],
    tvm_ms: dict[int, float],
    torch_ms: dict[int, float],
    crossing: float,
) -> tuple[dict[int, Unit], list[tuple[int, int]]]:
    """Search units (one per region) with crossings to fixed sides folded into their times, and
    the edges between regions (one per value and consuming region)."""
    region_of = {n: r.index for r in regions for n in r.nodes}
    fallback = {r.node for r in imported.records}
    user_inputs = set(imported.ep.graph_signature.user_inputs)
    extra_tvm = {r.index: 0.0 for r in regions}  # crossings paid when the region is in TVM
    extra_torch = {r.index: 0.0 for r in regions}  # ... when it is in LibTorch
    edges: set[tuple[int, int]] = set()
    for r in regions:
        seen: set[fx.Node] = set()
        for n in r.nodes:
            for p in n.all_input_nodes:
                if p in seen or region_of.get(p) == r.index:
                    continue
                seen.add(p)
                if p in region_of:
                    edges.add((region_of[p], r.index))
                elif p.name in fallback:
                    extra_tvm[r.index] += crossing
                elif p.op == "placeholder" and p.name in user_inputs:
                    extra_torch[r.index] += crossing
            for u in n.users:
                if u.op == "output":
                    extra_torch[r.index] += crossing
                elif u.name in fallback and u not in region_of:
                    extra_tvm[r.index] += crossing
    units = {
        r.index: Unit(
            tvm_ms[r.index] + extra_tvm[r.index],
            _with_margin(torch_ms[r.index], tvm_ms[r.index]) + extra_torch[r.index],
        )
        for r in regions
    }
    return units, sorted(edges)
