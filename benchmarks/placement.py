"""Measured placement against TVM's placement and eager PyTorch on the built-in suite.

For each model: compile with ``placement="tvm"`` and with ``placement="measured"`` (the
default), check both against eager, then time eager and both compiled models interleaved
(``--rounds`` rounds, medians; the untuned-TVM variants of the transformer models get one call
per round, they take ~0.1-0.7 s each). Prints latency, ratio against eager, compile time, how
many regions placement moved to LibTorch and how many LibTorch subgraphs the result calls.

    python -m benchmarks.placement [--models demo,cnn,vit,bert,gpt] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import byoc_torch
from byoc_torch.models import get_example
from byoc_torch.timing import measure_latency

SLOW = ("vit", "bert", "gpt")  # untuned TVM: one call per round


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.placement")
    parser.add_argument("--models", default="demo,cnn,vit,bert,gpt")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    for name in args.models.split(","):
        model, inputs = get_example(name)
        compiled, seconds = {}, {}
        for placement in ("tvm", "measured"):
            t0 = time.perf_counter()
            compiled[placement] = byoc_torch.compile(model, inputs, placement=placement)
            seconds[placement] = time.perf_counter() - t0
            with torch.no_grad():
                expected = model(*inputs)
            torch.testing.assert_close(compiled[placement](*inputs), expected, rtol=1e-3, atol=1e-3)
        fns = {
            "eager": lambda m=model, i=inputs: m(*i),
            "tvm": lambda c=compiled["tvm"], i=inputs: c(*i),
            "measured": lambda c=compiled["measured"], i=inputs: c(*i),
        }
        samples: dict[str, list[float]] = {k: [] for k in fns}
        with torch.no_grad():
            for _ in range(args.rounds):
                for k, fn in fns.items():
                    n = 1 if (k == "tvm" and name in SLOW) else 10
                    samples[k].append(measure_latency(fn, 1, n)[0])
        med = {k: statistics.median(v) for k, v in samples.items()}
        placement = compiled["measured"].report().placement
        moved = sum(r.side == "torch" for r in placement.regions)
        print(
            f"{name:6s} eager {med['eager']:8.3f} ms | placement=tvm {med['tvm']:9.3f} ms "
            f"({med['tvm'] / med['eager']:6.2f}x, compile {seconds['tvm']:4.1f} s) | measured "
            f"{med['measured']:8.3f} ms ({med['measured'] / med['eager']:5.2f}x, compile "
            f"{seconds['measured']:4.1f} s) {moved}/{len(placement.regions)} regions to "
            f"LibTorch, {compiled['measured'].num_torch_subgraphs()} subgraph(s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
