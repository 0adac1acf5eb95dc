"""Measured placement: the search is exact, crossings count, decisions follow measurements
(driven here by a fake cost model), results are deterministic, reported and cached."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import byoc_torch
from byoc_torch import FallbackRecord, Reason, driver
from byoc_torch.pipeline import Pipeline
from byoc_torch.placement import end_to_end, measure
from byoc_torch.placement.search import TORCH, TVM, Unit, assignment_cost, best_assignment
from byoc_torch.reporting import PlacementResult, RegionDecision
from byoc_torch.testing import Lambda

# -- the search, on numbers alone -----------------------------------------------------------------


def test_each_unit_goes_where_it_is_faster_without_crossings():
    units = [Unit(1.0, 5.0), Unit(5.0, 1.0), Unit(2.0, 3.0)]
    got = best_assignment(units, [(0, 1), (1, 2)], crossing_ms=0.0)
    assert got.sides == (TVM, TORCH, TVM)
    assert got.total_ms == pytest.approx(4.0)


def test_crossings_keep_a_slightly_faster_unit_with_its_neighbours():
    # The middle unit saves 0.1 ms in LibTorch but would cost two crossings.
    units = [Unit(1.0, 9.0), Unit(1.0, 0.9), Unit(1.0, 9.0)]
    edges = [(0, 1), (1, 2)]
    assert best_assignment(units, edges, crossing_ms=0.2).sides == (TVM, TVM, TVM)
    assert best_assignment(units, edges, crossing_ms=0.01).sides == (TVM, TORCH, TVM)


def test_neighbours_move_together_where_greedy_choice_would_not():
    # Alone, each unit is faster in TVM once a crossing is paid; together they win in LibTorch.
    units = [Unit(1.0, 9.0), Unit(1.0, 0.6), Unit(1.0, 0.6), Unit(1.0, 9.0)]
    edges = [(0, 1), (1, 2), (2, 3)]
    got = best_assignment(units, edges, crossing_ms=0.35)
    assert got.sides == (TVM, TORCH, TORCH, TVM)
    assert got.total_ms == pytest.approx(1 + 0.6 + 0.6 + 1 + 2 * 0.35)
    # moving either one alone costs more than staying: 1 + 0.6 + 1 + 1 + 2 * 0.35 > 4
    one = (TVM, TORCH, TVM, TVM)
    assert assignment_cost(units, edges, 0.35, one) > assignment_cost(units, edges, 0.35, [TVM] * 4)


def test_a_unit_that_cannot_run_in_one_place_runs_in_the_other():
    units = [Unit(math.inf, 5.0), Unit(1.0, math.inf)]
    assert best_assignment(units, [(0, 1)], crossing_ms=10.0).sides == (TORCH, TVM)
    with pytest.raises(ValueError, match="unit 0 can run neither in TVM nor in LibTorch"):
        best_assignment([Unit(math.inf, math.inf)], [], 0.0)


def test_ties_stay_in_tvm_and_results_are_deterministic():
    units = [Unit(1.0, 1.0), Unit(2.0, 2.0)]
    runs = {best_assignment(units, [(0, 1)], 0.5) for _ in range(5)}
    assert runs == {best_assignment(units, [(0, 1)], 0.5)}
    assert next(iter(runs)).sides == (TVM, TVM)


@st.composite
def _instances(draw):
    n = draw(st.integers(1, 7))
    times = st.floats(0.0, 10.0, allow_nan=False)
    units = [Unit(draw(times), draw(times)) for _ in range(n)]
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    return units, edges, draw(st.floats(0.0, 5.0, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(_instances())
def test_the_cut_is_as_good_as_trying_every_assignment(instance):
    units, edges, crossing = instance
    got = best_assignment(units, edges, crossing)
    best = min(
        assignment_cost(units, edges, crossing, sides)
        for sides in itertools.product((TVM, TORCH), repeat=len(units))
    )
    assert got.total_ms == pytest.approx(best, abs=1e-9)
    assert got.total_ms == pytest.approx(assignment_cost(units, edges, crossing, got.sides))


# -- whole compiles with a fake cost model ---------------------------------------------------------


class _MatmulTanh(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.tanh(x) * 3.0)  # tanh*3 is a region of its own, addmm another


def _fake_costs(monkeypatch, tvm_ms, torch_ms, crossing=0.001):
    """Time regions by op: ``tvm_ms(ops)`` and ``torch_ms(ops)`` in ms; count the calls."""
    from byoc_torch import placement
    from byoc_torch.placement.regions import form_regions  # noqa: F401  (same module state)

    calls = {"tvm": 0, "torch": 0, "tvm regions": 0, "torch regions": 0}
    measure.MeasurementCache.forget()

    def fake_tvm(imported, regions, var_node, values, target, device, tuning=None, torch_ms=None):
        calls["tvm"] += 1
        calls["tvm regions"] += len(regions)
        return {r.index: tvm_ms([str(n.target) for n in r.nodes]) for r in regions}

    def fake_torch(scripts, values):
        calls["torch"] += 1
        calls["torch regions"] += len(scripts)
        return {s.index: torch_ms(s.source) for s in scripts}

    monkeypatch.setattr(placement, "_time_tvm_regions", fake_tvm)
    monkeypatch.setattr(placement, "time_torch", fake_torch)
    monkeypatch.setattr(placement, "crossing_ms", lambda target, cache, compile_model: crossing)
    # The cost model has no AOTInductor: no region is timed as a package, and the whole-model
    # check gets no such candidate (it would compile a package only to time it as the fake
    # says).
    monkeypatch.setattr(placement, "_time_aot_inductor_regions", lambda *args: ({}, {}))
    monkeypatch.setattr(
        driver, "_aoti_candidate_skipped", lambda *args: "the fake cost model has no AOTInductor"
    )
    # The whole-model check times each candidate as the cost model says (its modelled time).
    monkeypatch.setattr(
        end_to_end,
        "time_candidates",
        lambda runs, options, rounds: {
            c.name: c.modelled_ms if c.modelled_ms is not None else math.inf
            for c in options
            if c.name in runs
        },
    )
    return calls


def _is_matmul(ops) -> bool:
    return any("mm" in op for op in ops)


def test_a_region_tvm_is_slower_on_goes_to_libtorch(monkeypatch):
    _fake_costs(
        monkeypatch,
        tvm_ms=lambda ops: 10.0 if _is_matmul(ops) else 0.01,
        torch_ms=lambda src: 1.0 if "mm" in src else 0.5,
    )
    model, x = _MatmulTanh().eval(), torch.randn(4, 16)
    compiled = byoc_torch.compile(model, (x,))
    moved = {r.op for r in compiled.fallbacks if r.reason == Reason.PLACEMENT}
    assert moved == {"aten.addmm.default"}
    other = torch.randn(4, 16)
    torch.testing.assert_close(compiled(other), model(other))


def test_a_region_libtorch_is_slower_on_stays_in_tvm(monkeypatch):
    _fake_costs(
        monkeypatch,
        tvm_ms=lambda ops: 0.01 if _is_matmul(ops) else 5.0,
        torch_ms=lambda src: 1.0 if "mm" in src else 0.01,
    )
    model, x = _MatmulTanh().eval(), torch.randn(4, 16)
    compiled = byoc_torch.compile(model, (x,))
    moved = {r.op for r in compiled.fallbacks if r.reason == Reason.PLACEMENT}
    shown = compiled.report().placement.to_text()
    assert "aten.addmm.default" not in moved, shown
    assert "aten.tanh.default" in moved
    torch.testing.assert_close(compiled(x + 1), model(x + 1))


class _TwoBlocks(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.second(torch.tanh(self.first(x)) * 3.0)) * 3.0


def test_regions_of_one_kind_are_timed_once_and_share_the_times(monkeypatch):
    """Two blocks of the same shapes: two kinds of region (the weight's transpose; the
    multiply with tanh*3 after it), each timed once on each side; the second block's regions
    get the times of the first's."""
    calls = _fake_costs(
        monkeypatch,
        tvm_ms=lambda ops: 10.0 if _is_matmul(ops) else 0.01,
        torch_ms=lambda src: 1.0 if "mm" in src else 0.5,
    )
    model, x = _TwoBlocks().eval(), torch.randn(4, 16)
    compiled = byoc_torch.compile(model, (x,))
    regions = compiled.report().placement.regions
    assert len(regions) == 4
    assert (calls["torch regions"], calls["tvm regions"]) == (2, 2)
    by_ops: dict[tuple, set] = {}
    for r in regions:
        by_ops.setdefault(tuple(r.ops), set()).add((r.tvm_ms, r.torch_ms))
    assert len(by_ops) == 2 and all(len(times) == 1 for times in by_ops.values()), by_ops
    other = torch.randn(4, 16)
    torch.testing.assert_close(compiled(other), model(other))


class _Placed(Exception):
    """Raised in place of the whole-model check: carries what the region search measured."""


def _region_packages(monkeypatch, executor: str, tvm_tanh_ms: float, whole=None):
    """Compile ``_MatmulTanh`` under a fake cost model in which LibTorch runs every region in
    1 ms and TVM the matrix multiply in 10 ms, the others in ``tvm_tanh_ms``; return the
    regions compiled into packages and the placement result (the compile stops before the
    whole-model check). ``whole``: the whole model's measured (all-LibTorch, one package)
    times placement sees (None: the check has no package candidate)."""
    from byoc_torch import placement

    _fake_costs(
        monkeypatch,
        tvm_ms=lambda ops: 10.0 if _is_matmul(ops) else tvm_tanh_ms,
        torch_ms=lambda src: 1.0,
    )
    compiled: list[list[int]] = []

    def fake_packages(worth, keys, region_values, ep, cache, compile_cache, serial):
        compiled.append([r.index for r in worth])
        return {r.index: 0.25 for r in worth}, {}

    monkeypatch.setattr(placement, "_time_aot_inductor_regions", fake_packages)
    seen: list[PlacementResult] = []  # what placement asked the whole-model times for

    def whole_models_ms(pipeline, inputs, result):
        seen.append(result)
        return whole

    monkeypatch.setattr(driver, "_whole_models_ms", whole_models_ms)

    def stop(pipeline, records, result, inputs):
        raise _Placed(result)

    monkeypatch.setattr(driver, "_whole_model_check", stop)
    with pytest.raises(_Placed) as placed:
        byoc_torch.compile(_MatmulTanh().eval(), (torch.randn(4, 16),), torch_executor=executor)
    _region_packages.seen = seen
    return compiled, placed.value.args[0]


def test_no_region_package_is_compiled_when_libtorch_takes_every_region_anyway(monkeypatch):
    """Under "auto" a package can only make LibTorch cheaper: when the search on TorchScript
    times alone already puts every region in LibTorch, no package can change the placement,
    and none is compiled (each costs seconds); the report says why."""
    from byoc_torch.placement import _NO_REGION_PACKAGE

    compiled, result = _region_packages(monkeypatch, "auto", tvm_tanh_ms=5.0)
    assert compiled == []
    assert {r.side for r in result.regions} == {TORCH}
    notes = {r.ops[0]: r.aot_inductor_note for r in result.regions}
    # The tanh region was worth a package until the search; the others never are.
    assert notes == {
        "aten.tanh.default": _NO_REGION_PACKAGE,
        "aten.permute.default": "not compiled: only views and copies",
        "aten.addmm.default": "not compiled: one matrix multiply (aten.addmm.default), "
        "nothing to fuse into it",
    }
    assert all(r.aot_inductor_ms is None for r in result.regions)


def test_no_region_package_is_compiled_when_the_whole_model_package_beats_any_they_give(
    monkeypatch,
):
    """The search without packages puts the tanh and permute regions in TVM (0.5 ms each
    against LibTorch's 1 ms) and the multiply in LibTorch: modelled about 2 ms, all-LibTorch
    about 3 ms. A package can save at most the tanh region's 1 ms, so the search could reach
    about 1 ms modelled, a third of all-LibTorch's. All-LibTorch measured 3 ms, so that is
    about 1 ms measured: a whole-model package at 0.5 ms beats it (nothing compiled), one at
    2 ms does not (the region is compiled)."""
    compiled, result = _region_packages(monkeypatch, "auto", 0.5, whole=(3.0, 0.5))
    assert compiled == []
    (tanh,) = [r for r in result.regions if "aten.tanh.default" in r.ops]
    assert tanh.aot_inductor_ms is None
    note = re.fullmatch(
        r"not compiled: the whole model as one package \(0\.5000 ms\) is faster than region "
        r"packages could make the search \(at best (\d+\.\d+) ms, scaled to measured time\)",
        tanh.aot_inductor_note,
    )
    assert note is not None, tanh.aot_inductor_note
    assert 1.0 < float(note.group(1)) < 1.5  # about 1 ms, and the margins and crossings
    assert tanh.side == TVM
    # The whole model placement built for it is the check's candidate: the same records, so
    # the check reuses the build (the package is compiled once).
    (first,) = _region_packages.seen
    assert all(r.aot_inductor_ms is None and r.aot_inductor_note == "" for r in first.regions)
    checked = {c.name: c for c in end_to_end.candidates({}, result, aot_inductor=True)}
    for early in (end_to_end.all_aot_inductor(first), end_to_end.all_libtorch(first)):
        assert early.records, early.name
        assert Pipeline._key(early.records) == Pipeline._key(checked[early.name].records)
    compiled, result = _region_packages(monkeypatch, "auto", 0.5, whole=(3.0, 2.0))
    assert compiled == [[tanh.index]]
    # Measured all-LibTorch at a third of its modelled time scales the bound down with it.
    compiled, result = _region_packages(monkeypatch, "auto", 0.5, whole=(1.0, 0.5))
    assert compiled == [[tanh.index]]


def test_the_early_whole_model_candidates_are_built_without_grad(monkeypatch):
    """The check reuses these builds, and inductor freezes a package only with grad off."""
    grad = []

    def runner(pipeline, inputs, records, executor="torchscript"):
        grad.append((executor, torch.is_grad_enabled()))
        return lambda: None

    monkeypatch.setattr(driver, "_runner", runner)
    monkeypatch.setattr(driver, "_aoti_candidate_skipped", lambda *args: None)
    pipeline = types.SimpleNamespace(opts=byoc_torch.Options(), device="cpu")
    assert driver._whole_models_ms(pipeline, (), PlacementResult()) is not None
    assert grad == [("torchscript", False), ("aot_inductor", False)]


def test_region_packages_are_compiled_where_they_can_change_the_placement(monkeypatch):
    """A mixed placement (the tanh region in TVM), and the forced "aot_inductor" executor
    (which costs LibTorch at the package even when slower): the region worth a package is
    compiled and its time is what the search sees."""
    for executor, tvm_tanh_ms, side in (("auto", 0.5, TORCH), ("aot_inductor", 5.0, TORCH)):
        compiled, result = _region_packages(monkeypatch, executor, tvm_tanh_ms)
        (tanh,) = [r for r in result.regions if "aten.tanh.default" in r.ops]
        assert compiled == [[tanh.index]], executor
        assert tanh.aot_inductor_ms == 0.25 and tanh.side == side, executor


def test_the_report_shows_every_region_and_survives_export(monkeypatch, tmp_path):
    _fake_costs(
        monkeypatch,
        tvm_ms=lambda ops: 10.0 if _is_matmul(ops) else 0.01,
        torch_ms=lambda src: 1.0,
    )
    compiled = byoc_torch.compile(_MatmulTanh().eval(), (torch.randn(4, 16),))
    placement = compiled.report().placement
    assert placement is not None
    sides = {tuple(r.ops): (r.side, r.tvm_ms, r.torch_ms) for r in placement.regions}
    assert sides == {
        ("aten.tanh.default", "aten.mul.Tensor"): ("tvm", 0.01, 1.0),
        ("aten.permute.default",): ("tvm", 0.01, 1.0),
        ("aten.addmm.default",): ("torch", 10.0, 1.0),
    }
    text = compiled.report().to_text()
    assert "Measured placement:" in text and "aten.addmm.default" in text
    data = json.loads(compiled.report().to_json())
    assert data["placement"]["regions"][0]["side"] in ("tvm", "torch")
    loaded = byoc_torch.load(compiled.export(tmp_path / "m.so"))
    assert loaded.report().placement == placement


def test_measurements_are_cached_on_disk(monkeypatch, tmp_path):
    calls = _fake_costs(monkeypatch, tvm_ms=lambda ops: 1.0, torch_ms=lambda src: 2.0)
    cache = tmp_path / "placement.json"
    model, x = _MatmulTanh().eval(), torch.randn(4, 16)
    byoc_torch.compile(model, (x,), placement_cache=cache)
    assert (calls["tvm"], calls["torch"]) == (1, 1)
    assert cache.is_file()
    measure.MeasurementCache.forget()  # as a new process would start
    again = byoc_torch.compile(model, (x,), placement_cache=cache)
    assert (calls["tvm"], calls["torch"]) == (1, 1)  # nothing measured again
    assert again.report().placement.cache_misses == 0


def test_placement_tvm_measures_nothing(monkeypatch):
    calls = _fake_costs(monkeypatch, tvm_ms=lambda ops: 99.0, torch_ms=lambda src: 0.0)
    compiled = byoc_torch.compile(_MatmulTanh().eval(), (torch.randn(4, 16),), placement="tvm")
    assert (calls["tvm"], calls["torch"]) == (0, 0)
    assert compiled.fallbacks == () and compiled.report().placement is None


def test_an_unknown_placement_is_rejected():
    with pytest.raises(
        ValueError, match=r"placement must be one of \['measured', 'tvm'\], got 'x'"
    ):
        byoc_torch.compile(Lambda(torch.relu), (torch.randn(3),), placement="x")


def test_real_measurements_keep_the_model_correct():
    model = Lambda(lambda x, w: torch.special.erfinv(torch.tanh(x @ w)) + torch.relu(x @ w))
    x, w = torch.randn(8, 32), torch.randn(32, 32) / 8
    compiled = byoc_torch.compile(model, (x, w))
    placement = compiled.report().placement
    assert placement is not None and placement.regions
    measured = [r.tvm_ms for r in placement.regions if r.tvm_ms is not None]
    assert measured and all(ms > 0 for ms in measured)  # something was really timed
    x2 = torch.randn(8, 32)
    torch.testing.assert_close(compiled(x2, w), model(x2, w), rtol=1e-4, atol=1e-4)


# -- the whole-model check (byoc_torch.placement.end_to_end) -------------------------------------


def _result(*regions) -> PlacementResult:
    """A PlacementResult over regions given as (nodes, ops, tvm_ms, torch_ms, side)."""
    decisions = [
        RegionDecision(k, list(nodes), list(ops), tvm_ms, torch_ms, side)
        for k, (nodes, ops, tvm_ms, torch_ms, side) in enumerate(regions)
    ]
    return PlacementResult(decisions, 0.001, 2.0, 1.0, 4.0)


def test_candidates_are_the_search_all_libtorch_and_all_tvm_without_duplicates():
    result = _result(
        (["mm", "t"], ["aten.mm.default", "getitem"], 1.0, 0.5, "torch"),
        (["tanh"], ["aten.tanh.default"], 0.1, 0.2, "tvm"),
        (["weird"], ["aten.weird.default"], 0.1, None, "tvm"),  # cannot run in LibTorch
    )
    searched = {"mm": FallbackRecord("mm", "aten.mm.default", Reason.PLACEMENT)}
    found = end_to_end.candidates(searched, result)
    assert [(c.name, sorted(c.records), c.modelled_ms) for c in found] == [
        ("searched", ["mm"], 2.0),
        ("all-libtorch", ["mm", "tanh"], 4.0),  # getitem goes with its producer
        ("all-tvm", [], 1.0),
    ]
    # A search that chose nothing is the all-TVM candidate: listed once, under its search name.
    assert [c.name for c in end_to_end.candidates({}, result)] == ["searched", "all-libtorch"]


def _options(searched=1.0, torch=2.0, tvm=3.0):
    return [
        end_to_end.Candidate("searched", {"a": None}, searched),
        end_to_end.Candidate("all-libtorch", {"a": None, "b": None}, torch),
        end_to_end.Candidate("all-tvm", {}, tvm),
    ]


def _fake_whole_model(monkeypatch, times: dict[str, float]):
    built = []

    def build(records):
        name = {1: "searched", 2: "all-libtorch", 0: "all-tvm"}[len(records)]
        built.append(name)
        return lambda: None

    monkeypatch.setattr(
        end_to_end, "time_candidates", lambda runs, options, rounds: {k: times[k] for k in runs}
    )
    return build, built


def test_the_check_keeps_the_fastest_whole_model_not_the_best_modelled(monkeypatch):
    build, built = _fake_whole_model(
        monkeypatch, {"searched": 9.0, "all-libtorch": 5.0, "all-tvm": 7.0}
    )
    chosen, measured, skipped = end_to_end.choose(_options(), build)
    assert chosen.name == "all-libtorch"
    assert measured == {"searched": 9.0, "all-libtorch": 5.0, "all-tvm": 7.0}
    assert skipped == {}
    assert built == ["searched", "all-libtorch", "all-tvm"]


def test_ties_keep_the_simplest_placement(monkeypatch):
    """Single-backend candidates first (by modelled time), the searched mix last: a mix
    faster by less than the margin does not replace them."""
    build, _ = _fake_whole_model(monkeypatch, {"searched": 5.0, "all-libtorch": 5.0, "all-tvm": 5})
    assert end_to_end.choose(_options(), build)[0].name == "all-libtorch"
    assert [c.name for c in end_to_end.simplest_first(_options())] == [
        "all-libtorch",
        "all-tvm",
        "searched",
    ]
    build, _ = _fake_whole_model(
        monkeypatch, {"searched": 4.9, "all-libtorch": 5.0, "all-tvm": 5.2}
    )
    assert end_to_end.choose(_options(), build)[0].name == "all-libtorch"  # within 5 %
    build, _ = _fake_whole_model(
        monkeypatch, {"searched": 4.0, "all-libtorch": 5.0, "all-tvm": 5.2}
    )
    assert end_to_end.choose(_options(), build)[0].name == "searched"


def test_one_placement_under_two_executors_keeps_the_faster_without_a_margin(monkeypatch):
    """All-aot-inductor moves what all-libtorch moves: one placement, as simple under either
    executor, so the faster measured stands for it even inside the margin (the built-in
    `gpt`'s package 6 % faster flipped to its TorchScript between compiles); other candidates
    still need to beat it beyond the margin."""
    options = [
        *_options(),
        end_to_end.Candidate("all-aot-inductor", {"a": None, "b": None}, None, "aot_inductor"),
    ]

    def build(records, executor="torchscript"):
        return lambda: None

    def chosen(**times):
        times = {k.replace("_", "-"): v for k, v in times.items()}
        monkeypatch.setattr(
            end_to_end, "time_candidates", lambda runs, options, rounds: {k: times[k] for k in runs}
        )
        return end_to_end.choose(options, build)[0].name

    assert chosen(searched=9, all_libtorch=5.0, all_aot_inductor=4.8, all_tvm=9) == (
        "all-aot-inductor"
    )
    assert chosen(searched=9, all_libtorch=5.0, all_aot_inductor=5.1, all_tvm=9) == "all-libtorch"
    # The simpler placement keeps its rank: all-tvm is modelled slower than all-libtorch and
    # within the margin of the package, so the package stays; 5 % below it, all-tvm wins.
    assert chosen(searched=9, all_libtorch=5.0, all_aot_inductor=4.8, all_tvm=4.7) == (
        "all-aot-inductor"
    )
    assert chosen(searched=9, all_libtorch=5.0, all_aot_inductor=4.8, all_tvm=4.5) == "all-tvm"
    # And the searched mix, last, within the margin of the package does not replace it.
    assert chosen(searched=4.7, all_libtorch=5.0, all_aot_inductor=4.8, all_tvm=9) == (
        "all-aot-inductor"
    )
    assert [c.name for c in end_to_end.simplest_first(options, {"all-aot-inductor": 1.0})] == [
        "all-aot-inductor",
        "all-libtorch",
        "all-tvm",
        "searched",
    ]
    assert [c.name for c in end_to_end.simplest_first(options)] == [
        "all-libtorch",
        "all-aot-inductor",
        "all-tvm",
        "searched",
    ]


def test_a_candidate_modelled_far_slower_is_not_built_except_all_libtorch(monkeypatch):
    build, built = _fake_whole_model(monkeypatch, {"searched": 2.0, "all-libtorch": 1.0})
    chosen, measured, skipped = end_to_end.choose(
        _options(searched=1.0, torch=50.0, tvm=40.0), build, factor=3.0
    )
    assert built == ["searched", "all-libtorch"]
    assert skipped == {"all-tvm": "modelled 40.000 ms, over 3x the best (1.000 ms)"}
    assert measured["all-tvm"] is None
    assert chosen.name == "all-libtorch"


def test_all_tvm_without_an_estimate_is_not_built_when_its_timed_regions_alone_are_too_slow(
    monkeypatch,
):
    """A region TVM cannot run alone leaves all-TVM without an estimate; the regions it did time
    still bound it from below, and a bound over the factor skips the build (HF GPT-2: TVM's
    regions sum to ~600 ms against 44 ms modelled)."""
    result = _result(
        (["mm"], ["aten.mm.default"], 30.0, 0.5, "torch"),
        (["weird"], ["aten.weird.default"], None, 0.1, "torch"),  # TVM cannot run it alone
    )
    result.all_tvm_ms = None
    searched = {"mm": FallbackRecord("mm", "aten.mm.default", Reason.PLACEMENT)}
    found = end_to_end.candidates(searched, result)
    assert [(c.name, c.modelled_ms, c.floor_ms) for c in found] == [
        ("searched", 2.0, None),
        ("all-libtorch", 4.0, None),
        ("all-tvm", None, 30.0),
    ]
    build, built = _fake_whole_model(monkeypatch, {"searched": 2.0, "all-libtorch": 1.0})
    chosen, _, skipped = end_to_end.choose(found, build, factor=3.0)
    assert chosen.name == "all-libtorch"
    assert built == ["searched", "all-libtorch"]
    assert skipped == {"all-tvm": "its regions alone take 30.000 ms, over 3x the best (2.000 ms)"}
    # Under the factor it is built and timed as before.
    build, built = _fake_whole_model(
        monkeypatch, {"searched": 2.0, "all-libtorch": 1.0, "all-tvm": 3.0}
    )
    end_to_end.choose(found, build, factor=20.0)
    assert built == ["searched", "all-libtorch", "all-tvm"]


def test_a_candidate_that_fails_to_build_loses(monkeypatch):
    _, _ = _fake_whole_model(monkeypatch, {"searched": 1.0, "all-libtorch": 2.0, "all-tvm": 3.0})

    def build(records):
        if len(records) == 1:
            raise RuntimeError("TVM cannot build this\nsecond line")
        return lambda: None

    chosen, measured, skipped = end_to_end.choose(_options(), build)
    assert skipped == {"searched": "RuntimeError: TVM cannot build this"}
    assert measured["searched"] is None
    assert chosen.name == "all-libtorch"


def test_compile_keeps_all_libtorch_when_it_is_faster_whole(monkeypatch):
    """Region timings favour a mixed placement; the whole model says LibTorch alone is faster."""
    _fake_costs(
        monkeypatch,
        tvm_ms=lambda ops: 10.0 if _is_matmul(ops) else 0.01,
        torch_ms=lambda src: 1.0,
    )
    whole = {"searched": 3.0, "all-libtorch": 2.0, "all-tvm": 4.0}
    monkeypatch.setattr(
        end_to_end, "time_candidates", lambda runs, options, rounds: {k: whole[k] for k in runs}
    )
    model, x = _MatmulTanh().eval(), torch.randn(4, 16)
    compiled = byoc_torch.compile(model, (x,))
    placement = compiled.report().placement
    assert placement.chosen == "all-libtorch"
    # all-TVM is modelled at > 3x the search (the matmul takes 10 ms in TVM): not even built.
    assert placement.checked_ms == {"searched": 3.0, "all-libtorch": 2.0, "all-tvm": None}
    assert placement.check_skipped["all-tvm"].startswith("modelled 10.")
    assert {r.side for r in placement.regions} == {"torch"}
    assert compiled.report().totals["ops_tvm"] == 0
    line = placement.to_text().splitlines()[1]
    assert line.startswith(
        "  whole model: searched 3.0000 ms; all-libtorch 2.0000 ms; all-tvm not "
    )
    assert line.endswith("; kept all-libtorch")
    torch.testing.assert_close(compiled(x + 1), model(x + 1))


def test_a_warm_cache_skips_the_whole_model_check_and_keeps_its_choice(monkeypatch, tmp_path):
    _fake_costs(
        monkeypatch,
        tvm_ms=lambda ops: 10.0 if _is_matmul(ops) else 0.01,
        torch_ms=lambda src: 1.0,
    )
    whole = {"searched": 3.0, "all-libtorch": 2.0}
    timed = []

    def fake_time(runs, options, rounds):
        timed.append(sorted(runs))
        return {k: whole[k] for k in runs}

    monkeypatch.setattr(end_to_end, "time_candidates", fake_time)
    model, x = _MatmulTanh().eval(), torch.randn(4, 16)
    cache = tmp_path / "placement.json"
    first = byoc_torch.compile(model, (x,), placement_cache=cache).report().placement
    assert timed == [["all-libtorch", "searched"]] and first.chosen == "all-libtorch"
    measure.MeasurementCache.forget()  # a new process: only the file remains
    second = byoc_torch.compile(model, (x,), placement_cache=cache).report().placement
    assert len(timed) == 1  # not timed again
    assert second.cache_misses == 0
    assert (second.chosen, second.checked_ms) == (first.chosen, first.checked_ms)


def test_a_candidate_whose_first_call_is_far_slower_is_not_timed(monkeypatch):
    build, built = _fake_whole_model(monkeypatch, {"searched": 2.0, "all-libtorch": 1.0})
    # first calls: 1 ms, 1.5 ms, 500 ms; all-tvm's second call: 400 ms
    clock = iter([0.0, 0.001, 1.0, 1.0015, 2.0, 2.5, 3.0, 3.4])  # over PLACEMENT_CHECK_SLOW_MS
    monkeypatch.setattr(end_to_end.time, "perf_counter", lambda: next(clock))
    chosen, measured, skipped = end_to_end.choose(_options(), build)
    assert built == ["searched", "all-libtorch", "all-tvm"]
    assert measured["all-tvm"] is None
    assert skipped == {"all-tvm": "first call 400.000 ms, over 10x the fastest (1.000 ms)"}
    assert chosen.name == "all-libtorch"


def test_a_first_call_far_slower_but_cheap_is_still_timed(monkeypatch):
    """50x slower, but 5 ms (under PLACEMENT_CHECK_SLOW_MS): one call of a fast model on a
    busy machine proves nothing."""
    build, built = _fake_whole_model(
        monkeypatch, {"searched": 2.0, "all-libtorch": 1.0, "all-tvm": 3.0}
    )
    clock = iter([0.0, 0.0001, 1.0, 1.005, 2.0, 2.0002])  # first calls: 0.1 ms, 5 ms, 0.2 ms
    monkeypatch.setattr(end_to_end.time, "perf_counter", lambda: next(clock))
    chosen, measured, skipped = end_to_end.choose(_options(), build)
    assert skipped == {} and measured["all-libtorch"] == 1.0
    assert built == ["searched", "all-libtorch", "all-tvm"] and chosen.name == "all-libtorch"


def test_a_slow_first_call_is_called_again_before_it_is_skipped(monkeypatch):
    """A first call slowed by load or a first-run compile does not disqualify a candidate
    whose second call is fast."""
    build, built = _fake_whole_model(
        monkeypatch, {"searched": 2.0, "all-libtorch": 1.0, "all-tvm": 3.0}
    )
    # first calls: 1 ms, 190 ms, 1.2 ms; all-libtorch's second call: 0.9 ms
    clock = iter([0.0, 0.001, 1.0, 1.19, 2.0, 2.0012, 3.0, 3.0009])
    monkeypatch.setattr(end_to_end.time, "perf_counter", lambda: next(clock))
    chosen, measured, skipped = end_to_end.choose(_options(), build)
    assert skipped == {}
    assert built == ["searched", "all-libtorch", "all-tvm"]
    assert chosen.name == "all-libtorch" and measured["all-libtorch"] == 1.0
    assert chosen.name == "all-libtorch"


def test_regions_are_timed_on_one_thread_and_the_budget_comes_back(monkeypatch):
    """Region timings run with one LibTorch thread and TVM_NUM_THREADS=1 (measure.one_thread:
    a busy machine cannot turn a wait for a descheduled OpenMP worker into a region's time);
    the model's own budget is back afterwards."""
    from byoc_torch import placement

    seen = []
    real_torch, real_tvm = placement.time_torch, placement._time_tvm_regions

    def spy_torch(scripts, values):
        seen.append(("torch", torch.get_num_threads(), os.environ.get("TVM_NUM_THREADS")))
        return real_torch(scripts, values)

    def spy_tvm(*args):
        seen.append(("tvm", torch.get_num_threads(), os.environ.get("TVM_NUM_THREADS")))
        return real_tvm(*args)

    monkeypatch.setattr(placement, "time_torch", spy_torch)
    monkeypatch.setattr(placement, "_time_tvm_regions", spy_tvm)
    measure.MeasurementCache.forget()
    model, x = _MatmulTanh().eval(), torch.randn(4, 16)
    compiled = byoc_torch.compile(model, (x,), num_threads=2, torch_executor="torchscript")
    assert seen == [("torch", 1, "1"), ("tvm", 1, "1")]
    assert torch.get_num_threads() == 2 and os.environ["TVM_NUM_THREADS"] == "2"
    torch.testing.assert_close(compiled(x), model(x))


class _BigMatmul(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(384, 384) / 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.w)


@pytest.mark.parametrize("hopeless_factor", [10.0, math.inf])
def test_a_region_hopeless_in_tvm_is_not_timed_further(monkeypatch, hopeless_factor):
    """Untuned TVM takes many times LibTorch's time on a 384-square matmul: after the best of
    two calls it is not timed robustly (seconds saved per compile on real models); with the
    factor at infinity every region is timed in full. Either way the matmul goes to LibTorch."""
    from byoc_torch.placement import measure as measure_module

    fully_timed = []
    real = measure_module._evaluator_timing

    def spy(timer, args):
        fully_timed.append(tuple(tuple(int(d) for d in a.shape) for a in args))
        return real(timer, args)

    monkeypatch.setattr(measure_module, "_evaluator_timing", spy)
    monkeypatch.setattr(measure_module._defaults, "PLACEMENT_HOPELESS_FACTOR", hopeless_factor)
    measure.MeasurementCache.forget()
    model, x = _BigMatmul().eval(), torch.randn(384, 384)
    compiled = byoc_torch.compile(model, (x,), torch_executor="torchscript")
    regions = compiled.report().placement.regions
    (mm,) = regions  # mm and tanh, the weight bound inside the region's function
    assert mm.ops == ["aten.mm.default", "aten.tanh.default"]
    assert mm.side == TORCH and mm.tvm_ms > 10 * mm.torch_ms
    assert fully_timed == ([((384, 384),)] if math.isinf(hopeless_factor) else [])
    torch.testing.assert_close(compiled(x * 0.5), model(x * 0.5), rtol=1e-4, atol=1e-4)
