"""Values a package's program computes from no input, computed once at compile time.

Place in the data flow: the first rewrite of an AOTInductor package's program
(:meth:`byoc_torch.aot_inductor.SubgraphProgram.compiled_module`), before the convolution and
matrix rewrites. Transformer models build their attention masks from ``arange`` and ``full``:
HF GPT-2's causal mask (with transformers' check for packed sequences in the position ids) is
a chain of ``arange``, ``cumsum``, ``eq``, ``le``, ``bitwise_and`` and ``where`` that no input
reaches. Inductor folds constants only from frozen parameters, so it fuses that chain into
every layer's softmax and recomputes it for each score on every call, in 64-bit integers. With
the chain computed here the softmax reads one stored mask (HF GPT-2, one thread: 0.80x eager
-> 0.70x; docs/performance.md).

:func:`folded` evaluates every node that reads no placeholder (through any path), is
deterministic and mutates nothing, and whose value is a tensor of a static shape of at most
``_defaults.AOTI_FOLD_MAX_BYTES``; those read by a node that is not folded become constants
of the module. Their sources are such nodes and the module's constants that no matrix
multiply or convolution reads (a lifted ``torch.tensor(-inf)``, a buffer of rotary angles);
a weight is never a source, so it is never copied into a folded value and its multiplies
stay what the matrix rewrites look for. A value the program returns as it is stays computed
(a returned constant could be changed by the caller), and so does one an in-place op writes
to or an ``empty`` (uninitialized memory). The folded values of one program hold
at most ``_defaults.AOTI_FOLD_MAX_BYTES`` in all (each value, and each value computed on the
way, too): a value past the budget is computed on every call, from its folded sources.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from . import _defaults
from .frozen_weights import CONVOLUTIONS, MATMULS, attribute, reader_nodes, unused_name

__all__ = ["folded"]

# What reads a constant as a weight: its constants are left to the matrix and convolution
# rewrites (byoc_torch.frozen_weights, byoc_torch.onednn_convolutions) and to inductor.
_WEIGHT_READERS = MATMULS | CONVOLUTIONS | {torch.ops.aten.bmm.default}
# Ops whose value is memory left as it was found: not a value to store.
_UNINITIALIZED = frozenset(
    {
        torch.ops.aten.empty.memory_format,
        torch.ops.aten.empty_like.default,
        torch.ops.aten.empty_strided.default,
        torch.ops.aten.new_empty.default,
        torch.ops.aten.new_empty_strided.default,
    }
)


def folded(module: fx.GraphModule) -> fx.GraphModule:
    """``module`` with its input-independent values computed (see the module doc), or
    ``module`` itself when there is nothing to fold. The copy shares every other constant
    with ``module``."""
    values = _constant_values(module)
    graph = module.graph
    frontier, held = [], 0
    for node in graph.nodes:
        value = values.get(node)
        if node.op != "call_function" or not isinstance(value, torch.Tensor):
            continue
        if all(user in values for user in node.users) or any(map(_writes, node.users)):
            continue
        held += value.numel() * value.element_size()
        if held > _defaults.AOTI_FOLD_MAX_BYTES:
            break
        frontier.append(node)
    if not frontier:
        return module
    copy = fx.Graph()
    mapping: dict[fx.Node, fx.Node] = {}
    copy.output(copy.graph_copy(graph, mapping))
    attrs = {n.target: attribute(module, n.target) for n in graph.nodes if n.op == "get_attr"}
    for node in frontier:
        name = unused_name(attrs, f"_folded_{node.name}")
        attrs[name] = values[node].clone(memory_format=torch.contiguous_format)
        twin = mapping[node]
        with copy.inserting_before(twin):
            constant = copy.get_attr(name)
        twin.replace_all_uses_with(constant)
    copy.eliminate_dead_code()
    return fx.GraphModule(attrs, copy)


def _constant_values(module: fx.GraphModule) -> dict[fx.Node, object]:
    """The value of every node of ``module`` that can be folded or feeds one that can, by
    node, in graph order."""
    values: dict[fx.Node, object] = {}
    output = next(n for n in module.graph.nodes if n.op == "output")
    for node in module.graph.nodes:
        if node.op == "get_attr":
            value = attribute(module, node.target)
            read_as_weight = any(r.target in _WEIGHT_READERS for r in reader_nodes(node))
            if isinstance(value, torch.Tensor) and not read_as_weight:
                values[node] = value
            continue
        if node.op != "call_function" or node in output.all_input_nodes:
            continue
        if not _pure(node) or not all(a in values for a in node.all_input_nodes):
            continue
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
        try:
            value = node.target(*args, **kwargs)
        except Exception:  # an op that needs its inputs' real data or a device: leave it
            continue
        if _small_static(value) or isinstance(value, tuple | list):
            values[node] = value
    return values


def _pure(node: fx.Node) -> bool:
    """Whether ``node`` computes the same value from the same arguments, changing nothing."""
    if node.target is operator.getitem:
        return True
    op = node.target
    if not isinstance(op, torch._ops.OpOverload) or op in _UNINITIALIZED or _writes(node):
        return False
    return torch.Tag.nondeterministic_seeded not in op.tags


def _writes(node: fx.Node) -> bool:
    """Whether ``node`` is an op that writes to one of its arguments (a stored constant it
    wrote to would change from call to call)."""
    return isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable


def _small_static(value: object) -> bool:
    """Whether ``value`` is a CPU tensor of a static shape within the fold budget."""
    if not isinstance(value, torch.Tensor) or value.device.type != "cpu":
        return False
    if any(not isinstance(s, int) for s in value.shape):
        return False
    return value.numel() * value.element_size() <= _defaults.AOTI_FOLD_MAX_BYTES
