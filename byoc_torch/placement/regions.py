"""Candidate regions of measured placement, and their Relax and TorchScript forms.

Place in the data flow: measured placement starts here. After the first import, the FX nodes
TVM converted are grouped into *regions*, each about what TVM fuses into one kernel: an anchor
op (a matmul, a convolution, a reduction, a normalization...) followed by the chain of
elementwise and injective ops that only it feeds (:func:`form_regions`). Each region then gets

* a Relax function made of the very bindings TVM's importer emitted for its nodes
  (:func:`region_module`, all regions in one module, so one ``relax.build`` compiles them all
  with TVM's own fusion), and
* a TorchScript function made by the same generator the LibTorch fallback uses
  (:func:`region_scripts`), run by byoc_torch's own C++ runtime,

so that both sides can be timed on the real intermediate values of the example inputs.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import tvm
from torch import fx
from tvm import relax

import relay_ext

from ..errors import FallbackError
from ..frontend.torchscript import output_metas, script_for_nodes
from ..ir import close_blocks

logger = logging.getLogger(__name__)

__all__ = ["Region", "form_regions", "region_module", "region_scripts"]

# Op-name fragments of anchor ops: each starts a region of its own (TVM fuses what follows it).
_ANCHORS = (
    "mm",
    "conv",
    "linear",
    "matmul",
    "softmax",
    "norm",
    "sum",
    "mean",
    "amax",
    "amin",
    "max",
    "min",
    "prod",
    "pool",
    "scaled_dot_product",
    "cumsum",
    "sort",
    "topk",
    "argmax",
    "argmin",
    "var",
    "std",
    "gather",
    "scatter",
    "index",
    "embedding",
)


def _op_base(node: fx.Node) -> str:
    schema = getattr(node.target, "_schema", None)
    name = schema.name if schema is not None else getattr(node.target, "__name__", "")
    return name.rpartition("::")[2].lower()


def is_anchor(node: fx.Node) -> bool:
    """Does ``node`` start a region of its own?"""
    base = _op_base(node)
    return any(a in base for a in _ANCHORS)


@dataclass
class Region:
    """A set of TVM-converted FX nodes (graph order) that placement moves as one."""

    index: int
    nodes: list[fx.Node]

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


def form_regions(graph: fx.Graph, native: set[str]) -> list[Region]:
    """Group the nodes named in ``native`` (TVM-converted tensor nodes and the tuples they
    unpack) into regions, in graph order (see the module doc)."""
    region_of: dict[fx.Node, int] = {}
    regions: list[list[fx.Node]] = []
    for node in graph.nodes:
        if node.op != "call_function" or node.name not in native:
            continue
        producers = [p for p in node.all_input_nodes if p in region_of]
        join = None
        if node.target is operator.getitem and producers:
            join = region_of[producers[0]]  # an element stays with the op that made the tuple
        elif not is_anchor(node) and len(producers) == 1:
            p = producers[0]
            if len(p.users) == 1:
                join = region_of[p]
        if join is None:
            region_of[node] = len(regions)
            regions.append([node])
        else:
            region_of[node] = join
            regions[join].append(node)
    return [Region(k, members) for k, members in enumerate(regions)]


def node_bindings(main: relax.Function, var_node: Mapping[relax.Var, str]) -> dict[str, list]:
    """The bindings of ``main`` that TVM's importer emitted for each FX node: a converter may
    emit several, and the last one's var is the node's value (``var_node``)."""
    out: dict[str, list] = {}
    pending: list = []
    torch_vars: set = set()
    for block in main.body.blocks:
        for b in block.bindings:
            value = b.value
            if relay_ext.is_torchop(value) or (
                isinstance(value, relax.TupleGetItem) and value.tuple_value in torch_vars
            ):
                torch_vars.add(b.var)  # LibTorch's: never part of a region
                pending = []
                continue
            pending.append(b)
            name = var_node.get(b.var)
            if name is not None:
                out[name] = pending
                pending = []
    return out


@relax.expr_functor.mutator
class _Substitute(relax.PyExprMutator):
    def __init__(self, mapping: dict) -> None:
        super().__init__()
        self.mapping = mapping

    def visit_var_(self, var: relax.Var) -> relax.Expr:
        return self.mapping.get(var, var)

    def visit_dataflow_var_(self, var: relax.DataflowVar) -> relax.Expr:
        return self.mapping.get(var, var)


@dataclass
class RegionFunction:
    """Region ``index`` as Relax function ``name``: its inputs are these Relax vars."""

    index: int
    name: str
    inputs: list[relax.Var]


def region_module(
    main: relax.Function, regions: list[Region], var_node: Mapping[relax.Var, str]
) -> tuple[tvm.IRModule, list[RegionFunction]]:
    """One Relax function per region, made of the bindings its nodes were imported as, with
    every value it reads from outside as a parameter."""
    per_node = node_bindings(main, var_node)
    bb = relax.BlockBuilder()
    made: list[RegionFunction] = []
    for region in regions:
        bindings = [b for n in region.nodes for b in per_node.get(n.name, [])]
        if not bindings:
            continue
        defined = {b.var for b in bindings}
        inputs: list[relax.Var] = []
        for b in bindings:
            for v in relax.analysis.free_vars(b.value):
                if v not in defined and v not in inputs:
                    inputs.append(v)
        name = f"region_{region.index}"
        params = [relax.Var(f"p{k}", v.ty) for k, v in enumerate(inputs)]
        mapping: dict = dict(zip(inputs, params, strict=True))
        sub = _Substitute(mapping)
        outputs = [b.var for b in bindings if b.var in var_node]
        try:
            with bb.function(name, params, private=False):
                with bb.dataflow():
                    for b in bindings:
                        value = sub.visit_expr(b.value)
                        if isinstance(b, relax.MatchCast):
                            mapping[b.var] = bb.match_cast(value, b.ty)
                        else:
                            mapping[b.var] = bb.emit(value)
                    result = [mapping[v] for v in outputs] or [mapping[bindings[-1].var]]
                    out = bb.emit_output(relax.Tuple(result) if len(result) > 1 else result[0])
                bb.emit_func_output(out)
        except Exception as err:  # a region TVM cannot express alone is not measured
            logger.debug("placement: region %d has no Relax form: %s", region.index, err)
            close_blocks(bb)
            continue
        made.append(RegionFunction(region.index, name, inputs))
    return bb.get(), made


@dataclass
class RegionScript:
    """Region ``index`` as TorchScript method ``name`` over these FX nodes' values."""

    index: int
    name: str
    inputs: list[fx.Node]
    source: str  # defines forward(self, a0, ...) -> Tuple[Tensor, ...]
    num_outputs: int
    nodes: list[fx.Node]  # the region's nodes, in graph order
    outputs: list[tuple[fx.Node, int | None]]  # what forward returns: a value, or its element k


def region_scripts(regions: list[Region]) -> list[RegionScript]:
    """One TorchScript method per region (the code LibTorch would run for it)."""
    out = []
    for region in regions:
        members = set(region.nodes)
        outputs: list[tuple[fx.Node, int | None]] = []
        for n in region.nodes:
            used_outside = any(u not in members for u in n.users)
            if n.target is operator.getitem:
                if used_outside:
                    outputs.append((n.args[0], int(n.args[1])))
                continue
            if not used_outside:
                continue
            metas = output_metas(n)
            if metas is None:
                continue
            if isinstance(n.meta.get("val"), torch.Tensor):
                outputs.append((n, None))
            else:
                outputs.extend((n, k) for k in range(len(metas)))
        if not outputs:
            last = region.nodes[-1]
            if not isinstance(last.meta.get("val"), torch.Tensor):
                continue
            outputs = [(last, None)]
        try:
            ns = script_for_nodes(region.nodes, outputs)
        except FallbackError as err:
            logger.debug("placement: region %d has no TorchScript: %s", region.index, err)
            continue
        name = f"region_{region.index}"
        out.append(
            RegionScript(
                region.index,
                name,
                list(ns.inputs),
                ns.source,
                ns.num_outputs,
                list(region.nodes),
                outputs,
            )
        )
    return out
