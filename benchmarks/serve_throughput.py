"""Ray Serve throughput of a compiled model with 1 and 2 replicas (examples/serving.py).

A local Ray cluster with ``--cpus`` CPUs serves an exported artifact (a 256-wide MLP block
with erfinv, batch dim dynamic), each replica given 1 CPU (its thread budget); ``--clients``
threads send single-sample HTTP requests on localhost for ``--seconds`` after a warm-up, in
``--rounds`` rounds per replica count; the requests answered per second (median and range of
the rounds) are printed for each replica count, with the median latency. Every answer is
checked against eager PyTorch. Figures depend on the machine and on what else runs on it.

    python benchmarks/serve_throughput.py [--seconds 10] [--rounds 3] [--clients 8] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import ray
import torch
from ray import serve
from torch.export import Dim

import byoc_torch
from byoc_torch import serving

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 256
PORT = 8765
URL = f"http://127.0.0.1:{PORT}/"


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(WIDTH, 4 * WIDTH)
        self.fc2 = torch.nn.Linear(4 * WIDTH, WIDTH)

    def forward(self, x):
        h = torch.special.erfinv(torch.tanh(self.fc1(x)) * 0.9)  # erfinv: LibTorch
        return self.fc2(h) + x


def measure(url: str, samples, expected, clients: int, seconds: float) -> tuple[float, float]:
    """Requests per second and the median latency (ms) of ``clients`` threads for ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            started = time.perf_counter()
            got = serving.post(url, [samples[i % len(samples)]])["outputs"][0]
            took = time.perf_counter() - started
            torch.testing.assert_close(torch.tensor(got), expected[i % len(samples)])
            with lock:
                latencies.append(took)
            i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=8)
    args = parser.parse_args()

    model = Block().eval()
    batch = Dim("batch", min=2, max=64)
    compiled = byoc_torch.compile(
        model, (torch.randn(4, WIDTH),), dynamic_shapes={"x": {0: batch}}, placement="tvm"
    )
    samples = [torch.randn(WIDTH) for _ in range(64)]
    with torch.no_grad():
        expected = model(torch.stack(samples))
    python_path = os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]  # this checkout's byoc_torch first
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = compiled.export(Path(tmp) / "block.so")
        ray.init(
            num_cpus=args.cpus,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": python_path}},
        )
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": PORT})
            for replicas in (1, 2):
                serve.run(
                    serving.app(
                        path,
                        replicas=replicas,
                        cpus_per_replica=1,
                        max_batch_size=args.max_batch_size,
                    ),
                    route_prefix="/",
                )
                measure(URL, samples, expected, args.clients, 5.0)  # warm-up
                runs = [
                    measure(URL, samples, expected, args.clients, args.seconds)
                    for _ in range(args.rounds)
                ]
                rates = sorted(rps for rps, _ in runs)
                latency = statistics.median(ms for _, ms in runs)
                rows.append((replicas, statistics.median(rates), rates[0], rates[-1], latency))
                serve.delete("default")
        finally:
            serve.shutdown()
            ray.shutdown()
    print(
        f"Ray Serve, {args.clients} clients, {args.rounds} x {args.seconds:.0f} s, 1 CPU per "
        f"replica, max batch {args.max_batch_size}, {os.cpu_count()} cores"
    )
    print(f"{'replicas':>8} {'req/s':>8} {'range':>15} {'median ms':>10}")
    for replicas, rps, low, high, latency in rows:
        print(f"{replicas:>8} {rps:>8.1f} {low:>7.1f}-{high:<7.1f} {latency:>10.1f}")
    print(f"2 replicas / 1 replica (medians): {rows[1][1] / rows[0][1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
