"""The placement search: which units run in TVM and which in LibTorch, for the least total time.

Place in the data flow: the last step of measured placement (:mod:`byoc_torch.placement`).
It sees only numbers -- each unit's measured time in TVM and in LibTorch, the edges between
units and the cost of one crossing -- so tests drive it with a fake cost model.

The cost of an assignment is the sum of each unit's time on its side plus one crossing cost for
every edge whose two ends are on different sides. That is a two-label energy with
"pay-if-different" pairwise terms, which a minimum s-t cut minimizes *exactly* (Boykov and
Kolmogorov): the source side is TVM, the sink side LibTorch; a unit's edge from the source
carries its LibTorch time (cut when it goes to LibTorch), its edge to the sink its TVM time; each
data edge carries the crossing cost in both directions. Collage (TVM RFC 0062) searches candidate
partitions with a shortest path over a topological order, which is exact for chains; the cut is
exact for any DAG under this cost model, and runs in O(V E^2) at worst (Edmonds-Karp), which is
milliseconds for the hundreds of units a model has. Ties break towards TVM, deterministically.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Assignment", "Unit", "assignment_cost", "best_assignment"]

TVM = "tvm"
TORCH = "torch"


@dataclass(frozen=True)
class Unit:
    """One unit of the search: its time in TVM and in LibTorch (ms; ``math.inf`` when it cannot
    run there)."""

    tvm_ms: float
    torch_ms: float


@dataclass(frozen=True)
class Assignment:
    """Where each unit runs (``"tvm"`` or ``"torch"``) and the modelled total time (ms)."""

    sides: tuple[str, ...]
    total_ms: float


def assignment_cost(
    units: Sequence[Unit],
    edges: Sequence[tuple[int, int]],
    crossing_ms: float,
    sides: Sequence[str],
) -> float:
    """The modelled time of one assignment: unit times plus crossings."""
    total = 0.0
    for unit, side in zip(units, sides, strict=True):
        total += unit.tvm_ms if side == TVM else unit.torch_ms
    total += crossing_ms * sum(1 for a, b in edges if sides[a] != sides[b])
    return total


def best_assignment(
    units: Sequence[Unit], edges: Sequence[tuple[int, int]], crossing_ms: float
) -> Assignment:
    """The assignment of least :func:`assignment_cost` (a minimum s-t cut, see module doc)."""
    n = len(units)
    if any(math.isinf(u.tvm_ms) and math.isinf(u.torch_ms) for u in units):
        bad = next(
            i for i, u in enumerate(units) if math.isinf(u.tvm_ms) and math.isinf(u.torch_ms)
        )
        raise ValueError(f"unit {bad} can run neither in TVM nor in LibTorch")
    source, sink = n, n + 1
    big = 1.0 + sum(min(u.tvm_ms, u.torch_ms) for u in units) + crossing_ms * len(edges)
    cap: dict[int, dict[int, float]] = {v: {} for v in range(n + 2)}

    def add(a: int, b: int, c: float) -> None:
        cap[a][b] = cap[a].get(b, 0.0) + c
        cap[b].setdefault(a, 0.0)

    for i, u in enumerate(units):
        add(source, i, big if math.isinf(u.torch_ms) else u.torch_ms)
        add(i, sink, big if math.isinf(u.tvm_ms) else u.tvm_ms)
    for a, b in edges:
        if a != b and crossing_ms > 0:
            add(a, b, crossing_ms)
            add(b, a, crossing_ms)
    _max_flow(cap, source, sink)
    to_sink = _reaching(cap, sink)
    sides = tuple(TORCH if i in to_sink else TVM for i in range(n))
    return Assignment(sides, assignment_cost(units, edges, crossing_ms, sides))


_EPS = 1e-12


def _max_flow(cap: dict[int, dict[int, float]], source: int, sink: int) -> float:
    """Edmonds-Karp on the residual capacities ``cap`` (updated in place)."""
    flow = 0.0
    while True:
        parent = {source: source}
        queue = deque([source])
        while queue and sink not in parent:
            v = queue.popleft()
            for w in sorted(cap[v]):
                if w not in parent and cap[v][w] > _EPS:
                    parent[w] = v
                    queue.append(w)
        if sink not in parent:
            return flow
        push = math.inf
        w = sink
        while w != source:
            push = min(push, cap[parent[w]][w])
            w = parent[w]
        w = sink
        while w != source:
            v = parent[w]
            cap[v][w] -= push
            cap[w][v] += push
            w = v
        flow += push


def _reaching(cap: dict[int, dict[int, float]], sink: int) -> set[int]:
    """The nodes with a residual path to ``sink``: the smallest sink side of a minimum cut, so
    that among equally cheap assignments the most units stay in TVM."""
    into: dict[int, list[int]] = {v: [] for v in cap}
    for v in sorted(cap):
        for w in sorted(cap[v]):
            if cap[v][w] > _EPS:
                into[w].append(v)
    seen = {sink}
    queue = deque([sink])
    while queue:
        w = queue.popleft()
        for v in into[w]:
            if v not in seen:
                seen.add(v)
                queue.append(v)
    return seen
