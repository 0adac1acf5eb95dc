"""Extra compile time of verification (verify=True vs verify=False) on the built-in models.

python benchmarks/verify_cost.py [--models demo cnn transformer bert gpt vit]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import byoc_torch
from byoc_torch.models import get_example


def compile_seconds(model, inputs, verify: bool, repeat: int) -> tuple[float, object]:
    times, compiled = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        compiled = byoc_torch.compile(model, inputs, verify=verify)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), compiled


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="+", default=["demo", "cnn", "transformer", "bert", "gpt", "vit"]
    )
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    print(f"{'model':<12} {'verify off s':>12} {'verify on s':>12} {'extra':>8} {'moved':>6}")
    for name in args.models:
        model, inputs = get_example(name)
        byoc_torch.compile(model, inputs, verify=False)  # warm-up: one-time costs
        off, _ = compile_seconds(model, inputs, False, args.repeat)
        on, compiled = compile_seconds(model, inputs, True, args.repeat)
        moved = sum(1 for r in compiled.fallbacks if "differs" in r.reason or "build" in r.reason)
        print(f"{name:<12} {off:>12.2f} {on:>12.2f} {on / off - 1:>+7.0%} {moved:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
