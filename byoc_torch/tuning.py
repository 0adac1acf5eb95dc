"""The tuning room: MetaSchedule schedules for the TVM-side kernels, kept in a JSON database.

Place in the data flow: between lowering and ``relax.build``::

    frontend -> partition -> codegen/lowering -> [tuning.tune] -> relax.build

:func:`tune` takes a Relax IRModule whose TVM-side ops are ordinary Relax ops (external
``Codegen="torch"`` functions, calls to them and ``call_pure_packed`` calls of LibTorch
symbols may be present; they are left exactly as they are), lowers it with the passes of TVM's
default CPU pipeline (``relax.get_default_pipeline(target)``: library dispatch, ``LegalizeOps``,
``AnnotateTIROpPattern``, ``FoldConstant``, ``FuseOps``, ``FuseTIR``), tunes the fused
PrimFuncs it finds with MetaSchedule within a total trial budget, stores every measured
candidate in a persistent JSON database, and returns the lowered module with the best schedules
applied. Note that ``relax.build(mod, target="llvm")`` itself does *not* fuse on CPU (its
"default" pipeline only legalizes); on the module :func:`tune` returns there is nothing left to
legalize, so the kernels it compiles are exactly the fused, tuned ones.

A database is reused: kernels that already have a valid record in it are not tuned again, so a
second call with the same module and database runs no trial, and ``trials=0`` only applies what
is stored (this is how shipped tuning results are reloaded). A kernel is never made slower by
tuning: once tuned, its default (unscheduled) build is measured by the same runner and stored
as one more record, and the database applies whichever ran faster -- with a few trials spread
over many kernels, a small kernel's parallel candidates measured 12x slower than its plain loop
nest (a 32x64 layer norm: 0.0186 ms against 0.0015 ms). A :class:`TrialBudget` shares one
``tune_trials`` among the several calls of one compile.

:mod:`byoc_torch.tuning_measure` reads back what tuning did (``tuning_summary``: tasks, trials,
best latency per task) and measures what it gains (``measure_tuning`` builds a module with and
without tuning and times one
Relax function, so the placement engine can compare a tuned region against LibTorch. Every
function works on any module, so a single fused region can be tuned on its own.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tvm
from tvm import relax
from tvm.driver import build as tvm_build
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.schedule import Schedule
from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
from tvm.support.tar import tar

from . import _defaults
from .errors import OptionError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TRIALS",
    "MissingTuningDependency",
    "TrialBudget",
    "lower_for_tuning",
    "tune",
    "tune_with_options",
]

# The defaults (their values and reasons are in _defaults.py).
DEFAULT_TRIALS = _defaults.TUNE_TRIALS
DEFAULT_SEED = _defaults.TUNE_SEED
DEFAULT_COST_MODEL: Literal["xgb", "random"] = _defaults.TUNE_COST_MODEL
DEFAULT_STRATEGY: Literal["evolutionary", "replay-trace", "replay-func"] = _defaults.TUNE_STRATEGY
MAX_TRIALS_PER_ITER = _defaults.TUNE_MAX_TRIALS_PER_ITER
# Names of things, not defaults:
LOG_DIR_NAME = "logs"  # MetaSchedule's log file goes to <database dir>/<LOG_DIR_NAME>/
LOG_FILE_NAME = "tuning.log"
WORKLOAD_FILE = "database_workload.json"  # MetaSchedule's own names, so its tools read them too
RECORD_FILE = "database_tuning_record.json"
WORKLOAD_SUFFIX = ".workload.json"  # for a database given as a file: <stem><suffix> beside it
EXTERNAL_ATTR = "Codegen"  # Relax functions carrying it are external (LibTorch): never touched
ARTIFACT_NAME = "candidate.tar"  # one built candidate, handed to the runner
TUNE_EXTRA = "pip install byoc_torch[tune]"
TUNE_DEPENDENCIES = ("psutil", "cloudpickle")  # MetaSchedule's process pools
XGB_DEPENDENCY = "xgboost"  # the default cost model

_MS_LOGGER = "tvm.s_tir.meta_schedule"  # parent of every MetaSchedule logger


class MissingTuningDependency(ImportError):
    """MetaSchedule tuning needs packages of the ``tune`` extra that are not installed."""


# --------------------------------------------------------------------------------------------
# Lowering: the same passes as TVM's default CPU pipeline, external functions set aside


def lower_for_tuning(mod: tvm.IRModule, target: tvm.target.Target | str | dict) -> tvm.IRModule:
    """``mod`` legalized and fused as TVM's default pipeline for ``target`` would do it.

    Returns a module whose TVM-side work is ``call_tir`` of (fused) PrimFuncs: exactly the
    kernels :func:`tune` tunes and ``relax.build`` compiles. External functions (attribute
    ``Codegen``) are returned unchanged, calls to them and ``call_pure_packed`` calls are kept.
    If fusion would drop an external call whose result is unused (``FoldConstant`` and
    ``FuseTIR`` remove unused pure calls), the module is only legalized instead, which is what
    ``relax.build``'s own CPU pipeline does.
    """
    target = _as_target(target)
    external = _external_functions(mod)
    before = _external_calls(mod)
    lowered = _run_lowering(mod, target, external, fuse=True)
    if _external_calls(lowered) != before:
        logger.debug("tuning: fusion would drop an unused external call; legalizing only")
        lowered = _run_lowering(mod, target, external, fuse=False)
    return lowered


def _run_lowering(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    external: dict[tvm.ir.GlobalVar, relax.Function],
    *,
    fuse: bool,
) -> tvm.IRModule:
    legalize = relax.pipeline.legalize_passes(target) if fuse else [relax.transform.LegalizeOps()]
    passes = relax.pipeline.library_dispatch_passes(target) + legalize
    with target:
        lowered = tvm.transform.Sequential(passes)(mod)
    # LegalizeOps and FuseOps also rewrite the bodies of external functions: put the originals
    # back and drop the PrimFuncs only those rewritten bodies used.
    functions = {gvar: external.get(gvar, func) for gvar, func in lowered.functions.items()}
    used: set[tvm.ir.GlobalVar] = set(mod.get_global_vars())
    for func in functions.values():
        if isinstance(func, relax.Function):
            used.update(relax.analysis.all_global_vars(func))
    kept = {
        gvar: func
        for gvar, func in functions.items()
        if gvar in used or not isinstance(func, tvm.tirx.PrimFunc)
    }
    return tvm.IRModule(
        kept,
        attrs=dict(lowered.attrs) if lowered.attrs is not None else None,
        global_infos=dict(lowered.global_infos),
    )


def _external_functions(mod: tvm.IRModule) -> dict[tvm.ir.GlobalVar, relax.Function]:
    return {
        gvar: func
        for gvar, func in mod.functions.items()
        if isinstance(func, relax.Function)
        and func.attrs is not None
        and func.attrs.get(EXTERNAL_ATTR) is not None
    }


def _external_calls(mod: tvm.IRModule) -> list[str]:
    """Sorted names of every LibTorch call in ``mod``'s non-external Relax functions:
    ``call_pure_packed`` symbols and callee names of external functions."""
    external = {gvar.name_hint for gvar in _external_functions(mod)}
    names: list[str] = []

    @relax.expr_functor.visitor
    class _Collect(relax.PyExprVisitor):
        def visit_call_(self, call: relax.Call) -> None:
            super().visit_call_(call)
            op = call.op
            if isinstance(op, tvm.ir.Op) and op.name == "relax.call_pure_packed":
                names.append(str(call.args[0].global_symbol))
            elif isinstance(op, tvm.ir.GlobalVar) and op.name_hint in external:
                names.append(op.name_hint)

    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function) and gvar.name_hint not in external:
            _Collect().visit_expr(func)
    return sorted(names)


# --------------------------------------------------------------------------------------------
# The database on disk


@dataclass(frozen=True)
class _DatabasePaths:
    workloads: Path
    records: Path
    log_dir: Path


def _database_paths(database: str | os.PathLike) -> _DatabasePaths:
    """A directory holds MetaSchedule's two JSON files; a ``*.json`` path is the record file
    itself, with the workload table beside it."""
    path = Path(database)
    if path.suffix == ".json":
        stem = path.with_suffix("")
        return _DatabasePaths(
            workloads=stem.with_name(stem.name + WORKLOAD_SUFFIX),
            records=path,
            log_dir=path.parent / f"{stem.name}.{LOG_DIR_NAME}",
        )
    return _DatabasePaths(path / WORKLOAD_FILE, path / RECORD_FILE, path / LOG_DIR_NAME)


def _open_database(paths: _DatabasePaths) -> ms.database.JSONDatabase:
    paths.records.parent.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(
        str(paths.workloads), str(paths.records), allow_missing=True, module_equality="structural"
    )


@contextlib.contextmanager
def _database_location(database: str | os.PathLike | None) -> Iterator[_DatabasePaths]:
    """The database's paths; a temporary directory, removed afterwards, when none is given."""
    if database is not None:
        yield _database_paths(database)
        return
    tmp = tempfile.mkdtemp(prefix="byoc_torch_tune_")
    try:
        yield _database_paths(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Tuning


class TrialBudget:
    """The trials a compile may still spend, shared by every :func:`tune` call it makes.

    ``tune_trials`` is a total: measured placement tunes its regions first, then the builds of
    the whole model tune only the kernels the regions did not cover, with what is left. A
    trial is a candidate MetaSchedule measured, counted as the records it added.
    """

    def __init__(self, total: int) -> None:
        if total < 0:
            raise OptionError(f"TrialBudget: total must be >= 0, got {total}")
        self.total = total
        self.spent = 0

    @property
    def left(self) -> int:
        return max(0, self.total - self.spent)


def tune(
    mod: tvm.IRModule,
    target: tvm.target.Target | str | dict,
    *,
    trials: int = DEFAULT_TRIALS,
    database: str | os.PathLike | None = None,
    trials_per_task: int | None = None,
    cost_model: Literal["xgb", "random"] = DEFAULT_COST_MODEL,
    strategy: Literal["evolutionary", "replay-trace", "replay-func"] = DEFAULT_STRATEGY,
    seed: int = DEFAULT_SEED,
    budget: TrialBudget | None = None,
) -> tvm.IRModule:
    """Tune ``mod``'s TVM kernels with MetaSchedule; return it lowered, tuned schedules applied.

    Args:
        mod: a Relax IRModule; external (``Codegen``) functions, calls to them and
            ``call_pure_packed`` calls are kept as they are.
        target: the target the result will be built for (``"llvm"``, a dict or a Target); a
            CPU target without ``num-cores`` gets the machine's physical core count.
        trials: total MetaSchedule trials over all kernels that the database does not cover
            yet (``max_trials_global``). 0: only apply what the database holds.
        database: a directory (created if missing) holding MetaSchedule's JSON database and a
            ``logs/`` directory, or a ``*.json`` record file (workloads beside it). Records
            already there are loaded and their kernels not tuned again. None: a temporary
            directory, deleted on return.
        trials_per_task: at most this many trials for one kernel (default: ``trials``).
        cost_model: ``"xgb"`` (MetaSchedule's default) or ``"random"`` (no training; cheap).
        strategy: MetaSchedule's search strategy.
        seed: seeds each task's random state, for reproducible candidates.
        budget: spend at most ``budget.left`` trials (and at most ``trials``); the trials
            spent are added to ``budget.spent``.

    Returns:
        The lowered module, ready for ``relax.build(result, target=target)``.

    Raises:
        MissingTuningDependency: ``trials > 0`` and a package of the ``tune`` extra is missing.
    """
    if trials < 0:
        raise OptionError(f"tune: trials must be >= 0, got {trials}")
    target = _as_target(target)
    if budget is not None:
        trials = min(trials, budget.left)
    lowered = lower_for_tuning(mod, target)
    with _database_location(database) as paths:
        if trials == 0 and not paths.records.exists():
            logger.debug("tuning: no database at %s; nothing to apply", paths.records)
            return lowered
        db = _open_database(paths)
        todo = _untuned_tasks(lowered, target, db)
        logger.debug(
            "tuning: %d kernel(s) without records in %s, budget %d trial(s)",
            len(todo),
            paths.records,
            trials,
        )
        if trials > 0 and todo:
            _require_dependencies(cost_model)
            before = len(db.get_all_tuning_records())
            start = time.perf_counter()
            runner = ms.runner.LocalRunner()
            with _metaschedule_logs_to(paths.log_dir):
                _run_metaschedule(
                    todo,
                    db,
                    runner,
                    trials,
                    trials_per_task,
                    cost_model,
                    strategy,
                    seed,
                    paths.log_dir,
                )
            spent = len(db.get_all_tuning_records()) - before
            if budget is not None:
                budget.spent += spent
            kept = _keep_default_schedules(todo, db, runner, target)
            logger.debug(
                "tuning: %d trial(s) in %.1f s; the default schedule stays on %d kernel(s)",
                spent,
                time.perf_counter() - start,
                kept,
            )
        return _apply_database(lowered, target, db)


def tune_with_options(mod: tvm.IRModule, opts, budget: TrialBudget | None = None) -> tvm.IRModule:
    """:func:`tune` as a compile asks for it: the target, ``tune_trials`` and
    ``tuning_database`` of ``opts`` (a :class:`byoc_torch.Options`), within ``budget``."""
    return tune(
        mod,
        opts.tvm_target(),
        trials=opts.tune_trials,
        database=opts.tuning_database,
        budget=budget,
    )


def _apply_database(
    lowered: tvm.IRModule, target: tvm.target.Target, db: ms.Database
) -> tvm.IRModule:
    with target, db:
        return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(lowered)


def _extract_tasks(lowered: tvm.IRModule, target: tvm.target.Target) -> list[ms.ExtractedTask]:
    return [
        task
        for task in ms.relax_integration.extract_tasks(lowered, target)
        if not task.dispatched[0].attrs.get("tirx.is_scheduled", False)
    ]


def _has_valid_record(db: ms.Database, task_mod: tvm.IRModule, target: tvm.target.Target) -> bool:
    return db.has_workload(task_mod) and (
        db.query_tuning_record(task_mod, target, workload_name="main") is not None
    )


def _untuned_tasks(
    lowered: tvm.IRModule, target: tvm.target.Target, db: ms.Database
) -> list[_Task]:
    """The kernels of ``lowered`` that ``db`` holds no valid record for, each to be tuned on the
    database's own copy of its workload.

    A workload is matched by structure, and structural equality ignores block names, which
    follow the Relax variable names at legalization (``lv8_sum`` in one build of a model,
    ``p0_sum`` in another). A trace names blocks, and the database applies a record's trace to
    the workload it stores. So a kernel whose workload is already stored (committed by an
    earlier compile whose trials did not reach it) is tuned on the stored copy: the trace then
    names the blocks the database will apply it to. Tuning the kernel as this build names it
    would fail later in ``get-block``.
    """
    todo = []
    for task in _extract_tasks(lowered, target):
        mod = task.dispatched[0]
        if _has_valid_record(db, mod, target):
            continue
        stored = db.commit_workload(mod).mod if db.has_workload(mod) else mod
        todo.append(_Task(task.task_name, float(task.weight), task.target, stored))
    return todo


@dataclass(frozen=True)
class _Task:
    """One kernel to tune: MetaSchedule's task name and weight, and the module to tune."""

    name: str
    weight: float
    target: tvm.target.Target
    mod: tvm.IRModule


def _run_metaschedule(
    tasks: list[_Task],
    db: ms.Database,
    runner: ms.runner.Runner,
    trials: int,
    trials_per_task: int | None,
    cost_model: str,
    strategy: str,
    seed: int,
    log_dir: Path,
) -> None:
    cores = ms.utils.cpu_count(logical=False)
    contexts = [
        ms.TuneContext(
            mod=task.mod,
            target=task.target,
            space_generator="post-order-apply",
            search_strategy=strategy,
            task_name=task.name,
            logger=logging.getLogger(f"{_MS_LOGGER}.byoc_torch.task_{k}_{task.name}"),
            rand_state=rand_state,
            num_threads=cores,
        ).clone()
        for k, (task, rand_state) in enumerate(
            zip(tasks, ms.utils.fork_seed(seed, n=len(tasks)), strict=True)
        )
    ]
    # Every task gets at least one batch before the gradient scheduler favours the slow ones.
    per_iter = max(1, min(MAX_TRIALS_PER_ITER, math.ceil(trials / len(tasks))))
    ms.tune_tasks(
        tasks=contexts,
        task_weights=[task.weight for task in tasks],
        work_dir=str(log_dir),
        max_trials_global=trials,
        max_trials_per_task=trials_per_task,
        num_trials_per_iter=per_iter,
        builder=_InProcessBuilder(),
        runner=runner,
        database=db,
        cost_model=ms.CostModel.create(cost_model, num_tuning_cores=cores)
        if cost_model == "xgb"
        else ms.CostModel.create(cost_model),
        task_scheduler="gradient",
    )


def _keep_default_schedules(
    tasks: list[_Task], db: ms.Database, runner: ms.runner.Runner, target: tvm.target.Target
) -> int:
    """Measure each just-tuned kernel as TVM builds it untuned (no schedule), with the runner
    that measured the candidates, and store that as one more record (an empty trace). The
    database applies the record with the least run time, so a tuned schedule replaces the
    default only where it measured faster: with a few trials over many kernels, a kernel's
    only candidate can be slower than its plain loop nest. Returns how many kernels keep
    their default schedule."""
    tuned = [t for t in tasks if _has_valid_record(db, t.mod, target)]
    measured = _default_run_secs(tuned, runner)
    kept = 0
    for task, run_secs in zip(tuned, measured, strict=True):
        if run_secs is None:
            continue
        trace = _default_trace(task.mod)
        if trace is None:
            continue
        best = db.query_tuning_record(task.mod, target, workload_name="main")
        db.commit_tuning_record(
            ms.database.TuningRecord(
                trace,
                db.commit_workload(task.mod),
                run_secs,
                task.target,
                ms.arg_info.ArgInfo.from_prim_func(task.mod["main"]),
            )
        )
        kept += best is not None and sum(run_secs) / len(run_secs) < _mean_seconds(best)
    return kept


DEFAULT_TRACE_ROOT = "root"  # the root block every s_tir PrimFunc has


def _default_trace(mod: tvm.IRModule):
    """A trace that leaves ``mod`` as it is: one lookup of its root block. (MetaSchedule's
    database skips records whose trace is empty, so the default schedule is stored as this.)
    None when the kernel has no root block to look up."""
    sch = Schedule(mod)
    try:
        sch.get_sblock(DEFAULT_TRACE_ROOT)
    except Exception:  # not an s_tir kernel with a root block: no default record
        return None
    return sch.trace


def _device_type(target: tvm.target.Target) -> str:
    """The runner's name for ``target``'s device: ``"cpu"`` for llvm, ``"cuda"``..."""
    return str(tvm.device(target.get_target_device_type())).split(":")[0]


def _is_default_trace(trace) -> bool:
    """Whether ``trace`` is one :func:`_default_trace` made: lookups only, no change."""
    return all(inst.kind.name == "GetSBlock" for inst in trace.insts)


def _default_run_secs(tasks: list[_Task], runner: ms.runner.Runner) -> list[list[float] | None]:
    """Run times of each task's kernel built without a schedule, as ``runner`` measures
    them (None where it does not build or run)."""
    inputs, built = [], []
    for task in tasks:
        result = _build_candidate(ms.builder.BuilderInput(task.mod, task.target))
        if result.error_msg is None:
            args = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
            device = _device_type(task.target)
            inputs.append(ms.runner.RunnerInput(result.artifact_path, device, args))
            built.append(task)
    times: dict[int, list[float] | None] = {}
    for task, future in zip(built, runner.run(inputs), strict=True):
        result = future.result()
        ok = result.error_msg is None and result.run_secs
        times[id(task)] = [float(s) for s in result.run_secs] if ok else None
    return [times.get(id(task)) for task in tasks]


@derived_object
class _InProcessBuilder(ms.builder.PyBuilder):
    """Builds candidates in this process, one after the other.

    MetaSchedule's LocalBuilder starts a fresh process pool for every batch, and each worker
    imports TVM and every tensor intrinsic (about 25 s on a 2-core machine) before compiling
    candidates that take milliseconds each. CPU candidates are plain TIR compiled by LLVM, so
    building them here costs far less; the runner still measures in a separate process.
    """

    def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
        return [_build_candidate(build_input) for build_input in build_inputs]


def _build_candidate(build_input: ms.builder.BuilderInput) -> ms.builder.BuilderResult:
    """One candidate compiled and packed for the runner (or the build's error)."""
    try:
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(build_input.mod)
        runtime_mod = tvm_build(mod, target=build_input.target)
        # The runner deletes the artifact's directory after measuring it.
        path = os.path.join(tempfile.mkdtemp(prefix="byoc_torch_tune_"), ARTIFACT_NAME)
        runtime_mod.export_library(path, fcompile=tar)
    except Exception as err:  # a failed candidate is a result, not an error
        return ms.builder.BuilderResult(None, f"{type(err).__name__}: {err}")
    return ms.builder.BuilderResult(path, None)


def _require_dependencies(cost_model: str) -> None:
    names = TUNE_DEPENDENCIES + ((XGB_DEPENDENCY,) if cost_model == "xgb" else ())
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingTuningDependency(
            f"byoc_torch tuning needs {', '.join(missing)} (not installed): {TUNE_EXTRA}"
        )


@contextlib.contextmanager
def _metaschedule_logs_to(log_dir: Path) -> Iterator[None]:
    """Route every MetaSchedule logger to ``log_dir/tuning.log`` and nowhere else while
    tuning; the logger's previous state is restored afterwards."""
    log_dir.mkdir(parents=True, exist_ok=True)
    ms_logger = logging.getLogger(_MS_LOGGER)
    saved = (ms_logger.level, ms_logger.propagate, list(ms_logger.handlers))
    handler = logging.FileHandler(log_dir / LOG_FILE_NAME, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s [%(levelname)s] %(message)s"))
    ms_logger.handlers = [handler]
    ms_logger.setLevel(logging.DEBUG)
    ms_logger.propagate = False
    try:
        yield
    finally:
        handler.close()
        ms_logger.setLevel(saved[0])
        ms_logger.propagate = saved[1]
        ms_logger.handlers = saved[2]


def _as_target(target: tvm.target.Target | str | dict) -> tvm.target.Target:
    """A Target; CPU targets get ``num-cores`` (MetaSchedule requires it)."""
    if not isinstance(target, tvm.target.Target):
        target = tvm.target.Target(target)
    if target.kind.name == "llvm" and target.attrs.get("num-cores") is None:
        config = dict(target.export())
        config["num-cores"] = ms.utils.cpu_count(logical=False)
        target = tvm.target.Target(config)
    return target


def _mean_seconds(record: ms.database.TuningRecord) -> float | None:
    """The record's mean run time, or None for a failed candidate (MetaSchedule stores no run
    time, or its 1e10 s sentinel)."""
    if not record.run_secs:
        return None
    secs = [float(s) for s in record.run_secs]
    mean = sum(secs) / len(secs)
    return mean if math.isfinite(mean) and mean < _FAILED_RUN_SECONDS else None


_FAILED_RUN_SECONDS = 1e9  # MetaSchedule marks failed runs with 1e10 s
