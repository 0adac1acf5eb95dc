"""End-to-end latency on the built-in suite: eager PyTorch, TVM alone, and byoc_torch.

For each model of byoc_torch.models.SUITE (BERT-like, GPT-like, ViT-like, CNN, demo):

* eager          PyTorch eager, torch.no_grad();
* tvm            TVM alone: tvm.relax.frontend.torch.from_exported_program + relax.build
                 (default CPU pipeline), where it imports and builds;
* tvm+dlight     the same with TVM's dlight CPU schedule rules (GEMV, Reduction) applied
                 after fusion: what TVM offers without tuning;
* byoc           byoc_torch.compile with default options;
* byoc+libtorch  byoc_torch with matmuls and convolutions forced to LibTorch
                 (torch_executed_ops), i.e. byoc_torch used as library dispatch.

For the byoc configurations it also prints ratio = hybrid / (native part alone + torch part
alone): the torch part is the time spent inside LibTorch per call (the runtime's counters),
the native part is the latency with every LibTorch subgraph replaced by a replay of its
recorded outputs (runtime replay mode), i.e. the TVM part with the crossings but no LibTorch
work. A ratio near 1 means the hybrid costs no more than its parts.

    python benchmarks/end_to_end.py [--models bert gpt vit cnn demo] [--repeat 20] [--json P]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

import torch
import tvm
from tvm import relax

import byoc_torch
from byoc_torch.compiled import running_torch_modules
from byoc_torch.models import SUITE
from byoc_torch.runtime import TorchRuntime, measure
from byoc_torch.tensors import to_tvm
from byoc_torch.timing import latency_samples

HEAVY_OPS = ["aten.mm", "aten.addmm", "aten.bmm", "aten.convolution"]


def median_ms(fn, repeat: int, warmup: int) -> float:
    return statistics.median(latency_samples(fn, warmup, repeat))


def tvm_alone(model, inputs, dlight: bool):
    """A callable running the model with TVM alone, or the reason it cannot."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    try:
        ep = torch.export.export(model, inputs)
        mod = tvm.relax.frontend.torch.from_exported_program(ep)
        target = tvm.target.Target("llvm")
        if dlight:
            from tvm.s_tir import dlight as dl

            @tvm.transform.module_pass(opt_level=0)
            def pipeline(mod, _ctx):
                with target:
                    seq = tvm.transform.Sequential(
                        cpu.library_dispatch_passes(target)
                        + cpu.legalize_passes(target)
                        + [dl.ApplyDefaultSchedule(dl.cpu.GEMV(), dl.cpu.Reduction())]
                        + cpu.dataflow_lower_passes(target)
                        + cpu.finalize_passes(target)
                    )
                    return seq(mod)

            ex = relax.build(mod, target=target, relax_pipeline=pipeline)
        else:
            ex = relax.build(mod, target=target)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        args = [to_tvm(x) for x in inputs]
        vm["main"](*args)
        return lambda: vm["main"](*args), None
    except Exception as err:  # report why TVM alone cannot run it
        return None, f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"


def hybrid_ratio(compiled, inputs, repeat: int, warmup: int) -> dict:
    mods = running_torch_modules(compiled.executable)
    if not mods or not any(TorchRuntime(m).symbols() for m in mods):
        return {}
    hybrid = median_ms(lambda: compiled(*inputs), repeat, warmup)
    for m in mods:
        measure.reset_stats(m)
    for _ in range(repeat):
        compiled(*inputs)
    torch_ms = 0.0
    for m in mods:
        for s in measure.stats(m).values():
            torch_ms += s.torch_ns / 1e6 / repeat if s.calls else 0.0
    with measure.mode(mods, "record"):
        compiled(*inputs)
    with measure.mode(mods, "replay"):
        native = median_ms(lambda: compiled(*inputs), repeat, warmup)
    return {
        "hybrid_ms": hybrid,
        "native_alone_ms": native,
        "torch_alone_ms": torch_ms,
        "ratio": hybrid / (native + torch_ms),
    }


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(SUITE))
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results = {}
    for name in args.models:
        model, inputs = SUITE[name]()
        row: dict = {}
        with torch.no_grad():
            row["eager_ms"] = median_ms(lambda m=model, x=inputs: m(*x), args.repeat, args.warmup)
        for key, dl in (("tvm", False), ("tvm+dlight", True)):
            fn, why = tvm_alone(model, inputs, dl)
            row[f"{key}_ms"] = median_ms(fn, max(3, args.repeat // 4), 1) if fn else None
            row[f"{key}_why"] = why
        for key, opts in (("byoc", {}), ("byoc+libtorch", {"torch_executed_ops": HEAVY_OPS})):
            compiled = byoc_torch.compile(model, inputs, **opts)
            with torch.no_grad():
                torch.testing.assert_close(compiled(*inputs), model(*inputs), rtol=1e-3, atol=1e-3)
            row[f"{key}_ms"] = median_ms(
                lambda c=compiled, x=inputs: c(*x), args.repeat, args.warmup
            )
            row[f"{key}_subgraphs"] = compiled.num_torch_subgraphs()
            row[f"{key}_ratio"] = hybrid_ratio(compiled, inputs, args.repeat, args.warmup)
        results[name] = row
        print(
            f"{name}: "
            + ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items()
                if not k.endswith("_ratio") and v is not None
            ),
            flush=True,
        )

    print()
    print(
        f"{'model':<6} {'eager':>8} {'TVM':>9} {'TVM+dlight':>11} {'byoc':>9} "
        f"{'byoc+libtorch':>14} {'ratio byoc':>11} {'ratio b+l':>10}  (ms; ratio = hybrid/"
        f"(native alone + torch alone))"
    )
    for name, r in results.items():

        def f(v):
            return f"{v:.2f}" if isinstance(v, float) else "n/a"

        rb = r["byoc_ratio"].get("ratio")
        rl = r["byoc+libtorch_ratio"].get("ratio")
        print(
            f"{name:<6} {f(r['eager_ms']):>8} {f(r['tvm_ms']):>9} {f(r['tvm+dlight_ms']):>11} "
            f"{f(r['byoc_ms']):>9} {f(r['byoc+libtorch_ms']):>14} "
            f"{f(rb) if rb else '-':>11} {f(rl) if rl else '-':>10}"
        )
    for name, r in results.items():
        for key in ("tvm", "tvm+dlight"):
            if r[f"{key}_why"]:
                print(f"  {name}: {key} alone fails: {r[f'{key}_why']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
