"""``min_block_size`` on the FX graph: TVM-side blocks too small to be worth two crossings.

Place in the data flow: after an import, the importer asks :func:`small_native_blocks` which
TVM-converted FX nodes sit in blocks smaller than ``min_block_size`` between LibTorch ops; they
are forced to LibTorch and the import runs once more, so the partition pass sees one torch
group where there would have been two. (On a Relax module, the partition pass applies the same
option: :mod:`byoc_torch.partition.min_block`.)
"""

from __future__ import annotations

import operator

from torch import fx

from ..options import Options
from .torchscript import output_metas

__all__ = ["small_native_blocks"]


def small_native_blocks(graph: fx.Graph, fallback: set[str], options: Options) -> list[fx.Node]:
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
