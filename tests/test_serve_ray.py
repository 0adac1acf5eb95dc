"""Ray Serve (examples/serving.py): a local Ray cluster with 2 CPUs runs 2 replicas of an
exported artifact, each loading it and holding a 1-thread budget; a bounded number of
concurrent HTTP requests on localhost are batched by ``@serve.batch`` and every answer equals
eager PyTorch's; both replicas answer; the cluster shuts down before the test ends."""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray
import torch
from ray import serve
from torch.export import Dim

import byoc_torch
from byoc_torch import serving

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = 32


class Erfinv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x):
        return torch.special.erfinv(torch.tanh(self.fc(x)) * 0.9) + torch.relu(x)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    model = Erfinv().eval()
    batch = Dim("batch", min=2, max=64)
    compiled = byoc_torch.compile(
        model, (torch.randn(4, 16),), dynamic_shapes={"x": {0: batch}}, placement="tvm"
    )
    return model, compiled.export(tmp_path_factory.mktemp("serve") / "model.so")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_batch_range_reads_the_batch_dim(artifact):
    model, path = artifact
    signature = byoc_torch.load(path).signature
    assert serving.batch_range(signature, 8) == (2, 8)
    assert serving.batch_range(signature, 100) == (2, 64)
    static = byoc_torch.compile(model, (torch.randn(4, 16),), placement="tvm").signature
    assert serving.batch_range(static, 8) is None


def test_two_replicas_answer_like_eager(artifact):
    model, path = artifact
    python_path = os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]  # this checkout's byoc_torch first
    )
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
    )
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(serving.app(path, replicas=2, cpus_per_replica=1), route_prefix="/")
        samples = [torch.randn(16) for _ in range(REQUESTS)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            url = f"http://127.0.0.1:{port}/"
            answers = list(pool.map(lambda x: serving.post(url, [x]), samples))
    finally:
        started = time.perf_counter()
        serve.shutdown()
        ray.shutdown()
        print(f"Ray Serve shut down in {time.perf_counter() - started:.1f} s")
    assert not ray.is_initialized()
    with torch.no_grad():
        expected = model(torch.stack(samples))
    for k, answer in enumerate(answers):
        (got,) = answer["outputs"]
        torch.testing.assert_close(torch.tensor(got), expected[k])
        assert answer["threads"] == [1, 1]  # each replica's budget: the 1 CPU Ray gave it
    assert len({a["replica"] for a in answers}) == 2
