"""Memory over long runs: 100k calls of one compiled model, and 1,000 load/drop cycles.

Prints resident memory (RSS) before and after each phase. Targets: 100k calls grow RSS by
less than 20 MB; loading and dropping an artifact 1,000 times does not grow it either.

    python benchmarks/leaks.py [--calls 100000] [--loads 1000]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import byoc_torch
from byoc_torch.models import get_example


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--loads", type=int, default=1000)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    model, inputs = get_example("demo")
    compiled = byoc_torch.compile(model, inputs)
    result: dict = {}

    for _ in range(2000):  # warm-up: allocator pools, TorchScript profiling, VM registers
        compiled(*inputs)
    gc.collect()
    before = rss_mb()
    t0 = time.time()
    for i in range(args.calls):
        compiled(*inputs)
        if (i + 1) % 25000 == 0:
            print(f"  {i + 1} calls: RSS {rss_mb():.1f} MB", flush=True)
    gc.collect()
    after = rss_mb()
    result["calls"] = {
        "n": args.calls,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "growth_mb": round(after - before, 1),
        "seconds": round(time.time() - t0, 1),
    }
    print(
        f"{args.calls} calls: RSS {before:.1f} -> {after:.1f} MB "
        f"(growth {after - before:+.1f} MB, target < 20 MB)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        path = compiled.export(Path(tmp) / "demo.so")
        for _ in range(20):  # warm-up
            byoc_torch.load(path)(*inputs)
        gc.collect()
        before = rss_mb()
        for i in range(args.loads):
            loaded = byoc_torch.load(path)
            loaded(*inputs)
            del loaded
            if (i + 1) % 250 == 0:
                gc.collect()
                print(f"  {i + 1} loads: RSS {rss_mb():.1f} MB", flush=True)
        gc.collect()
        after = rss_mb()
    result["loads"] = {
        "n": args.loads,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "growth_mb": round(after - before, 1),
    }
    print(
        f"{args.loads} load/call/drop cycles: RSS {before:.1f} -> {after:.1f} MB "
        f"(growth {after - before:+.1f} MB)"
    )
    torch.testing.assert_close(compiled(*inputs), model(*inputs), rtol=1e-4, atol=1e-4)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ok = result["calls"]["growth_mb"] < 20 and result["loads"]["growth_mb"] < 20
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
