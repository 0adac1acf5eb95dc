"""Serve a byoc_torch artifact with Ray Serve (:mod:`byoc_torch.serving`): replicas over
processes (and machines), each loading the artifact with a thread budget from the CPUs Ray
gives it, batching requests along the model's batch dim.

    python examples/serve_ray.py model.so --replicas 2 --cpus-per-replica 1 --port 8000
    curl -X POST localhost:8000/ -d '{"inputs": [[0.1, 0.2, ...]]}'

Needs the ``serve`` extra (``pip install ".[serve]"``).
"""

from __future__ import annotations

import argparse
import signal
import threading

import ray
from ray import serve

from byoc_torch.serving import app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", help="an artifact written by CompiledModule.export")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--cpus-per-replica", type=float, default=1.0)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: local)")
    args = parser.parse_args(argv)
    ray.init(address=args.address)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(
        app(
            args.artifact,
            replicas=args.replicas,
            cpus_per_replica=args.cpus_per_replica,
            max_batch_size=args.max_batch_size,
        ),
        route_prefix="/",
    )
    print(f"serving {args.artifact} on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
