"""Values TVM cannot hold (complex tensors) stay inside LibTorch.

Place in the data flow: consulted by the importer for every node. A node that *produces* a
complex value is not emitted on its own; a node that turns complex values back into real ones
(a *sink*, e.g. ``view_as_real`` or ``abs``) becomes one torchop together with every
complex-valued node it depends on (:func:`cluster_of`). A complex producer used by several
sinks is recomputed in each (they are pure), which keeps every cluster free of paths through
TVM. A complex model output is made a sink by :mod:`.outputs` (it crosses as its real view).
"""

from __future__ import annotations

import torch
from torch import fx

from .torchscript import output_metas

__all__ = ["FOREIGN_DTYPES", "cluster_of", "is_sink", "produces_foreign"]

# dtypes a Relax tensor cannot carry; values of these types stay inside LibTorch.
FOREIGN_DTYPES = frozenset({torch.complex32, torch.complex64, torch.complex128})


def produces_foreign(node: fx.Node) -> bool:
    """Does ``node`` compute a value TVM cannot hold?"""
    metas = output_metas(node)
    return (
        node.op == "call_function"
        and metas is not None
        and any(m.dtype in FOREIGN_DTYPES for m in metas)
    )


def is_sink(node: fx.Node) -> bool:
    """Does ``node`` turn complex inputs into values TVM can hold?"""
    return (
        node.op == "call_function"
        and not produces_foreign(node)
        and any(produces_foreign(p) for p in node.all_input_nodes)
    )


def cluster_of(sink: fx.Node) -> list[fx.Node]:
    """``sink`` and every complex-valued node it depends on, in graph order."""
    members = {sink}
    stack = [p for p in sink.all_input_nodes if produces_foreign(p)]
    while stack:
        p = stack.pop()
        if p not in members:
            members.add(p)
            stack.extend(q for q in p.all_input_nodes if produces_foreign(q))
    order = {n: i for i, n in enumerate(sink.graph.nodes)}
    return sorted(members, key=order.__getitem__)
