"""Higher-order ops TVM's importer does not convert (``while_loop``, ``map``) as TorchScript.

Place in the data flow: :func:`byoc_torch.frontend.torchscript.script_for_node` hands these
nodes here. ``torch.cond`` is converted by TVM's importer (its branches through the same
convert map); ``while_loop`` and ``map`` have no TVM conversion, so they run in LibTorch: each
subgraph the op calls (a GraphModule of the program) becomes a TorchScript method of the
node's script, and ``forward`` loops over it as PyTorch does::

    def forward(self, a0, a1):             # while_loop(cond_fn, body_fn, (a0,), (a1,))
        c0 = a0
        while bool(self._hop_w_cond(c0, a1)[0]):
            r = self._hop_w_body(c0, a1)
            c0 = r[0]
        return (c0, )

Method names carry the node's name, so several such nodes merge into one subgraph script.
A subgraph's nodes are written by :mod:`.torchscript`'s own writer, which hands its pieces in
(:class:`ScriptParts`): this module does not import :mod:`.torchscript`, which dispatches here.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import fx

from ..errors import FallbackError

__all__ = ["HIGHER_ORDER_SCRIPTS", "ScriptParts", "subgraph_method"]


class ScriptParts(NamedTuple):
    """The TorchScript writer's pieces a subgraph method is written with."""

    writer: Callable[[], Any]  # a new, empty writer (inputs, local, lines, emit, tensor)
    call_expr: Callable[[Any, fx.Node], str]  # the call expression of one FX node
    method: Callable[[str, int, str, list[str], str], str]  # name, #inputs, type, lines, ret


def _subgraph(node: fx.Node, ref: object) -> fx.GraphModule:
    if not (isinstance(ref, fx.Node) and ref.op == "get_attr"):
        raise FallbackError(f"node {node.name}: expected a subgraph, got {ref!r}")
    return getattr(node.graph.owning_module, ref.target)


def subgraph_method(name: str, gm: fx.GraphModule, parts: ScriptParts) -> str:
    """A TorchScript method ``name(self, p0: Tensor, ...)`` running the FX graph ``gm`` (its
    placeholders are the parameters, in order); it returns a tuple of the graph's outputs."""
    w = parts.writer()
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    w.inputs.extend(placeholders)
    outputs: list[str] = []
    for k, n in enumerate(gm.graph.nodes):
        if n.op == "placeholder":
            continue
        if n.op == "output":
            (values,) = n.args
            values = values if isinstance(values, list | tuple) else (values,)
            for v in values:
                if not isinstance(v, fx.Node):
                    raise FallbackError(f"subgraph {name} returns a constant {v!r}")
                outputs.append(w.local.get(v) or w.tensor(v))
            break
        if n.op != "call_function":
            raise FallbackError(f"subgraph {name}: node {n.name} is a {n.op}")
        if n.target is operator.getitem and n.args[0] in w.local:
            w.local[n] = f"{w.local[n.args[0]]}[{int(n.args[1])}]"
            continue
        w.emit(f"v{k} = {parts.call_expr(w, n)}")
        w.local[n] = f"v{k}"
    if len(w.inputs) != len(placeholders):
        raise FallbackError(f"subgraph {name} uses values from outside its parameters")
    ret_type = "Tuple[" + ", ".join("Tensor" for _ in outputs) + "]"
    ret = "(" + "".join(f"{o}, " for o in outputs) + ")"
    return parts.method(name, len(placeholders), ret_type, w.lines, ret)


def _while_loop(node: fx.Node, w, parts: ScriptParts) -> tuple[list[str], list[str]]:
    cond_ref, body_ref, carried, extra = node.args[:4]
    methods = [
        subgraph_method(f"_hop_{node.name}_cond", _subgraph(node, cond_ref), parts),
        subgraph_method(f"_hop_{node.name}_body", _subgraph(node, body_ref), parts),
    ]
    carried_names = []
    for k, c in enumerate(carried):
        w.emit(f"c{k} = {w.tensor(c)}")
        carried_names.append(f"c{k}")
    extra_names = [w.tensor(x) for x in extra]
    args = ", ".join(carried_names + extra_names)
    w.emit(f"while bool(self._hop_{node.name}_cond({args})[0]):")
    w.emit(f"    r = self._hop_{node.name}_body({args})")
    for k, name in enumerate(carried_names):
        w.emit(f"    {name} = r[{k}]")
    return methods, carried_names


def _map(node: fx.Node, w, parts: ScriptParts) -> tuple[list[str], list[str]]:
    body_ref, xs, pos = node.args[:3]
    num_out = len(node.meta["val"])
    methods = [subgraph_method(f"_hop_{node.name}_body", _subgraph(node, body_ref), parts)]
    xs_names = [w.tensor(x) for x in xs]
    pos_names = [w.tensor(p) for p in pos]
    for k in range(num_out):
        w.emit(f"o{k}: List[Tensor] = []")
    w.emit(f"for i in range({xs_names[0]}.size(0)):")
    args = ", ".join([f"{x}[i]" for x in xs_names] + pos_names)
    w.emit(f"    r = self._hop_{node.name}_body({args})")
    for k in range(num_out):
        w.emit(f"    o{k}.append(r[{k}])")
    return methods, [f"torch.stack(o{k})" for k in range(num_out)]


HIGHER_ORDER_SCRIPTS = {
    torch.ops.higher_order.while_loop: _while_loop,
    torch.ops.higher_order.map_impl: _map,
}
