"""Measurements of measured placement: each region's time in TVM and in LibTorch, the cost of
one crossing, and the cache that keeps them.

Place in the data flow: between forming regions (:mod:`.regions`) and the search
(:mod:`.search`). All times are medians of repeated runs on the compile target, on the real
intermediate values of the example inputs, in milliseconds, timed robustly
(:mod:`byoc_torch.timing`: many short samples, a low quantile, re-measured while the spread is
high; on the Python side descheduled samples are dropped by a CPU-time cross-check):

* TVM: every region's Relax function is compiled in one build (:func:`byoc_torch.schedules.
  build`) and timed with the VM's ``time_evaluator`` (in C++, no Python call in the time), its
  per-repeat samples summarized by :func:`byoc_torch.timing.summarize`;
* LibTorch: every region's TorchScript runs in byoc_torch's own C++ runtime (the path a
  LibTorch subgraph takes: compiled once, run under ``c10::InferenceMode``), minus the time
  of a call with the same inputs and a trivial body (the call itself, counted as crossings);
* a crossing: half the extra time of a model whose one op runs in LibTorch over the same model
  all in TVM (a LibTorch call crosses twice: in and out).

:class:`MeasurementCache` keeps results by a key of the region's ops, argument shapes and
dtypes, the target and the library versions, in memory for the process and, with
``placement_cache=PATH``, in a JSON file, so recompiling the same or a similar model measures
only what is new.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import tvm
import tvm_ffi
from torch import fx
from tvm import relax

from .. import _defaults, schedules
from ..compile_cache import CompileCache
from ..errors import first_line
from ..names import op_key
from ..tensors import to_tvm
from ..threads import one_thread
from ..timing import Timing, robust_time, robust_times, summarize
from .regions import Region, RegionFunction, RegionScript

logger = logging.getLogger(__name__)

__all__ = [
    "MeasurementCache",
    "crossing_ms",
    "one_thread",
    "region_key",
    "time_aot_inductor",
    "time_torch",
    "time_tvm",
]

CACHE_VERSION = 3  # 2: regions timed on one thread (one_thread); 3: whole candidates too


def _describe(value: object) -> object:
    if isinstance(value, fx.Node):
        val = value.meta.get("val")
        if isinstance(val, torch.Tensor):
            return ["T", [str(d) for d in val.shape], str(val.dtype)]
        return ["N", str(type(val).__name__)]
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in sorted(value.items())}
    return repr(value)


def region_key(region: Region, target: object, serial: bool = False) -> str:
    """What a region's measurement depends on, as a hex digest (``serial``: its package's
    kernels are compiled for one thread, :func:`time_aot_inductor`)."""
    inside = set(region.nodes)
    ops = []
    for n in region.nodes:
        args = [
            _describe(a) if not (isinstance(a, fx.Node) and a in inside) else "in" for a in n.args
        ]
        ops.append([op_key(n.target), args, _describe(dict(n.kwargs)), _describe(n)])
    payload = {
        "ops": ops,
        "target": str(target),
        "versions": [torch.__version__, tvm.__version__, CACHE_VERSION],
        "threads": "one (measure.one_thread)",
        "serial packages": serial,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def model_key(region_keys: list[str], records: Sequence) -> str:
    """What a whole model's end-to-end measurements depend on: its regions (in graph order)
    and the nodes that run in LibTorch whatever placement chooses."""
    payload = {
        "regions": region_keys,
        "fallbacks": sorted([r.node, r.op] for r in records),
        "versions": [torch.__version__, tvm.__version__, CACHE_VERSION],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class MeasurementCache:
    """Region measurements by :func:`region_key`: ``{"tvm": ms, "torch": ms}``.

    The in-memory part is shared by the whole process; a file, when given, is read on creation
    and written by :meth:`save` (atomically, so a crash never leaves half a file).
    """

    _memory: dict[str, dict[str, float]] = {}
    _lock = threading.Lock()

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.hits = 0
        self.misses = 0
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("version") == CACHE_VERSION:
                    with self._lock:
                        for k, v in data.get("entries", {}).items():
                            self._memory.setdefault(k, {**v})
            except (OSError, ValueError, AttributeError) as err:
                logger.debug("placement cache %s unreadable, ignored: %s", self.path, err)

    @classmethod
    def forget(cls) -> None:
        """Drop the process's in-memory measurements (files are left alone)."""
        with cls._lock:
            cls._memory.clear()

    def get(self, key: str, side: str) -> float | None:
        with self._lock:
            value = self._memory.get(key, {}).get(side)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, side: str, ms: float) -> None:
        with self._lock:
            self._memory.setdefault(key, {})[side] = ms

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            entries = {k: dict(v) for k, v in self._memory.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=0))
        os.replace(tmp, self.path)


def _robust_ms(fn: Callable[[], object]) -> float:
    """``fn``'s robust time per call, in ms (:func:`byoc_torch.timing.robust_time`)."""
    return robust_time(fn).ms


def _evaluator_timing(timer: Callable[..., object], args: Sequence) -> Timing:
    """A TVM ``time_evaluator``'s samples summarized, re-measured while their spread is
    high."""
    samples: list[float] = []
    while True:
        samples += [float(r) * 1e3 for r in timer(*args).results]
        timing = summarize(samples)
        if not timing.noisy or len(samples) >= _defaults.TIMING_MAX_ROUNDS:
            return timing


def time_tvm(
    mod: tvm.IRModule,
    functions: list[RegionFunction],
    value_of: Callable[[relax.Var], torch.Tensor | None],
    target: tvm.target.Target,
    device: tvm.runtime.Device,
    other_side: Mapping[int, float] | None = None,
) -> dict[int, float]:
    """Robust time (ms) of every region's Relax function, by region index. ``other_side``: the
    regions' LibTorch times, where known; a region hopeless in TVM against it
    (``_defaults.PLACEMENT_HOPELESS_FACTOR``) keeps the best of two calls, not timed further."""
    if not functions:
        return {}
    ex = schedules.build(mod, target)
    vm = relax.VirtualMachine(ex, device)
    out: dict[int, float] = {}
    other_side = other_side or {}
    for f in functions:
        values = [value_of(v) for v in f.inputs]
        if any(v is None for v in values):
            continue
        args = [to_tvm(v.contiguous()) for v in values]
        try:
            first = vm.time_evaluator(f.name, device, number=1, repeat=2)(*args)
            best = min(float(r) for r in first.results) * 1e3
            if _hopeless(best, other_side.get(f.index)):
                logger.debug("placement: %s takes %.3f ms in TVM: not timed further", f.name, best)
                out[f.index] = best
                continue
            timer = vm.time_evaluator(
                f.name,
                device,
                number=1,
                repeat=_defaults.TIMING_ROUNDS,
                min_repeat_ms=max(1, round(_defaults.TIMING_SAMPLE_MS)),
            )
            out[f.index] = _evaluator_timing(timer, args).ms
        except Exception as err:  # a region that fails alone is not a candidate for TVM
            logger.debug("placement: timing %s in TVM failed: %s", f.name, err)
    return out


def _hopeless(tvm_ms: float, libtorch_ms: float | None) -> bool:
    """Whether a region taking ``tvm_ms`` in TVM has no chance against ``libtorch_ms``."""
    if libtorch_ms is None or math.isinf(libtorch_ms):
        return False
    limit = max(_defaults.PLACEMENT_HOPELESS_FACTOR * libtorch_ms, _defaults.PLACEMENT_HOPELESS_MS)
    return tvm_ms > limit


def time_torch(scripts: list[RegionScript], values: Mapping[str, object]) -> dict[int, float]:
    """Median time (ms) of every region's TorchScript in byoc_torch's C++ runtime (the very
    path a LibTorch subgraph takes), minus the time of a call that does nothing with the same
    inputs (the crossing, counted apart), by region."""
    from ..runtime import SubgraphSpec, make_runtime_module

    out: dict[int, float] = {}
    floors: dict[int, float] = {}
    for s in scripts:
        args = [values.get(n.name) for n in s.inputs]
        if any(not isinstance(a, torch.Tensor) for a in args):
            continue
        try:
            spec = SubgraphSpec(s.name, s.source, len(args), s.num_outputs, True)
            func = make_runtime_module([spec])[s.name]
            tvm_args = [to_tvm(a.contiguous()) for a in args]
            t = _robust_ms(lambda f=func, a=tvm_args: f(*a))
        except Exception as err:  # does not compile or run in LibTorch: not a candidate there
            logger.debug("placement: region %d fails in LibTorch: %s", s.index, err)
            continue
        k = len(args)
        if k not in floors:
            floors[k] = _floor_ms(tvm_args)
        out[s.index] = max(t - floors[k], 0.0)
    return out


def time_aot_inductor(
    scripts: list[RegionScript],
    values: Mapping[str, object],
    ep: torch.export.ExportedProgram,
    cache: CompileCache | None = None,
    serial: bool = False,
) -> tuple[dict[int, float], dict[int, str]]:
    """Each region's time (ms) as an AOTInductor package (its nodes compiled by
    :func:`byoc_torch.aot_inductor.compile_package`, parameters frozen in, kernels for one
    thread when ``serial``) run by byoc_torch's
    C++ runtime in place of its TorchScript (the path an AOTInductor subgraph takes), minus the
    runtime's own cost of the call (:func:`_dispatch_ms`); and, for each region without a time,
    why. A package
    whose outputs differ from the TorchScript's on the region's values gets no time."""
    from ..aot_inductor import Unavailable, agree, compile_package, nodes_program
    from ..runtime import SubgraphSpec, TorchRuntime, make_runtime_module

    out: dict[int, float] = {}
    why: dict[int, str] = {}
    for s in scripts:
        args = [values.get(n.name) for n in s.inputs]
        if any(not isinstance(a, torch.Tensor) for a in args):
            why[s.index] = "an input is not a tensor"
            continue
        try:
            program = nodes_program(s.nodes, s.inputs, s.outputs, ep)
            package = compile_package(program, cache, serial)
            spec = SubgraphSpec(s.name, s.source, len(args), s.num_outputs, True)
            module = make_runtime_module([spec])
            func = module[s.name]
            tvm_args = [to_tvm(a.contiguous()) for a in args]
            expected = _torch_outputs(func(*tvm_args))
            TorchRuntime(module).set_aoti(s.name, package, list(program.inputs))
            if not agree(expected, _torch_outputs(func(*tvm_args))):
                why[s.index] = "its outputs differ from the TorchScript's"
                continue
            t = _robust_ms(lambda f=func, a=tvm_args: f(*a))
            floor = _dispatch_ms(TorchRuntime(module), func, tvm_args)
        except Unavailable as err:
            why[s.index] = f"AOTInductor cannot run it: {err}"
            continue
        except Exception as err:  # export, inductor or the loader refused it
            why[s.index] = f"AOTInductor cannot compile it: {first_line(err)}"
            logger.debug("placement: region %d as AOTInductor: %s", s.index, why[s.index])
            continue
        out[s.index] = max(t - floor, 0.0)
    return out, why


def _dispatch_ms(runtime, func: Callable, tvm_args: list) -> float:
    """The runtime's own cost of one call of ``func`` with these inputs, no executor running:
    the call replayed (measurement mode "replay": the outputs recorded on the first call
    stand in for the executor's). A package has no TorchScript interpreter to subtract, so its
    floor is this rather than :func:`_floor_ms`'s trivial script."""
    previous = runtime.set_mode("record")
    try:
        func(*tvm_args)
        runtime.set_mode("replay")
        return _robust_ms(lambda: func(*tvm_args))
    finally:
        runtime.set_mode(previous)


def _torch_outputs(result) -> list[torch.Tensor]:
    """A runtime function's outputs (one tensor or a list) as torch copies."""
    items = result if isinstance(result, list | tuple | tvm_ffi.Array) else [result]
    return [torch.from_dlpack(t).clone() for t in items]


def _floor_ms(tvm_args: list) -> float:
    """The runtime's fixed cost of one call with these inputs and a trivial body."""
    from ..runtime import SubgraphSpec, make_runtime_module

    params = "".join(f", a{i}: Tensor" for i in range(len(tvm_args)))
    source = f"def forward(self{params}) -> Tuple[Tensor]:\n    return (torch.zeros([1]), )\n"
    func = make_runtime_module([SubgraphSpec("floor", source, len(tvm_args), 1, True)])["floor"]
    return _robust_ms(lambda: func(*tvm_args))


# Compiles ``model`` for the target with TVM's placement, without verification, with the ops
# named moved to LibTorch, and returns the compiled model: the driver's ``compile``, handed in
# by the driver (placement sits below the driver and does not import it).
CompileModel = Callable[[torch.nn.Module, tuple, Sequence[str]], Callable]


class _CrossingModel(torch.nn.Module):
    """The model whose crossing is timed: relu between two TVM kernels."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.relu(t + 1.0) * 2.0


def crossing_ms(
    target: tvm.target.Target, cache: MeasurementCache, compile_model: CompileModel
) -> float:
    """The measured cost of one tensor crossing between TVM and LibTorch (ms): the model
    with its relu in LibTorch against the model all in TVM, both built by ``compile_model``."""
    key = hashlib.sha256(
        json.dumps(
            ["crossing", str(target), torch.__version__, tvm.__version__, torch.get_num_threads()]
        ).encode()
    ).hexdigest()
    cached = cache.get(key, "crossing")
    if cached is not None:
        return cached
    x = torch.randn(64)
    model = _CrossingModel()
    native = compile_model(model, (x,), ())
    mixed = compile_model(model, (x,), ("aten.relu",))
    timed = robust_times({"native": lambda: native(x), "mixed": lambda: mixed(x)})
    value = max(timed["mixed"].ms - timed["native"].ms, 0.0) / 2
    cache.put(key, "crossing", value)
    logger.debug("placement: one crossing costs %.4f ms", value)
    return value
