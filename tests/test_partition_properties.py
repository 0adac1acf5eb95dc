"""Property-based tests of the partitioner over random DAGs (hypothesis).

For every generated graph: the grouping creates no cycle; no two groups could be merged
without creating a cycle (checked by an independent brute-force reference); the result is
deterministic; and the partitioned Relax module builds and matches eager PyTorch.
"""

from __future__ import annotations

import torch
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import byoc_torch
from byoc_torch.partition.grouping import Dag, maximal_groups
from byoc_torch.testing.graphs import Graph, build, random_input, reference, run

# --------------------------------------------------------------------------------------------
# An independent reference: reachability by brute force, no shared code with the algorithm.
# --------------------------------------------------------------------------------------------


def reachable_from(inputs: list[list[int]], start: set[int]) -> set[int]:
    """Nodes reachable from `start` by one or more edges."""
    n = len(inputs)
    succ = [[] for _ in range(n)]
    for i, ins in enumerate(inputs):
        for p in ins:
            succ[p].append(i)
    seen: set[int] = set()
    stack = [s for v in start for s in succ[v]]
    while stack:
        v = stack.pop()
        if v not in seen:
            seen.add(v)
            stack.extend(succ[v])
    return seen


def is_convex(inputs: list[list[int]], members: set[int]) -> bool:
    """No path leaves `members` and comes back: contracting it creates no cycle."""
    down = reachable_from(inputs, members) - members
    return not (reachable_from(inputs, down) & members)


def groups_of(assignment: list[int]) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for i, g in enumerate(assignment):
        if g >= 0:
            out.setdefault(g, set()).add(i)
    return out


def contracted_is_acyclic(inputs: list[list[int]], groups: dict[int, set[int]]) -> bool:
    """Brute force: contract the groups, then look for a cycle by DFS colouring."""
    unit = {}
    for g, ms in groups.items():
        for i in ms:
            unit[i] = ("g", g)
    edges: dict = {}
    for i, ins in enumerate(inputs):
        for p in ins:
            a, b = unit.get(p, ("n", p)), unit.get(i, ("n", i))
            if a != b:
                edges.setdefault(a, set()).add(b)
    state: dict = {}

    def dfs(u) -> bool:
        state[u] = 1
        for v in edges.get(u, ()):
            if state.get(v) == 1 or (state.get(v) is None and not dfs(v)):
                return False
        state[u] = 2
        return True

    nodes = set(edges) | {v for vs in edges.values() for v in vs}
    return all(state.get(u) == 2 or dfs(u) for u in nodes if state.get(u) is None) and all(
        state.get(u) == 2 for u in nodes
    )


# --------------------------------------------------------------------------------------------
# Random DAGs
# --------------------------------------------------------------------------------------------


@st.composite
def dags(draw, max_nodes: int = 10) -> tuple[list[bool], list[list[int]]]:
    n = draw(st.integers(1, max_nodes))
    is_torch, inputs = [], []
    for i in range(n):
        is_torch.append(draw(st.booleans()))
        if i == 0:
            inputs.append([])
        else:
            inputs.append(sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))))
    return is_torch, inputs


@settings(max_examples=3000, deadline=None)
@given(dags(max_nodes=12))
def test_grouping_is_acyclic_maximal_and_deterministic(dag):
    is_torch, inputs = dag
    assignment = maximal_groups(Dag(is_torch, inputs))
    assert assignment == maximal_groups(Dag(is_torch, inputs))  # deterministic
    # Every torch node is grouped, no native node is.
    assert all((g >= 0) == t for g, t in zip(assignment, is_torch, strict=True))
    groups = groups_of(assignment)
    assert contracted_is_acyclic(inputs, groups)
    for g, ms in groups.items():
        assert is_convex(inputs, ms), f"group {g} is not convex"
    # Maximal: merging any two groups would create a cycle.
    ids = sorted(groups)
    for a_pos, a in enumerate(ids):
        for b in ids[a_pos + 1 :]:
            assert not is_convex(inputs, groups[a] | groups[b]), f"groups {a}, {b} could merge"


def to_graph(dag) -> Graph:
    is_torch, inputs = dag
    return [("t" if t else "n", ins or [-1]) for t, ins in zip(is_torch, inputs, strict=True)]


def partition_groups(graph: Graph) -> dict[int, set[int]]:
    """Which graph nodes each torch function of the partitioned module holds."""
    mod = byoc_torch.partition_for_torch(build(graph))
    assert tvm.relax.analysis.check_well_formed(mod)
    report = byoc_torch.report(mod)
    out: dict[int, set[int]] = {}
    for k, sub in enumerate(report.subgraphs):
        out[k] = {int(name[1:]) for name in sub.nodes}
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(max_nodes=9))
def test_partitioned_module_structure_is_maximal(dag):
    graph = to_graph(dag)
    inputs = [[i for i in ins if i >= 0] for _, ins in graph]
    groups = partition_groups(graph)
    torch_nodes = {i for i, (k, _) in enumerate(graph) if k == "t"}
    assert set().union(*groups.values()) == torch_nodes if groups else not torch_nodes
    assert contracted_is_acyclic(inputs, groups)
    ids = sorted(groups)
    for a_pos, a in enumerate(ids):
        for b in ids[a_pos + 1 :]:
            assert not is_convex(inputs, groups[a] | groups[b])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(max_nodes=8))
def test_partitioned_module_builds_and_matches_eager(dag):
    graph = to_graph(dag)
    x = random_input()
    got = run(byoc_torch.partition_for_torch(build(graph)), x)
    torch.testing.assert_close(got, reference(graph, x))
