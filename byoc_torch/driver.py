"""``byoc_torch.compile``: nn.Module or ExportedProgram -> CompiledModule.

Place in the data flow: the driver. It runs the stages in order:

    torch.export  ->  frontend (torchops)  ->  partition  ->  codegen/lowering  ->  relax.build

and wraps the executable in :class:`byoc_torch.compiled.CompiledModule`.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Sequence

import torch
import tvm
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
from tvm import relax

from . import _defaults
from .codegen import LowerTorchFunctions
from .compiled import CompiledModule
from .errors import ExportError, FallbackError, VerificationError
from .frontend import import_with_records
from .frontend.modules import forced_module_for_op, hide_forced_modules
from .frontend.outputs import output_leaves
from .names import dtype_name
from .options import Options
from .partition import PartitionForTorch
from .records import FallbackRecord, Reason
from .reporting import Report, build_report, report_from_ir
from .signature import InputSpec, Signature, output_structure
from .threads import apply_thread_budget
from .verify import (
    build_candidates,
    diverging_nodes,
    find_build_culprit,
    minimal_blame,
    outputs_agree,
)

logger = logging.getLogger(__name__)

__all__ = ["compile", "export_program", "report"]


def export_program(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: Sequence[torch.Tensor],
    dynamic_shapes=None,
    torch_executed_modules: Sequence = (),
) -> torch.export.ExportedProgram:
    """``model`` as an ExportedProgram (exported in eval mode when it is an nn.Module), with
    the ``torch_executed_modules`` hidden behind opaque ops (see
    :mod:`byoc_torch.frontend.modules`)."""
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
    model = model.eval()
    inputs = tuple(example_inputs)
    with hide_forced_modules(model, inputs, torch_executed_modules), torch.no_grad():
        try:
            return torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes)
        except GuardOnDataDependentSymNode as err:
            first = str(err).strip().splitlines()[0]
            raise ExportError(
                f"byoc_torch.compile: torch.export cannot capture {type(model).__name__}: its "
                f"Python code branches on a tensor's value ({first}). Run the submodule that "
                "branches in LibTorch with torch_executed_modules=[...] (it is scripted whole), "
                "write the branch as torch.cond(pred, true_fn, false_fn, operands), or take the "
                "torch.compile path (torch.compile runs the branch in Python and hands only "
                "branch-free graphs to its backend)"
            ) from err


def _signature(
    ep: torch.export.ExportedProgram,
    device: str,
    report: Report,
    num_threads: int | None,
    foreign_ops: tuple[str, ...] = (),
) -> Signature:
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
        shape = tuple(
            str(s.node.expr) if isinstance(s, torch.SymInt) else int(s) for s in val.shape
        )
        specs.append(InputSpec(node.name, dtype_name(val.dtype), shape))
    return Signature(
        tuple(specs),
        output_structure(ep.call_spec.out_spec, output_leaves(ep)),
        device,
        report.to_dict(),
        num_threads,
        _dim_ranges(ep, specs),
        foreign_ops,
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
        lower = int(vr.lower) if vr.lower.is_finite else 0
        upper = int(vr.upper) if vr.upper.is_finite else None
        ranges[name] = (lower, upper)
    return ranges


def _device_of(target) -> str:
    kind = target.get("kind") if isinstance(target, dict) else str(target).split()[0]
    return "cuda" if str(kind) == "cuda" else "cpu"


def compile(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: Sequence[torch.Tensor] = (),
    target: str | dict = "llvm",
    *,
    dynamic_shapes=None,
    **options,
) -> CompiledModule:
    """Compile ``model``: TVM compiles what its importer handles, LibTorch runs the rest.

    Args:
        model: an ``nn.Module`` (exported here with ``torch.export``) or an ExportedProgram.
        example_inputs: tensors to export with (ignored for an ExportedProgram).
        target: a TVM target, ``"llvm"`` or a dict such as ``{"kind": "llvm"}``.
        dynamic_shapes: torch.export's ``dynamic_shapes`` (e.g. ``{"x": {0: Dim("batch")}}``);
            the result then runs every size in range without recompiling.
        **options: fields of :class:`byoc_torch.Options`.
    """
    opts = Options.from_kwargs(options)
    apply_thread_budget(opts.num_threads)  # verification runs the model too
    ep = export_program(model, example_inputs, dynamic_shapes, opts.torch_executed_modules)
    _check_dense_inputs(ep)
    tvm_target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    inputs = _example_inputs(ep, example_inputs)
    checked = inputs if inputs is not None or not opts.verify else _derived_with_warning(ep)
    extra: dict[str, FallbackRecord] = {}  # nodes moved by placement, build failures, verification
    placement = None
    if opts.placement == "measured" and inputs is not None and not opts.require_full_compilation:
        placed, placement = _measured_placement(ep, opts, inputs, tvm_target, target)
        extra.update(placed)
    for _ in range(_defaults.MAX_COMPILE_ROUNDS):
        imported = import_with_records(ep, opts, extra)
        mod = PartitionForTorch(**_partition_kwargs(opts))(imported.mod)
        report = build_report(imported, mod, model_name=_model_name(model))
        report.placement = placement
        signature = _signature(
            ep, _device_of(target), report, opts.num_threads, _foreign_ops(imported)
        )
        lowered = LowerTorchFunctions(metadata=signature.to_json())(mod)
        if opts.tune_trials or opts.tuning_database is not None:
            from .tuning import tune

            lowered = tune(
                lowered, tvm_target, trials=opts.tune_trials, database=opts.tuning_database
            )
        try:
            executable = relax.build(lowered, target=tvm_target)
        except Exception as err:  # tie the failure to one TVM-side node, move it, retry
            record = find_build_culprit(
                build_candidates(imported),
                lambda names: _builds(ep, opts, extra, names, tvm_target),
                err,
            )
            logger.debug("build failure blamed on %s: %s", record.node, record.detail)
            extra[record.node] = record
            continue
        if opts.verify and checked is not None and imported.native_vars:
            try:
                blamed = diverging_nodes(imported, mod, checked, tvm_target)
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
            blamed = {k: v for k, v in blamed.items() if k not in extra}
            if len(blamed) > 1:
                agrees = functools.partial(_agrees, ep, opts, extra, blamed, checked, tvm_target)
                blamed = minimal_blame(blamed, agrees)
            if blamed:
                extra.update(blamed)
                continue
        logger.debug("compiled: %d node(s) run in LibTorch", len(imported.records))
        return CompiledModule(
            executable, signature, ir_module=lowered, fallbacks=imported.records, report=report
        )
    raise VerificationError(
        f"byoc_torch.compile: verification did not settle after {_defaults.MAX_COMPILE_ROUNDS} "
        "rounds; moved "
        f"so far: {sorted(extra)}"
    )


def _measured_placement(ep, opts: Options, inputs, tvm_target, target):
    """Records of the nodes measured placement moves to LibTorch, and what it measured. A
    failure of placement itself never fails the compile: the model then runs as with
    ``placement="tvm"``, and the report says why."""
    from .placement import place
    from .reporting import PlacementResult

    try:
        return place(
            import_with_records(ep, opts),
            inputs,
            tvm_target,
            tvm.device(_device_of(target)),
            opts.placement_cache,
            tune_trials=opts.tune_trials,
            tuning_database=opts.tuning_database,
        )
    except Exception as err:  # an optimization must not break a model that compiles
        logger.debug("measured placement failed; keeping TVM's placement: %s", err)
        first = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        return {}, PlacementResult(error=first)


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
        imported = import_with_records(ep, opts, forced)
        mod = PartitionForTorch(**_partition_kwargs(opts))(imported.mod)
        relax.build(LowerTorchFunctions()(mod), target=target)
    except Exception:  # any failure counts as "does not build"
        return False
    return True


def _agrees(ep, opts: Options, extra: dict, blamed: dict, inputs, target, names: list[str]) -> bool:
    """Do the outputs agree with PyTorch's with ``names`` (of ``blamed``) and ``extra`` moved
    to LibTorch?"""
    forced = {**extra, **{n: blamed[n] for n in names}}
    try:
        imported = import_with_records(ep, opts, forced)
        mod = PartitionForTorch(**_partition_kwargs(opts))(imported.mod)
        return outputs_agree(imported, mod, inputs, target)
    except Exception as err:  # a variant that does not build or run does not agree
        logger.debug("verification: moving %s fails: %s", names, err)
        return False


def _model_name(model) -> str:
    return type(model).__name__


def report(
    model: torch.nn.Module | torch.export.ExportedProgram | tvm.IRModule,
    example_inputs: Sequence[torch.Tensor] = (),
    *,
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
    ep = export_program(model, example_inputs, dynamic_shapes, opts.torch_executed_modules)
    imported = import_with_records(ep, opts)
    partitioned = PartitionForTorch(**_partition_kwargs(opts))(imported.mod)
    return build_report(imported, partitioned, model_name=_model_name(model))


def _partition_kwargs(opts: Options) -> dict:
    return {"torch_executed_ops": opts.torch_executed_ops}
