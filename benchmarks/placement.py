"""Measured placement against TVM's placement and eager PyTorch on the built-in suite.

For each model: compile with ``placement="tvm"`` and with ``placement="measured"`` (the
default; each model with a fresh ``placement_cache`` file: the cold compile), check both
against eager, then time eager and both compiled models interleaved
(``--rounds`` rounds, medians; the untuned-TVM variants of the transformer models get one call
per round, they take ~0.1-0.7 s each). Prints latency, ratio against eager, compile time, how
many regions placement moved to LibTorch, how many LibTorch subgraphs the result calls, and
which whole-model candidate was kept. "warm cache" is a third compile after the in-memory cache
is dropped, reading the measurements from the file (what a new process sees).

    python -m benchmarks.placement [--models demo,cnn,vit,bert,gpt] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

import byoc_torch
from byoc_torch.models import get_example
from byoc_torch.placement import measure
from byoc_torch.timing import measure_latency

SLOW = ("vit", "bert", "gpt")  # untuned TVM: one call per round


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.placement")
    parser.add_argument("--models", default="demo,cnn,vit,bert,gpt")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cache_dir = tempfile.mkdtemp(prefix="byoc_placement_bench_")
    for name in args.models.split(","):
        model, inputs = get_example(name)
        compiled, seconds = {}, {}
        cache = os.path.join(cache_dir, f"{name}.json")  # cold: a fresh file per model
        for placement in ("tvm", "measured"):
            t0 = time.perf_counter()
            compiled[placement] = byoc_torch.compile(
                model, inputs, placement=placement, placement_cache=cache
            )
            seconds[placement] = time.perf_counter() - t0
        measure.MeasurementCache.forget()  # what a new process with the cache file sees
        t0 = time.perf_counter()
        byoc_torch.compile(model, inputs, placement_cache=cache)
        seconds["warm"] = time.perf_counter() - t0
        with torch.no_grad():
            expected = model(*inputs)
        for c in compiled.values():
            torch.testing.assert_close(c(*inputs), expected, rtol=1e-3, atol=1e-3)
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
            f"{seconds['measured']:4.1f} s, warm cache {seconds['warm']:4.1f} s) "
            f"{moved}/{len(placement.regions)} regions to LibTorch, "
            f"{compiled['measured'].num_torch_subgraphs()} subgraph(s), kept {placement.chosen} "
            f"({_checked(placement)})",
            flush=True,
        )
    return 0


def _checked(placement) -> str:
    timed = [f"{k} {v:.3f}" for k, v in placement.checked_ms.items() if v is not None]
    return ", ".join(timed) + " ms" if timed else "nothing else timed"


if __name__ == "__main__":
    raise SystemExit(main())
