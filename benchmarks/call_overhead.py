"""The fixed cost of one ``CompiledModule`` call, against the raw VM function and eager.

Two tiny models run entirely in TVM, so the work is negligible and the figures are the fixed
per-call costs:

* ``tiny``: ``relu(x) + x`` on 8 floats (one input, one output);
* ``quad``: 4 inputs of 8 floats, a tuple of 2 outputs.

For each model the script times, in interleaved rounds (so drift on a shared machine hits
every variant alike), a loop of ``--calls`` calls of:

* ``raw VM (tvm tensors)``: the VM's ``main`` function with inputs already converted to TVM
  tensors (no checks, no conversion, results left as TVM tensors);
* ``raw VM (torch tensors)``: the same function handed the torch tensors (tvm-ffi's DLPack
  exchange in and out);
* ``CompiledModule``: the public call, with every input check;
* ``eager``: the ``nn.Module`` under ``torch.no_grad()``.

and prints the median over rounds of the mean cost per call, in microseconds.

    python benchmarks/call_overhead.py [--rounds 15] [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import tvm
from torch import nn

import byoc_torch


class Tiny(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + x


class Quad(nn.Module):
    def forward(self, a, b, c, d):
        return torch.relu(a) + b, c * d


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def variants(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, Callable]:
    # one thread each, as before num_threads existed (torch.set_num_threads(1) in main)
    kwargs = {"num_threads": 1} if "num_threads" in byoc_torch.Options.__dataclass_fields__ else {}
    compiled = byoc_torch.compile(model, inputs, **kwargs)
    vm = tvm.relax.VirtualMachine(compiled.executable, tvm.cpu())
    main = vm["main"]
    tvm_inputs = [tvm.runtime.from_dlpack(x) for x in inputs]

    def eager() -> object:
        with torch.no_grad():
            return model(*inputs)

    return {
        "raw VM (tvm tensors)": lambda: main(*tvm_inputs),
        "raw VM (torch tensors)": lambda: main(*inputs),
        "CompiledModule": lambda: compiled(*inputs),
        "eager": eager,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x8 = [torch.randn(8) for _ in range(4)]
    cases = {
        "tiny (1 in, 1 out)": (Tiny(), (x8[0],)),
        "quad (4 in, tuple of 2)": (Quad(), tuple(x8)),
    }
    for name, (model, inputs) in cases.items():
        fns = variants(model, inputs)
        for fn in fns.values():  # warm up
            per_call_us(fn, 1000)
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.rounds):
            for label, fn in fns.items():
                samples[label].append(per_call_us(fn, args.calls))
        print(f"{name}: median of {args.rounds} rounds x {args.calls} calls, us per call")
        for label, values in samples.items():
            print(f"  {label:24s} {statistics.median(values):7.2f}")


if __name__ == "__main__":
    main()
