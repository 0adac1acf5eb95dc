"""Partition pass: lift maximal cycle-free groups of torchop calls into external functions.

Place in the data flow: after the frontend (which leaves ``relax.torchop`` calls in ``main``)
or on any Relax module (torchops from ``call_torch``, Relax ops named in
``torch_executed_ops``, see ``relax_ops.py``; small blocks under ``min_block_size``, see
``min_block.py``), and before the codegen (``byoc_torch.codegen``), which turns every function
carrying ``Codegen="torch"`` into LibTorch work.

Per binding block, bindings are "torch" (a ``relax.torchop`` call, or a ``TupleGetItem`` of a
torch binding) or "native" (anything else). The torch bindings are grouped by
:func:`byoc_torch.partition.grouping.maximal_groups`: the groups are cycle-free and maximal
(no two can
merge without creating a cycle, so ops on independent branches share a group), deterministic,
and found in near-linear time.

Each group becomes a function ``torch_<fn>_<k>`` with attributes ``Codegen="torch"``,
``global_symbol`` and ``torch_script`` (one TorchScript for the whole group, see
:func:`byoc_torch.frontend.torchscript.merge_scripts`). Its parameters are the group's inputs
(including parameters bound as constants, which are passed in, never copied into the script),
plus a trailing shape parameter when a symbolic variable appears only inside compound dims (it
defines the variable for TVM; LibTorch gets the tensors only); its symbolic variables are its
own. It returns the group's values used outside it (a tuple when several; a tuple-valued member
returns each field, and the caller rebuilds the tuple). The block is then re-ordered
topologically, keeping the original order wherever dependencies allow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import tvm
from tvm import relax

import relay_ext

from ..errors import FullCompilationError, OptionError
from ..frontend.torchscript import GroupStep, merge_scripts
from ..ir import CODEGEN, torch_functions
from ..names import is_relax_op_name
from ..options import Options
from ..records import FallbackRecord, Reason
from .grouping import Dag, maximal_groups
from .min_block import absorb_small_relax_blocks
from .relax_ops import CONVERTERS, offload_relax_ops, relax_ops_for_aten

logger = logging.getLogger(__name__)

__all__ = ["PartitionForTorch", "partition_for_torch", "torch_functions"]


@dataclass
class _Node:
    index: int
    binding: relax.VarBinding
    is_torch: bool
    inputs: list[int] = field(default_factory=list)  # indices of in-block producers


def _is_torch_value(value: relax.Expr, torch_vars: set) -> bool:
    if relay_ext.is_torchop(value):
        return True
    return isinstance(value, relax.TupleGetItem) and value.tuple_value in torch_vars


def _used_vars(value: relax.Expr | None) -> list[relax.Var]:
    """The variables an (A-normal form) binding value reads; the common shapes are read
    directly, anything else through relax.analysis.free_vars."""
    if value is None:
        return []
    if isinstance(value, relax.Call):
        out: list[relax.Var] = []
        for a in value.args:
            if isinstance(a, relax.Var):
                out.append(a)
            elif isinstance(a, tvm.ir.GenericConst):
                continue
            else:
                out.extend(relax.analysis.free_vars(a))
        return out
    if isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Var):
        return [value.tuple_value]
    if isinstance(value, relax.Var):
        return [value]
    return list(relax.analysis.free_vars(value))


def _block_graph(block: relax.BindingBlock) -> list[_Node]:
    nodes: list[_Node] = []
    index_of: dict[relax.Var, int] = {}
    torch_vars: set = set()
    for i, b in enumerate(block.bindings):
        is_torch = isinstance(b, relax.VarBinding) and _is_torch_value(b.value, torch_vars)
        if is_torch:
            torch_vars.add(b.var)
        value = b.value  # VarBinding or MatchCast: both read their value
        inputs = sorted({index_of[v] for v in _used_vars(value) if v in index_of})
        nodes.append(_Node(i, b, is_torch, inputs))
        index_of[b.var] = i
    return nodes


def _group(nodes: list[_Node]) -> list[list[int]]:
    """Maximal cycle-free groups of torch nodes, each sorted, in order of first member."""
    dag = Dag([n.is_torch for n in nodes], [n.inputs for n in nodes])
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(maximal_groups(dag)):
        if g >= 0:
            groups.setdefault(g, []).append(i)
    return [groups[g] for g in sorted(groups)]


# ---------------------------------------------------------------------------------------------
# Lifting groups into functions
# ---------------------------------------------------------------------------------------------


@dataclass
class _Lifted:
    members: list[int]
    inputs: list[relax.Expr]  # Vars from outside the group, or constants
    outputs: list[tuple[relax.Var, int | None]]  # used outside: (member var, tuple field)
    gvar: tvm.ir.GlobalVar
    ret_ty: relax.Type  # the call's type, in the caller's symbolic variables


def _lift(
    nodes: list[_Node], members: list[int], used_outside: set, symbol: str
) -> tuple[relax.Function, list[relax.Expr], list[relax.Var]]:
    member_vars = {nodes[i].binding.var for i in members}
    inputs: list[relax.Expr] = []
    seen: set = set()

    def note_input(e: relax.Expr) -> None:
        key = e
        if isinstance(e, relax.Var) and e in member_vars:
            return
        if key not in seen:
            seen.add(key)
            inputs.append(e)

    for i in members:
        value = nodes[i].binding.value
        if relay_ext.is_torchop(value):
            for a in value.args:
                if not isinstance(a, relax.Var | tvm.ir.GenericConst):
                    raise ValueError(
                        f"torchop {value.attrs['op_name']}: argument {a} is neither a variable "
                        "nor a constant; run relax.transform.Normalize first"
                    )
                note_input(a)
        else:
            note_input(value.tuple_value)
    outputs = [nodes[i].binding.var for i in members if nodes[i].binding.var in used_outside]
    if not outputs:  # a group nobody uses is still kept alive by its last member
        outputs = [nodes[members[-1]].binding.var]

    params = [relax.Var(f"p{k}", e.ty) for k, e in enumerate(inputs)]
    param_of = {e: p for e, p in zip(inputs, params, strict=True)}
    step_of: dict[relax.Var, int] = {}  # member var -> step index (torchop members only)
    getitem_of: dict[relax.Var, tuple[int, int]] = {}
    steps: list[GroupStep] = []
    op_names: list[str] = []
    modules: dict[str, str] = {}

    # Built directly rather than through a BlockBuilder: every member already carries its
    # type, so re-inferring 100k torchop types would only cost time.
    input_index = {e: k for k, e in enumerate(inputs)}
    new_of: dict[relax.Var, relax.Var] = {}
    bindings: list[relax.VarBinding] = []
    for i in members:
        b = nodes[i].binding
        value = b.value
        new_var = relax.Var(b.var.name, b.var.ty)
        if relay_ext.is_torchop(value):
            args, step_args = [], []
            for a in value.args:
                if a in param_of:
                    args.append(param_of[a])
                    step_args.append(("in", input_index[a]))
                elif a in step_of:
                    args.append(new_of[a])
                    step_args.append(("val", step_of[a], None))
                else:
                    args.append(new_of[a])
                    step_args.append(("val", *getitem_of[a]))
            bindings.append(
                relax.VarBinding(
                    new_var, relax.Call(value.op, args, attrs=value.attrs, ret_ty=b.var.ty)
                )
            )
            step_of[b.var] = len(steps)
            steps.append(
                GroupStep(
                    relay_ext.script_text(value.attrs["script"]),
                    step_args,
                    isinstance(value.attrs["out_type"], relax.TupleType),
                )
            )
            op_names.append(str(value.attrs["op_name"]))
            member_modules = value.attrs.get("modules")
            if member_modules:
                modules.update({str(k): str(v) for k, v in member_modules.items()})
        else:  # TupleGetItem of a member
            src = value.tuple_value
            bindings.append(relax.VarBinding(new_var, relax.TupleGetItem(new_of[src], value.index)))
            getitem_of[b.var] = (step_of[src], value.index)
        new_of[b.var] = new_var
    # The boundary carries tensors only: a tuple-valued member used outside returns each of
    # its fields, and the caller rebuilds the tuple.
    flat: list[tuple[relax.Var, int | None]] = []
    out_refs = []
    for v in outputs:
        if v in step_of and steps[step_of[v]].returns_tuple:
            for k in range(len(v.ty.fields)):
                flat.append((v, k))
                out_refs.append((step_of[v], k))
        elif v in step_of:
            flat.append((v, None))
            out_refs.append((step_of[v], None))
        else:
            flat.append((v, None))
            out_refs.append(getitem_of[v])
    rets = []
    for v, k in flat:
        if k is None:
            rets.append(new_of[v])
            continue
        field = relax.Var(f"{v.name}_{k}", v.ty.fields[k])
        bindings.append(relax.VarBinding(field, relax.TupleGetItem(new_of[v], k)))
        rets.append(field)
    if len(rets) == 1:
        ret, ret_ty = rets[0], rets[0].ty
    else:
        ret = relax.Tuple(rets)
        ret_ty = relax.TupleType([r.ty for r in rets])
    attrs = {"Codegen": CODEGEN, "global_symbol": symbol}
    body = seq_expr(relax.BindingBlock(bindings), ret, ret_ty)
    func = relax.Function(params, body, ret_ty, True, tvm.ir.DictAttrs(attrs))
    script = merge_scripts(steps, len(inputs), out_refs)
    func = func.with_attr("torch_script", relay_ext.script_lines(script))
    func = func.with_attr("torch_ops", op_names)
    func = func.with_attr("torch_modules", modules)
    # A symbolic variable the tensors' shapes use only inside compound dims (``(n + 1) * 5``)
    # is defined by a trailing shape parameter, as FuseOpsByPattern does; the codegen passes
    # LibTorch the tensors only.
    undefined = relax.analysis.free_symbolic_vars(func)
    if undefined:
        shape_param = relax.Var("shape_vars", relax.ShapeType(list(undefined)))
        func = relax.Function(
            [*params, shape_param], func.body, func.ret_ty, func.is_pure, func.attrs
        )
        inputs = [*inputs, relax.ShapeExpr(list(undefined))]
    # Each function owns its symbolic variables (as TVMScript writes them): the lifted one
    # gets fresh copies of the caller's, so printing and parsing the module gives it back.
    shared = relax.analysis.defined_symbolic_vars(func)
    if shared:
        func = func.bind_symbolic_vars({v: tvm.tirx.Var(v.name, "int64") for v in shared})
    return func, inputs, flat


def seq_expr(blocks, result: relax.Expr, ty: relax.Type) -> relax.SeqExpr:
    """A SeqExpr with its type set (the Python constructor leaves it missing, and
    normalizing a 100k-binding function just to fill it in would be slow)."""
    if not isinstance(blocks, list):
        blocks = [blocks]
    seq = relax.SeqExpr(blocks, result)
    relax.expr._update_type(seq, ty)
    return seq


def _topo_order(nodes: list[_Node], unit_of: list[int], n_units: int) -> list[int]:
    """Order units (native bindings and groups) topologically, earliest original position
    first."""
    import heapq

    preds: list[set[int]] = [set() for _ in range(n_units)]
    first_pos = [len(nodes)] * n_units
    for n in nodes:
        u = unit_of[n.index]
        first_pos[u] = min(first_pos[u], n.index)
        for p in n.inputs:
            pu = unit_of[p]
            if pu != u:
                preds[u].add(pu)
    succs: list[list[int]] = [[] for _ in range(n_units)]
    indeg = [len(p) for p in preds]
    for u, ps in enumerate(preds):
        for p in ps:
            succs[p].append(u)
    heap = [(first_pos[u], u) for u in range(n_units) if indeg[u] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, u = heapq.heappop(heap)
        order.append(u)
        for s in succs[u]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(heap, (first_pos[s], s))
    if len(order) != n_units:  # would mean the grouping made a cycle: a bug, not user error
        raise RuntimeError("byoc_torch partition produced a cyclic grouping")
    return order


class _Partitioner:
    def __init__(self, mod: tvm.IRModule, options: Options) -> None:
        self.mod = mod
        self.options = options
        self.taken = {gv.name_hint for gv in mod.get_global_vars()}
        self.next_index: dict[str, int] = {}

    def fresh_symbol(self, fn_name: str) -> str:
        k = self.next_index.get(fn_name, 0)
        while f"torch_{fn_name}_{k}" in self.taken:
            k += 1
        self.next_index[fn_name] = k + 1
        name = f"torch_{fn_name}_{k}"
        self.taken.add(name)
        return name

    def run(self) -> tvm.IRModule:
        # Lifted functions enter the module as soon as they exist, so that calls use the
        # module's own GlobalVars (which carry the function types).
        self.bb = relax.BlockBuilder(self.mod)
        updates = {}
        for gv, func in sorted(self.mod.functions.items(), key=lambda kv: kv[0].name_hint):
            if not isinstance(func, relax.Function) or func.attrs.get("Codegen") is not None:
                continue
            new_func = self.rewrite_function(gv.name_hint, func)
            if new_func is not func:
                updates[gv] = new_func
        if not updates:
            return self.mod
        # The rewritten functions are built in normal form with every type set, so they go in
        # as they are (BlockBuilder.update_func would re-normalize 100k bindings).
        mod = self.bb.get()
        for gv, f in updates.items():
            mod[gv] = f
        return mod

    def add_function(self, symbol: str, func: relax.Function) -> tvm.ir.GlobalVar:
        return self.bb.add_func(func, symbol)

    def rewrite_function(self, fn_name: str, func: relax.Function) -> relax.Function:
        body = func.body
        if not isinstance(body, relax.SeqExpr):
            return func
        # Vars used after each block (by later blocks or the function's result).
        new_blocks = []
        changed = False
        for bi, block in enumerate(body.blocks):
            later_used = set(relax.analysis.free_vars(body.body))
            for later in body.blocks[bi + 1 :]:
                for b in later.bindings:
                    later_used.update(relax.analysis.free_vars(b.value))
            new_block = self.rewrite_block(fn_name, block, later_used)
            changed |= new_block is not block
            new_blocks.append(new_block)
        if not changed:
            return func
        new_body = seq_expr(new_blocks, body.body, body.ty)
        return relax.Function(func.params, new_body, func.ret_ty, func.is_pure, func.attrs)

    def rewrite_block(self, fn_name, block, later_used) -> relax.BindingBlock:
        nodes = _block_graph(block)
        groups = _group(nodes)
        if not groups:
            return block
        unit_of = [-1] * len(nodes)
        n_units = 0
        for ms in groups:
            for i in ms:
                unit_of[i] = n_units
            n_units += 1
        group_units = n_units
        for n in nodes:
            if unit_of[n.index] < 0:
                unit_of[n.index] = n_units
                n_units += 1
        users: list[list[int]] = [[] for _ in nodes]
        for n in nodes:
            for p in n.inputs:
                users[p].append(n.index)
        lifted: list[_Lifted] = []
        for ms in groups:
            member_set = set(ms)
            used_outside = {
                nodes[i].binding.var
                for i in ms
                if nodes[i].binding.var in later_used or any(u not in member_set for u in users[i])
            }
            symbol = self.fresh_symbol(fn_name)
            f, inputs, outputs = _lift(nodes, ms, used_outside, symbol)
            gvar = self.add_function(symbol, f)
            types = [v.ty if k is None else v.ty.fields[k] for v, k in outputs]
            ret_ty = types[0] if len(types) == 1 else relax.TupleType(types)
            lifted.append(_Lifted(ms, inputs, outputs, gvar, ret_ty))
            logger.debug("%s: %d torch bindings -> %s", fn_name, len(ms), symbol)
        order = _topo_order(nodes, unit_of, n_units)
        native_binding = {
            unit_of[n.index]: n.binding for n in nodes if unit_of[n.index] >= group_units
        }
        dataflow = isinstance(block, relax.DataflowBlock)
        bindings = []
        for u in order:
            if u >= group_units:
                bindings.append(native_binding[u])
                continue
            lg = lifted[u]
            call = relax.Call(lg.gvar, lg.inputs, ret_ty=lg.ret_ty)
            bindings.extend(_bind_outputs(lg, call, dataflow))
        return relax.DataflowBlock(bindings) if dataflow else relax.BindingBlock(bindings)


def _bind_outputs(lg: _Lifted, call: relax.Call, dataflow: bool) -> list[relax.VarBinding]:
    """Bindings giving each output of a lifted group its value from ``call``."""
    make = relax.DataflowVar if dataflow else relax.Var
    if len(lg.outputs) == 1 and lg.outputs[0][1] is None:
        return [relax.VarBinding(lg.outputs[0][0], call)]
    out: list[relax.VarBinding] = []
    if len(lg.outputs) == 1:
        fields = [make(f"{lg.gvar.name_hint}_out", lg.ret_ty)]
        out.append(relax.VarBinding(fields[0], call))
    else:
        tup = make(f"{lg.gvar.name_hint}_out", lg.ret_ty)
        out.append(relax.VarBinding(tup, call))
        fields = []
        for i, (v, k) in enumerate(lg.outputs):
            if k is None:
                out.append(relax.VarBinding(v, relax.TupleGetItem(tup, i)))
                continue
            field = make(f"{v.name}_{k}", v.ty.fields[k])
            out.append(relax.VarBinding(field, relax.TupleGetItem(tup, i)))
            fields.append(field)
    rebuilt: dict[relax.Var, list[relax.Var]] = {}
    for (v, _), field in zip([o for o in lg.outputs if o[1] is not None], fields, strict=True):
        rebuilt.setdefault(v, []).append(field)
    for v, parts in rebuilt.items():
        out.append(relax.VarBinding(v, relax.Tuple(parts)))
    return out


# The options the pass honours; every other option of byoc_torch acts on the PyTorch side
# (export, import, verification, the built module) and is refused here.
PASS_OPTIONS = ("torch_executed_ops", "min_block_size", "require_full_compilation")


@tvm.transform.module_pass(opt_level=0, name="PartitionForTorch")
class PartitionForTorch:
    """ModulePass: group ``relax.torchop`` calls into maximal cycle-free ``Codegen="torch"``
    functions. Composable in ``tvm.transform.Sequential``.

    Options (any Relax module):

    * ``torch_executed_ops``: Relax op names (``"relax.matmul"``, ``"relax.nn.conv2d"``, ...)
      whose calls become torchops first (:mod:`byoc_torch.partition.relax_ops`); ATen names
      are checked to exist and act in the PyTorch frontend;
    * ``min_block_size``: small blocks of Relax calls between torchops join LibTorch
      (:func:`byoc_torch.partition.min_block.absorb_small_relax_blocks`);
    * ``require_full_compilation``: any torchop is a FullCompilationError.

    Any other option is an :class:`~byoc_torch.errors.OptionError`.
    """

    def __init__(self, **options) -> None:
        self.options = Options.from_kwargs(options)
        refused = sorted(set(options) - set(PASS_OPTIONS))
        if refused:
            raise OptionError(
                f"PartitionForTorch cannot honour {refused}: they act on the PyTorch side "
                "(use them with byoc_torch.compile or from_exported_program); the pass takes "
                f"{list(PASS_OPTIONS)}"
            )

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = _prepare(mod, self.options)
        return _Partitioner(mod, self.options).run()


def _prepare(mod: tvm.IRModule, options: Options) -> tvm.IRModule:
    """Relax-op offload and min_block_size, then require_full_compilation's check."""
    mapped = _check_aten_names(
        mod, [n for n in options.torch_executed_ops if not is_relax_op_name(n)]
    )
    relax_names = [n for n in options.torch_executed_ops if is_relax_op_name(n)]
    relax_names += [n for n in mapped if n not in relax_names]
    if relax_names:
        mod = offload_relax_ops(mod, relax_names)
    mod = absorb_small_relax_blocks(mod, options.min_block_size)
    if options.require_full_compilation:
        _refuse_torchops(mod)
    return mod


def _torchop_names(mod: tvm.IRModule) -> set[str]:
    """The ``op_name`` of every torchop call in ``mod``."""
    found: set[str] = set()

    def visit(expr) -> None:
        if relay_ext.is_torchop(expr):
            found.add(str(expr.attrs["op_name"]))

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return found


def _relax_ops_called(mod: tvm.IRModule) -> set[str]:
    """The name of every Relax operator ``mod``'s functions call."""
    found: set[str] = set()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            found.add(str(expr.op.name))

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return found


def _check_aten_names(mod: tvm.IRModule, names: list[str]) -> list[str]:
    """ATen names act when a PyTorch program is imported (the frontend makes their nodes
    torchops). On a Relax module an ATen name acts on the torchops it names, else on the
    Relax ops TVM's importer makes of that ATen op (``aten.tanh`` -> ``relax.tanh``) when the
    module calls them: those Relax names are returned. A name that matches neither would
    silently do nothing: an OptionError."""
    if not names:
        return []
    present = _torchop_names(mod)
    called = _relax_ops_called(mod)
    mapped: list[str] = []
    unmatched = []
    for n in names:
        if any(op == n or op.startswith(n + ".") for op in present):
            continue
        relax_names = [r for r in relax_ops_for_aten(n) if r in called]
        if relax_names:
            logger.debug("torch_executed_ops: %s acts on this module's %s", n, relax_names)
            mapped += [r for r in relax_names if r not in mapped]
        else:
            unmatched.append(n)
    if unmatched:
        raise OptionError(
            f"torch_executed_ops: {unmatched} match no torchop of this module and no Relax op "
            "it calls that TVM's importer makes of them. ATen names act when a PyTorch program "
            "is imported (byoc_torch.compile, from_exported_program); on a Relax module the "
            f"pass moves Relax ops by name (or tvm.ir.Op): {sorted(CONVERTERS)}"
        )
    return mapped


def _refuse_torchops(mod: tvm.IRModule) -> None:
    """``require_full_compilation`` at the IR level: any torchop is an error listing them, each
    named by its FX nodes (a module the frontend made) or else by the Relax variable it binds
    and its function (``main/lv1``: a hand-built module)."""
    found: list[FallbackRecord] = []

    @relax.expr_functor.visitor
    class _Find(relax.PyExprVisitor):
        def __init__(self, where: str) -> None:
            super().__init__()
            self.where = where

        def visit_var_binding_(self, binding) -> None:
            value = binding.value
            if relay_ext.is_torchop(value):
                names = [str(n) for n in (value.attrs.get("nodes") or [])]
                node = ", ".join(names) or f"{self.where}/{binding.var.name}"
                found.append(FallbackRecord(node, str(value.attrs["op_name"]), Reason.IN_MODULE))
            super().visit_var_binding_(binding)

    for gv, func in sorted(mod.functions.items(), key=lambda kv: kv[0].name_hint):
        if isinstance(func, relax.Function):
            _Find(gv.name_hint).visit_expr(func)
    if found:
        raise FullCompilationError(found)


def partition_for_torch(mod: tvm.IRModule, **options) -> tvm.IRModule:
    """Group the torchop calls of ``mod`` into external functions (``Codegen="torch"``),
    after offloading the Relax ops ``torch_executed_ops`` names and applying
    ``min_block_size`` (see :class:`PartitionForTorch`)."""
    pass_ = PartitionForTorch(**options)
    # Run the checks here too, so that their errors are raised directly, not through the
    # pass infrastructure.
    mod = _prepare(mod, pass_.options)
    return _Partitioner(mod, pass_.options).run()
