"""``byoc_torch.compile`` and ``byoc_torch.report``: nn.Module or ExportedProgram in, a
CompiledModule (or a Report) out.

Place in the data flow: the driver, the top of the compiler. It exports the model
(:mod:`byoc_torch.program`), makes one :class:`~byoc_torch.pipeline.Pipeline` (import ->
partition -> lowering -> [tuning] -> relax.build) and runs the compile loop over it: measured
placement first, then build, bisect build failures, verify values against PyTorch, and move
what is to blame to LibTorch, until the model builds and agrees. The result is wrapped in
:class:`byoc_torch.compiled.CompiledModule`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import tempfile
import warnings
from collections.abc import Sequence

import torch
import tvm
from tvm import relax

from . import _defaults
from .compile_cache import CompileCache, artifact_key
from .compiled import CompiledModule, load_bytes, set_metadata
from .errors import VerificationError, first_line
from .frontend.modules import forced_module_for_op
from .names import is_relax_op_name
from .options import Options
from .partition import PartitionForTorch
from .pipeline import Built, Pipeline
from .program import Program, check_dense_inputs, export, export_program, flat_program
from .quiet import quietly
from .records import FallbackRecord
from .reporting import Report, format_ms, report_from_ir
from .tensors import tvm_ready
from .threads import apply_thread_budget
from .verify import build_candidates, find_build_culprits, minimal_blame, shapeless

logger = logging.getLogger(__name__)

__all__ = ["compile", "compile_with_options", "export_program", "flat_program", "report"]


@quietly
def compile(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: Sequence[torch.Tensor] = (),
    target: str | dict | None = None,
    *,
    kwargs: dict | None = None,
    dynamic_shapes=None,
    **options,
) -> CompiledModule:
    """Compile ``model``: TVM compiles what its importer handles, LibTorch runs the rest.

    Args:
        model: an ``nn.Module`` (exported here with ``torch.export``) or an ExportedProgram.
        example_inputs: the positional inputs to export with, as the model takes them:
            tensors, (nested) tuples, lists and dicts of tensors, Python scalars (which
            torch.export specializes). Ignored for an ExportedProgram.
        target: the option ``target``, also accepted by position: ``"host"`` (the default:
            this machine's CPU, ``byoc_torch.cpu``), or a TVM target: ``"llvm"`` (any CPU of
            the architecture), a dict such as ``{"kind": "llvm", "mcpu": "znver3"}`` or a
            ``tvm.target.Target``. The artifact records the CPU features the target uses, and
            loading it on a CPU without them raises CPUFeatureError.
        kwargs: the keyword inputs to export with; the result is called
            ``compiled(*args, **kwargs)`` like the model.
        dynamic_shapes: torch.export's ``dynamic_shapes`` (e.g. ``{"x": {0: Dim("batch")}}``);
            the result then runs every size in range without recompiling.
        **options: fields of :class:`byoc_torch.Options`.
    """
    if target is not None:
        options = {**options, "target": target}
    opts = Options.from_kwargs(options)
    return compile_with_options(
        model, example_inputs, opts, kwargs=kwargs, dynamic_shapes=dynamic_shapes
    )


@quietly
def compile_with_options(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: Sequence[torch.Tensor],
    opts: Options,
    *,
    kwargs: dict | None = None,
    dynamic_shapes=None,
) -> CompiledModule:
    """:func:`compile` with its options as one :class:`Options` (what the torch.compile
    backend and placement's crossing measurement call)."""
    with contextlib.ExitStack() as stack:
        if opts.tune_trials and opts.tuning_database is None:
            # One database for the whole compile: the kernels tuned while placement times the
            # regions are not tuned again for the whole-model check or the final build.
            database = stack.enter_context(tempfile.TemporaryDirectory(prefix="byoc_torch_tuning_"))
            opts = opts.replace(tuning_database=database)
        apply_thread_budget(opts.num_threads)  # verification runs the model too
        program = export(model, example_inputs, kwargs, dynamic_shapes, opts)
        stack.callback(program.release)  # the forced modules' custom ops are not needed after
        cache, key = _artifact_cache(program, opts)
        if cache is not None:
            data = cache.get_bytes("compiled", key)
            if data is not None:
                logger.debug("compile: the compiled model from the compile cache (%s)", key[:12])
                return load_bytes(
                    data,
                    source=f"the compile cache entry compiled/{key}.so",
                    state=[value for _, value in program.state],  # the model's own buffers
                )
        compiled = _compile_program(program, opts)
        if cache is not None:
            cache.put_bytes("compiled", key, compiled._exported_bytes())
        return compiled


def _artifact_cache(program: Program, opts: Options) -> tuple[CompileCache | None, str]:
    """The compile cache and this compile's key there (:func:`compile_cache.artifact_key`),
    or (None, "") when whole models are not cached: no ``cache_dir``, or a compile that tunes
    (the database's contents decide its kernels)."""
    if opts.cache_dir is None or opts.tune_trials or opts.tuning_database is not None:
        return None, ""
    settings = {
        f.name: getattr(opts, f.name)
        for f in dataclasses.fields(opts)
        if f.name not in ("_forced", "cache_dir", "placement_cache", "target")
    }
    example = program.example or ()
    parts = [
        repr(sorted(settings.items())),
        str(opts.tvm_target()),
        repr([(str(x.dtype), tuple(x.shape)) for x in example]),
        repr(program.names),
        repr(program.tree),
    ]
    for node in program.exported.graph.nodes:  # torch_executed_modules: their scripted code
        forced = forced_module_for_op(node.target) if node.op == "call_function" else None
        if forced is not None:
            parts.append(forced.qualname + hashlib.sha256(forced.payload).hexdigest())
    return CompileCache(opts.cache_dir), artifact_key(program.exported, parts)


def _compile_program(program: Program, opts: Options) -> CompiledModule:
    """``compile`` from the exported program on: placement, then the build / verify loop."""
    check_dense_inputs(program.ep)
    inputs = program.example
    budget = None
    if opts.tune_trials:
        from .tuning import TrialBudget

        budget = TrialBudget(opts.tune_trials)  # tune_trials, in total for this compile
    pipeline = Pipeline(program, opts, program.checked_inputs(opts.verify), budget)
    checked = pipeline.checked
    _ = pipeline.provisional  # made now: a mistake in it must not pass for a build failure
    extra: dict[str, FallbackRecord] = {}  # nodes moved by placement, build failures, verification
    placement = None
    if opts.placement == "measured" and inputs is not None and not opts.require_full_compilation:
        placed, placement = _measured_placement(pipeline, inputs)
        extra.update(placed)
    for _ in range(_defaults.MAX_COMPILE_ROUNDS):
        try:
            built = pipeline.build(extra)
        except Exception as err:  # tie the failure to one TVM-side node, move it, retry
            # When lowering (legalize, fuse) already fails, the search probes that half of a
            # build only (T5's decode graphs: 38 probes, 54 of a first generate's 115 s as
            # full builds, 32 s as lowerings).
            # Values of unknown shape are probed first (TVM's legalization needs shapes).
            lowers = pipeline.lowers(extra, [])
            imported = pipeline.imported(extra)
            candidates = build_candidates(imported)
            suspects = shapeless(imported, candidates)
            logger.debug(
                "build failed: %d of %d candidate(s) have values of unknown shape",
                len(suspects),
                len(candidates),
            )
            records = find_build_culprits(
                candidates,
                functools.partial(pipeline.builds if lowers else pipeline.lowers, dict(extra)),
                err,
                fails_unmoved=not lowers,  # that lowering was the search's first probe
                suspects=suspects,
            )
            for record in records:
                logger.debug("build failure blamed on %s: %s", record.node, record.detail)
                extra[record.node] = record
            continue
        imported = built.imported
        if opts.verify and checked is not None and imported.native_vars:
            try:
                blamed = pipeline.diverging(built)
            except Exception as err:
                if inputs is not None:
                    raise
                warnings.warn(
                    "byoc_torch.compile: the model does not run on the derived inputs "
                    f"({first_line(err)}); verification "
                    "skipped -- pass example inputs",
                    stacklevel=2,
                )
                checked, blamed = None, {}
            if len(blamed) > 1:
                blamed = minimal_blame(blamed, functools.partial(pipeline.agrees, extra, blamed))
            blamed = {k: v for k, v in blamed.items() if k not in extra}
            if blamed:
                extra.update(blamed)
                continue
        choices = _choose_executors(pipeline, built, inputs, placement)
        built, package_only = pipeline.weights_once(built)
        for symbol in package_only:
            choice = choices[symbol]
            reason = f"{choice.reason}; the weights it froze live only in the package"
            choices[symbol] = dataclasses.replace(choice, reason=reason)
        report = pipeline.report(imported, built.partitioned)
        report.placement = placement
        report.subgraphs = [s.with_executor(choices.get(s.symbol)) for s in report.subgraphs]
        signature = pipeline.signature(report, imported)
        set_metadata(built.executable, signature.to_json())
        logger.debug("compiled: %d node(s) run in LibTorch", len(imported.records))
        return CompiledModule(
            built.executable,
            signature,
            ir_module=built.lowered,
            fallbacks=imported.records,
            report=report,
            state=[value for _, value in program.state],
        )
    raise VerificationError(
        f"byoc_torch.compile: verification did not settle after {_defaults.MAX_COMPILE_ROUNDS} "
        "rounds; moved "
        f"so far: {sorted(extra)}"
    )


def _measured_placement(pipeline: Pipeline, inputs):
    """Records of the nodes measured placement moves to LibTorch, and what it measured. A
    failure of placement itself never fails the compile: the model then runs as with
    ``placement="tvm"``, and the report says why."""
    from .placement import place
    from .reporting import PlacementResult

    try:
        records, result = place(
            pipeline.imported({}),
            inputs,
            pipeline.opts,
            compile_model=functools.partial(_compile_for_crossing, target=pipeline.target),
            tuning_budget=pipeline.tuning_budget,
            references=pipeline.references,
            whole_models_ms=functools.partial(_whole_models_ms, pipeline, inputs),
        )
    except Exception as err:  # an optimization must not break a model that compiles
        logger.debug("measured placement failed; keeping TVM's placement: %s", err)
        return {}, PlacementResult(error=first_line(err))
    if not result.regions:
        return records, result
    return _whole_model_check(pipeline, records, result, inputs), result


def _compile_for_crossing(model, inputs, torch_executed_ops, *, target) -> CompiledModule:
    """What placement times one crossing on (:data:`byoc_torch.placement.measure.CompileModel`):
    ``model`` compiled with TVM's placement, unverified, ``torch_executed_ops`` in LibTorch."""
    opts = Options(
        target=target, verify=False, placement="tvm", torch_executed_ops=tuple(torch_executed_ops)
    )
    return compile_with_options(model, inputs, opts)


def _whole_model_check(pipeline: Pipeline, searched: dict, result, inputs):
    """Build the searched placement and the single-backend ones, time them whole, keep the
    fastest (:mod:`byoc_torch.placement.end_to_end`); record what was measured in
    ``result``. Returns the records of the chosen placement."""
    from .aot_inductor import compiler_missing
    from .placement.end_to_end import ALL_AOTI, candidates, choose
    from .placement.measure import MeasurementCache, one_thread

    build = functools.partial(_runner, pipeline, inputs)
    aoti_skipped = _aoti_candidate_skipped(pipeline.opts, pipeline.device, result, compiler_missing)
    options = candidates(searched, result, aot_inductor=aoti_skipped is None)
    cache = MeasurementCache(pipeline.opts.placement_cache)
    cached = _cached_check(cache, result, options)
    if cached is not None:  # every region came from the cache, and so does the check
        chosen, measured, skipped = cached
    else:
        noise: list[str] = []
        # On one thread, as the regions were timed (measure.one_thread): at the model's own
        # budget, two busy processes on two cores made AOTInductor's OpenMP kernels wait for
        # descheduled workers, and all-tvm (0.95x eager) beat all-aot-inductor (0.34x) in 2 of
        # 3 busy compiles of the built-in cnn. Tuned kernels are measured with their cores.
        quiet = one_thread() if not pipeline.opts.tune_trials else contextlib.nullcontext()
        with torch.no_grad(), quiet:
            chosen, measured, skipped = choose(options, build, noise=noise)
        result.noise = "; ".join(noise)
        if result.model_key:
            for name, ms in measured.items():
                cache.put(result.model_key, f"whole:{name}", math.inf if ms is None else ms)
            cache.put(result.model_key, _chosen_key(options), float(options.index(chosen)))
            cache.save()
    if aoti_skipped is not None:
        skipped = {**skipped, ALL_AOTI: aoti_skipped}
    result.choose(chosen.name, set(chosen.records), measured, skipped)
    return chosen.records


def _runner(pipeline: Pipeline, inputs, records: dict, executor: str = "torchscript"):
    """The model built with ``records`` moved to LibTorch (run by ``executor``), as a function
    that runs it once on ``inputs``."""
    device = tvm.device(pipeline.device)
    main = relax.VirtualMachine(pipeline.build(records, executor).executable, device)["main"]
    args = [tvm_ready(x.contiguous()) for x in inputs]
    return lambda: main(*args)


def _whole_models_ms(pipeline: Pipeline, inputs, result) -> tuple[float, float] | None:
    """The whole-model check's "all-libtorch" and "all-aot-inductor" candidates built (the
    check reuses the builds) and timed in turns on ``inputs`` for placement (ms; :func:`byoc_
    torch.placement.place`), or their times from the placement cache when the check filed
    them; None when the check has no "all-aot-inductor" or a candidate does not build."""
    from .aot_inductor import AOT_INDUCTOR, compiler_missing
    from .placement.end_to_end import ALL_AOTI, ALL_TORCH, all_aot_inductor, all_libtorch
    from .placement.measure import MeasurementCache
    from .timing import robust_times

    if _aoti_candidate_skipped(pipeline.opts, pipeline.device, result, compiler_missing):
        return None
    if result.model_key:
        cache = MeasurementCache(pipeline.opts.placement_cache)
        cached = [cache.get(result.model_key, f"whole:{n}") for n in (ALL_TORCH, ALL_AOTI)]
        if None not in cached:
            return None if math.inf in cached else (cached[0], cached[1])
    try:
        # Built under no_grad too, as the check builds them: the builds are reused by it.
        with torch.no_grad():
            runs = {
                ALL_TORCH: _runner(pipeline, inputs, all_libtorch(result).records),
                ALL_AOTI: _runner(pipeline, inputs, all_aot_inductor(result).records, AOT_INDUCTOR),
            }
            timed = robust_times(runs)
    except Exception as err:  # the check will say why; placement just compiles region packages
        logger.debug("placement: a whole-model candidate failed: %s", err)
        return None
    return timed[ALL_TORCH].ms, timed[ALL_AOTI].ms


def _aoti_candidate_skipped(
    opts: Options, session_device: str, result, compiler_missing
) -> str | None:
    """Why the whole-model check has no "all-aot-inductor" candidate, or None when it has."""
    if opts.torch_executor == "torchscript":
        return "torch_executor='torchscript'"
    if session_device != "cpu":
        return f"AOTInductor packages are compiled for the CPU; the model runs on {session_device}"
    missing = compiler_missing()
    if missing is not None:
        return missing
    all_torch = result.all_torch_ms
    threshold = _defaults.AOTI_MIN_MODEL_MS
    if opts.torch_executor == "auto" and (all_torch is None or all_torch < threshold):
        return f"all-LibTorch modelled {format_ms(all_torch)} ms, under {threshold} ms"
    return None


def _choose_executors(pipeline: Pipeline, built: Built, inputs, placement=None) -> dict:
    """Each LibTorch subgraph's executor, TorchScript or AOTInductor (``Options.torch_executor``,
    :mod:`byoc_torch.aot_inductor`); the packages chosen are installed in the built module.
    When the whole-model check timed "all-aot-inductor" end to end, its verdict stands: kept,
    the subgraphs run AOTInductor (still checked against the TorchScript); beaten by
    "all-libtorch", whose one subgraph is the same program, the TorchScript stays (timing the
    two again one by one could only flip a choice the check made with its margin)."""
    from .aot_inductor import AOT_INDUCTOR, TORCHSCRIPT
    from .placement.end_to_end import ALL_AOTI, ALL_TORCH

    mode, why = pipeline.opts.torch_executor, None
    if placement is not None and mode == "auto":
        if placement.chosen == ALL_AOTI:
            mode, why = AOT_INDUCTOR, f"the whole-model check kept {ALL_AOTI}"
        elif placement.chosen == ALL_TORCH and placement.checked_ms.get(ALL_AOTI) is not None:
            mode, why = TORCHSCRIPT, f"the whole-model check kept {ALL_TORCH} over {ALL_AOTI}"
    return pipeline.choose_executors(built, inputs, mode, why)


def _chosen_key(options) -> str:
    """Where the check's choice is filed: by its candidates, which differ with and without
    the AOTInductor candidate."""
    return "whole:chosen:" + ",".join(c.name for c in options)


def _cached_check(cache, result, options):
    """The whole-model check's earlier outcome for this model, when placement measured
    nothing new (a warm cache): (chosen, measured, skipped), else None."""
    if result.cache_misses or not result.model_key:
        return None
    index = cache.get(result.model_key, _chosen_key(options))
    if index is None or not 0 <= int(index) < len(options):
        return None
    measured = {}
    for c in options:
        ms = cache.get(result.model_key, f"whole:{c.name}")
        measured[c.name] = None if ms is None or math.isinf(ms) else ms
    return options[int(index)], measured, {}


@quietly
def report(
    model: torch.nn.Module | torch.export.ExportedProgram | tvm.IRModule,
    example_inputs: Sequence[torch.Tensor] = (),
    *,
    kwargs: dict | None = None,
    dynamic_shapes=None,
    **options,
) -> Report:
    """Where every node would run, and why, without building anything.

    ``model`` is an nn.Module (exported with ``example_inputs``), an ExportedProgram, or a
    Relax IRModule that already has torchops (then only what the IR says is reported).
    """
    opts = Options.from_kwargs(options)
    if isinstance(model, tvm.IRModule):
        relax_ops = [n for n in opts.torch_executed_ops if is_relax_op_name(n)]
        return report_from_ir(PartitionForTorch(torch_executed_ops=relax_ops)(model))
    program = export(model, example_inputs, kwargs, dynamic_shapes, opts)
    try:
        pipeline = Pipeline(program, opts)
        imported = pipeline.imported()
        return pipeline.report(imported, pipeline.partitioned(imported))
    finally:
        program.release()
