"""Serving with Ray Serve: a byoc_torch artifact replicated over processes (and machines), each
replica loading it, with a thread budget from the CPUs Ray gives it, batching requests along
the model's batch dim.

Place in the data flow: after ``CompiledModule.export`` (the artifact file); a user-facing tool
beside the CLI (needs the ``serve`` extra: ``pip install "byoc_torch[serve]"``). Each replica is
a Ray actor that runs ``byoc_torch.load`` on the artifact, then gives LibTorch and TVM as many
threads as CPUs Ray assigned it (``byoc_torch.threads.apply_thread_budget``; without it every
replica would use every core of its machine). A request is JSON on HTTP POST,
``{"inputs": [x0, x1, ...]}`` with one nested list per model input (one sample: without the
batch dim when the model has one); the answer is ``{"outputs": [y0, ...]}``. When every input's
first dim is one dynamic symbol (compiled with ``dynamic_shapes``), ``@serve.batch`` gathers
concurrent requests into one call of up to ``max_batch_size`` samples (no more than the
symbol's range allows); otherwise each request is one call.

``examples/serve_ray.py`` is the command line around :func:`app`; tests/test_serve_ray.py runs
it on a local cluster; benchmarks/serve_throughput.py measures throughput with 1 and 2 replicas.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import ray
import torch
from ray import serve
from starlette.requests import Request

__all__ = ["ModelServer", "app", "batch_range", "post"]


def batch_range(signature, wanted: int) -> tuple[int, int] | None:
    """The fewest and most samples one batched call takes (at most ``wanted``), or None when
    the model has no batch dim (every input's dim 0 the same dynamic symbol)."""
    firsts = {spec.shape[0] if spec.shape else None for spec in signature.inputs}
    if len(firsts) != 1:
        return None
    (symbol,) = firsts
    if not isinstance(symbol, str):
        return None
    lower, upper = signature.ranges.get(symbol, (0, None))
    most = wanted if upper is None else min(wanted, upper)
    return (max(lower, 1), most) if most >= max(lower, 1) else None


@serve.deployment
class ModelServer:
    """One replica: the artifact loaded in this process."""

    def __init__(self, artifact: str, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        import byoc_torch
        from byoc_torch.threads import apply_thread_budget

        self.model = byoc_torch.load(artifact)
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.budget = apply_thread_budget(max(1, int(cpus)))
        self.dtypes = [getattr(torch, spec.dtype) for spec in self.model.signature.inputs]
        sizes = batch_range(self.model.signature, max_batch_size)
        self.batched = sizes is not None
        if sizes is not None:
            # A batch smaller than the model allows (torch.export's batch dims start at 2)
            # is padded with copies of its last sample.
            self.min_batch, most = sizes
            self._batch.set_max_batch_size(most)
            self._batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.replica = serve.get_replica_context().replica_id.unique_id

    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        inputs = [
            torch.tensor(x, dtype=d) for x, d in zip(body["inputs"], self.dtypes, strict=True)
        ]
        if self.batched:
            outputs = await self._batch(inputs)
        else:
            outputs = self._run([x for x in inputs])
        return {
            "outputs": [y.tolist() for y in outputs],
            "replica": self.replica,
            "threads": [self.budget.torch_threads, self.budget.tvm_threads],
        }

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _batch(self, requests: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        padded = requests + [requests[-1]] * (self.min_batch - len(requests))
        stacked = [torch.stack(column) for column in zip(*padded, strict=True)]
        outputs = self._run(stacked)
        return [[y[k] for y in outputs] for k in range(len(requests))]

    def _run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.inference_mode():
            out = self.model(*inputs)
        return list(out) if isinstance(out, tuple | list) else [out]


def app(
    artifact: str | Path,
    *,
    replicas: int = 1,
    cpus_per_replica: float = 1.0,
    max_batch_size: int = 8,
    batch_wait_timeout_s: float = 0.005,
):
    """The Serve application: ``replicas`` copies of the model, each given ``cpus_per_replica``
    CPUs (its thread budget)."""
    return ModelServer.options(
        num_replicas=replicas, ray_actor_options={"num_cpus": cpus_per_replica}
    ).bind(str(Path(artifact).resolve()), max_batch_size, batch_wait_timeout_s)


def post(url: str, inputs: list[torch.Tensor], timeout: float = 120.0) -> dict:
    """A client's request: one sample per model input, the server's JSON answer."""
    body = json.dumps({"inputs": [x.tolist() for x in inputs]}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())
