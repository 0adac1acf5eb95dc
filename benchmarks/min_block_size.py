"""Is it worth running a small TVM block in LibTorch to save two crossings? (min_block_size)

Model: erfinv (LibTorch) -> K cheap elementwise ops (TVM) -> lgamma (LibTorch), on a tensor of
N elements. For each K and N, compares latency with min_block_size=1 (the K ops in TVM, two
LibTorch subgraphs) against min_block_size=K+1 (the K ops absorbed: one subgraph). Prints the
median latency of both and their ratio.

    python benchmarks/min_block_size.py [--sizes 256 65536] [--ks 1 2 3 4 6 8]
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch
from torch import nn

import byoc_torch
from byoc_torch.timing import measure_latency


class Sandwich(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.special.erfinv(x)
        for i in range(self.k):
            h = h * 1.01 if i % 2 == 0 else h + 0.01
        return torch.lgamma(h.abs() + 1.0) if self.k == 0 else torch.lgamma(h)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 65536])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    p.add_argument("--repeat", type=int, default=300)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'N':>7} {'K':>3} {'separate ms':>12} {'absorbed ms':>12} {'absorbed/separate':>18}")
    for n in args.sizes:
        x = torch.rand(n) * 0.9 + 0.05
        for k in args.ks:
            model = Sandwich(k).eval()
            sep = byoc_torch.compile(model, (x,), min_block_size=1)
            absb = byoc_torch.compile(model, (x,), min_block_size=k + 1)
            assert sep.num_torch_subgraphs() == 2 and absb.num_torch_subgraphs() == 1
            t_sep, _ = measure_latency(lambda m=sep, x=x: m(x), 20, args.repeat)
            t_abs, _ = measure_latency(lambda m=absb, x=x: m(x), 20, args.repeat)
            print(f"{n:>7} {k:>3} {t_sep:>12.4f} {t_abs:>12.4f} {t_abs / t_sep:>18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
