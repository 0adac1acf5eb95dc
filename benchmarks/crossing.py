"""What a TVM <-> LibTorch crossing costs, and that it does not grow with tensor size.

Part 1 (size independence): calls a torch runtime module directly with tensors of 1 KB and
64 MB. "in" passes the tensor into LibTorch (the script ignores its data); "out" also hands a
fresh tensor of the same size back (``torch.empty_like``: allocation, no data written). Both
are compared with the ATen work alone in eager PyTorch and with a copy of the tensor
(what a copying boundary would pay).

Part 2 (per-crossing overhead): chains of K alternating TVM (tanh) and LibTorch (erfinv) ops
on a tiny tensor, compiled with byoc_torch. The cost of one LibTorch subgraph call, as TVM's
VM sees it, is the slope of latency in K minus the slope of the same chain with the erfinv
ops removed. It is compared with erfinv in eager PyTorch (slope of an eager chain) and with
the single-op TorchScript called directly. Measured with the single-op dispatcher fast path
on and off.

    python benchmarks/crossing.py [--repeat 2000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

import byoc_torch
from byoc_torch.compiled import running_torch_modules
from byoc_torch.runtime import SubgraphSpec, make_runtime_module, measure
from byoc_torch.tensors import to_tvm
from byoc_torch.timing import latency_samples


def median_us(fn, repeat: int, warmup: int = 200) -> float:
    return statistics.median(latency_samples(fn, warmup, repeat)) * 1e3


def size_independence(repeat: int) -> list[dict]:
    mod = make_runtime_module(
        [
            SubgraphSpec(
                "in", "def forward(self, a: Tensor) -> Tensor:\n    return torch.zeros([1])\n", 1
            ),
            SubgraphSpec(
                "out",
                "def forward(self, a: Tensor) -> Tensor:\n    return torch.empty_like(a)\n",
                1,
            ),
        ]
    )
    rows = []
    for label, nbytes in (("1 KB", 1 << 10), ("64 MB", 64 << 20)):
        x = torch.ones(nbytes // 4)
        tx = to_tvm(x)
        rows.append(
            {
                "size": label,
                "in_us": median_us(lambda tx=tx: mod["in"](tx), repeat),
                "eager_zeros_us": median_us(lambda: torch.zeros([1]), repeat),
                "out_us": median_us(lambda tx=tx: mod["out"](tx), repeat // 4 or 1),
                "eager_empty_like_us": median_us(lambda x=x: torch.empty_like(x), repeat // 4 or 1),
                "copy_us": median_us(lambda x=x: x.clone(), max(repeat // 40, 5), warmup=3),
            }
        )
    return rows


class Chain(nn.Module):
    def __init__(self, k: int, with_torch: bool) -> None:
        super().__init__()
        self.k = k
        self.with_torch = with_torch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.k):
            x = torch.tanh(x)
            if self.with_torch:
                x = torch.special.erfinv(x * 0.5)
        return x


def per_crossing(repeat: int, ks: list[int]) -> dict:
    x = torch.rand(16) * 0.5
    result: dict = {"ks": ks}
    tvm_only = []
    for k in ks:
        m = byoc_torch.compile(Chain(k, False), (x,))
        tvm_only.append(median_us(lambda m=m: m(x), repeat))
    hybrids = []
    for k in ks:
        m = byoc_torch.compile(Chain(k, True), (x,))
        assert m.num_torch_subgraphs() == k
        hybrids.append(m)
    for fast in (True, False):
        lat = []
        for m in hybrids:
            for torch_mod in running_torch_modules(m.executable):  # this model's modules only
                measure.set_fast_path(torch_mod, fast)
            lat.append(median_us(lambda m=m: m(x), repeat))
        key = "fast_path" if fast else "interpreter"
        result[f"hybrid_us_{key}"] = lat
    result["tvm_only_us"] = tvm_only

    def slope(ys: list[float]) -> float:
        return (ys[-1] - ys[0]) / (ks[-1] - ks[0])

    # The TVM-only chain lacks the erfinv *and* the multiply by 0.5 that TVM runs before it:
    # the multiply stays in TVM in the hybrid chain, so time it separately.
    m_mul = byoc_torch.compile(nn.Sequential(), (x,))  # identity: the VM call floor
    result["vm_floor_us"] = median_us(lambda: m_mul(x), repeat)
    result["slope_tvm_only_us"] = slope(tvm_only)
    for key in ("fast_path", "interpreter"):
        result[f"torch_call_us_{key}"] = slope(result[f"hybrid_us_{key}"]) - slope(tvm_only)
    xe = x.clone()
    eager_1 = median_us(lambda: torch.special.erfinv(xe), repeat)
    result["eager_erfinv_us"] = eager_1
    scripted = torch.jit.script(_ErfinvOnly())
    result["torchscript_direct_us"] = median_us(lambda: scripted(xe), repeat)
    return result


class _ErfinvOnly(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erfinv(x)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2000)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    rows = size_independence(args.repeat)
    print("Part 1: crossing cost against tensor size (median, microseconds)")
    print(
        f"{'size':>6} {'in':>8} {'eager zeros':>12} {'in+out':>8} {'eager empty_like':>17}"
        f" {'a copy':>10}"
    )
    for r in rows:
        print(
            f"{r['size']:>6} {r['in_us']:>8.2f} {r['eager_zeros_us']:>12.2f} {r['out_us']:>8.2f}"
            f" {r['eager_empty_like_us']:>17.2f} {r['copy_us']:>10.1f}"
        )

    pc = per_crossing(args.repeat, args.ks)
    print("\nPart 2: chains of K (TVM tanh, LibTorch erfinv) pairs on 16 floats (median, us)")
    print(f"{'K':>3} {'TVM only':>9} {'hybrid (fast path)':>19} {'hybrid (interpreter)':>21}")
    for i, k in enumerate(pc["ks"]):
        print(
            f"{k:>3} {pc['tvm_only_us'][i]:>9.2f} {pc['hybrid_us_fast_path'][i]:>19.2f}"
            f" {pc['hybrid_us_interpreter'][i]:>21.2f}"
        )
    print(
        f"\none LibTorch subgraph call (slope difference): "
        f"{pc['torch_call_us_fast_path']:.2f} us with the fast path, "
        f"{pc['torch_call_us_interpreter']:.2f} us through the TorchScript interpreter"
    )
    print(
        f"erfinv in eager PyTorch: {pc['eager_erfinv_us']:.2f} us; the same TorchScript called "
        f"directly from Python: {pc['torchscript_direct_us']:.2f} us"
    )
    print(
        f"above eager: {pc['torch_call_us_fast_path'] - pc['eager_erfinv_us']:+.2f} us (fast "
        f"path), {pc['torch_call_us_interpreter'] - pc['eager_erfinv_us']:+.2f} us "
        f"(interpreter)"
    )
    if args.json:
        args.json.write_text(json.dumps({"size": rows, "per_crossing": pc}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
