"""``byoc_torch.compile``: nn.Module or ExportedProgram -> CompiledModule.

Place in the data flow: the driver. It runs the stages in order:

    torch.export  ->  frontend (torchops)  ->  partition  ->  codegen/lowering  ->  relax.build

and wraps the executable in :class:`byoc_torch.compiled.CompiledModule`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import tvm
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
from tvm import relax

from . import _defaults, schedules
from .codegen import LowerTorchFunctions
from .compiled import CompiledModule, running_torch_modules, set_metadata
from .cpu import requirements, resolve_target
from .errors import ExportError, FallbackError, InputTypeError, VerificationError
from .frontend import ImportResult, import_with_records
from .frontend.modules import (
    forced_module_for_op,
    hide_forced_modules,
    release_program,
    tie_to_program,
)
from .frontend.outputs import output_leaves
from .names import dtype_name, is_relax_op_name
from .options import Options
from .partition import PartitionForTorch
from .quiet import quietly
from .records import FallbackRecord, Reason
from .reporting import Report, build_report, format_ms, report_from_ir
from .signature import InputSpec, InputTree, Signature, output_structure
from .tensors import target_device_type, tvm_ready
from .threads import apply_thread_budget
from .verify import (
    build_candidates,
    diverging_nodes,
    find_build_culprits,
    minimal_blame,
    outputs_agree,
)

logger = logging.getLogger(__name__)

__all__ = ["compile", "export_program", "flat_program", "report"]


@quietly
def export_program(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: Sequence[torch.Tensor],
    dynamic_shapes=None,
    torch_executed_modules: Sequence = (),
    kwargs: dict | None = None,
) -> torch.export.ExportedProgram:
    """``model`` as an ExportedProgram (exported in eval mode when it is an nn.Module, whose
    training flags are restored afterwards), with the ``torch_executed_modules`` hidden behind
    opaque ops (see :mod:`byoc_torch.frontend.modules`)."""
    if isinstance(model, torch.export.ExportedProgram):
        if torch_executed_modules:
            raise ValueError(
                "torch_executed_modules needs the nn.Module, not an ExportedProgram: the "
                "modules are replaced before export"
            )
        if dynamic_shapes is not None:
            raise ValueError("dynamic_shapes applies when exporting; pass the nn.Module")
        return model
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"byoc_torch.compile: expected an nn.Module or an ExportedProgram, got "
            f"{type(model).__name__}"
        )
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if kwargs and torch_executed_modules:
        raise ValueError(
            "torch_executed_modules records its modules' calls with positional inputs; it "
            "cannot be combined with keyword inputs (kwargs=)"
        )
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    inputs = tuple(example_inputs)
    try:
        with hide_forced_modules(model, inputs, torch_executed_modules) as forced, torch.no_grad():
            try:
                ep = torch.export.export(
                    model, inputs, kwargs=kwargs or None, dynamic_shapes=dynamic_shapes
                )
            except GuardOnDataDependentSymNode as err:
                first = str(err).strip().splitlines()[0]
                captured = getattr(model, "captured_by_dynamo", None)
                if captured is not None:  # the backend's wrapper: no advice to use the backend
                    raise ExportError(
                        f"byoc_torch: torch.export cannot capture {captured} again: a value "
                        f"it reads is data-dependent ({first})"
                    ) from err
                raise ExportError(
                    f"byoc_torch.compile: torch.export cannot capture {type(model).__name__}: "
                    f"its Python code branches on a tensor's value ({first}). Run the submodule "
                    "that branches in LibTorch with torch_executed_modules=[...] (it is "
                    "scripted whole), write the branch as torch.cond(pred, true_fn, false_fn, "
                    'operands), or compile with torch.compile(model, backend="byoc_torch") '
                    "(Dynamo runs the branch in Python and hands only branch-free graphs to "
                    "byoc_torch)"
                ) from err
        tie_to_program(ep, forced)  # its custom ops live as long as it (or until release_program)
        return ep
    finally:
        for m, training in flags:
            m.training = training


class _FlatInputs(torch.nn.Module):
    """An exported model called with the flat tensors of its ``(args, kwargs)``: what TVM
    imports when the model takes pytrees, keyword inputs or Python scalars."""

    def __init__(self, module: torch.nn.Module, tree: InputTree) -> None:
        super().__init__()
        self.module = module
        self.tree = tree

    def forward(self, *tensors: torch.Tensor):
        args, kwargs = self.tree.unflatten(tensors)
        return self.module(*args, **kwargs)


def flat_program(
    ep: torch.export.ExportedProgram, args: Sequence, kwargs: dict
) -> tuple[torch.export.ExportedProgram, InputTree | None, tuple[str, ...]]:
    """``ep`` as a program of flat tensor inputs, the tree that maps a call's inputs to them,
    and the tensor inputs' names in ``ep``. A program that already takes flat positional
    tensors comes back as it is, without a tree. Dynamic dims stay dynamic, with their ranges.
    """
    kinds = torch.export.graph_signature
    user_specs = [s for s in ep.graph_signature.input_specs if s.kind == kinds.InputKind.USER_INPUT]
    names = tuple(s.arg.name for s in user_specs if isinstance(s.arg, kinds.TensorArgument))
    args_spec, kwargs_spec = ep.call_spec.in_spec.children()
    flat = (
        not kwargs_spec.context
        and all(c.is_leaf() for c in args_spec.children())
        and len(names) == len(user_specs)
    )
    if flat:
        return ep, None, names
    tree = InputTree.of(tuple(args), dict(kwargs))
    if tree.treespec != ep.call_spec.in_spec:
        raise InputTypeError(
            f"byoc_torch.compile: the example inputs {tree.treespec} are not nested as the "
            f"exported program's {ep.call_spec.in_spec}"
        )
    tensors = tuple(tree.tensors(tuple(args), dict(kwargs)))
    dims = _dynamic_dims(ep)
    with torch.no_grad():
        flat_ep = torch.export.export(
            _FlatInputs(ep.module(), tree), tensors, dynamic_shapes=(tuple(dims),) if dims else None
        )
    return flat_ep, tree, names


def _dynamic_dims(ep: torch.export.ExportedProgram) -> list | None:
    """torch.export ``dynamic_shapes`` of ``ep``'s tensor inputs, flat: one Dim per symbol
    (with its range), Dim.AUTO for a dim that is an expression of symbols."""
    user = set(ep.graph_signature.user_inputs)
    by_symbol: dict = {}
    specs = []
    for node in ep.graph.nodes:
        if node.op != "placeholder" or node.name not in user:
            continue
        spec = {}
        for d, size in enumerate(node.meta["val"].shape):
            if not isinstance(size, torch.SymInt):
                continue
            expr = size.node.expr
            if not expr.is_Symbol:
                spec[d] = torch.export.Dim.AUTO
                continue
            if expr not in by_symbol:
                bounds = ep.range_constraints.get(expr)
                low = int(bounds.lower) if bounds is not None else 0
                high = bounds.upper if bounds is not None else None
                high = int(high) if high is not None and high.is_finite else None
                by_symbol[expr] = torch.export.Dim(str(expr), min=low, max=high)
            spec[d] = by_symbol[expr]
        specs.append(spec or None)
    return specs if any(specs) else None


def _signature(
    ep: torch.export.ExportedProgram,
    device: str,
    report: Report | None,
    num_threads: int | None,
    names: Sequence[str] = (),
    tree: InputTree | None = None,
    foreign_ops: tuple[str, ...] = (),
    mutations: tuple[int, ...] = (),
    cpu: dict | None = None,
) -> Signature:
    """What the compiled ``ep`` takes and returns; ``names`` name its tensor inputs (the
    original model's, when ``ep`` is its flat re-export)."""
    user_inputs = set(ep.graph_signature.user_inputs)
    specs = []
    for node in ep.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise TypeError(
                f"byoc_torch.compile: input {node.name} is a {type(val).__name__}; only tensor "
                "inputs are supported"
            )
        name = names[len(specs)] if names else node.name
        specs.append(InputSpec(name, dtype_name(val.dtype), _dims(val)))
    return Signature(
        tuple(specs),
        output_structure(ep.call_spec.out_spec, output_leaves(ep)),
        device,
        report.to_dict() if report is not None else None,
        num_threads,
        tree,
        _output_specs(ep),
        _dim_ranges(ep, specs),
        foreign_ops,
        mutations,
        cpu,
    )


def _foreign_ops(imported) -> tuple[str, ...]:
    """The operators outside aten that run in LibTorch (``mylib::scale``), sorted."""
    in_torch = {r.node for r in imported.records}
    ops = set()
    for node in imported.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.name not in in_torch or schema is None or schema.name.startswith("aten::"):
            continue
        if forced_module_for_op(node.target) is None:  # a forced module runs its own script
            ops.add(schema.name)
    return tuple(sorted(ops))


def _check_dense_inputs(ep: torch.export.ExportedProgram) -> None:
    """Refuse sparse (or other non-strided) user inputs with an error naming them."""
    user = set(ep.graph_signature.user_inputs)
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        if node.op == "placeholder" and node.name in user and isinstance(val, torch.Tensor):
            if val.layout != torch.strided:
                raise FallbackError(
                    f"byoc_torch.compile: input {node.name} is a {val.layout} tensor; tensors "
                    "cross between TVM and LibTorch by DLPack, which holds dense (strided) "
                    "tensors only: pass it dense (x.to_dense()), or make it sparse inside the "
                    "model"
                )


def _dim_ranges(ep: torch.export.ExportedProgram, specs: list[InputSpec]) -> dict:
    """The range torch.export allows each symbol that is a whole input dim."""
    names = {d for spec in specs for d in spec.shape if isinstance(d, str)}
    ranges = {}
    for symbol, vr in ep.range_constraints.items():
        name = str(symbol)
        if name not in names:
            continue
        lower = _finite_int(vr.lower)
        ranges[name] = (max(lower, 0) if lower is not None else 0, _finite_int(vr.upper))
    return ranges


def _finite_int(bound) -> int | None:
    """A range bound as an int; None for an infinite one (sympy's ``oo`` or torch's
    ``int_oo``, which has no ``is_finite`` that can be trusted)."""
    try:
        return int(bound)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def _dims(val: torch.Tensor) -> tuple[int | str, ...]:
    return tuple(str(s.node.expr) if isinstance(s, torch.SymInt) else int(s) for s in val.shape)


def _output_specs(ep: torch.export.ExportedProgram) -> tuple[InputSpec, ...] | None:
    """dtype and dims of each user output (None when one is not a tensor)."""
    user_outputs = ep.graph_signature.user_outputs
    values = {}
    for node in ep.graph.output_node().args[0]:
        if isinstance(node, torch.fx.Node):
            values[node.name] = node.meta.get("val")
    specs = []
    for k, name in enumerate(user_outputs):
        val = values.get(name) if isinstance(name, str) else None
        if not isinstance(val, torch.Tensor):
            return None
        specs.append(InputSpec(f"output {k}", dtype_name(val.dtype), _dims(val)))
    return tuple(specs)


@quietly
def compile(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: Sequence[torch.Tensor] = (),
    target: str | dict = _defaults.TARGET,
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
        target: ``"host"`` (the default: this machine's CPU, ``byoc_torch.cpu``), or a TVM
            target: ``"llvm"`` (any CPU of the architecture) or a dict such as
            ``{"kind": "llvm", "mcpu": "znver3"}``. The artifact records the CPU features the
            target uses, and loading it on a CPU without them raises CPUFeatureError.
        kwargs: the keyword inputs to export with; the result is called
            ``compiled(*args, **kwargs)`` like the model.
        dynamic_shapes: torch.export's ``dynamic_shapes`` (e.g. ``{"x": {0: Dim("batch")}}``);
            the result then runs every size in range without recompiling.
        **options: fields of :class:`byoc_torch.Options`.
    """
    opts = Options.from_kwargs(options)
    if opts.tune_trials and opts.tuning_database is None:
        # One database for the whole compile: the kernels tuned while placement times the
        # regions are not tuned again for the whole-model check or the final build.
        with tempfile.TemporaryDirectory(prefix="byoc_torch_tuning_") as database:
            return compile(
                model,
                example_inputs,
                target,
                kwargs=kwargs,
                dynamic_shapes=dynamic_shapes,
                **{**options, "tuning_database": database},
            )
    apply_thread_budget(opts.num_threads)  # verification runs the model too
    exported, ep, tree, names, flat_inputs = _flat_export(
        model, example_inputs, kwargs, dynamic_shapes, opts
    )
    try:
        return _compile_program(model, ep, tree, names, flat_inputs, target, opts)
    finally:
        release_program(exported)  # the forced modules' custom ops are not needed any more


def _compile_program(model, ep, tree, names, flat_inputs, target, opts: Options) -> CompiledModule:
    """``compile`` from the exported program (flat tensor inputs) on."""
    tvm_target = resolve_target(target)
    _check_dense_inputs(ep)
    inputs = _example_inputs(ep, flat_inputs)
    checked = inputs if inputs is not None or not opts.verify else _derived_with_warning(ep)
    session = _Session(ep, opts, tvm_target, target_device_type(tvm_target), names, tree)
    extra: dict[str, FallbackRecord] = {}  # nodes moved by placement, build failures, verification
    placement = None
    if opts.placement == "measured" and inputs is not None and not opts.require_full_compilation:
        placed, placement = _measured_placement(session, inputs)
        extra.update(placed)
    for _ in range(_defaults.MAX_COMPILE_ROUNDS):
        try:
            built = session.build(extra)
        except Exception as err:  # tie the failure to one TVM-side node, move it, retry
            records = find_build_culprits(
                build_candidates(session.imported(extra)),
                lambda moved: _builds(ep, opts, extra, moved, tvm_target),
                err,
            )
            for record in records:
                logger.debug("build failure blamed on %s: %s", record.node, record.detail)
                extra[record.node] = record
            continue
        imported = built.imported
        if opts.verify and checked is not None and imported.native_vars:
            try:
                blamed = diverging_nodes(imported, built.partitioned, checked, tvm_target)
            except Exception as err:
                if inputs is not None:
                    raise
                warnings.warn(
                    "byoc_torch.compile: the model does not run on the derived inputs "
                    f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); verification "
                    "skipped -- pass example inputs",
                    stacklevel=2,
                )
                checked, blamed = None, {}
            if len(blamed) > 1:
                agrees = functools.partial(_agrees, ep, opts, extra, blamed, checked, tvm_target)
                blamed = minimal_blame(blamed, agrees)
            blamed = {k: v for k, v in blamed.items() if k not in extra}
            if blamed:
                extra.update(blamed)
                continue
        choices = _choose_executors(session, built, inputs, placement)
        report = build_report(imported, built.partitioned, model_name=_model_name(model))
        report.placement = placement
        report.subgraphs = [s.with_executor(choices.get(s.symbol)) for s in report.subgraphs]
        signature = _signature(
            ep,
            session.device,
            report,
            opts.num_threads,
            names,
            tree,
            _foreign_ops(imported),
            imported.mutations,
            requirements(tvm_target),
        )
        set_metadata(built.executable, signature.to_json())
        logger.debug("compiled: %d node(s) run in LibTorch", len(imported.records))
        return CompiledModule(
            built.executable,
            signature,
            ir_module=built.lowered,
            fallbacks=imported.records,
            report=report,
        )
    raise VerificationError(
        f"byoc_torch.compile: verification did not settle after {_defaults.MAX_COMPILE_ROUNDS} "
        "rounds; moved "
        f"so far: {sorted(extra)}"
    )


@dataclass(frozen=True)
class _Built:
    """One build of the model: what was imported, partitioned, lowered and built."""

    imported: ImportResult
    partitioned: tvm.IRModule
    lowered: tvm.IRModule
    executable: tvm.runtime.Module  # its signature metadata is provisional (no report)


class _Session:
    """One compile's imports and builds, memoized by the nodes they move to LibTorch: the
    whole-model check builds its candidates here, and the final round reuses the chosen one
    (its signature, report included, is set on the executable afterwards)."""

    def __init__(
        self,
        ep: torch.export.ExportedProgram,
        opts: Options,
        tvm_target,
        device: str,
        names: Sequence[str] = (),
        tree: InputTree | None = None,
    ):
        self.ep, self.opts, self.tvm_target, self.device = ep, opts, tvm_target, device
        self.names, self.tree = names, tree
        # The signature without the report (set on each build until the final one is known);
        # made here, so that a mistake in it is not taken for a build failure.
        self.provisional = self.signature(None).to_json()
        self._imports: dict[tuple, ImportResult] = {}
        self._builds: dict[tuple, _Built] = {}
        self.tuning_budget = None  # tune_trials, in total for this compile's tune() calls
        if opts.tune_trials:
            from .tuning import TrialBudget

            self.tuning_budget = TrialBudget(opts.tune_trials)

    @staticmethod
    def _key(records: dict[str, FallbackRecord]) -> tuple:
        return tuple(sorted((r.node, r.op, str(r.reason), r.detail) for r in records.values()))

    def imported(self, records: dict[str, FallbackRecord]) -> ImportResult:
        key = self._key(records)
        if key not in self._imports:
            self._imports[key] = _import(self.ep, self.opts, records)
        return self._imports[key]

    def signature(self, report: Report | None) -> Signature:
        return _signature(
            self.ep,
            self.device,
            report,
            self.opts.num_threads,
            self.names,
            self.tree,
            cpu=requirements(self.tvm_target),
        )

    def build(self, records: dict[str, FallbackRecord], executor: str = "torchscript") -> _Built:
        """The model built with ``records`` moved to LibTorch (raises what the build raises).
        With ``executor="aot_inductor"`` (the whole-model check's candidate) it is a build of
        its own whose LibTorch subgraphs run AOTInductor packages."""
        key = (self._key(records), executor)
        if key not in self._builds:
            imported = self.imported(records)
            partitioned = PartitionForTorch(**_partition_kwargs(self.opts))(imported.mod)
            lowered = LowerTorchFunctions(metadata=self.provisional)(partitioned)
            lowered = _tuned(lowered, self.opts, self.tvm_target, self.tuning_budget)
            executable = schedules.build(lowered, self.tvm_target)
            built = _Built(imported, partitioned, lowered, executable)
            if executor != "torchscript":
                _install_packages(self, built)
            self._builds[key] = built
        return self._builds[key]


def _import(ep, opts: Options, extra: dict | None = None) -> ImportResult:
    """The frontend's import, as the rest of compile needs it: with
    ``keep_params_as_input=True`` the imported ``main`` takes the parameters as inputs (what
    ``from_exported_program`` returns); the compiled model takes the model's inputs only, so
    the parameters are bound into it here, once, and every call uses them."""
    imported = import_with_records(ep, opts, extra)
    if not opts.keep_params_as_input:
        return imported
    return dataclasses.replace(imported, mod=bind_kept_params(imported.mod))


def bind_kept_params(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` whose ``main`` has its ``params`` attribute (kept parameters, trailing inputs
    of ``main``) bound as constants."""
    detached, params = relax.frontend.detach_params(mod)
    values = params.get("main")
    if not values:
        return mod
    kept = list(detached["main"].params)[-len(values) :]
    return relax.transform.BindParams("main", dict(zip(kept, values, strict=True)))(detached)


def _measured_placement(session: _Session, inputs):
    """Records of the nodes measured placement moves to LibTorch, and what it measured. A
    failure of placement itself never fails the compile: the model then runs as with
    ``placement="tvm"``, and the report says why."""
    from .compile_cache import CompileCache
    from .placement import place
    from .reporting import PlacementResult

    opts = session.opts
    try:
        records, result = place(
            session.imported({}),
            inputs,
            session.tvm_target,
            tvm.device(session.device),
            opts.placement_cache,
            compile_model=functools.partial(_compile_for_crossing, target=session.tvm_target),
            tune_trials=opts.tune_trials,
            tuning_database=opts.tuning_database,
            tuning_budget=session.tuning_budget,
            torch_executor=opts.torch_executor,
            compile_cache=CompileCache(opts.cache_dir) if opts.cache_dir is not None else None,
        )
    except Exception as err:  # an optimization must not break a model that compiles
        logger.debug("measured placement failed; keeping TVM's placement: %s", err)
        first = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        return {}, PlacementResult(error=first)
    if not result.regions:
        return records, result
    return _whole_model_check(session, records, result, inputs), result


def _compile_for_crossing(model, inputs, torch_executed_ops, *, target) -> CompiledModule:
    """What placement times one crossing on (:data:`byoc_torch.placement.measure.CompileModel`):
    ``model`` compiled with TVM's placement, unverified, ``torch_executed_ops`` in LibTorch."""
    return compile(
        model,
        inputs,
        target,
        verify=False,
        placement="tvm",
        torch_executed_ops=list(torch_executed_ops),
    )


def _whole_model_check(session: _Session, searched: dict, result, inputs):
    """Build the searched placement and the single-backend ones, time them whole, keep the
    fastest (:mod:`byoc_torch.placement.end_to_end`); record what was measured in
    ``result``. Returns the records of the chosen placement."""
    from .aot_inductor import compiler_missing
    from .placement.end_to_end import ALL_AOTI, candidates, choose
    from .placement.measure import MeasurementCache

    device = tvm.device(session.device)

    def build(records: dict, executor: str = "torchscript"):
        main = relax.VirtualMachine(session.build(records, executor).executable, device)["main"]
        args = [tvm_ready(x.contiguous()) for x in inputs]
        return lambda: main(*args)

    aoti_skipped = _aoti_candidate_skipped(session.opts, session.device, result, compiler_missing)
    options = candidates(searched, result, aot_inductor=aoti_skipped is None)
    cache = MeasurementCache(session.opts.placement_cache)
    cached = _cached_check(cache, result, options)
    if cached is not None:  # every region came from the cache, and so does the check
        chosen, measured, skipped = cached
    else:
        noise: list[str] = []
        with torch.no_grad():
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
    threshold = _defaults.AOTI_MIN_SUBGRAPH_MS
    if opts.torch_executor == "auto" and (all_torch is None or all_torch < threshold):
        return f"all-LibTorch modelled {format_ms(all_torch)} ms, under {threshold} ms"
    return None


def _choose_executors(session: _Session, built: _Built, inputs, placement=None) -> dict:
    """Each LibTorch subgraph's executor, TorchScript or AOTInductor (``Options.torch_executor``,
    :mod:`byoc_torch.aot_inductor`); the packages chosen are installed in the built module.
    When the whole-model check kept "all-aot-inductor", timed end to end, its subgraphs run
    AOTInductor (still checked against the TorchScript), not timed again one by one."""
    from .aot_inductor import AOT_INDUCTOR, choose_executors
    from .compile_cache import CompileCache
    from .placement.end_to_end import ALL_AOTI

    opts = session.opts
    mode, why = opts.torch_executor, "torch_executor='aot_inductor'"
    if placement is not None and placement.chosen == ALL_AOTI and mode == "auto":
        mode, why = AOT_INDUCTOR, f"the whole-model check kept {ALL_AOTI}"
    run = None
    if inputs is not None:
        main = relax.VirtualMachine(built.executable, tvm.device(session.device))["main"]
        args = [tvm_ready(x.contiguous()) for x in inputs]

        def run():
            with torch.no_grad():
                return main(*args)

    cache = CompileCache(opts.cache_dir) if opts.cache_dir is not None else None
    return choose_executors(
        running_torch_modules(built.executable),
        built.partitioned,
        built.imported.ep,
        run,
        mode,
        cache,
        session.device,
        why,
    )


def _chosen_key(options) -> str:
    """Where the check's choice is filed: by its candidates, which differ with and without
    the AOTInductor candidate."""
    return "whole:chosen:" + ",".join(c.name for c in options)


def _install_packages(session: _Session, built: _Built) -> None:
    """Every LibTorch subgraph of ``built`` runs an AOTInductor package (those that compile)."""
    from .aot_inductor import AOT_INDUCTOR, choose_executors
    from .compile_cache import CompileCache

    opts = session.opts
    cache = CompileCache(opts.cache_dir) if opts.cache_dir is not None else None
    modules = running_torch_modules(built.executable)
    ep = built.imported.ep
    choose_executors(modules, built.partitioned, ep, None, AOT_INDUCTOR, cache, session.device)


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


def _tuned(lowered: tvm.IRModule, opts: Options, tvm_target, budget) -> tvm.IRModule:
    """``lowered`` with the tuning options applied (MetaSchedule, within what is left of the
    compile's trials), or as it is."""
    if not opts.tune_trials and opts.tuning_database is None:
        return lowered
    from .tuning import tune

    try:
        return tune(
            lowered,
            tvm_target,
            trials=opts.tune_trials,
            database=opts.tuning_database,
            budget=budget,
        )
    except Exception as err:  # tuning is an optimization: a MetaSchedule failure must not
        # fail the compile
        first = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        warnings.warn(
            f"byoc_torch.compile: tuning failed ({first}); the TVM kernels are built untuned",
            stacklevel=2,
        )
        return lowered


def _flat_export(model, example_inputs, kwargs, dynamic_shapes, opts: Options):
    """The program as exported (release it with ``release_program``), the program TVM imports
    (flat tensor inputs), the input tree, the tensor inputs' names and the example's flat
    tensors (empty when there is no example)."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    exported = export_program(
        model, example_inputs, dynamic_shapes, opts.torch_executed_modules, kwargs
    )
    ep = exported
    if isinstance(model, torch.export.ExportedProgram) and ep.example_inputs is not None:
        args, kwargs = ep.example_inputs
    else:
        args, kwargs = tuple(example_inputs), dict(kwargs or {})
    ep, tree, names = flat_program(ep, args, kwargs)
    flat = tuple(tree.tensors(args, kwargs)) if tree is not None else tuple(args)
    return exported, ep, tree, names, flat


def _example_inputs(ep, example_inputs) -> tuple | None:
    """The tensors verification and placement run on: the example inputs, or the program's
    own."""
    if example_inputs:
        inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
        return tuple(inputs)
    stored = getattr(ep, "example_inputs", None)
    if stored and not stored[1] and all(isinstance(x, torch.Tensor) for x in stored[0]):
        return tuple(stored[0])
    return None


def _derived_with_warning(ep) -> tuple | None:
    """Inputs for verification when there are no example inputs (:func:`derived_inputs`),
    with a warning that says so."""
    derived = derived_inputs(ep)
    what = "random inputs derived from the program's signature"
    if derived is None:
        what = "nothing: inputs cannot be derived (an input is not a tensor), so it is skipped"
    warnings.warn(
        f"byoc_torch.compile: no example inputs; verification runs on {what}", stacklevel=3
    )
    return derived


def derived_inputs(ep: torch.export.ExportedProgram, seed: int = 0) -> tuple | None:
    """Random tensors with the shapes and dtypes torch.export recorded for the user inputs
    (a dynamic dim takes its example size), made with a generator of their own (PyTorch's
    global generator is left alone); None when an input is not a tensor. Floating inputs are
    standard normal, integers in [0, 4) (small enough to be valid indices), bools random."""
    user = set(ep.graph_signature.user_inputs)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for node in ep.graph.nodes:
        if node.op != "placeholder" or node.name not in user:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            return None
        shape = [int(d.node.hint) if isinstance(d, torch.SymInt) else int(d) for d in val.shape]
        if val.dtype.is_floating_point or val.dtype.is_complex:
            x = torch.randn(shape, generator=gen).to(val.dtype)
        elif val.dtype == torch.bool:
            x = torch.rand(shape, generator=gen) > 0.5
        else:
            x = torch.randint(0, 4, shape, generator=gen).to(val.dtype)
        out.append(x)
    return tuple(out)


def _builds(ep, opts: Options, extra: dict, names: list[str], target) -> bool:
    """Does the model build with ``names`` (and ``extra``) moved to LibTorch?"""
    forced = dict(extra)
    for name in names:
        forced.setdefault(name, FallbackRecord(name, name, Reason.BUILD))
    try:
        imported = _import(ep, opts, forced)
        mod = PartitionForTorch(**_partition_kwargs(opts))(imported.mod)
        schedules.build(LowerTorchFunctions()(mod), target)
    except Exception:  # any failure counts as "does not build"
        return False
    return True


def _agrees(ep, opts: Options, extra: dict, blamed: dict, inputs, target, names: list[str]) -> bool:
    """Do the outputs agree with PyTorch's with ``names`` (of ``blamed``) and ``extra`` moved
    to LibTorch?"""
    forced = {**extra, **{n: blamed[n] for n in names}}
    try:
        imported = _import(ep, opts, forced)
        mod = PartitionForTorch(**_partition_kwargs(opts))(imported.mod)
        return outputs_agree(imported, mod, inputs, target)
    except Exception as err:  # a variant that does not build or run does not agree
        logger.debug("verification: moving %s fails: %s", names, err)
        return False


def _model_name(model) -> str:
    return type(model).__name__


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
        return report_from_ir(PartitionForTorch(**_partition_kwargs(opts))(model))
    exported, ep = _flat_export(model, example_inputs, kwargs, dynamic_shapes, opts)[:2]
    try:
        imported = _import(ep, opts)
        partitioned = PartitionForTorch(**_partition_kwargs(opts))(imported.mod)
        return build_report(imported, partitioned, model_name=_model_name(model))
    finally:
        release_program(exported)


def _partition_kwargs(opts: Options) -> dict:
    """The pass's options: the Relax op names (the ATen names acted in the frontend)."""
    return {"torch_executed_ops": [n for n in opts.torch_executed_ops if is_relax_op_name(n)]}
