"""Random ops: run in LibTorch, drawing from PyTorch's generator as eager does.

Place in the data flow: consulted by the decomposition (a node that draws stays whole: a
decomposed ``bernoulli`` or ``dropout`` draws different numbers than eager's kernel), by the
importer (every node that draws falls back: TVM's conversions turn ``dropout(train=True)`` into
the identity and draw from no generator at all) and by verification (values downstream of a
draw are compared on runs seeded alike, see :mod:`byoc_torch.verify`).

An op *may* draw when PyTorch tags it ``nondeterministic_seeded`` (``rand_like``,
``dropout``, ``bernoulli``, ``normal``, ``randperm``, ``scaled_dot_product_attention``...).
A node *draws* only when its arguments make it: attention with ``dropout_p == 0`` and dropout
with ``p == 0`` or ``train=False`` (``rrelu`` with ``training=False``) are deterministic and
are converted and checked like any op. LibTorch runs in the same process as PyTorch and shares
its default CPU generator, so ``torch.manual_seed(s)`` before a call gives the same numbers as
eager after the same seed.
"""

from __future__ import annotations

import torch
from torch import fx

__all__ = ["draws", "is_random", "random_dependent"]

# Arguments that switch a tagged op's draw off: False -> no draw; a probability of 0 -> no draw.
_TRAINING_ARGS = ("train", "training")
_PROBABILITY_ARGS = ("dropout_p", "p")


def is_random(target: object) -> bool:
    """May the op ``target`` draw random numbers (PyTorch's tag)?"""
    return torch.Tag.nondeterministic_seeded in getattr(target, "tags", ())


def draws(node: fx.Node) -> bool:
    """Does ``node`` draw random numbers with the arguments it has?"""
    if node.op != "call_function" or not is_random(node.target):
        return False
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return True
    values = _arguments(node, schema)
    for name in _TRAINING_ARGS:
        if values.get(name) is False:
            return False
    dropout = "dropout" in schema.name or "attention" in schema.name
    for name in _PROBABILITY_ARGS:
        p = values.get(name)
        if dropout and isinstance(p, int | float) and not isinstance(p, bool) and p == 0:
            return False
    return True


def _arguments(node: fx.Node, schema) -> dict[str, object]:
    """The node's arguments by schema name, defaults included."""
    values: dict[str, object] = {}
    positional = [a for a in schema.arguments if not a.kwarg_only]
    for arg, value in zip(positional, node.args, strict=False):
        values[arg.name] = value
    for arg in schema.arguments:
        if arg.name in node.kwargs:
            values[arg.name] = node.kwargs[arg.name]
        elif arg.name not in values and arg.has_default_value():
            values[arg.name] = arg.default_value
    return values


def random_dependent(graph: fx.Graph) -> set[str]:
    """Names of the nodes whose value depends on a random draw (the drawing nodes included)."""
    tainted: set[str] = set()
    for node in graph.nodes:
        if draws(node) or any(p.name in tainted for p in node.all_input_nodes):
            tainted.add(node.name)
    return tainted
