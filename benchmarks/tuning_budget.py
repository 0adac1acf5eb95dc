"""What MetaSchedule tuning buys per trial budget, against untuned TVM and LibTorch.

Two workloads, float32 on CPU, weights bound as constants (as byoc_torch imports them):

* ``matmul_gelu``: ``gelu(x @ w)``, x 128x256, w 256x1024;
* ``ffn_block``: ``linear(256->1024) -> gelu -> linear(1024->256)``, batch 128.

For each: the latency of the module built as byoc_torch builds it today (``relax.build``, no
tuning), of the same computation in eager LibTorch, and, per budget, of the module tuned with
:func:`byoc_torch.tuning.tune` (fresh database each time, MetaSchedule defaults: XGBoost cost
model, evolutionary search) with the tuning wall time. TVM latencies are the VM's
``time_evaluator`` medians; LibTorch's the median of ``byoc_torch.timing`` samples.

    python benchmarks/tuning_budget.py [--budgets 16 32 64] [--json PATH] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import tvm
from tvm import relax

from byoc_torch import tuning, tuning_measure
from byoc_torch.timing import latency_samples

TARGET = "llvm"
BATCH, HIDDEN, FFN = 128, 256, 1024
TORCH_WARMUP, TORCH_REPEAT = 20, 200


def _const(array: np.ndarray) -> relax.Constant:
    return relax.const(tvm.runtime.tensor(array))


def matmul_gelu(rng: np.random.Generator) -> tuple[tvm.IRModule, Callable, torch.Tensor]:
    w = rng.standard_normal((HIDDEN, FFN)).astype("float32")
    x = relax.Var("x", relax.TensorType([BATCH, HIDDEN], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.gelu(relax.op.matmul(x, _const(w))))
        bb.emit_func_output(out)
    wt = torch.from_numpy(w)
    return bb.get(), lambda a: torch.nn.functional.gelu(a @ wt), torch.randn(BATCH, HIDDEN)


def ffn_block(rng: np.random.Generator) -> tuple[tvm.IRModule, Callable, torch.Tensor]:
    w1 = rng.standard_normal((FFN, HIDDEN)).astype("float32")
    b1 = rng.standard_normal(FFN).astype("float32")
    w2 = rng.standard_normal((HIDDEN, FFN)).astype("float32")
    b2 = rng.standard_normal(HIDDEN).astype("float32")
    x = relax.Var("x", relax.TensorType([BATCH, HIDDEN], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.linear(x, _const(w1), _const(b1)))
            h = bb.emit(relax.op.nn.gelu(h))
            out = bb.emit_output(relax.op.linear(h, _const(w2), _const(b2)))
        bb.emit_func_output(out)
    layers = torch.nn.Sequential(
        torch.nn.Linear(HIDDEN, FFN), torch.nn.GELU(), torch.nn.Linear(FFN, HIDDEN)
    ).eval()
    with torch.no_grad():
        for param, value in zip(layers.parameters(), (w1, b1, w2, b2), strict=True):
            param.copy_(torch.from_numpy(value))
    return bb.get(), layers, torch.randn(BATCH, HIDDEN)


WORKLOADS = {"matmul_gelu": matmul_gelu, "ffn_block": ffn_block}


def torch_ms(fn: Callable, x: torch.Tensor) -> float:
    with torch.no_grad():
        return statistics.median(latency_samples(lambda: fn(x), TORCH_WARMUP, TORCH_REPEAT))


def measure(name: str, budgets: list[int], keep: Path | None) -> dict:
    mod, torch_fn, x = WORKLOADS[name](np.random.default_rng(0))
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(x.numpy(), dev)]
    row = {
        "workload": name,
        "untuned_tvm_ms": tuning_measure.time_function(mod, TARGET, "main", args),
        "libtorch_ms": torch_ms(torch_fn, x),
        "torch_threads": torch.get_num_threads(),
        "tuned": [],
    }
    print(
        f"{name}: untuned TVM {row['untuned_tvm_ms']:.3f} ms, LibTorch {row['libtorch_ms']:.3f} ms",
        flush=True,
    )
    for budget in budgets:
        with tempfile.TemporaryDirectory() as tmp:
            database = (keep or Path(tmp)) / f"{name}_{budget}"
            start = time.perf_counter()
            tuned = tuning.tune(mod, TARGET, trials=budget, database=database)
            seconds = time.perf_counter() - start
            summary = tuning_measure.tuning_summary(mod, TARGET, database)
            tuned_ms = tuning_measure.time_function(tuned, TARGET, "main", args)
        entry = {
            "budget": budget,
            "trials_run": summary.trials,
            "kernels": len(summary.tasks),
            "tuning_s": seconds,
            "tuned_tvm_ms": tuned_ms,
        }
        row["tuned"].append(entry)
        print(
            f"  budget {budget:4d}: {entry['trials_run']} trial(s) over {entry['kernels']} "
            f"kernel(s) in {seconds:.1f} s -> {tuned_ms:.3f} ms",
            flush=True,
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--keep", type=Path, help="keep the tuning databases under this dir")
    args = parser.parse_args()
    rows = [measure(name, args.budgets, args.keep) for name in args.workloads]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
