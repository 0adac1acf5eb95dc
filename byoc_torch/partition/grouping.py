"""The grouping algorithm of the partition pass, on a plain DAG (no TVM types).

Place in the data flow: ``byoc_torch.partition`` builds a :class:`Dag` from one binding block,
calls :func:`maximal_groups`, and lifts each group into an external function. Kept free of TVM
so that it can be tested against a brute-force reference and benchmarked on large graphs.

Problem: nodes are colored torch or native. Partition the torch nodes into groups so that
contracting every group leaves the graph acyclic, and the grouping is *maximal*: no two groups
can be merged without creating a cycle. Deterministic: the same DAG gives the same groups.

Algorithm, O((V + E) · G / w) with G groups and w the machine word (bitsets as Python ints):

1. Stage of a node: the largest, over its inputs, of the input's stage, plus one when the
   input has the other color. Edges never lower the stage, so no path leaves a stage and comes
   back; a path from a torch node through a native node to a torch node climbs at least two
   stages. All torch nodes of one stage (a *piece*) can therefore form one group.
2. Visit stages in increasing order. A piece joins the lowest-numbered group that has no path
   of two or more units to it in the contracted graph (a direct torch→torch edge is fine; a
   path through a native node or through another group is not), or starts a new group. Each
   node keeps the bitset of groups it depends on through native nodes only, and a group's
   ancestors are closed transitively through the groups it absorbed. A piece never reaches an
   earlier group (stages only grow along paths), so that one check rules out cycles. Merging
   only adds paths, so a piece that could not join a group never could later: when the sweep
   ends, every pair of groups is joined by a path through a unit outside both, i.e. no merge
   is possible. That is maximality.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Dag", "creates_cycle", "maximal_groups"]


@dataclass(frozen=True)
class Dag:
    """A DAG in topological order: node i's inputs are indices < i."""

    is_torch: list[bool]
    inputs: list[list[int]]

    def __post_init__(self) -> None:
        if len(self.is_torch) != len(self.inputs):
            raise ValueError("is_torch and inputs must have one entry per node")
        for i, ins in enumerate(self.inputs):
            for p in ins:
                if not 0 <= p < i:
                    raise ValueError(f"node {i} has input {p}: nodes must be in topological order")


def maximal_groups(dag: Dag) -> list[int]:
    """Group id per node (-1 for native nodes); ids count up from 0 in order of first member."""
    n = len(dag.is_torch)
    is_torch = dag.is_torch
    stage = [0] * n
    for i in range(n):
        s = 0
        t = is_torch[i]
        for p in dag.inputs[i]:
            sp = stage[p] + (is_torch[p] != t)
            if sp > s:
                s = sp
        stage[i] = s
    pieces: dict[int, list[int]] = {}
    for i in range(n):
        if is_torch[i]:
            pieces.setdefault(stage[i], []).append(i)
    natives_by_stage: dict[int, list[int]] = {}
    for i in range(n):
        if not is_torch[i]:
            natives_by_stage.setdefault(stage[i], []).append(i)

    group = [-1] * n
    # up[i]: bitset of groups node i depends on, directly or through native nodes only.
    up = [0] * n
    # parents[g]: bitset of groups the members of g depend on (not transitively closed).
    parents: list[int] = []
    closure_cache: dict[int, int] = {}

    def ancestors(bits: int) -> int:
        """``bits`` plus every group reachable backwards from them (contracted graph)."""
        out = 0
        stack = [bits]
        while stack:
            b = stack.pop() & ~out
            while b:
                low = b & -b
                g = low.bit_length() - 1
                b ^= low
                cached = closure_cache.get(g)
                if cached is not None:
                    out |= cached
                    continue
                out |= low
                stack.append(parents[g])
        return out

    def closed(g: int) -> int:
        cached = closure_cache.get(g)
        if cached is None:
            cached = (1 << g) | ancestors(parents[g])
            closure_cache[g] = cached
        return cached

    for s in sorted(set(pieces) | set(natives_by_stage)):
        piece = pieces.get(s)
        if piece:
            members = set(piece)
            via_native = 0  # groups reaching the piece through a native input
            direct = 0  # groups with an edge straight into the piece
            for i in piece:
                for p in dag.inputs[i]:
                    if p in members:
                        continue
                    if is_torch[p]:
                        direct |= 1 << group[p]
                    else:
                        via_native |= up[p]
            # Forbidden: every group with a path of two or more units to the piece.
            forbidden = 0
            b = via_native
            while b:
                low = b & -b
                forbidden |= closed(low.bit_length() - 1)
                b ^= low
            b = direct
            while b:
                low = b & -b
                g = low.bit_length() - 1
                forbidden |= closed(g) & ~low  # strictly upstream of a direct group
                b ^= low
            free = ~forbidden & (forbidden + 1)  # lowest group id not forbidden
            g = free.bit_length() - 1
            new_parents = (via_native | direct) & ~(1 << g)
            if g < len(parents):
                parents[g] |= new_parents
                closure_cache.clear()  # g gained ancestors; cached closures may contain g
            else:
                parents.append(new_parents)
            for i in piece:
                group[i] = g
            gbit = 1 << g
            for i in piece:
                up[i] = gbit
        for i in natives_by_stage.get(s, ()):
            bits = 0
            for p in dag.inputs[i]:
                bits |= up[p]
            up[i] = bits

    # Renumber groups in order of first member, for stable names.
    renumber: dict[int, int] = {}
    for i in range(n):
        g = group[i]
        if g >= 0 and g not in renumber:
            renumber[g] = len(renumber)
    return [renumber[g] if g >= 0 else -1 for g in group]


def creates_cycle(dag: Dag, group: list[int]) -> bool:
    """True when contracting every group of ``group`` (-1 = ungrouped) leaves a cycle."""
    n = len(group)
    unit = [n + g if g >= 0 else i for i, g in enumerate(group)]
    succ: dict[int, set[int]] = {}
    indeg: dict[int, int] = {u: 0 for u in set(unit)}
    for i, ins in enumerate(dag.inputs):
        for p in ins:
            a, b = unit[p], unit[i]
            if a != b and b not in succ.setdefault(a, set()):
                succ[a].add(b)
                indeg[b] += 1
    ready = [u for u, d in indeg.items() if d == 0]
    seen = 0
    while ready:
        u = ready.pop()
        seen += 1
        for v in succ.get(u, ()):
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
    return seen != len(indeg)
