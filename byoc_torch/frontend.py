"""Frontend: ExportedProgram -> Relax IRModule in which every node TVM cannot handle is a torchop.

Place in the data flow: first stage. ``byoc_torch.compile`` exports the model with
``torch.export``, then calls :func:`from_exported_program`; the partition pass follows.

Every FX node is converted exactly as TVM's own importer
(``tvm.relax.frontend.torch.from_exported_program``) converts it, except the nodes it cannot
handle:

* its op is missing from TVM's convert map ("unsupported by TVM's importer"), or
* TVM's converter raises on it ("TVM's converter raised: ..."), or
* the user forced it (``torch_executed_ops``).

Each of those becomes one ``relax.torchop`` call carrying that node's TorchScript. A converter
that raises may already have emitted bindings, so the import restarts from scratch with that
node forced to LibTorch; the loop ends after at most one restart per failing node.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import sympy
import torch
import tvm
from torch import fx
from torch.utils._sympy import functions as symfn
from tvm import relax, tirx
from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

import relay_ext

from .deny_list import deny_list_match
from .modules import forced_module_for_op
from .options import Options
from .torchscript import (
    FallbackError,
    is_scalar_node,
    output_metas,
    script_for_node,
    script_for_nodes,
)

logger = logging.getLogger(__name__)

__all__ = [
    "FallbackRecord",
    "FullCompilationError",
    "ImportResult",
    "from_exported_program",
    "import_with_records",
]

REASON_UNSUPPORTED = "unsupported by TVM's importer"
REASON_CONVERTER = "TVM's converter raised"
REASON_WRONG_TYPE = "TVM's conversion has the wrong type"
REASON_FORCED_OP = "forced op (torch_executed_ops)"
REASON_FORCED_NODE = "forced node (torch_executed_nodes)"
REASON_COMPLEX = "uses a complex value, which TVM cannot hold"
REASON_MIN_BLOCK = "absorbed by min_block_size"
REASON_DENY_LIST = "known TVM defect (deny-list)"
REASON_MODULE = "forced module (torch_executed_modules)"


class FullCompilationError(RuntimeError):
    """``require_full_compilation=True`` and some ops would run in LibTorch."""

    def __init__(self, records: list[FallbackRecord]) -> None:
        self.records = records
        lines = [
            f"  {r.node} ({r.op}): {r.reason}" + (f": {r.detail}" if r.detail else "")
            for r in records
        ]
        super().__init__(
            f"require_full_compilation=True, but {len(records)} op(s) would run in LibTorch:\n"
            + "\n".join(lines)
        )


# dtypes a Relax tensor cannot carry; values of these types stay inside LibTorch.
_FOREIGN_DTYPES = {torch.complex32, torch.complex64, torch.complex128}


@dataclass(frozen=True)
class FallbackRecord:
    """Why one FX node runs in LibTorch."""

    node: str
    op: str
    reason: str
    detail: str = ""


def op_key(target: object) -> str:
    """``aten.erfinv.default`` for ``torch.ops.aten.erfinv.default``."""
    name = getattr(target, "name", None)
    if callable(name):  # OpOverload.name() -> "aten::erfinv" (overload "default" implied)
        schema = target._schema
        ns, _, base = schema.name.partition("::")
        return f"{ns}.{base}.{schema.overload_name or 'default'}"
    return getattr(target, "__name__", str(target))


# ---------------------------------------------------------------------------------------------
# Types of torch.export metadata as Relax types
# ---------------------------------------------------------------------------------------------


def relax_dtype(dtype: torch.dtype) -> str:
    """TVM's name for a torch dtype."""
    return str(dtype).removeprefix("torch.")


class _SymbolTable:
    """Maps torch.export's sympy symbols to TIR variables, one table per torchop signature."""

    def __init__(self) -> None:
        self.vars: dict[str, tirx.Var] = {}

    def var(self, name: str) -> tirx.Var:
        if name not in self.vars:
            self.vars[name] = tirx.Var(name, "int64")
        return self.vars[name]

    def to_prim(self, e: sympy.Expr) -> tvm.ir.PrimExpr:
        if isinstance(e, sympy.Integer) or (isinstance(e, int) and not isinstance(e, bool)):
            return tirx.IntImm("int64", int(e))
        if isinstance(e, sympy.Symbol):
            return self.var(e.name)
        args = [self.to_prim(a) for a in e.args]
        if isinstance(e, sympy.Add):
            return _fold(args, lambda a, b: a + b)
        if isinstance(e, sympy.Mul):
            return _fold(args, lambda a, b: a * b)
        if isinstance(e, symfn.FloorDiv):
            return tirx.floordiv(args[0], args[1])
        if isinstance(e, symfn.CeilDiv):
            return tirx.floordiv(args[0] + args[1] - 1, args[1])
        if isinstance(e, symfn.Mod | symfn.PythonMod):
            return tirx.floormod(args[0], args[1])
        if isinstance(e, sympy.Max | symfn.Max):
            return _fold(args, tirx.max)
        if isinstance(e, sympy.Min | symfn.Min):
            return _fold(args, tirx.min)
        if isinstance(e, sympy.Pow) and isinstance(e.exp, sympy.Integer) and int(e.exp) > 0:
            return _fold([args[0]] * int(e.exp), lambda a, b: a * b)
        raise FallbackError(f"symbolic size {e} has no TIR equivalent here")

    def tensor_type(self, t: torch.Tensor) -> relax.TensorType:
        dims = []
        for s in t.shape:
            if isinstance(s, torch.SymInt):
                try:
                    dims.append(self.to_prim(s.node.expr))
                except FallbackError:
                    return relax.TensorType(dtype=relax_dtype(t.dtype), ndim=t.dim())
            else:
                dims.append(tirx.IntImm("int64", int(s)))
        return relax.TensorType(dims, dtype=relax_dtype(t.dtype))


def _fold(args, fn):
    out = args[0]
    for a in args[1:]:
        out = fn(out, a)
    return out


# ---------------------------------------------------------------------------------------------
# The importer
# ---------------------------------------------------------------------------------------------


class _ConverterRaised(Exception):
    def __init__(self, node: fx.Node, error: BaseException, reason: str) -> None:
        super().__init__(f"{node.name}: {error}")
        self.node = node
        self.error = error
        self.reason = reason


def _type_mismatch(node: fx.Node, value: object) -> str | None:
    """How TVM's conversion of ``node`` contradicts the type torch.export recorded, or None.

    Compares dtype, rank and static dims of a single-tensor result; anything else (tuples,
    symbolic dims) is not judged here.
    """
    meta = node.meta.get("val")
    if not isinstance(meta, torch.Tensor) or not isinstance(value, relax.Expr):
        return None
    ty = value.ty
    if not isinstance(ty, relax.TensorType):
        return None
    want_dtype = relax_dtype(meta.dtype)
    got_dtype = None if ty.dtype is None else str(ty.dtype)
    want_shape = tuple(int(d) if not isinstance(d, torch.SymInt) else "?" for d in meta.shape)
    problems = []
    if got_dtype is not None and got_dtype != want_dtype:
        problems.append(f"dtype {got_dtype}")
    if ty.ndim != -1 and ty.ndim != meta.dim():
        problems.append(f"rank {ty.ndim}")
    elif isinstance(ty.shape, relax.ShapeExpr):
        for d, (got, want) in enumerate(zip(ty.shape.values, want_shape, strict=True)):
            if isinstance(got, tirx.IntImm) and isinstance(want, int) and int(got) != want:
                problems.append(f"dim {d} = {int(got)}")
    if not problems:
        return None
    return f"TVM's result has {', '.join(problems)}; PyTorch gives {want_dtype} {list(want_shape)}"


class _NotAValue:
    """Placeholder for a scalar node TVM cannot convert; only torchop scripts may consume it."""

    def __init__(self, node: fx.Node) -> None:
        self.node = node

    def __repr__(self) -> str:
        return f"<scalar {self.node.name} computed only inside LibTorch>"


class _FallbackImporter(ExportedProgramImporter):
    """TVM's ExportedProgram importer, with torchops for the nodes it cannot handle."""

    def __init__(self, options: Options, forced: Mapping[str, FallbackRecord]) -> None:
        super().__init__()
        self.options = options
        self.forced = dict(forced)  # node name -> record, grows when converters raise
        self.records: dict[str, FallbackRecord] = {}
        self._data_dims: dict[str, tirx.Var] = {}  # torch symbol -> TIR var, see match_cast
        self.native_vars: dict[str, relax.Var] = {}

    # TVM stops the whole import here when an op is missing; we fall back instead.
    def _check_unsupported_func_type(self, nodes: list[fx.Node]) -> None:
        return None

    def _fallback_reason(self, node: fx.Node) -> FallbackRecord | None:
        key = op_key(node.target)
        if node.name in self.forced:
            return self.forced[node.name]
        module = forced_module_for_op(node.target)
        if module is not None:
            op = f"module {module.qualname} ({module.type_name})"
            return FallbackRecord(node.name, op, REASON_MODULE)
        if self.options.is_forced_op(node.target):
            return FallbackRecord(node.name, key, REASON_FORCED_OP)
        if node.name in self.options.torch_executed_nodes:
            return FallbackRecord(node.name, key, REASON_FORCED_NODE)
        if node.target.__name__ not in self.convert_map:
            return FallbackRecord(node.name, key, REASON_UNSUPPORTED)
        if self.options.verify:
            known = deny_list_match(node)
            if known is not None:
                return FallbackRecord(node.name, key, REASON_DENY_LIST, known)
        return None

    def _translate_fx_graph(self, graph_module, nodes, inputs_vars, custom_ops=None):
        custom_ops = custom_ops or set()
        output_args = None
        for item in _schedule(list(nodes)):
            if isinstance(item, list):  # a cluster around complex values
                self._emit_cluster(item)
                continue
            node = item
            if node.op == "placeholder":
                if "grapharg" in node.meta and node.meta["grapharg"].fake_tensor is None:
                    continue
                if node.name in inputs_vars:
                    self.env[node] = inputs_vars[node.name]
            elif node.op == "output":
                args = self.retrieve_args(node)
                output_args = args[0]
                break
            elif node.op == "get_attr":
                self.env[node] = getattr(graph_module, node.target)
            elif node.op == "call_function":
                record = self._fallback_reason(node)
                if record is not None:
                    self.env[node] = self._emit_fallback(node, record)
                    continue
                func_name = node.target.__name__
                try:
                    if func_name in custom_ops:
                        self.env[node] = self.convert_map[func_name](node, self)
                    else:
                        self.env[node] = self.convert_map[func_name](node)
                except Exception as err:  # any converter failure means: run it in LibTorch
                    raise _ConverterRaised(node, err, REASON_CONVERTER) from err
                mismatch = _type_mismatch(node, self.env[node])
                if mismatch is not None:
                    # An element of a tuple has the wrong type: blame the op that made the tuple.
                    culprit = node
                    while culprit.target is operator.getitem and isinstance(
                        culprit.args[0], fx.Node
                    ):
                        culprit = culprit.args[0]
                    raise _ConverterRaised(culprit, TypeError(mismatch), REASON_WRONG_TYPE)
                value = self.env[node]
                if isinstance(value, relax.Var) and isinstance(value.ty, relax.TensorType):
                    self.native_vars[node.name] = value
            else:
                raise ValueError(f"Unsupported FX node kind {node.op} ({node.name})")
        if output_args is None:
            raise ValueError("the exported graph has no output node")
        for value in _flatten(output_args):
            if isinstance(value, _NotAValue):
                raise FallbackError(
                    f"model output {value.node.name} is a scalar computed in LibTorch; byoc_torch "
                    "returns tensors only"
                )
        return self._flatten_output_args(output_args)

    def _emit_cluster(self, members: list[fx.Node]) -> None:
        """One torchop for a sink and the complex-valued nodes it depends on (see _schedule)."""
        sink = members[-1]
        metas = output_metas(sink)
        if metas is None or any(m.dtype in _FOREIGN_DTYPES for m in metas):
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
        symbols = _SymbolTable()
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
        position = {key: k for k, key in enumerate(outputs)}
        for n in members:
            record = self._fallback_reason(n)
            if record is None or record.reason != REASON_UNSUPPORTED:
                record = FallbackRecord(n.name, op_key(n.target), REASON_COMPLEX)
            self.records[n.name] = record
            if (n, None) in position:
                self.env[n] = self.block_builder.emit(
                    relax.TupleGetItem(result, position[(n, None)]), name_hint=n.name
                )
            elif (n, 0) in position:
                k = len(output_metas(n))
                self.env[n] = relax.Tuple(
                    [relax.TupleGetItem(result, position[(n, i)]) for i in range(k)]
                )

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
        foreign = [m.dtype for m in output_metas(node) if m.dtype in _FOREIGN_DTYPES]
        if foreign:
            raise FallbackError(
                f"node {node.name} ({record.op}) produces {foreign[0]} values that leave "
                "LibTorch (as a model output or to a TVM op that cannot take them); convert them "
                "to real tensors first, e.g. with torch.view_as_real"
            )
        ns = script_for_node(node)
        symbols = _SymbolTable()
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
        target = relax.TensorType(dims, dtype=relax_dtype(meta.dtype))
        return self.block_builder.match_cast(var, target, name_hint=f"{node.name}_sized")


def _meta_at(node: fx.Node, k: int | None) -> torch.Tensor:
    val = node.meta["val"]
    return val if k is None else val[k]


def _produces_foreign(node: fx.Node) -> bool:
    metas = output_metas(node)
    return (
        node.op == "call_function"
        and metas is not None
        and any(m.dtype in _FOREIGN_DTYPES for m in metas)
    )


def _schedule(nodes: list[fx.Node]) -> list:
    """The nodes in import order, with values TVM cannot hold (complex tensors) kept inside
    LibTorch: a node producing one is not imported on its own; instead, every node that turns
    such values back into real tensors (a *sink*, e.g. ``view_as_real`` or ``abs``) becomes one
    list item holding the sink and all the complex-valued nodes it depends on, in graph order.
    A complex producer used by several sinks is recomputed in each (they are pure), which keeps
    every cluster free of paths through TVM."""
    foreign = {n for n in nodes if _produces_foreign(n)}
    if not foreign:
        return nodes
    order: list = []
    index = {n: i for i, n in enumerate(nodes)}
    for n in nodes:
        if n in foreign:
            if any(u.op == "output" for u in n.users):
                raise FallbackError(
                    f"node {n.name} ({op_key(n.target)}) produces {output_metas(n)[0].dtype} "
                    "values that leave LibTorch as a model output; byoc_torch returns real "
                    "tensors, so convert them first, e.g. with torch.view_as_real"
                )
            continue
        if n.op == "call_function" and any(p in foreign for p in n.all_input_nodes):
            members = {n}
            stack = [p for p in n.all_input_nodes if p in foreign]
            while stack:
                p = stack.pop()
                if p not in members:
                    members.add(p)
                    stack.extend(q for q in p.all_input_nodes if q in foreign)
            order.append(sorted(members, key=index.__getitem__))
        else:
            order.append(n)
    return order


def _flatten(value):
    if isinstance(value, list | tuple):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


@dataclass(frozen=True)
class ImportResult:
    """What the frontend produced: the module, why each fallback node falls back (graph
    order), and the (decomposed) FX graph it imported."""

    mod: tvm.IRModule
    records: list[FallbackRecord]
    graph: fx.Graph
    ep: torch.export.ExportedProgram  # the decomposed program that was imported
    native_vars: dict[str, relax.Var]  # FX node name -> Relax var, for TVM-converted tensors


def import_with_records(
    ep: torch.export.ExportedProgram,
    options: Options,
    extra_forced: Mapping[str, FallbackRecord] | None = None,
) -> ImportResult:
    """Import ``ep``; also return why each fallback node runs in LibTorch.

    Imports again (from scratch) whenever a TVM converter raises, and once more when
    ``min_block_size`` moves small TVM blocks to LibTorch.
    """
    if options.run_decompositions:
        ep = _decompose(ep)
    forced: dict[str, FallbackRecord] = dict(extra_forced or {})
    node_order = {n.name: i for i, n in enumerate(ep.graph.nodes)}
    while True:
        importer = _FallbackImporter(options, forced)
        try:
            mod = importer.from_exported_program(
                ep,
                keep_params_as_input=options.keep_params_as_input,
                unwrap_unit_return_tuple=False,
                no_bind_return_tuple=False,
                custom_convert_map=None,
            )
        except _ConverterRaised as err:
            node = err.node
            if node.name in forced:  # cannot happen: a forced node never reaches a converter
                raise
            if err.reason == REASON_WRONG_TYPE:
                detail = str(err.error)
            else:
                detail = f"{type(err.error).__name__}: {err.error}".splitlines()[0][:300]
            forced[node.name] = FallbackRecord(node.name, op_key(node.target), err.reason, detail)
            logger.debug("TVM's converter raised on %s; importing again: %s", node.name, detail)
            continue
        records = sorted(importer.records.values(), key=lambda r: node_order.get(r.node, 0))
        if options.require_full_compilation and records:
            raise FullCompilationError(records)
        absorbed = _small_native_blocks(ep.graph, {r.node for r in records}, options)
        if not absorbed:
            return ImportResult(mod, records, ep.graph, ep, importer.native_vars)
        for node in absorbed:
            forced[node.name] = FallbackRecord(node.name, op_key(node.target), REASON_MIN_BLOCK)
        logger.debug("min_block_size moves %d node(s) to LibTorch", len(absorbed))


_KEEP_WHOLE_PREFIXES = ("aten::linalg_", "aten::cholesky", "aten::inverse", "aten::slogdet")


def _decompose(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """torch.export's core-ATen decomposition, as TVM's importer runs it, except for
    linear-algebra ops TVM cannot convert anyway: their decompositions thread effect tokens
    (``with_effects(_linalg_check_errors)``) that TVM's importer rejects, so they stay whole
    and run in LibTorch with PyTorch's own error checks."""
    supported = ExportedProgramImporter().convert_map
    table = torch.export.default_decompositions()
    for node in ep.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if (
            node.op == "call_function"
            and schema is not None
            and schema.name.startswith(_KEEP_WHOLE_PREFIXES)
            and node.target.__name__ not in supported
            and node.target in table
        ):
            table.pop(node.target)
    out = ep.run_decompositions(table)
    if any(n.target is torch.ops.higher_order.with_effects for n in out.graph.nodes):
        raise FallbackError(
            "the decomposed program threads effect tokens (with_effects), which TVM's importer "
            "cannot take; export with run_decompositions=False or keep the op whole"
        )
    return out


def _small_native_blocks(graph: fx.Graph, fallback: set[str], options: Options) -> list[fx.Node]:
    """TVM-side blocks smaller than ``min_block_size`` that sit between LibTorch ops.

    A block is a connected set of TVM-converted aten nodes (edges in either direction).
    It is absorbed when it has fewer than ``min_block_size`` nodes, takes an input from a
    LibTorch op, and feeds a LibTorch op.
    """
    if options.min_block_size <= 1 or not fallback:
        return []

    def torch_side(n: fx.Node) -> bool:
        if n.name in fallback:
            return True
        # A getitem of a LibTorch tuple is part of that LibTorch op.
        return n.target is operator.getitem and n.args[0].name in fallback

    def movable(n: fx.Node) -> bool:
        return (
            n.op == "call_function"
            and not torch_side(n)
            and n.target is not operator.getitem
            and getattr(n.target, "_schema", None) is not None
            and n.target._schema.name.startswith("aten::")
            and output_metas(n) is not None
        )

    nodes = [n for n in graph.nodes if movable(n)]
    parent = {n: n for n in nodes}

    def find(n: fx.Node) -> fx.Node:
        while parent[n] is not n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n in nodes:
        for p in n.all_input_nodes:
            if p in parent:
                parent[find(n)] = find(p)
    blocks: dict[fx.Node, list[fx.Node]] = {}
    for n in nodes:
        blocks.setdefault(find(n), []).append(n)
    absorbed: list[fx.Node] = []
    for members in blocks.values():
        if len(members) >= options.min_block_size:
            continue
        member_set = set(members)
        fed_by_torch = any(
            torch_side(p) for n in members for p in n.all_input_nodes if p not in member_set
        )
        feeds_torch = any(
            _feeds_torch(u, torch_side) for n in members for u in n.users if u not in member_set
        )
        if fed_by_torch and feeds_torch:
            absorbed.extend(members)
    return absorbed


def _feeds_torch(user: fx.Node, torch_side) -> bool:
    if torch_side(user):
        return True
    # A getitem of a TVM tuple passes the value on to its own users.
    return user.target is operator.getitem and any(torch_side(u) for u in user.users)


def from_exported_program(ep: torch.export.ExportedProgram, **options) -> tvm.IRModule:
    """Convert an ExportedProgram to Relax; nodes TVM cannot handle become ``relax.torchop``.

    Accepts the keyword options of :class:`byoc_torch.Options`.
    """
    return import_with_records(ep, Options.from_kwargs(options)).mod
