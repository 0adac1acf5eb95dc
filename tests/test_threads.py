"""Concurrent calls of one compiled model."""

from __future__ import annotations

import torch

import byoc_torch
from byoc_torch.models import get_example
from byoc_torch.testing.concurrency import hammer


def test_eight_threads_times_1000_calls_share_one_compiled_model():
    model, (x,) = get_example("demo")
    compiled = byoc_torch.compile(model, (x,))
    inputs = [torch.randn_like(x) for _ in range(8)]
    expected = [compiled(i) for i in inputs]  # single-threaded results, compared bitwise
    with torch.no_grad():
        for got, i in zip(expected, inputs, strict=True):
            torch.testing.assert_close(got, model(i), rtol=1e-4, atol=1e-4)

    def call_is_right(k: int) -> bool:
        got = compiled(inputs[k])
        return all(torch.equal(g, e) for g, e in zip(got, expected[k], strict=True))

    hammer(8, 1000, call_is_right)


def _fresh(code: str, env: dict | None = None) -> str:
    import os
    import subprocess
    import sys

    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    full.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=full
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_openmp_spins_briefly_unless_the_user_chose_or_torch_came_first():
    show = (
        "import os, byoc_torch\n"
        "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'),"
        " byoc_torch._env.OMP_POLICY_SET)"
    )
    assert _fresh(show) == "3000 None True"
    assert _fresh(show, {"OMP_WAIT_POLICY": "PASSIVE"}) == "None PASSIVE False"
    assert _fresh(show, {"GOMP_SPINCOUNT": "INFINITY"}) == "INFINITY None False"
    assert _fresh("import torch\n" + show) == "None None False"


def test_available_cores_follow_affinity_and_a_cgroup_quota(tmp_path, monkeypatch):
    import os

    from byoc_torch import threads

    cores = len(os.sched_getaffinity(0))
    limit = tmp_path / "cpu.max"
    limit.write_text("max 100000\n")
    monkeypatch.setattr(threads, "CGROUP_CPU_MAX", str(limit))
    assert threads.cgroup_cpu_quota(str(limit)) is None
    assert threads.available_cores() == cores
    limit.write_text("50000 100000\n")  # half a CPU: one thread
    assert threads.cgroup_cpu_quota(str(limit)) == 0.5
    assert threads.available_cores() == 1
    limit.write_text(f"{150000 * cores} 100000\n")  # more than the affinity mask allows
    assert threads.available_cores() == cores
