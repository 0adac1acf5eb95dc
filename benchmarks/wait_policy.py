"""Eager PyTorch in a process that also runs byoc_torch's TVM kernels, by OpenMP wait policy.

Each policy runs in a fresh process (libgomp reads ``OMP_WAIT_POLICY`` once, when torch is
loaded): ``default`` (the policy unset before torch is imported: libgomp's spinning waits) and
``PASSIVE`` (what byoc_torch sets when imported first, ``byoc_torch/_env.py``). In each, a
256x1024 elementwise chain is compiled with ``placement="tvm"`` (a parallel TVM kernel), and an
eager 64x512 -> 512 -> 512 MLP is timed interleaved with it (:func:`byoc_torch.timing.
interleaved_samples`, medians of rounds) at the default threads. The difference shows on a
loaded machine (other processes wanting the cores), not on a quiet one.

    python -m benchmarks.wait_policy [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = """
import torch  # first, so that the policy is the environment's, not byoc_torch's
import statistics, byoc_torch
from byoc_torch.testing import Lambda
from byoc_torch.timing import interleaved_samples
chain = Lambda(lambda x: torch.sigmoid(torch.relu(x * 2.0 + 1.0) - 0.5) * x)
mlp = torch.nn.Sequential(
    torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512)
).eval()
x, y = torch.randn(256, 1024), torch.randn(64, 512)
c = byoc_torch.compile(chain, (x,), placement="tvm", verify=False)
with torch.no_grad():
    s, _ = interleaved_samples(
        {"eager_mlp": lambda: mlp(y), "tvm_chain": lambda: c(x),
         "tvm_then_eager": lambda: (c(x), mlp(y))}, ROUNDS)
print(" ".join(f"{k}={statistics.median(v):.3f}" for k, v in s.items()))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wait_policy")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f}; ms per call, medians of rounds")
    for policy in ("default", "PASSIVE"):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        code = CHILD.replace("ROUNDS", str(args.rounds))
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        print(f"{policy:<8} {out.stdout.strip().splitlines()[-1]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
