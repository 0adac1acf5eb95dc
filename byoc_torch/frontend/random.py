"""Random ops: run in LibTorch, drawing from PyTorch's generator as eager does.

Place in the data flow: consulted by the decomposition (random ops stay whole: a decomposed
``bernoulli`` or ``dropout`` draws different numbers than eager's kernel), by the importer
(every random op falls back: TVM's conversions turn ``dropout(train=True)`` into the identity
and draw from no generator at all) and by verification (values that depend on a random draw
are not compared: the reference run draws again).

An op is random when PyTorch tags it ``nondeterministic_seeded`` (``rand_like``, ``dropout``,
``bernoulli``, ``normal``, ``randperm``, ...). LibTorch runs in the same process as PyTorch and
shares its default CPU generator, so ``torch.manual_seed(s)`` before a call gives the same
numbers as eager after the same seed.
"""

from __future__ import annotations

import torch
from torch import fx

__all__ = ["is_random", "random_dependent"]


def is_random(target: object) -> bool:
    """Does the op ``target`` draw random numbers?"""
    return torch.Tag.nondeterministic_seeded in getattr(target, "tags", ())


def random_dependent(graph: fx.Graph) -> set[str]:
    """Names of the nodes whose value depends on a random draw (the random ops included)."""
    tainted: set[str] = set()
    for node in graph.nodes:
        if node.op == "call_function" and is_random(node.target):
            tainted.add(node.name)
        elif any(p.name in tainted for p in node.all_input_nodes):
            tainted.add(node.name)
    return tainted
