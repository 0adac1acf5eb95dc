"""Placement stability: does measured placement choose the same thing on a quiet and a busy
machine?

For each model: ``--compiles`` compiles (default 6) in one process, each from scratch (the
process's placement measurements and AOTInductor packages dropped first, no cache file), the
second half while ``--busy`` subprocesses spin on the CPUs (default 2: on a 2-core machine,
both cores). Each compile's choice is recorded: the whole-model candidate kept, the ops moved to
LibTorch, what runs each LibTorch subgraph. Then, with the busy processes gone, eager and every
distinct compiled model are timed interleaved (``byoc_torch.timing.interleaved_samples``,
median over rounds of each round's median) and each compile's model is given as x eager.

Target (issue 19): one placement, or placements within 10 % of each other; the slowest chosen
at most 1.0x eager.

    python -m benchmarks.placement_stability [--models cnn,demo] [--compiles 6] [--busy 2]
        [--rounds 15]

The quiet half is only as quiet as the machine: the output starts with its load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch

import byoc_torch
from byoc_torch import compile_cache
from byoc_torch.placement import measure
from byoc_torch.timing import interleaved_samples

BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end:\n    pass\n"


def _model(name: str):
    if name.startswith("hf_"):
        from byoc_torch.testing import hf_models

        return getattr(hf_models, name)()
    from byoc_torch.models import get_example

    return get_example(name)


def choice(compiled) -> str:
    """What a compile chose, as one comparable line."""
    report = compiled.report()
    chosen = report.placement.chosen if report.placement is not None else "-"
    moved = sorted({n.op for n in report.torch_nodes()})
    executors = ",".join(s.executor for s in report.subgraphs) or "no subgraph"
    return f"{chosen}; LibTorch ops {moved}; {executors}"


def why(compiled) -> str:
    """The whole-model check's evidence for a compile's choice: each candidate's measured
    end-to-end time, why a candidate was not timed, and the noise the report flagged."""
    placement = compiled.report().placement
    if placement is None:
        return "no measured placement"
    timed = ", ".join(
        f"{k} {'-' if v is None else f'{v:.4f} ms'}"
        for k, v in sorted(placement.checked_ms.items())
    )
    skipped = "; ".join(f"{k}: {v}" for k, v in sorted(placement.check_skipped.items()))
    return f"timed: {timed or '-'}; not timed: {skipped or '-'}; noise: {placement.noise or '-'}"


def bench(name: str, compiles: int, busy: int, rounds: int) -> None:
    model, inputs = _model(name)
    model = model.eval()
    with torch.no_grad():
        expected = model(*inputs)
    made: list[tuple[bool, float, object]] = []
    hogs: list[subprocess.Popen] = []
    try:
        for k in range(compiles):
            loaded = k >= compiles // 2
            if loaded and not hogs:
                code = BUSY.format(s=3600)
                hogs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(busy)]
                time.sleep(1.0)
            measure.MeasurementCache.forget()
            compile_cache.MEMORY.clear()
            t0 = time.perf_counter()
            compiled = byoc_torch.compile(model, inputs)
            made.append((loaded, time.perf_counter() - t0, compiled))
            print(f"  {name} compile {k + 1} (busy: {loaded}): {choice(compiled)}", flush=True)
            print(f"    {why(compiled)}", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    distinct: dict[str, object] = {}
    for _, _, compiled in made:
        distinct.setdefault(choice(compiled), compiled)
    for compiled in distinct.values():
        torch.testing.assert_close(compiled(*inputs), expected, rtol=1e-3, atol=1e-3)

    def eager():
        with torch.no_grad():
            return model(*inputs)

    labels = {c: f"placement {k + 1}" for k, c in enumerate(distinct)}
    fns = {"eager": eager}
    fns.update({labels[c]: (lambda m=m: m(*inputs)) for c, m in distinct.items()})
    samples, _ = interleaved_samples(fns, rounds)
    ms = {k: statistics.median(v) for k, v in samples.items()}
    print(f"\n{name}: {len(distinct)} distinct placement(s) in {compiles} compiles")
    print(f"  eager {ms['eager']:.4f} ms (timed with no busy process, load {_load()})")
    for c, label in labels.items():
        print(f"  {label}: {ms[label]:.4f} ms = {ms[label] / ms['eager']:.2f}x eager  <- {c}")
    ratios = [ms[labels[choice(c)]] / ms["eager"] for _, _, c in made]
    for k, ((loaded, seconds, _), ratio) in enumerate(zip(made, ratios, strict=True)):
        print(f"  compile {k + 1}: busy {loaded!s:5}  {seconds:6.1f} s  {ratio:.2f}x eager")
    print(
        f"  spread of the chosen: {max(ratios) / min(ratios):.2f}x (slowest / fastest); "
        f"slowest {max(ratios):.2f}x eager\n",
        flush=True,
    )


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--models", default="cnn,demo")
    p.add_argument("--compiles", type=int, default=6)
    p.add_argument("--busy", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    print(f"load average at start: {_load()}; threads {torch.get_num_threads()}", flush=True)
    for name in args.models.split(","):
        bench(name, args.compiles, args.busy, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
