"""The call path of a compiled model (input checks, aliasing) and its thread budget."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import tvm_ffi
from torch import nn

import byoc_torch
from byoc_torch import InputError, InputTypeError
from byoc_torch.errors import ArtifactError
from byoc_torch.signature import Signature
from byoc_torch.threads import last_applied

ROOT = Path(__file__).resolve().parents[1]


class ErfinvPlus(nn.Module):
    """One LibTorch op (erfinv) and one TVM op (add)."""

    def forward(self, x, y):
        return torch.special.erfinv(x) + y


class Pair(nn.Module):
    """Two inputs sharing a symbolic batch dim; a tuple of two outputs."""

    def forward(self, x, y):
        return torch.relu(x) + y, torch.special.erfinv(x * 0.5) * y


@pytest.fixture(scope="module")
def static_model():
    return byoc_torch.compile(ErfinvPlus(), (torch.rand(2, 3), torch.rand(2, 3)))


@pytest.fixture(scope="module")
def dynamic_model():
    batch = torch.export.Dim("batch", min=2, max=16)
    return byoc_torch.compile(
        Pair(),
        (torch.rand(4, 3), torch.rand(4, 3)),
        dynamic_shapes={"x": {0: batch}, "y": {0: batch}},
    )


# --- every input check: same type, same message ---------------------------------------------


def _raises(model, args, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        model(*args)
    assert type(info.value) is error
    assert str(info.value) == message


def test_arity(static_model):
    _raises(
        static_model,
        (torch.rand(2, 3),),
        InputTypeError,
        "byoc_torch: the compiled model takes 2 input(s) (x, y), got 1",
    )


def test_not_a_tensor(static_model):
    _raises(
        static_model,
        ([1.0], torch.rand(2, 3)),
        InputTypeError,
        "byoc_torch: input 0 ('x') must be a torch.Tensor, got list",
    )


def test_dtype(static_model):
    _raises(
        static_model,
        (torch.rand(2, 3), torch.rand(2, 3, dtype=torch.float64)),
        InputTypeError,
        "byoc_torch: input 1 ('y') has dtype float64, expected float32",
    )


def test_rank(static_model):
    _raises(
        static_model,
        (torch.rand(6), torch.rand(2, 3)),
        InputError,
        "byoc_torch: input 0 ('x') has shape (6,), expected rank 2 (2, 3)",
    )


def test_static_dim(static_model):
    _raises(
        static_model,
        (torch.rand(2, 3), torch.rand(2, 4)),
        InputError,
        "byoc_torch: input 1 ('y') has shape (2, 4), expected (2, 3) (dim 1 must be 3)",
    )


def _symbol(model) -> str:
    return model.signature.inputs[0].shape[0]


def test_static_dim_of_dynamic_model(dynamic_model):
    _raises(
        dynamic_model,
        (torch.rand(4, 5), torch.rand(4, 3)),
        InputError,
        f"byoc_torch: input 0 ('x') has shape (4, 5), expected ({_symbol(dynamic_model)}, 3) "
        "(dim 1 must be 3)",
    )


def test_symbol_consistency(dynamic_model):
    _raises(
        dynamic_model,
        (torch.rand(4, 3), torch.rand(5, 3)),
        InputError,
        f"byoc_torch: input 1 ('y') dim 0 is 5 but symbol {_symbol(dynamic_model)} is already 4",
    )


def test_device(static_model):
    _raises(
        static_model,
        (torch.rand(2, 3), torch.empty(2, 3, device="meta")),
        InputError,
        "byoc_torch: input 1 ('y') is on meta, the model was compiled for cpu",
    )


def test_dynamic_sizes_run(dynamic_model):
    for b in (2, 7, 16):
        x, y = torch.rand(b, 3), torch.rand(b, 3)
        with torch.no_grad():
            expected = Pair()(x, y)
        got = dynamic_model(x, y)
        assert isinstance(got, tuple) and len(got) == 2
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e)


# --- aliasing: results equal eager's for any layout, and never see later input mutations -----


def _check_against_eager(model, compiled, *inputs) -> None:
    with torch.no_grad():
        expected = model(*[x.clone() for x in inputs])
    got = compiled(*inputs)
    torch.testing.assert_close(got, expected)
    snapshot = [g.clone() for g in got] if isinstance(got, tuple) else got.clone()
    for x in inputs:
        x.add_(1.0)  # the caller mutates its inputs after the call
    torch.testing.assert_close(got, snapshot)


def test_non_contiguous_input(static_model):
    x = torch.rand(3, 2).t()
    assert not x.is_contiguous()
    _check_against_eager(ErfinvPlus(), static_model, x, torch.rand(2, 3))


def test_offset_view_input(static_model):
    base = torch.rand(3, 3) * 0.5
    x = base[1:]  # contiguous, 12 bytes into its storage: not 64-byte aligned
    assert x.is_contiguous() and x.data_ptr() % 64
    _check_against_eager(ErfinvPlus(), static_model, x, torch.rand(2, 3))


def test_channels_last_input():
    class M(nn.Module):
        def forward(self, x, y):
            return torch.special.erfinv(x * 0.5) + torch.relu(y)

    x = torch.rand(1, 3, 4, 4).to(memory_format=torch.channels_last)
    y = torch.rand(1, 3, 4, 4).to(memory_format=torch.channels_last)
    compiled = byoc_torch.compile(M(), (torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)))
    _check_against_eager(M(), compiled, x, y)


def test_same_tensor_twice(static_model):
    x = torch.rand(2, 3) * 0.5
    _check_against_eager(ErfinvPlus(), static_model, x, x)


def test_tuple_outputs_and_mutation(dynamic_model):
    _check_against_eager(Pair(), dynamic_model, torch.rand(3, 3), torch.rand(3, 3))


@pytest.mark.parametrize("which", ["plain", "parameter"])
def test_input_requiring_grad_is_an_error_under_grad_mode(static_model, which):
    """Never a silently detached output: with grad mode on, an input that requires grad is
    refused (fast path for a plain tensor, checked path for a Parameter)."""
    x = torch.rand(2, 3, requires_grad=True) if which == "plain" else torch.rand(2, 3)
    y = nn.Parameter(torch.rand(2, 3)) if which == "parameter" else torch.rand(2, 3)
    where = "input 0 ('x')" if which == "plain" else "input 1 ('y')"
    with pytest.raises(
        InputError,
        match=re.escape(
            f"byoc_torch: {where} requires grad, but a compiled model is inference-only (its "
            "outputs carry no gradient); call it under torch.no_grad() or torch.inference_mode()"
        ),
    ):
        static_model(x, y)


def test_input_requiring_grad_runs_under_no_grad(static_model):
    x = torch.rand(2, 3, requires_grad=True)
    y = nn.Parameter(torch.rand(2, 3))  # a Tensor subclass: takes the checked path
    with torch.no_grad():
        got = static_model(x, y)
        assert not got.requires_grad
        torch.testing.assert_close(got, ErfinvPlus()(x, y))
    with torch.inference_mode():
        torch.testing.assert_close(static_model(x, y), got)


def test_inputs_are_not_written(static_model):
    x, y = torch.rand(2, 3), torch.rand(2, 3)
    x0, y0 = x.clone(), y.clone()
    static_model(x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)


# --- num_threads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, error, message",
    [
        (0, ValueError, "num_threads must be >= 1, got 0"),
        (-2, ValueError, "num_threads must be >= 1, got -2"),
        ("2", TypeError, "num_threads must be a positive int or None, got '2'"),
        (1.5, TypeError, "num_threads must be a positive int or None, got 1.5"),
        (True, TypeError, "num_threads must be a positive int or None, got True"),
    ],
)
def test_num_threads_invalid(value, error, message):
    with pytest.raises(error) as info:
        byoc_torch.Options(num_threads=value)
    assert str(info.value) == message


def test_num_threads_one_sets_both_pools():
    """Process-wide: the budget stays after the test (nothing restores it)."""
    compiled = byoc_torch.compile(ErfinvPlus(), (torch.rand(2, 3), torch.rand(2, 3)), num_threads=1)
    assert torch.get_num_threads() == 1
    assert os.environ["TVM_NUM_THREADS"] == "1"
    assert compiled.thread_budget.torch_threads == 1
    assert compiled.thread_budget.tvm_threads == 1
    assert last_applied() == compiled.thread_budget
    assert compiled.signature.num_threads == 1


def test_default_budget_keeps_the_processs_threads_up_to_the_cores_available():
    """num_threads=None: torch.get_num_threads() as the user set it, capped by the cores
    (a compile used to raise a one-thread process to every core, eager code included)."""
    got = _run_fresh(
        """
        import json, os, torch
        import byoc_torch
        class ErfinvPlus(torch.nn.Module):
            def forward(self, x, y):
                return torch.special.erfinv(x) + y
        cores = len(os.sched_getaffinity(0))
        x = (torch.rand(2, 3), torch.rand(2, 3))
        torch.set_num_threads(1)
        one = byoc_torch.compile(ErfinvPlus(), x)
        after_one = torch.get_num_threads()
        torch.set_num_threads(cores + 3)
        capped = byoc_torch.compile(ErfinvPlus(), x)
        print(json.dumps({"cores": cores, "one": [after_one, one.thread_budget.torch_threads,
                          one.thread_budget.requested], "capped": [torch.get_num_threads(),
                          capped.thread_budget.tvm_threads]}))
        """
    )
    assert got["one"] == [1, 1, None]
    assert got["capped"] == [got["cores"], got["cores"]]


def test_signature_without_num_threads_loads_as_default():
    sig = Signature.from_json(json.dumps({"version": 1, "inputs": [], "outputs": {"t": "leaf"}}))
    assert sig.num_threads is None
    assert Signature.from_json(sig.to_json()) == sig
    bad = json.dumps({"version": 1, "inputs": [], "outputs": {"t": "leaf"}, "num_threads": 0})
    with pytest.raises(ArtifactError, match="the stored num_threads must be >= 1, got 0"):
        Signature.from_json(bad)


def _run_fresh(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "TVM_THREAD_POOL_SPIN_COUNT"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_loaded_artifact_applies_its_budget(tmp_path):
    path = tmp_path / "one_thread.so"
    byoc_torch.compile(ErfinvPlus(), (torch.rand(2, 3), torch.rand(2, 3)), num_threads=1).export(
        path
    )
    got = _run_fresh(
        f"""
        import json, os, torch, tvm_ffi
        import byoc_torch
        before = torch.get_num_threads()
        model = byoc_torch.load({str(path)!r})
        x = torch.rand(2, 3) * 0.5
        assert torch.allclose(model(x, x), torch.special.erfinv(x) + x)
        print(json.dumps({{
            "before": before,
            "torch": torch.get_num_threads(),
            "env": os.environ["TVM_NUM_THREADS"],
            "tvm": tvm_ffi.get_global_func("runtime.NumThreads")(),
            "spin": os.environ["TVM_THREAD_POOL_SPIN_COUNT"],
            "affinity": sorted(os.sched_getaffinity(0)),
        }}))
        """
    )
    assert got["torch"] == 1 and got["env"] == "1" and got["tvm"] == 1
    assert got["spin"] == "0"
    assert got["affinity"] == sorted(os.sched_getaffinity(0))  # TVM pinned nothing


def test_budget_above_one_sizes_tvm_pool():
    got = _run_fresh(
        """
        import json, os, torch
        from torch import nn
        import byoc_torch
        model = byoc_torch.compile(nn.ReLU(), (torch.rand(4),), num_threads=2)
        print(json.dumps({"torch": torch.get_num_threads(), "tvm": model.thread_budget.tvm_threads,
                          "affinity": sorted(os.sched_getaffinity(0))}))
        """
    )
    assert got == {"torch": 2, "tvm": 2, "affinity": sorted(os.sched_getaffinity(0))}


def test_tvm_reports_pool_size():
    assert tvm_ffi.get_global_func("runtime.NumThreads", allow_missing=True) is not None


# --- the checked call (runtime/checked_call.cc): accepts in C++, else hands over to Python -----


def _aligned(*shape: int, dtype=torch.float32) -> torch.Tensor:
    x = torch.rand(*shape).to(dtype)
    assert x.data_ptr() % 64 == 0
    return x


def test_the_checked_call_accepts_what_passes_every_check(dynamic_model):
    checked = dynamic_model._checked_function()
    x, y = _aligned(5, 3), _aligned(5, 3)
    out = checked(x, y)
    assert out is not None  # the VM ran: the array of both outputs
    with torch.no_grad():
        expected = Pair()(x, y)
    for got, want in zip(dynamic_model._convert_result(out), expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(lambda: (_aligned(5, 3),), id="one input missing"),
        pytest.param(lambda: (_aligned(5, 3), _aligned(5, 3), _aligned(5, 3)), id="one too many"),
        pytest.param(lambda: (_aligned(5, 3), 1.0), id="not a tensor"),
        pytest.param(lambda: (_aligned(5, 3), _aligned(5, 3, dtype=torch.float64)), id="dtype"),
        pytest.param(lambda: (_aligned(5, 3), _aligned(5, 4)), id="static dim"),
        pytest.param(lambda: (_aligned(5, 3), _aligned(6, 3)), id="symbol bound twice"),
        pytest.param(lambda: (_aligned(5, 3), _aligned(5, 3, 1)), id="rank"),
        pytest.param(lambda: (_aligned(17, 3), _aligned(17, 3)), id="symbol above its range"),
        pytest.param(lambda: (_aligned(1, 3), _aligned(1, 3)), id="symbol below its range"),
        pytest.param(lambda: (_aligned(5, 3), _aligned(3, 5).t()), id="not compact"),
        pytest.param(lambda: (_aligned(5, 3), _aligned(16)[1:].view(5, 3)), id="misaligned"),
    ],
)
def test_the_checked_call_refuses_without_running(dynamic_model, args):
    assert dynamic_model._checked_function()(*args()) is None


def test_a_call_that_passes_never_takes_the_python_path(dynamic_model, monkeypatch):
    def slow(inputs):
        raise AssertionError("the slow path ran")

    monkeypatch.setattr(dynamic_model, "_slow_call", slow)
    x, y = _aligned(7, 3), _aligned(7, 3)
    with torch.no_grad():
        expected = Pair()(x, y)
    torch.testing.assert_close(dynamic_model(x, y), expected)


def test_a_strided_input_still_runs_through_the_python_path(dynamic_model):
    x, y = _aligned(3, 5).t(), _aligned(5, 3)
    with torch.no_grad():
        expected = Pair()(x, y)
    torch.testing.assert_close(dynamic_model(x, y), expected)
