"""How long partitioning takes on synthetic graphs of 1k, 10k and 100k ops.

Measures, per size, (1) the grouping algorithm alone
(byoc_torch.partition.grouping.maximal_groups on
the DAG) and (2) the whole PartitionForTorch pass on a Relax module (grouping, lifting every
group into a function with its merged TorchScript, re-ordering the block). Building the Relax
module is not timed. Prints a table; --json writes the figures.

    python benchmarks/partition_scale.py [--sizes 1000 10000 100000] [--torch-share 0.3]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings
from pathlib import Path

import byoc_torch
from byoc_torch.partition.grouping import Dag, creates_cycle, maximal_groups


def synthetic_graph(n: int, torch_share: float, seed: int, window: int = 32) -> list:
    """A random DAG in the format of byoc_torch/testing/graphs.py: each node takes 1-3 inputs
    among the
    `window` nodes before it (or the graph input), and is a torch op with probability
    `torch_share`."""
    rng = random.Random(seed)
    graph = []
    for i in range(n):
        k = rng.randint(1, 3)
        ins = sorted({rng.randrange(max(0, i - window), i) if i else -1 for _ in range(k)})
        graph.append(("t" if rng.random() < torch_share else "n", ins))
    return graph


def as_dag(graph: list) -> Dag:
    return Dag([k == "t" for k, _ in graph], [[i for i in ins if i >= 0] for _, ins in graph])


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--torch-share", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from byoc_torch.testing.graphs import build  # Relax module with torchops and native ops

    rows = []
    print(f"{'ops':>8} {'torch ops':>9} {'groups':>7} {'grouping s':>11} {'pass s':>8}")
    for n in args.sizes:
        graph = synthetic_graph(n, args.torch_share, args.seed)
        dag = as_dag(graph)
        t0 = time.perf_counter()
        groups = maximal_groups(dag)
        t_group = time.perf_counter() - t0
        if n <= 10000 and creates_cycle(dag, groups):
            raise SystemExit(f"cycle at n={n}")
        mod = build(graph)
        t0 = time.perf_counter()
        out = byoc_torch.partition_for_torch(mod)
        t_pass = time.perf_counter() - t0
        n_groups = len(byoc_torch.torch_functions(out))
        n_torch = sum(1 for k, _ in graph if k == "t")
        rows.append(
            {
                "ops": n,
                "torch_ops": n_torch,
                "groups": n_groups,
                "grouping_s": t_group,
                "pass_s": t_pass,
            }
        )
        print(f"{n:>8} {n_torch:>9} {n_groups:>7} {t_group:>11.3f} {t_pass:>8.2f}")
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        print(
            f"growth {b['ops']}/{a['ops']} ops: grouping x{b['grouping_s'] / a['grouping_s']:.1f}, "
            f"pass x{b['pass_s'] / a['pass_s']:.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
