"""The thread-oversubscription cliff of a hybrid model on a loaded machine, and num_threads.

The model alternates TVM and LibTorch: ``--layers`` layers of linear (TVM) -> erfinv(tanh)
(erfinv runs in LibTorch) -> linear (TVM) on a (64, 64) tensor. While a background process
keeps one core busy (a busy loop in a subprocess that ends by itself after ``--busy-seconds``),
each configuration runs in a fresh process (thread settings are process-wide and TVM reads
its environment once):

* ``TVM/torch defaults``: what a process gets without byoc_torch's settings: TVM's own
  environment defaults (idle pool workers spin-yield 300000 rounds, threads pinned to cores)
  with TVM_NUM_THREADS = the core count, and LibTorch's default intra-op threads;
* ``byoc_torch default``: ``num_threads=None`` (each pool: the cores available) with
  byoc_torch's environment defaults (no spinning, no pinning);
* ``num_threads=1``;
* ``eager``: the nn.Module in the same loaded conditions, LibTorch's default threads.

Prints the median latency per configuration in milliseconds.

    python benchmarks/threads.py [--layers 20] [--repeat 200] [--busy-seconds 120]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from torch import nn
    mode, layers, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(64, 64)
            self.b = nn.Linear(64, 64)

        def forward(self, x):
            return self.b(torch.special.erfinv(torch.tanh(self.a(x)) * 0.5))

    torch.manual_seed(0)
    model = nn.Sequential(*[Layer() for _ in range(layers)]).eval()
    x = torch.randn(64, 64)
    if mode == "eager":
        def run():
            with torch.no_grad():
                model(x)
    else:
        import byoc_torch
        if mode == "tvm-defaults":
            from byoc_torch import threads
            threads.apply_thread_budget = lambda n: None  # emulate: no budget applied
            import byoc_torch.compiled, byoc_torch.driver
            byoc_torch.compiled.apply_thread_budget = threads.apply_thread_budget
            byoc_torch.driver.apply_thread_budget = threads.apply_thread_budget
        kwargs = {"num_threads": 1} if mode == "one" else {}
        compiled = byoc_torch.compile(model, (x,), verify=False, **kwargs)
        def run():
            compiled(x)
    from byoc_torch.timing import measure_latency

    median_ms, _ = measure_latency(run, 20, repeat)
    print(json.dumps({"median_ms": median_ms,
                      "torch_threads": torch.get_num_threads(),
                      "tvm_env": os.environ.get("TVM_NUM_THREADS")}))
    """
)

BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end:\n    pass\n"

CONFIGS = {
    "TVM/torch defaults": (
        "tvm-defaults",
        {"TVM_THREAD_POOL_SPIN_COUNT": "300000", "TVM_BIND_THREADS": "1"},
    ),
    "byoc_torch default (num_threads=None)": ("default", {}),
    "num_threads=1": ("one", {}),
    "eager": ("eager", {}),
}


def run_child(mode: str, extra_env: dict, layers: int, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra_env}
    if mode == "tvm-defaults":
        env["TVM_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))
    else:
        env.pop("TVM_NUM_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(layers), str(repeat)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--busy-seconds", type=float, default=120.0)
    parser.add_argument("--no-load", action="store_true", help="no background busy loop")
    args = parser.parse_args()
    busy = None
    if not args.no_load:
        busy = subprocess.Popen([sys.executable, "-c", BUSY.format(s=args.busy_seconds)])
    try:
        print(
            f"{args.layers} layers, (64, 64), one core busy: {not args.no_load}; "
            f"median of {args.repeat} calls, ms"
        )
        for label, (mode, env) in CONFIGS.items():
            r = run_child(mode, env, args.layers, args.repeat)
            print(
                f"  {label:40s} {r['median_ms']:8.2f}   (torch threads {r['torch_threads']}, "
                f"TVM_NUM_THREADS {r['tvm_env']})"
            )
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


if __name__ == "__main__":
    main()
