"""What tuning did and what it gains: a tuning database read back per kernel, and a Relax
function timed untuned against tuned.

Place in the data flow: beside :mod:`byoc_torch.tuning`, outside the compile: reports
(``tuning_summary``), tests and benchmarks (``measure_tuning``, ``time_function``) read a
database :func:`byoc_torch.tuning.tune` wrote; nothing in ``byoc_torch.compile`` calls them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import tvm
import tvm_ffi
from tvm import relax

from . import _defaults
from .errors import InputTypeError
from .names import torch_dtype
from .tensors import random_tensor
from .tuning import (
    _as_target,
    _database_paths,
    _extract_tasks,
    _is_default_trace,
    _mean_seconds,
    _open_database,
    lower_for_tuning,
    tune,
)

__all__ = [
    "TaskSummary",
    "TuningMeasurement",
    "TuningSummary",
    "measure_tuning",
    "random_inputs",
    "time_function",
    "tuning_summary",
]


# --------------------------------------------------------------------------------------------
# What tuning did


@dataclass(frozen=True)
class TaskSummary:
    """One kernel: its name, how often the module calls it, the trials the database holds for
    it, its best tuned latency (None: no valid trial) and its latency with the default
    schedule (None: not measured; measured once the kernel has been tuned). The schedule
    built is the faster of the two."""

    name: str
    weight: int
    trials: int
    best_ms: float | None
    default_ms: float | None = None

    @property
    def keeps_default(self) -> bool:
        return self.default_ms is not None and (
            self.best_ms is None or self.default_ms <= self.best_ms
        )


@dataclass(frozen=True)
class TuningSummary:
    """The kernels of one module and what the database knows about them."""

    database: str
    tasks: tuple[TaskSummary, ...]

    @property
    def trials(self) -> int:
        return sum(task.trials for task in self.tasks)

    @property
    def tuned(self) -> int:
        return sum(task.best_ms is not None for task in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "trials": self.trials,
            "tuned_kernels": self.tuned,
            "kernels": [
                {
                    "name": t.name,
                    "weight": t.weight,
                    "trials": t.trials,
                    "best_ms": t.best_ms,
                    "default_ms": t.default_ms,
                    "keeps_default": t.keeps_default,
                }
                for t in self.tasks
            ],
        }

    def to_text(self) -> str:
        lines = [
            f"tuning database {self.database}: {self.tuned}/{len(self.tasks)} kernel(s) "
            f"tuned, {self.trials} trial(s)"
        ]
        for t in self.tasks:
            best = "untuned" if t.best_ms is None else f"best {t.best_ms:.4f} ms"
            if t.default_ms is not None:
                verdict = "kept" if t.keeps_default else "replaced"
                best += f", default schedule {t.default_ms:.4f} ms ({verdict})"
            lines.append(f"  {t.name} (x{t.weight}): {t.trials} trial(s), {best}")
        return "\n".join(lines)


def tuning_summary(
    mod: tvm.IRModule, target: tvm.target.Target | str | dict, database: str | os.PathLike
) -> TuningSummary:
    """Per kernel of ``mod`` (the module given to :func:`tune`): the trials ``database`` holds
    and the best latency. Reads only; a missing database reads as empty."""
    target = _as_target(target)
    paths = _database_paths(database)
    tasks = _extract_tasks(lower_for_tuning(mod, target), target)
    if not paths.records.exists():
        return TuningSummary(
            str(paths.records),
            tuple(TaskSummary(t.task_name, int(t.weight), 0, None) for t in tasks),
        )
    db = _open_database(paths)
    records = db.get_all_tuning_records()
    summaries = []
    for task in tasks:
        task_mod = task.dispatched[0]
        mine = [r for r in records if tvm_ffi.structural_equal(r.workload.mod, task_mod)]
        trials = [r for r in mine if not _is_default_trace(r.trace)]
        defaults = [_mean_seconds(r) for r in mine if _is_default_trace(r.trace)]
        valid = [_mean_seconds(r) for r in trials if _mean_seconds(r) is not None]
        best = min(valid) * 1e3 if valid else None
        measured = [d for d in defaults if d is not None]
        default = min(measured) * 1e3 if measured else None
        summaries.append(TaskSummary(task.task_name, int(task.weight), len(trials), best, default))
    return TuningSummary(str(paths.records), tuple(summaries))


# --------------------------------------------------------------------------------------------
# Measuring what tuning gains


@dataclass(frozen=True)
class TuningMeasurement:
    """Latency of one Relax function built untuned and tuned, and what tuning cost."""

    function: str
    untuned_ms: float
    tuned_ms: float
    tuning_seconds: float

    @property
    def speedup(self) -> float:
        return self.untuned_ms / self.tuned_ms


def time_function(
    mod_or_executable: tvm.IRModule | relax.VMExecutable,
    target: tvm.target.Target | str | dict,
    func_name: str = "main",
    args: Sequence[Any] | None = None,
    *,
    number: int = _defaults.TUNE_TIMING_NUMBER,
    repeat: int = _defaults.TUNE_TIMING_REPEAT,
    min_repeat_ms: int = _defaults.TUNE_TIMING_MIN_REPEAT_MS,
) -> float:
    """Median latency (ms) of ``func_name``, built with ``relax.build`` if given a module,
    measured with the VM's ``time_evaluator`` on ``args`` (default: random tensors of the
    parameters' static shapes)."""
    target = _as_target(target)
    executable = (
        relax.build(mod_or_executable, target=target)
        if isinstance(mod_or_executable, tvm.IRModule)
        else mod_or_executable
    )
    dev = tvm.cpu() if target.kind.name == "llvm" else tvm.device(target.kind.name, 0)
    vm = relax.VirtualMachine(executable, dev)
    if args is None:
        if not isinstance(mod_or_executable, tvm.IRModule):
            raise InputTypeError("time_function: give args when timing an executable")
        args = random_inputs(mod_or_executable[func_name], dev)
    result = vm.time_evaluator(
        func_name, dev, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms
    )(*args)
    return float(result.median) * 1e3


def random_inputs(
    func: relax.Function, dev: tvm.runtime.Device, seed: int = _defaults.TUNE_SEED
) -> list:
    """Random tensors on ``dev`` matching ``func``'s parameters (static shapes only), from
    :func:`byoc_torch.tensors.random_tensor` with a generator of their own."""
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for param in func.params:
        ty = param.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise InputTypeError(
                f"random_inputs: parameter {param.name_hint} is not a shaped tensor"
            )
        shape = [int(dim) for dim in ty.shape.values]
        data = random_tensor(shape, torch_dtype(str(ty.dtype)), gen)
        tensors.append(tvm.runtime.tensor(data.numpy(), dev))
    return tensors


def measure_tuning(
    mod: tvm.IRModule,
    target: tvm.target.Target | str | dict,
    *,
    trials: int,
    database: str | os.PathLike | None = None,
    func_name: str = "main",
    args: Sequence[Any] | None = None,
    **tune_options: Any,
) -> TuningMeasurement:
    """Build ``mod`` as is and tuned (:func:`tune` with ``trials`` and ``database``); time
    ``func_name`` in both with :func:`time_function`. For one region: give a module holding
    only that region's function."""
    target = _as_target(target)
    untuned = time_function(mod, target, func_name, args)
    start = time.perf_counter()
    tuned_mod = tune(mod, target, trials=trials, database=database, **tune_options)
    seconds = time.perf_counter() - start
    tuned = time_function(tuned_mod, target, func_name, args)
    return TuningMeasurement(func_name, untuned, tuned, seconds)
