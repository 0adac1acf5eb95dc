"""Tests of byoc_torch.tuning: MetaSchedule tuning with a persistent database.

One small tuning run (a few trials, random cost model, replay-trace search) is shared by the
tests through a module-scoped database; MetaSchedule's first use in a process costs ~20 s
(it registers every tensor intrinsic), each run a few seconds more.
"""

from __future__ import annotations

import re
import sys
import warnings

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi
from tvm import relax

from byoc_torch import tuning, tuning_measure
from byoc_torch.codegen import LowerTorchFunctions, build_runtime_module

TARGET = "llvm"
TRIALS = 8
FAST = {"cost_model": "random", "strategy": "replay-trace"}
M, K, N = 32, 64, 128
TORCH_FN = "torch_main_0"
SYMBOL = "some_symbol"


def _tensor(shape: list[int]) -> relax.TensorType:
    return relax.TensorType(shape, "float32")


def matmul_gelu_add(*, packed_call: bool = False, torch_function: bool = False) -> tvm.IRModule:
    """``gelu(x @ w) + b``, optionally followed by a LibTorch call by symbol
    (``call_pure_packed``) and a call of an external ``Codegen="torch"`` function."""
    bb = relax.BlockBuilder()
    if torch_function:
        y = relax.Var("y", _tensor([M, N]))
        attrs = {
            "Codegen": "torch",
            "global_symbol": TORCH_FN,
            "torch_script": "def forward(self, y: Tensor) -> Tensor:\n    return torch.sin(y)\n",
        }
        with bb.function(TORCH_FN, [y], attrs=attrs, private=True):
            with bb.dataflow():
                out = bb.emit_output(relax.op.sin(y))
            bb.emit_func_output(out)
    x, w, b = (relax.Var(n, _tensor(s)) for n, s in (("x", [M, K]), ("w", [K, N]), ("b", [N])))
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            h = bb.emit(relax.op.add(relax.op.nn.gelu(relax.op.matmul(x, w)), b))
            if packed_call:
                h = bb.emit(relax.op.call_pure_packed(SYMBOL, h, ty_args=_tensor([M, N])))
            if torch_function:
                h = bb.emit(relax.Call(bb.get().get_global_var(TORCH_FN), [h]))
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    return bb.get()


def run(mod: tvm.IRModule, inputs: list[np.ndarray]) -> np.ndarray:
    dev = tvm.cpu()
    vm = relax.VirtualMachine(relax.build(mod, target=TARGET), dev)
    return vm["main"](*[tvm.runtime.tensor(a, dev) for a in inputs]).numpy()


def inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype("float32") for s in ([M, K], [K, N], [N])]


def record_count(database) -> int:
    return tuning_measure.tuning_summary(matmul_gelu_add(), TARGET, database).trials


def fused_prim_funcs(mod: tvm.IRModule) -> dict[str, tvm.tirx.PrimFunc]:
    return {
        gvar.name_hint: func
        for gvar, func in mod.functions.items()
        if isinstance(func, tvm.tirx.PrimFunc)
    }


@pytest.fixture(scope="module")
def tuned_db(tmp_path_factory):
    """A database holding a tiny tuning run of :func:`matmul_gelu_add`, and its result."""
    database = tmp_path_factory.mktemp("tuning") / "db"
    tuned = tuning.tune(matmul_gelu_add(), TARGET, trials=TRIALS, database=database, **FAST)
    return database, tuned


def test_tuned_module_computes_what_the_untuned_one_does(tuned_db):
    _, tuned = tuned_db
    data = inputs()
    torch.testing.assert_close(run(tuned, data), run(matmul_gelu_add(), data))
    assert any(f.attrs.get("tirx.is_scheduled") for f in fused_prim_funcs(tuned).values())


def test_database_persists_and_is_not_tuned_again(tuned_db):
    database, tuned = tuned_db
    before = record_count(database)
    assert before >= TRIALS // 2  # the run stored its candidates
    again = tuning.tune(matmul_gelu_add(), TARGET, trials=TRIALS, database=database, **FAST)
    assert record_count(database) == before
    tvm.ir.assert_structural_equal(again, tuned)
    run(again, inputs())


def test_trials_zero_applies_stored_schedules(tuned_db, tmp_path):
    database, _ = tuned_db
    untuned = tuning.lower_for_tuning(matmul_gelu_add(), TARGET)
    applied = tuning.tune(matmul_gelu_add(), TARGET, trials=0, database=database)
    name = next(n for n in fused_prim_funcs(untuned) if n.startswith("fused_"))
    assert not tvm_ffi.structural_equal(applied[name], untuned[name])
    assert record_count(database) > 0
    # control: with an empty database, trials=0 changes nothing
    empty = tuning.tune(matmul_gelu_add(), TARGET, trials=0, database=tmp_path / "empty")
    tvm.ir.assert_structural_equal(empty, untuned)


def test_external_functions_and_calls_are_left_alone(tmp_path):
    mod = matmul_gelu_add(packed_call=True, torch_function=True)
    mod = mod.with_attr("external_mods", [build_runtime_module([], metadata="kept")])
    tuned = tuning.tune(mod, TARGET, trials=TRIALS // 2, database=tmp_path / "db", **FAST)
    tvm.ir.assert_structural_equal(tuned[TORCH_FN], mod[TORCH_FN])
    assert len(tuned.attrs["external_mods"]) == 1
    assert SYMBOL in tuned["main"].script() and TORCH_FN in tuned["main"].script()
    summary = tuning_measure.tuning_summary(mod, TARGET, tmp_path / "db")
    assert summary.trials > 0
    assert not any("sin" in task.name for task in summary.tasks)  # LibTorch's work: not tuned
    relax.build(LowerTorchFunctions()(tuned), target=TARGET)


def test_unused_external_call_survives_lowering():
    bb = relax.BlockBuilder()
    x = relax.Var("x", _tensor([M, N]))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.add(x, x))
            bb.emit(relax.op.call_pure_packed(SYMBOL, h, ty_args=_tensor([M, N])))
            out = bb.emit_output(relax.op.multiply(h, x))
        bb.emit_func_output(out)
    lowered = tuning.lower_for_tuning(bb.get(), TARGET)
    assert SYMBOL in lowered["main"].script()


def test_summary_reports_tasks_trials_and_best_latency(tuned_db):
    database, _ = tuned_db
    summary = tuning_measure.tuning_summary(matmul_gelu_add(), TARGET, database)
    assert [t.name for t in summary.tasks] == ["fused_matmul_gelu_add"]
    assert summary.tuned == 1 and summary.tasks[0].best_ms > 0
    # the kernel's default schedule was measured by the runner too (and is not a trial)
    assert summary.tasks[0].default_ms > 0 and summary.trials == TRIALS
    assert summary.to_dict()["trials"] == summary.trials
    assert "fused_matmul_gelu_add" in summary.to_text()


def test_measure_tuning_times_both_builds(tuned_db):
    database, _ = tuned_db
    measured = tuning_measure.measure_tuning(matmul_gelu_add(), TARGET, trials=0, database=database)
    assert measured.untuned_ms > 0 and measured.tuned_ms > 0


def test_missing_dependency_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # import xgboost -> ImportError
    with pytest.raises(tuning.MissingTuningDependency) as info:
        tuning.tune(matmul_gelu_add(), TARGET, trials=1, database=tmp_path, cost_model="xgb")
    assert isinstance(info.value, ImportError)
    assert str(info.value) == (
        "byoc_torch tuning needs xgboost (not installed): pip install byoc_torch[tune]"
    )


def test_compile_with_a_tuning_budget_reuses_its_database(tmp_path):
    """tune_trials/tuning_database through byoc_torch.compile: the tuned model matches eager,
    the records persist, and a second compile with tune_trials=0 only applies them."""
    import byoc_torch
    from byoc_torch.testing import Lambda

    model = Lambda(lambda a, b: torch.nn.functional.gelu(a @ b) + 1.0)
    a, b = torch.randn(32, 64), torch.randn(64, 32)
    database = tmp_path / "tuning"
    compiled = byoc_torch.compile(
        model, (a, b), placement="tvm", tune_trials=4, tuning_database=database
    )
    a2 = torch.randn(32, 64)
    torch.testing.assert_close(compiled(a2, b), model(a2, b), rtol=1e-4, atol=1e-4)
    records = (database / "database_tuning_record.json").read_text().splitlines()
    assert records
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tuning failure falls back with a warning: not here
        again = byoc_torch.compile(model, (a, b), placement="tvm", tuning_database=database)
    assert (database / "database_tuning_record.json").read_text().splitlines() == records
    torch.testing.assert_close(again(a2, b), model(a2, b), rtol=1e-4, atol=1e-4)


def test_a_tuning_failure_builds_untuned_with_a_warning(tmp_path, monkeypatch):
    import byoc_torch
    from byoc_torch import tuning
    from byoc_torch.testing import Lambda

    def broken(*args, **kwargs):
        raise RuntimeError("parallel_for_dynamic error with (not rendered)")

    monkeypatch.setattr(tuning, "tune", broken)
    model = Lambda(lambda a: torch.relu(a) * 2.0)
    a = torch.randn(8, 8)
    with pytest.warns(UserWarning, match=r"tuning failed \(RuntimeError: parallel_for_dynamic"):
        compiled = byoc_torch.compile(model, (a,), placement="tvm", tune_trials=2)
    a2 = torch.randn(8, 8)
    torch.testing.assert_close(compiled(a2), model(a2))


def test_a_compile_spends_tune_trials_in_total_over_one_database(tmp_path, monkeypatch):
    """Placement tunes its regions first, the whole-model builds get what is left, and all of
    them use the user's database (a kernel tuned for a region is not tuned again)."""
    import byoc_torch
    from byoc_torch.testing import Lambda

    calls = []

    def fake_tune(mod, target, *, trials, database, budget):
        calls.append((trials, budget.left, database))
        budget.spent += min(3, budget.left)  # as if MetaSchedule measured 3 candidates
        return mod

    monkeypatch.setattr(tuning, "tune", fake_tune)
    model = Lambda(lambda a: torch.relu(a @ a) * 2.0)
    a = torch.randn(16, 16)
    byoc_torch.compile(model, (a,), tune_trials=5, tuning_database=tmp_path / "db")
    assert len(calls) >= 2  # the regions, then at least one build of the whole model
    assert [left for _, left, _ in calls] == [5, 2] + [0] * (len(calls) - 2)
    assert {(trials, database) for trials, _, database in calls} == {(5, str(tmp_path / "db"))}


def test_a_tuned_compile_measures_its_own_whole_model_check(monkeypatch):
    """The whole-model check of an untuned compile is cached; a tuned compile of the same
    model must not reuse it (its TVM kernels are others)."""
    import byoc_torch
    from byoc_torch.placement import end_to_end
    from byoc_torch.testing import Lambda

    model = Lambda(lambda a: torch.relu(a @ a) * 2.0 + a.erfinv())
    a = torch.rand(16, 16) * 0.5
    untuned = byoc_torch.compile(model, (a,))
    assert untuned.report().placement.checked_ms  # measured, and now in the cache
    checks = []
    real_choose = end_to_end.choose

    def spy(*args, **kwargs):
        checks.append(args)
        return real_choose(*args, **kwargs)

    monkeypatch.setattr(end_to_end, "choose", spy)
    monkeypatch.setattr(tuning, "tune", lambda mod, target, **kwargs: mod)
    byoc_torch.compile(model, (a,))  # control: the cached check is reused
    assert checks == []
    byoc_torch.compile(model, (a,), tune_trials=4)
    assert len(checks) == 1


def test_wrong_tuning_arguments_are_typed_errors():
    from byoc_torch.errors import InputTypeError, OptionError

    with pytest.raises(OptionError, match=r"^TrialBudget: total must be >= 0, got -1$"):
        tuning.TrialBudget(-1)
    ex = relax.build(matmul_gelu_add(), TARGET)
    with pytest.raises(InputTypeError, match=r"^time_function: give args when timing an exec"):
        tuning_measure.time_function(ex, TARGET)


def test_tune_spends_at_most_what_the_budget_has_left(tmp_path):
    database = tmp_path / "db"
    budget = tuning.TrialBudget(3)
    modules = [matmul_gelu_add(), layer_norm("x")]
    tuning.tune(modules[0], TARGET, trials=8, database=database, budget=budget, **FAST)
    assert 0 < budget.spent <= 3
    tuning.tune(modules[1], TARGET, trials=8, database=database, budget=budget, **FAST)
    trials = sum(tuning_measure.tuning_summary(m, TARGET, database).trials for m in modules)
    assert trials == budget.spent <= 3
    assert budget.left == 3 - budget.spent


def layer_norm(var_name: str) -> tvm.IRModule:
    """``layer_norm(x)`` whose input Relax variable is called ``var_name``: legalization names
    the kernel's blocks after it (``<var_name>_sum``...)."""
    bb = relax.BlockBuilder()
    x = relax.Var(var_name, _tensor([M, K]))
    gamma, beta = relax.Var("gamma", _tensor([K])), relax.Var("beta", _tensor([K]))
    with bb.function("main", [x, gamma, beta]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.layer_norm(x, gamma, beta, axes=[-1]))
        bb.emit_func_output(out)
    return bb.get()


def block_names(mod: tvm.IRModule) -> list[str]:
    return sorted(re.findall(r'T\.sblock\("([^"]+)"\)', mod.script()))


def test_a_kernel_stored_under_other_block_names_is_tuned_on_the_stored_copy(tmp_path):
    """An earlier compile committed this kernel's workload (its trials did not reach it) with
    the blocks named after another variable. Tuning it now must produce a record that applies:
    tuning the kernel as this build names it failed later in 'get-block'."""
    from tvm.s_tir import meta_schedule as ms

    earlier, now = layer_norm("lv8"), layer_norm("p0")
    earlier_kernel = tuning._extract_tasks(tuning.lower_for_tuning(earlier, TARGET), TARGET)
    now_kernel = tuning._extract_tasks(tuning.lower_for_tuning(now, TARGET), TARGET)
    assert tvm_ffi.structural_equal(earlier_kernel[0].dispatched[0], now_kernel[0].dispatched[0])
    assert block_names(earlier_kernel[0].dispatched[0]) != block_names(now_kernel[0].dispatched[0])
    database = tmp_path / "db"
    database.mkdir()
    stored = ms.database.JSONDatabase(
        str(database / tuning.WORKLOAD_FILE),
        str(database / tuning.RECORD_FILE),
        allow_missing=True,
        module_equality="structural",
    )
    stored.commit_workload(earlier_kernel[0].dispatched[0])

    tuned = tuning.tune(now, TARGET, trials=4, database=database, **FAST)

    assert tuning_measure.tuning_summary(now, TARGET, database).tuned == 1
    rng = np.random.default_rng(1)
    args = [rng.standard_normal(s).astype("float32") for s in ([M, K], [K], [K])]
    np.testing.assert_allclose(run(tuned, args), run(now, args), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("default_secs, keeps_default", [(1e-9, True), (10.0, False)])
def test_a_tuned_kernel_is_built_only_where_it_beat_the_default_schedule(
    tmp_path, monkeypatch, default_secs, keeps_default
):
    """After tuning, each tuned kernel's default (unscheduled) build is measured and stored as
    a record: the faster of the two is applied. The default's time is faked here, to decide."""
    monkeypatch.setattr(
        tuning, "_default_run_secs", lambda tasks, runner: [[default_secs]] * len(tasks)
    )
    mod = layer_norm("x")
    tuned = tuning.tune(mod, TARGET, trials=2, database=tmp_path / "db", **FAST)
    (applied,) = fused_prim_funcs(tuned).values()
    (plain,) = fused_prim_funcs(tuning.lower_for_tuning(mod, TARGET)).values()
    plain = plain.with_attr("tirx.is_scheduled", applied.attrs["tirx.is_scheduled"])
    assert tvm_ffi.structural_equal(applied, plain) == keeps_default
    (task,) = tuning_measure.tuning_summary(mod, TARGET, tmp_path / "db").tasks
    assert task.trials == 2 and task.default_ms == pytest.approx(default_secs * 1e3)
    assert task.keeps_default == keeps_default
    verdict = "kept" if keeps_default else "replaced"
    assert f"default schedule {default_secs * 1e3:.4f} ms ({verdict})" in (
        tuning_measure.tuning_summary(mod, TARGET, tmp_path / "db").to_text()
    )
