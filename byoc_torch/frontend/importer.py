"""Frontend: ExportedProgram -> Relax IRModule in which every node TVM cannot handle is a torchop.

Place in the data flow: first stage. ``byoc_torch.compile`` exports the model with
``torch.export``, then calls :func:`import_with_records`; the partition pass follows.

TVM's own importer (``ExportedProgramImporter``, apache-tvm 0.27) runs unchanged: its
translation loop, parameter binding and ``torch.cond`` branch import are TVM's. byoc_torch
hooks in at one seam, the importer's *convert map* (op name -> converter), which
:meth:`_FallbackImporter.create_convert_map` replaces by a map that routes every op -- the ones
TVM has a converter for and the ones it has none for -- through :meth:`_FallbackImporter.convert`.
That decides per node:

* the node falls back (missing from TVM's map, forced by an option, on the deny-list, or a
  forced module): it becomes one ``relax.torchop`` carrying its TorchScript;
* it holds a complex value: it waits for its real-valued sink (:mod:`.complex`);
* otherwise TVM's converter runs. If it raises, or its result's type contradicts torch.export's
  metadata, the import stops and starts again from scratch with that node forced to LibTorch
  (a converter may already have emitted bindings); at most one restart per failing node.

Because the hook is the map, nodes inside ``torch.cond`` branches (which TVM imports through
the same map) get the same treatment as the main graph.

Why not TVM's public seam, ``from_exported_program(..., custom_convert_map={op name:
converter})``? It was checked against apache-tvm 0.27 and cannot carry the decision for every
node of every program:

* the module-level ``from_exported_program`` makes its own importer, and inside ``torch.cond``
  branches TVM translates with no custom ops (``_translate_fx_graph(graph_module, nodes, {})``),
  so there a custom converter is called as ``convert_map[name](node)`` without the importer: it
  cannot reach the importer's block builder and environment to emit a torchop or to run TVM's
  own converter for the node (with an importer instance of byoc_torch's own, passed to its
  ``from_exported_program`` method, a closure could reach it; the third point remains);
* its keys are ``node.target.__name__`` (``"scale.default"``): the map has to be rebuilt for
  each program from its node names, branches included, and ops of two namespaces that share a
  name share a key;
* a program whose outputs are all constants (dropped from the graph and kept in the
  signature, :mod:`.outputs`) has no Relax output, which TVM's ``_flatten_output_args``
  rejects ("Exported graph produced no Relax outputs"); only a subclass can change that.

So a subclass is needed in any case, and overriding its one map factory
(``create_convert_map``) is the narrowest hook: one place that covers every op name (TVM's
pre-check of unsupported names included) and the branches alike.
"""

from __future__ import annotations

import functools
import logging
import operator
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import tvm
from torch import fx
from tvm import relax, tirx
from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

import relay_ext

from ..errors import FallbackError, FullCompilationError, first_line
from ..ir import close_blocks
from ..names import dtype_name, op_key
from ..options import Options
from ..records import FallbackRecord, Reason
from .complex import FOREIGN_DTYPES, cluster_of, is_sink, produces_foreign
from .decompose import decompose
from .deny_list import deny_list_match
from .modules import forced_module_for_op
from .outputs import mutated_inputs, tensor_outputs
from .random import draws
from .small_blocks import small_native_blocks
from .torchscript import is_scalar_node, output_metas, script_for_node, script_for_nodes
from .types import SymbolTable, type_mismatch

logger = logging.getLogger(__name__)

__all__ = ["ImportResult", "from_exported_program", "import_with_records"]


class _ConverterRaised(Exception):
    """TVM's conversion of ``node`` failed (or has the wrong type): import again without it."""

    def __init__(self, node: fx.Node, error: BaseException, reason: Reason) -> None:
        super().__init__(f"{node.name}: {error}")
        self.node = node
        self.error = error
        self.reason = reason


class _NotAValue:
    """Stands for a node's value that exists only inside LibTorch: a scalar TVM cannot compute
    (torchop scripts that use it recompute it) or a complex tensor waiting for its sink."""

    def __init__(self, node: fx.Node) -> None:
        self.node = node

    def __repr__(self) -> str:
        return f"<{self.node.name}: computed only inside LibTorch>"


class _RoutedConvertMap(dict):
    """TVM's convert map, seen by TVM's translation loop through the importer's decision.

    TVM looks ops up by ``node.target.__name__``: first to refuse a graph with unknown ops
    (``name in map``), then per node (``map[name](node)``). Here every name is known, and every
    lookup returns the importer's :meth:`~_FallbackImporter.convert` bound to TVM's converter
    for that name (or None when TVM has none).
    """

    def __init__(self, tvm_map: Mapping[str, Callable], route: Callable) -> None:
        super().__init__(tvm_map)
        self._route = route

    def __contains__(self, name: object) -> bool:
        return True

    def __getitem__(self, name: str) -> Callable:
        return functools.partial(self._route, dict.get(self, name))

    def tvm_supports(self, name: str) -> bool:
        """Does TVM's importer have a converter for ``name``?"""
        return dict.__contains__(self, name)


class _FallbackImporter(ExportedProgramImporter):
    """TVM's ExportedProgram importer, with torchops for the nodes it cannot handle."""

    def __init__(self, options: Options, forced: Mapping[str, FallbackRecord]) -> None:
        self.options = options
        self.forced = dict(forced)  # node name -> record
        self.records: dict[str, FallbackRecord] = {}
        self._data_dims: dict[str, tirx.Var] = {}  # torch symbol -> TIR var, see match_cast
        self.native_vars: dict[str, relax.Var] = {}
        super().__init__()  # builds the convert map through create_convert_map below

    @staticmethod
    def _flatten_output_args(output_args) -> tuple[relax.Expr, ...]:
        """TVM's flattening of the graph's outputs, allowing none at all: a model whose
        outputs are all constants (kept in the signature, see :mod:`.outputs`) returns an
        empty tuple."""
        if isinstance(output_args, list | tuple) and not output_args:
            return ()
        return ExportedProgramImporter._flatten_output_args(output_args)

    def create_convert_map(self) -> dict[str, Callable]:
        return _RoutedConvertMap(super().create_convert_map(), self.convert)

    # -- the decision, per node ------------------------------------------------------------------
    def fallback_reason(self, node: fx.Node) -> FallbackRecord | None:
        """Why ``node`` must run in LibTorch, or None when TVM may convert it."""
        key = op_key(node.target)
        if node.name in self.forced:
            return self.forced[node.name]
        module = forced_module_for_op(node.target)
        if module is not None:
            op = f"module {module.qualname} ({module.type_name})"
            return FallbackRecord(node.name, op, Reason.FORCED_MODULE)
        if self.options.is_forced_op(node.target):
            return FallbackRecord(node.name, key, Reason.FORCED_OP)
        if node.name in self.options.torch_executed_nodes:
            return FallbackRecord(node.name, key, Reason.FORCED_NODE)
        if draws(node):
            return FallbackRecord(node.name, key, Reason.RANDOM)
        if not self.convert_map.tvm_supports(node.target.__name__):
            return FallbackRecord(node.name, key, Reason.UNSUPPORTED)
        known = deny_list_match(node)  # also with verify=False: these are known wrong
        if known is not None:
            return FallbackRecord(node.name, key, Reason.DENY_LIST, known)
        return None

    def convert(self, tvm_converter: Callable | None, node: fx.Node) -> object:
        """The value of ``node`` in Relax: a torchop, a deferred complex value, or TVM's."""
        if produces_foreign(node):
            return _NotAValue(node)  # emitted with its sink, see .complex
        if is_sink(node):
            return self._emit_cluster(cluster_of(node))
        record = self.fallback_reason(node)
        if record is not None:
            return self._emit_fallback(node, record)
        try:
            value = tvm_converter(node)
        except Exception as err:  # any converter failure means: run it in LibTorch
            raise _ConverterRaised(node, err, Reason.CONVERTER) from err
        mismatch = type_mismatch(node, value)
        if mismatch is not None:
            # An element of a tuple has the wrong type: blame the op that made the tuple.
            culprit = node
            while culprit.target is operator.getitem and isinstance(culprit.args[0], fx.Node):
                culprit = culprit.args[0]
            raise _ConverterRaised(culprit, TypeError(mismatch), Reason.WRONG_TYPE)
        if isinstance(value, relax.Var) and isinstance(value.ty, relax.TensorType):
            if not self._computes_nothing(node):
                self.native_vars[node.name] = value
        return value

    def _computes_nothing(self, node: fx.Node) -> bool:
        """Whether TVM's value of ``node`` is no computation of TVM's, so nothing to verify
        or blame: an op that returns nothing (``_assert_tensor_metadata``, which TVM converts
        to its input's var: as a native var it would take that input's place in verification,
        the same var under another name), or an element of a LibTorch op's tuple."""
        schema = getattr(node.target, "_schema", None)
        if schema is not None and not schema.returns:
            return True
        source = node.args[0] if node.target is operator.getitem and node.args else None
        return isinstance(source, fx.Node) and source.name in self.records

    # -- emitting torchops -----------------------------------------------------------------------
    def _emit_cluster(self, members: list[fx.Node]) -> relax.Expr:
        """One torchop for a sink and the complex-valued nodes it depends on."""
        sink = members[-1]
        metas = output_metas(sink)
        if metas is None or any(m.dtype in FOREIGN_DTYPES for m in metas):
            raise FallbackError(
                f"node {sink.name} ({op_key(sink.target)}) passes a complex or non-tensor value "
                "to TVM; byoc_torch keeps complex values inside LibTorch, so convert them to "
                "real tensors (e.g. torch.view_as_real) before TVM-supported ops"
            )
        if isinstance(sink.meta["val"], torch.Tensor):
            outputs: list[tuple[fx.Node, int | None]] = [(sink, None)]
        else:
            outputs = [(sink, k) for k in range(len(metas))]
        ns = script_for_nodes(members, outputs)
        symbols = SymbolTable()
        in_types = [symbols.tensor_type(n.meta["val"]) for n in ns.inputs]
        out_types = [symbols.tensor_type(_meta_at(n, k)) for n, k in outputs]
        names = "+".join(op_key(n.target) for n in members if n.target is not operator.getitem)
        args = [self._relax_input(n, members[0]) for n in ns.inputs]
        call = relay_ext.torchop(
            args,
            script=ns.source,
            in_types=in_types,
            out_type=relax.TupleType(out_types),
            op_name=names,
            nodes=[n.name for n in members],
        )
        result = self.block_builder.emit(call, name_hint=sink.name)
        for n in members:
            record = self.fallback_reason(n)
            if record is None or record.reason != Reason.UNSUPPORTED:
                record = FallbackRecord(n.name, op_key(n.target), Reason.COMPLEX)
            self.records[n.name] = record
        if outputs[0][1] is None:
            return self.block_builder.emit(relax.TupleGetItem(result, 0), name_hint=sink.name)
        return relax.Tuple([relax.TupleGetItem(result, k) for k in range(len(outputs))])

    def _relax_input(self, n: fx.Node, consumer: fx.Node) -> relax.Expr:
        value = self.env.get(n)
        if not isinstance(value, relax.Expr):
            raise FallbackError(f"input {n.name} of {consumer.name} is not a tensor in Relax")
        return value

    def _emit_fallback(self, node: fx.Node, record: FallbackRecord):
        if is_scalar_node(node):
            # A scalar (e.g. a symbolic size) TVM cannot compute: torchop scripts that use it
            # recompute it themselves; a TVM consumer will raise and be moved to LibTorch too.
            self.records[node.name] = record
            return _NotAValue(node)
        if output_metas(node) is None:
            if not node.users:
                logger.debug("dropping unsupported node %s with no tensor output", node.name)
                self.records[node.name] = record
                return None
            raise FallbackError(
                f"node {node.name} ({record.op}) is {record.reason} and does not produce tensors"
            )
        foreign = [m.dtype for m in output_metas(node) if m.dtype in FOREIGN_DTYPES]
        if foreign:
            raise FallbackError(
                f"node {node.name} ({record.op}) produces {foreign[0]} values that leave "
                "LibTorch (as a model output or to a TVM op that cannot take them); convert them "
                "to real tensors first, e.g. with torch.view_as_real"
            )
        ns = script_for_node(node)
        symbols = SymbolTable()
        in_types = [symbols.tensor_type(n.meta["val"]) for n in ns.inputs]
        out_metas = output_metas(node)
        out_types = [symbols.tensor_type(m) for m in out_metas]
        out_type = relax.TupleType(out_types) if ns.returns_tuple else out_types[0]
        args = [self._relax_input(n, node) for n in ns.inputs]
        call = relay_ext.torchop(
            args,
            script=ns.source,
            in_types=in_types,
            out_type=out_type,
            op_name=record.op,
            modules=ns.modules,
            nodes=[node.name],
        )
        self.records[node.name] = record
        logger.debug("node %s (%s) -> torchop: %s", node.name, record.op, record.reason)
        var = self.block_builder.emit(call, name_hint=node.name)
        return self._with_data_dependent_shape(var, node)

    def _with_data_dependent_shape(self, var: relax.Var, node: fx.Node) -> relax.Var:
        """Give a result whose size depends on data (e.g. ``x[x > 0]``) a symbolic shape.

        The torchop's type keeps only the rank of such a result; TVM cannot lower ops on it.
        ``match_cast`` binds fresh symbolic dims (one per torch symbol, e.g. ``u0``, shared
        across the function) from the runtime shape, so TVM ops downstream compile.
        """
        ty = var.ty
        meta = node.meta.get("val")
        if not isinstance(ty, relax.TensorType) or ty.shape is not None:
            return var
        if not isinstance(meta, torch.Tensor):
            return var
        dims = []
        for d in meta.shape:
            if isinstance(d, torch.SymInt):
                name = str(d.node.expr)
                if name not in self._data_dims:
                    self._data_dims[name] = tirx.Var(name if name.isidentifier() else "d", "int64")
                dims.append(self._data_dims[name])
            else:
                dims.append(tirx.IntImm("int64", int(d)))
        target = relax.TensorType(dims, dtype=dtype_name(meta.dtype))
        return self.block_builder.match_cast(var, target, name_hint=f"{node.name}_sized")


def _meta_at(node: fx.Node, k: int | None) -> torch.Tensor:
    val = node.meta["val"]
    return val if k is None else val[k]


def _output_nodes(graph: fx.Graph) -> list[fx.Node]:
    out = next(n for n in reversed(graph.nodes) if n.op == "output")
    return list(out.all_input_nodes)


@dataclass(frozen=True)
class ImportResult:
    """What the frontend produced: the module, why each fallback node falls back (graph
    order), and the (decomposed) FX graph it imported."""

    mod: tvm.IRModule
    records: list[FallbackRecord]
    graph: fx.Graph
    ep: torch.export.ExportedProgram  # the decomposed program that was imported
    native_vars: dict[str, relax.Var]  # FX node name -> Relax var, for TVM-converted tensors
    notes: tuple[str, ...] = ()  # what the import did differently, and why (e.g. decomposition)
    # Positions (among the user inputs) of the inputs the program updates in place; main
    # returns their new values after the outputs (frontend/outputs.py).
    mutations: tuple[int, ...] = ()


def _import_once(ep: torch.export.ExportedProgram, importer: _FallbackImporter) -> tvm.IRModule:
    try:
        return _import_or_close(ep, importer)
    except _ConverterRaised:
        raise
    except Exception:
        # A value that exists only in LibTorch reached the model's outputs: say so.
        for node in _output_nodes(ep.graph):
            if isinstance(importer.env.get(node), _NotAValue):
                raise FallbackError(
                    f"model output {node.name} is a scalar computed in LibTorch; byoc_torch "
                    "returns tensors only"
                ) from None
        raise


def _import_or_close(ep: torch.export.ExportedProgram, importer: _FallbackImporter) -> tvm.IRModule:
    """TVM's import of ``ep`` (inputs sized by an expression given dims of their own,
    :func:`_own_input_dims`); when it raises, the importer's block builder is closed first
    (:func:`byoc_torch.ir.close_blocks`: the importer may outlive this call in the traceback)."""
    try:
        return _own_input_dims(_translate(ep, importer))
    except BaseException:
        if importer.block_builder is not None:
            close_blocks(importer.block_builder)
        raise


def _own_input_dims(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` whose main takes every input sized by an expression with a dim of its own.

    ``dynamic_shapes={2: 2 * Dim("h")}`` makes an input dim ``2*h``. TVM's importer types the
    parameter ``R.Tensor((1, 2, 2*h, 8))``, and the VM cannot recover ``h`` from it ("PrimExpr
    T.int64(2) * s39 is not computed"): the build failed even with every op in LibTorch. The
    parameter gets a fresh dim instead; main starts by solving ``h`` from it (``match_cast``
    of a shape value, for ``a*h + b`` of one symbol no other input gives) and casting the
    parameter back to its exported type, which checks at run time that the dim is ``2*h``.
    """
    main = mod["main"]

    def tensor_dims(var: relax.Var) -> list | None:
        ty = var.ty
        if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
            return None
        return list(ty.shape.values)

    plain = (tirx.IntImm, tirx.Var)
    defined = {d for p in main.params for d in (tensor_dims(p) or []) if isinstance(d, tirx.Var)}
    params, prelude = [], []
    for param in main.params:
        dims = tensor_dims(param)
        if dims is None or all(isinstance(d, plain) for d in dims):
            params.append(param)
            continue
        own = [
            d if isinstance(d, plain) else tirx.Var(f"{param.name}_dim{k}", "int64")
            for k, d in enumerate(dims)
        ]
        given = relax.Var(param.name, relax.TensorType(own, param.ty.dtype))
        params.append(given)
        for fresh, expr in zip(own, dims, strict=True):
            symbols = [v for v in tirx.analysis.undefined_vars(expr) if v not in defined]
            if fresh.same_as(expr) or len(symbols) != 1:
                continue  # a plain dim, or one the other inputs give (checked by the cast)
            coef, base = tvm.sym.detect_linear_equation(expr, symbols)
            if not isinstance(coef, tirx.IntImm) or coef.value < 1:
                continue
            solved = relax.Var(f"{param.name}_dims", relax.ShapeType(symbols))
            value = relax.ShapeExpr([tirx.floordiv(fresh - base, coef)])
            prelude.append(relax.MatchCast(solved, value, relax.ShapeType(symbols)))
            defined.add(symbols[0])
        prelude.append(relax.MatchCast(param, given, param.ty))
    if not prelude:
        return mod
    body = relax.SeqExpr([relax.BindingBlock(prelude), *main.body.blocks], main.body.body)
    out = tvm.IRModule(mod.functions, attrs=mod.attrs)
    out["main"] = relax.Function(params, body, main.ret_ty, main.is_pure, main.attrs)
    return out


def _translate(ep: torch.export.ExportedProgram, importer: _FallbackImporter) -> tvm.IRModule:
    """TVM's own import of ``ep`` (through the routed convert map)."""
    return importer.from_exported_program(
        ep,
        keep_params_as_input=importer.options.keep_params_as_input,
        unwrap_unit_return_tuple=False,
        no_bind_return_tuple=False,
        custom_convert_map=None,
    )


# The program as the importer takes it, per program and decomposition flag: a compile imports
# one program many times (build-failure bisection, verification rounds, placement), and the
# decomposition (seconds on a transformer layer) gives the same program every time.
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _prepared(ep: torch.export.ExportedProgram, decomposed: bool):
    """(program, notes, mutated input positions) as imported: decomposed (when asked),
    outputs made tensors (frontend/outputs.py). Memoized; the result is never changed."""
    cached = _PREPARED.get(ep, {}).get(decomposed)
    if cached is not None:
        return cached
    notes: list[str] = []
    out = ep
    if decomposed:
        out, notes = decompose(ep)
    user = list(out.graph_signature.user_inputs)
    mutations = tuple(user.index(name) for name in mutated_inputs(out))
    out = tensor_outputs(out, owned=decomposed)
    result = (out, tuple(notes), mutations)
    _PREPARED.setdefault(ep, {})[decomposed] = result
    return result


def import_with_records(
    ep: torch.export.ExportedProgram,
    options: Options,
    extra_forced: Mapping[str, FallbackRecord] | None = None,
) -> ImportResult:
    """Import ``ep``; also return why each fallback node runs in LibTorch.

    Imports again (from scratch) whenever a TVM converter raises, and once more when
    ``min_block_size`` moves small TVM blocks to LibTorch.
    """
    ep, notes, mutations = _prepared(ep, options.run_decompositions)
    forced: dict[str, FallbackRecord] = dict(extra_forced or {})
    node_order = {n.name: i for i, n in enumerate(ep.graph.nodes)}
    while True:
        importer = _FallbackImporter(options, forced)
        try:
            mod = _import_once(ep, importer)
        except _ConverterRaised as err:
            node = err.node
            if node.name in forced:  # cannot happen: a forced node never reaches a converter
                raise
            if err.reason == Reason.WRONG_TYPE:
                detail = str(err.error)
            else:
                detail = first_line(err.error)
            forced[node.name] = FallbackRecord(node.name, op_key(node.target), err.reason, detail)
            logger.debug("TVM's converter raised on %s; importing again: %s", node.name, detail)
            continue
        records = sorted(importer.records.values(), key=lambda r: node_order.get(r.node, 0))
        if options.require_full_compilation and records:
            raise FullCompilationError(records)
        absorbed = small_native_blocks(ep.graph, {r.node for r in records}, options)
        if not absorbed:
            return ImportResult(
                mod, records, ep.graph, ep, importer.native_vars, tuple(notes), mutations
            )
        for node in absorbed:
            forced[node.name] = FallbackRecord(node.name, op_key(node.target), Reason.MIN_BLOCK)
        logger.debug("min_block_size moves %d node(s) to LibTorch", len(absorbed))


def from_exported_program(ep: torch.export.ExportedProgram, **options) -> tvm.IRModule:
    """Convert an ExportedProgram to Relax; nodes TVM cannot handle become ``relax.torchop``.

    Accepts the keyword options of :class:`byoc_torch.Options`.
    """
    return import_with_records(ep, Options.from_kwargs(options)).mod
