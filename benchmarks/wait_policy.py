"""Eager PyTorch in a process that also runs byoc_torch's TVM kernels, by OpenMP wait policy.

Each policy runs in a fresh process (libgomp reads ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT``
once, when torch is loaded): ``default`` (nothing set before torch is imported: libgomp's
spinning waits), ``PASSIVE`` (no spinning), and ``spin=N`` (``GOMP_SPINCOUNT=N``: an idle
worker spins N rounds, then sleeps; what byoc_torch sets when imported first,
``byoc_torch/_env.py``). In each, a 256x1024 elementwise chain is compiled with
``placement="tvm"`` (a parallel TVM kernel), and timed interleaved with it
(:func:`byoc_torch.timing.interleaved_samples`, medians of rounds) at the default threads: an
eager 64x512 -> 512 -> 512 MLP, and the built-in demo model eager (many small kernels, where a
sleeping worker's wake-up is most of the time). ``--busy N`` runs N spinning processes beside
it, as a loaded machine does.

    python -m benchmarks.wait_policy [--rounds 9] [--busy 2]
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
from byoc_torch.models import get_example
chain = Lambda(lambda x: torch.sigmoid(torch.relu(x * 2.0 + 1.0) - 0.5) * x)
demo, demo_inputs = get_example("demo")
mlp = torch.nn.Sequential(
    torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512)
).eval()
x, y = torch.randn(256, 1024), torch.randn(64, 512)
c = byoc_torch.compile(chain, (x,), placement="tvm", verify=False)
with torch.no_grad():
    s, _ = interleaved_samples(
        {"eager_mlp": lambda: mlp(y), "tvm_chain": lambda: c(x),
         "tvm_then_eager": lambda: (c(x), mlp(y)), "eager_demo": lambda: demo(*demo_inputs)},
        ROUNDS)
print(" ".join(f"{k}={statistics.median(v):.3f}" for k, v in s.items()))
"""


POLICIES = {
    "default": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin=300": {"GOMP_SPINCOUNT": "300"},
    "spin=1000": {"GOMP_SPINCOUNT": "1000"},
    "spin=3000": {"GOMP_SPINCOUNT": "3000"},
    "spin=10000": {"GOMP_SPINCOUNT": "10000"},
}
BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wait_policy")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--busy", type=int, default=0, help="spinning processes beside it")
    args = parser.parse_args(argv)
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
    try:
        print(
            f"load average {os.getloadavg()[0]:.1f}; {args.busy} busy processes; "
            "ms per call, medians of rounds"
        )
        for policy, extra in POLICIES.items():
            env = {
                k: v
                for k, v in os.environ.items()
                if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
            }
            env.update(extra)
            code = CHILD.replace("ROUNDS", str(args.rounds))
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            print(f"{policy:<12} {out.stdout.strip().splitlines()[-1]}", flush=True)
    finally:
        for p in busy:
            p.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
