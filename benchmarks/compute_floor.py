"""How fast a model can run in float32 on this CPU at all: the time its multiplies take at the
core's measured peak, beside eager and byoc_torch.

For each model, in one process on the CPU:

* **multiply work**: the floating-point operations of one eager call's matrix multiplies,
  batched multiplies, convolutions and attentions, counted by PyTorch's
  ``torch.utils.flop_counter.FlopCounterMode`` (CPU attention counted as two batched
  multiplies, which it is);
* **peak**: this CPU's float32 multiply rate at the threads the run uses, the best of oneDNN's
  packed multiply (what packages use) and MKL's sgemm on one large square multiply;
* **floor** = work / peak: no float32 implementation of the model that does these multiplies
  directly (no Winograd or FFT convolutions, no lower precision) runs faster, whatever else it
  fuses away. Everything else a model does (normalizations, activations, copies) only adds;
* eager and byoc_torch (compiled with its defaults) timed interleaved
  (:func:`byoc_torch.timing.interleaved_samples`, median of per-round medians).

It prints, per model, the floor as a fraction of eager (the lowest ratio to eager any
float32 compiler can reach here), byoc_torch's ratio, and how much of byoc_torch's time is
above the floor; then the geomean of the floors, the bound on a suite's geomean.

    python -m benchmarks.compute_floor [--models hf_bert,hf_resnet] [--threads 1]
        [--rounds 7] [--json out.json]

Run it on a quiet machine: the peak is a best-of figure, the latencies are medians.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

import byoc_torch
from byoc_torch.timing import interleaved_samples

from .peers import model_builders

DEFAULT_MODELS = (
    "bert,gpt,vit,cnn,demo,hf_bert,hf_gpt2,hf_vit,hf_resnet,hf_bert_sdpa,hf_gpt2_sdpa,hf_vit_sdpa"
)

_aten = torch.ops.aten
# Op families of the count, by the op's overload packet.
_KINDS = {
    _aten.mm: "matmul",
    _aten.addmm: "matmul",
    _aten.bmm: "batched",
    _aten.baddbmm: "batched",
    _aten.convolution: "convolution",
    _aten._convolution: "convolution",
    _aten._scaled_dot_product_flash_attention_for_cpu: "attention",
    _aten._scaled_dot_product_flash_attention: "attention",
    _aten._scaled_dot_product_efficient_attention: "attention",
}


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """Work of the CPU flash attention kernel: its two batched multiplies (PyTorch's counter
    knows the CUDA attentions only)."""
    return sdpa_flop_count(query, key, value)


def multiply_flops(model: torch.nn.Module, inputs: tuple) -> dict[str, int]:
    """Floating-point operations of one eager call of ``model`` on ``inputs`` in its matrix
    multiplies, batched multiplies, convolutions and attentions, by family (``_KINDS``)."""
    counter = FlopCounterMode(
        display=False,
        custom_mapping={_aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops},
    )
    with torch.no_grad(), counter:
        model(*inputs)
    by_kind: dict[str, int] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        kind = _KINDS.get(op, str(op))
        by_kind[kind] = by_kind.get(kind, 0) + int(flops)
    return dict(sorted(by_kind.items()))


def _best_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def peak_gflops(size: int = 1024, repeats: int = 7) -> dict[str, float]:
    """This CPU's float32 multiply rate at the process's threads, GFLOP/s, on one ``size``
    cube: oneDNN's packed multiply (``mkldnn._linear_pointwise``, what packages call) and MKL's
    sgemm (``addmm``), each its best of ``repeats``; ``peak`` is the larger."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(size, size, generator=gen)
    w = torch.randn(size, size, generator=gen)
    b = torch.randn(size, generator=gen)
    flops = 2.0 * size**3
    rates: dict[str, float] = {}
    with torch.no_grad():
        rates["mkl_sgemm"] = flops / _best_ms(lambda: torch.addmm(b, x, w.t()), repeats) / 1e6
        if torch.backends.mkldnn.is_available():
            packed = torch.ops.mkldnn._reorder_linear_weight(w, size)

            def onednn() -> None:
                torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")

            rates["onednn_packed"] = flops / _best_ms(onednn, repeats) / 1e6
    rates["peak"] = max(rates.values())
    return rates


def floor_row(flops: dict[str, int], peak: float, eager_ms: float, byoc_ms: float) -> dict:
    """One model's figures from its multiply work, the peak (GFLOP/s) and its latencies."""
    work = sum(flops.values())
    floor_ms = work / peak / 1e6
    return {
        "gflop": work / 1e9,
        "gflop_by_kind": {k: v / 1e9 for k, v in flops.items()},
        "floor_ms": floor_ms,
        "eager_ms": eager_ms,
        "byoc_ms": byoc_ms,
        "floor_x_eager": floor_ms / eager_ms,
        "byoc_x_eager": byoc_ms / eager_ms,
        "byoc_above_floor_ms": byoc_ms - floor_ms,
    }


def geomean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def format_table(result: dict[str, Any]) -> str:
    rows = result["models"]
    lines = [
        f"peak {result['peak_gflops']['peak']:.0f} GFLOP/s at {result['threads']} thread(s) "
        f"({', '.join(f'{k} {v:.0f}' for k, v in result['peak_gflops'].items() if k != 'peak')})",
        "",
        "| model | GFLOP | eager ms | floor ms | floor x eager | byoc_torch x eager "
        "| byoc_torch above floor |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['gflop']:.3f} | {r['eager_ms']:.3f} | {r['floor_ms']:.3f} "
            f"| {r['floor_x_eager']:.2f} | {r['byoc_x_eager']:.2f} "
            f"| {r['byoc_above_floor_ms']:.3f} ms |"
        )
    g = result["geomean"]
    lines.append(f"| geomean | | | | {g['floor_x_eager']:.3f} | {g['byoc_x_eager']:.3f} | |")
    return "\n".join(lines)


def _model_row(builder: Callable[[], tuple], peak: float, rounds: int) -> dict:
    """One model's work counted, byoc_torch compiled with its defaults, and both timed."""
    torch.manual_seed(0)
    model, inputs = builder()
    model = model.eval()
    flops = multiply_flops(model, inputs)
    compiled = byoc_torch.compile(model, inputs)
    with torch.no_grad():
        fns = {"eager": lambda: model(*inputs), "byoc": lambda: compiled(*inputs)}
        samples, _ = interleaved_samples(fns, rounds)
    ms = {k: statistics.median(v) for k, v in samples.items()}
    return floor_row(flops, peak, ms["eager"], ms["byoc"])


def run(models: list[str], rounds: int) -> dict[str, Any]:
    builders = model_builders()
    peak = peak_gflops()
    print(f"peak {peak['peak']:.0f} GFLOP/s ({torch.get_num_threads()} thread(s))", flush=True)
    result: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
        "peak_gflops": peak,
        "models": {},
    }
    for name in models:
        row = _model_row(builders[name], peak["peak"], rounds)
        result["models"][name] = row
        print(
            f"  {name:<13} {row['gflop']:.3f} GFLOP  eager {row['eager_ms']:.3f} ms  floor "
            f"{row['floor_ms']:.3f} ms ({row['floor_x_eager']:.2f}x)  byoc_torch "
            f"{row['byoc_x_eager']:.2f}x",
            flush=True,
        )
    rows = result["models"].values()
    result["geomean"] = {
        key: geomean([r[key] for r in rows]) for key in ("floor_x_eager", "byoc_x_eager")
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models.split(",")
    unknown = sorted(set(names) - set(model_builders()))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(model_builders())}")
    result = run(names, args.rounds)
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
