"""FX graphs as plain lists, for Before/Expected tests of the package program's rewrites
(byoc_torch.constant_folding, byoc_torch.frozen_weights).

Place in the data flow: beside the tests; nothing in the compile imports it.
"""

from __future__ import annotations

from torch import fx

__all__ = ["graph_of"]


def graph_of(module: fx.GraphModule) -> list[tuple]:
    """Each node of ``module``'s graph as (op, target, arguments), in order; an argument that
    is a node by its position in the graph (names depend on how nodes were made)."""
    position = {n: k for k, n in enumerate(module.graph.nodes)}

    def arg(a):
        return position[a] if isinstance(a, fx.Node) else a

    return [(n.op, str(n.target), tuple(map(arg, n.args))) for n in module.graph.nodes]
