"""Which executor runs each LibTorch subgraph: its TorchScript or an AOTInductor package.

Place in the data flow: the last step of a compile, after the driver has built the model (and
verification has settled). :mod:`byoc_torch.aot_inductor` turns a subgraph into a package;
this module decides where packages replace TorchScripts and installs them in the built model's
C++ runtime modules (``TorchRuntime.set_aoti``).

:func:`choose_executors` applies ``Options.torch_executor``: ``"torchscript"`` keeps every
TorchScript; ``"aot_inductor"`` uses every package that compiles and agrees with the
TorchScript on the example inputs; ``"auto"`` also times both executors inside the built model
(the runtime's per-subgraph counters, the two executors in alternating rounds) and keeps the
package only when it is faster beyond the margin and the noise of
:func:`byoc_torch.timing.choose` (a tie keeps the TorchScript, so a difference of a few % does
not flip the executor from compile to compile), and does not compile subgraphs whose
TorchScript takes less than ``_defaults.AOTI_MIN_SUBGRAPH_MS`` (a compile costs seconds). Every
subgraph that keeps its TorchScript gets a reason in the report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import tvm
import tvm_ffi

from . import _defaults
from .aot_inductor import (
    AOT_INDUCTOR,
    SERIAL_KERNELS,
    TORCHSCRIPT,
    Unavailable,
    agree,
    compile_package,
    compiler_missing,
    subgraph_program,
)
from .compile_cache import CompileCache
from .errors import first_line
from .frozen_weights import concat_multiplies, matmul_weights
from .onednn_convolutions import onednn_verdict
from .partition.transform import torch_functions
from .runtime.module import TorchRuntime
from .timing import Timing, choose, summarize

logger = logging.getLogger(__name__)

__all__ = ["ExecutorChoice", "choose_executors"]


@dataclass(frozen=True)
class ExecutorChoice:
    """What runs one subgraph, why, and what each executor measured (ms per call; None: not
    measured)."""

    symbol: str
    executor: str
    reason: str
    torchscript_ms: float | None = None
    aot_inductor_ms: float | None = None


def _joined(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _outputs(result) -> list[torch.Tensor]:
    """The model's outputs (a TVM tensor or nested tuples of them) as torch copies."""
    if isinstance(result, tvm.runtime.Tensor):
        return [torch.from_dlpack(result).clone()]
    if isinstance(result, list | tuple | tvm_ffi.Array):
        return [t for r in result for t in _outputs(r)]
    return []


def _per_call_ms(modules: Sequence, run: Callable[[], object], rounds: int) -> dict[str, float]:
    """Each subgraph's time per call (ms) inside the running model: the least of ``rounds``
    rounds, read from the runtime modules' counters."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for m in modules:
            TorchRuntime(m).reset_stats()
        run()
        for m in modules:
            for symbol, (calls, ns, _fast) in TorchRuntime(m).stats().items():
                if int(calls):
                    ms = int(ns) / 1e6 / int(calls)
                    best[str(symbol)] = min(best.get(str(symbol), ms), ms)
    return best


def _interleaved_timings(
    modules: Sequence, run: Callable[[], object], rounds: int
) -> dict[str, dict[str, Timing]]:
    """Each subgraph's time per call with its TorchScript and with its installed package (by
    symbol, then executor), measured in alternating rounds (the packages suspended in every
    other round, so load that comes and goes weighs on both alike), one sample a round,
    summarized as :func:`byoc_torch.timing.summarize` does (low quantile, spread, the best of
    either half of the rounds)."""
    runtimes = [TorchRuntime(m) for m in modules]
    samples: dict[str, dict[str, list[float]]] = {}
    try:
        for _ in range(rounds):
            for executor, suspended in ((TORCHSCRIPT, True), (AOT_INDUCTOR, False)):
                for m in runtimes:
                    m.suspend_aoti(suspended)
                for symbol, ms in _per_call_ms(modules, run, 1).items():
                    samples.setdefault(symbol, {}).setdefault(executor, []).append(ms)
    finally:
        for m in runtimes:
            m.suspend_aoti(False)
    return {
        symbol: {executor: summarize(ms) for executor, ms in sides.items()}
        for symbol, sides in samples.items()
    }


def _measured_choice(symbol: str, timings: dict[str, Timing], weights: str) -> ExecutorChoice:
    """TorchScript or the package for ``symbol`` by ``timings`` (by executor): the package
    only when it is faster beyond :func:`byoc_torch.timing.choose`'s margin and the noise;
    TorchScript, the executor every subgraph carries, is what a tie keeps."""
    ts, ai = timings.get(TORCHSCRIPT), timings.get(AOT_INDUCTOR)
    ts_ms = ts.ms if ts is not None else None
    ai_ms = ai.ms if ai is not None else None
    if ts is None or ai is None:
        return ExecutorChoice(symbol, TORCHSCRIPT, "not timed with both executors", ts_ms, ai_ms)
    choice = choose(timings, [TORCHSCRIPT, AOT_INDUCTOR])
    if choice.name == AOT_INDUCTOR:
        return ExecutorChoice(
            symbol, AOT_INDUCTOR, _joined(f"measured faster: {choice.why}", weights), ts_ms, ai_ms
        )
    if ai.ms < ts.ms:
        why = (
            f"measured faster by {1 - ai.ms / ts.ms:.0%}, not beyond the "
            f"{_defaults.TIMING_MARGIN:.0%} margin and the noise: the TorchScript kept"
        )
    else:
        why = "measured slower"
    return ExecutorChoice(symbol, TORCHSCRIPT, why, ts_ms, ai_ms)


def choose_executors(
    modules: Sequence,
    partitioned: tvm.IRModule,
    ep: torch.export.ExportedProgram,
    run: Callable[[], object] | None,
    mode: str,
    cache: CompileCache | None = None,
    device: str = "cpu",
    why_forced: str | None = None,
    serial: bool = False,
) -> dict[str, ExecutorChoice]:
    """Decide, per subgraph of ``partitioned``, TorchScript or AOTInductor, and install the
    packages chosen in the torch runtime ``modules`` (every module holding a symbol gets it:
    the executable's own, which it exports, and the copy its VM runs, when TVM's ``jit`` made
    one). ``run`` runs the built model once on the example inputs (None: there are none, so
    nothing is measured or checked, and ``"auto"`` keeps the TorchScript). In ``"auto"`` a
    package replaces the TorchScript only when faster beyond the timing margin
    (:func:`_measured_choice`). ``device`` is the model's device type: packages are made for
    the CPU only. ``why_forced`` is the report's reason for the executor of a mode other than
    ``"auto"`` (None: the ``torch_executor`` setting). ``serial``: the packages' kernels are
    compiled for one thread (the model's budget is one thread). The modules' counters are
    zero afterwards."""
    try:
        return _choose(modules, partitioned, ep, run, mode, cache, device, why_forced, serial)
    finally:
        for m in modules:
            TorchRuntime(m).reset_stats()


def _choose(
    modules, partitioned, ep, run, mode, cache, device, why_forced, serial
) -> dict[str, ExecutorChoice]:
    """:func:`choose_executors` (counters left as the last measurement left them)."""
    funcs = torch_functions(partitioned)
    if not funcs:
        return {}
    owners: dict[str, list] = {}
    for m in modules:
        for sym in TorchRuntime(m).symbols():
            owners.setdefault(sym, []).append(TorchRuntime(m))

    def install(symbol: str, package: bytes, inputs: list[int]) -> None:
        for m in owners[symbol]:
            m.set_aoti(symbol, package, inputs)

    if mode == TORCHSCRIPT:
        why = why_forced or f"torch_executor={TORCHSCRIPT!r}"
        return {s: ExecutorChoice(s, TORCHSCRIPT, why) for s in funcs}
    if device != "cpu":  # packages are compiled from CPU example tensors
        why = f"AOTInductor packages are compiled for the CPU here; the model runs on {device}"
        return {s: ExecutorChoice(s, TORCHSCRIPT, why) for s in funcs}
    if run is None and mode != AOT_INDUCTOR:
        why = "no example inputs to measure AOTInductor against the TorchScript"
        return {s: ExecutorChoice(s, TORCHSCRIPT, why) for s in funcs}
    missing = compiler_missing()
    if missing is not None:
        return {s: ExecutorChoice(s, TORCHSCRIPT, missing) for s in funcs}
    rounds = _defaults.AOTI_MEASURE_ROUNDS
    reference, ts_ms = None, {}
    if run is not None:
        reference = _outputs(run())
        run()  # the TorchScript profiling executor optimizes on its second call
        ts_ms = _per_call_ms(modules, run, rounds)
    choices: dict[str, ExecutorChoice] = {}
    installed: dict[str, tuple[int, ...]] = {}
    for symbol, func in funcs.items():
        ts = ts_ms.get(symbol)
        if mode != AOT_INDUCTOR and ts is not None and ts < _defaults.AOTI_MIN_SUBGRAPH_MS:
            why = (
                f"its TorchScript takes {ts:.4f} ms, less than the "
                f"{_defaults.AOTI_MIN_SUBGRAPH_MS} ms an AOTInductor compile is worth"
            )
            choices[symbol] = ExecutorChoice(symbol, TORCHSCRIPT, why, ts)
            continue
        try:
            program = subgraph_program(func, ep)
            package = compile_package(program, cache, serial)
            install(symbol, package, list(program.inputs))
        except Unavailable as err:
            why = f"AOTInductor cannot run it: {err}"
            choices[symbol] = ExecutorChoice(symbol, TORCHSCRIPT, why, ts)
            continue
        except Exception as err:  # export, inductor or the loader refused: keep TorchScript
            why = f"AOTInductor cannot compile it: {first_line(err)}"
            logger.debug("subgraph %s: %s", symbol, why)
            choices[symbol] = ExecutorChoice(symbol, TORCHSCRIPT, why, ts)
            continue
        installed[symbol] = program.inputs
    if not installed:
        return dict(sorted(choices.items()))
    if run is not None and not agree(reference, _outputs(run())):
        for symbol in installed:
            install(symbol, b"", [])
            why = "AOTInductor's outputs differ from the TorchScript's on the example inputs"
            choices[symbol] = ExecutorChoice(symbol, TORCHSCRIPT, why, ts_ms.get(symbol))
        return dict(sorted(choices.items()))
    # both executors timed in turns, the packages staying loaded
    timed = _interleaved_timings(modules, run, rounds) if run is not None else {}
    weights = _joined(
        matmul_weights(ep)[1],
        concat_multiplies(ep)[1],
        onednn_verdict(ep.graph)[1],
        SERIAL_KERNELS if serial else "",
    )
    for symbol in installed:
        timings = timed.get(symbol, {})
        if mode == AOT_INDUCTOR:
            ts, ai = timings.get(TORCHSCRIPT), timings.get(AOT_INDUCTOR)
            choices[symbol] = ExecutorChoice(
                symbol,
                AOT_INDUCTOR,
                _joined(why_forced or f"torch_executor={AOT_INDUCTOR!r}", weights),
                ts.ms if ts is not None else ts_ms.get(symbol),
                ai.ms if ai is not None else None,
            )
            continue
        choices[symbol] = _measured_choice(symbol, timings, weights)
        if choices[symbol].executor == TORCHSCRIPT:
            install(symbol, b"", [])
    return dict(sorted(choices.items()))
