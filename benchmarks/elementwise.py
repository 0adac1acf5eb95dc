"""TVM's untuned kernels on fused elementwise and reduction chains, against eager PyTorch.

For each workload (256x1024 float32): eager PyTorch; TVM as ``relax.build`` builds it without
byoc_torch (no fusion, no schedule: one naive loop nest per op, the state before
``byoc_torch/schedules.py``); and ``byoc_torch.compile(..., placement="tvm")`` (fused, default
schedules, fast math, the host CPU target). Every variant is checked against eager, then timed
interleaved (:func:`byoc_torch.timing.interleaved_samples`, ``--rounds`` rounds, median of
rounds). ``--threads`` sets PyTorch's and TVM's threads (default: byoc_torch's budget, the
cores available).

    python -m benchmarks.elementwise [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

WORKLOADS = {
    # six ops: mul, add, relu, sub, sigmoid, mul
    "chain6_sigmoid": lambda x: torch.sigmoid(torch.relu(x * 2.0 + 1.0) - 0.5) * x,
    "chain6_tanh": lambda x: torch.tanh(torch.relu(x * 2.0 + 1.0) - 0.5) * x,
    "chain6_arith": lambda x: torch.abs(torch.relu(x * 2.0 + 1.0) - 0.5) * x,
    "silu_mul": lambda x: torch.nn.functional.silu(x) * (x + 1.0),
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "layer_norm": lambda x: torch.nn.functional.layer_norm(x, (x.shape[-1],)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.elementwise")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    import byoc_torch
    from byoc_torch.tensors import to_tvm
    from byoc_torch.testing import Lambda
    from byoc_torch.timing import interleaved_samples

    x = torch.randn(256, 1024)
    print(f"256x1024 float32, threads {args.threads or 'default'}; load {os.getloadavg()[0]:.1f}")
    print(f"{'workload':<16}{'eager ms':>10}{'relax.build':>13}{'byoc tvm':>10}  (x eager)")
    for name in args.workloads.split(","):
        fn = WORKLOADS[name]
        model = Lambda(fn)
        compiled = byoc_torch.compile(
            model, (x,), placement="tvm", num_threads=args.threads, verify=False
        )
        mod = from_exported_program(torch.export.export(model, (x,)))
        vm = relax.VirtualMachine(relax.build(mod, target="llvm"), tvm.cpu())
        args_tvm = [to_tvm(x)]
        expected = fn(x)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)
        plain = torch.from_dlpack(vm["main"](*args_tvm)[0])
        torch.testing.assert_close(plain, expected, rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            samples, _ = interleaved_samples(
                {
                    "eager": lambda f=fn: f(x),
                    "relax.build": lambda v=vm, a=args_tvm: v["main"](*a),
                    "byoc": lambda c=compiled: c(x),
                },
                args.rounds,
            )
        ms = {k: statistics.median(v) for k, v in samples.items()}
        e = ms["eager"]
        print(
            f"{name:<16}{e:>10.3f}{ms['relax.build'] / e:>12.2f}x{ms['byoc'] / e:>9.2f}x",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
