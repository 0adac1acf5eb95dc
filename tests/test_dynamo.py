"""``torch.compile(..., backend="byoc_torch")``: graph breaks, dynamic sizes without
recompiling, recompilation on guard failure, options, the entry point, and compiled models
inside torch.compile'd code."""

from __future__ import annotations

import os
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

import byoc_torch
from byoc_torch import FullCompilationError
from byoc_torch.testing.processes import fresh_python

ROOT = Path(__file__).resolve().parents[1]


class Counting:
    """A byoc_torch backend that records every graph it compiles."""

    def __init__(self, **options) -> None:
        self.backend = byoc_torch.dynamo_backend(placement="tvm", **options)
        self.compiled: list = []

    def __call__(self, gm, example_inputs):
        run = self.backend(gm, example_inputs)
        self.compiled.append(run.compiled)
        return run


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def branchy(x):
    y = torch.special.erfinv(torch.tanh(x))
    if y.sum() > 0:  # a Python branch on a tensor's value: a graph break
        return y * 2 + 1
    return torch.special.erfinv(torch.tanh(y)) - 1


def test_graph_break_runs_both_branches():
    backend = Counting()
    compiled = torch.compile(branchy, backend=backend)
    x = torch.rand(4, 8)
    torch.testing.assert_close(compiled(x), branchy(x))  # positive branch
    torch.testing.assert_close(compiled(-x), branchy(-x))  # negative branch
    assert len(backend.compiled) == 3  # before the branch, and each branch
    # erfinv runs in LibTorch before the branch and in the negative branch
    assert [c.torch_ops for c in backend.compiled] == [
        ["aten.erfinv.default"],
        [],
        ["aten.erfinv.default"],
    ]


def scaled(x):
    return torch.special.erfinv(torch.tanh(x)) * x.shape[0] + torch.relu(x)


@pytest.mark.parametrize("how", ["dynamic", "mark_dynamic"])
def test_dynamic_batch_compiles_once(how):
    backend = Counting()
    compiled = torch.compile(scaled, backend=backend, dynamic=True if how == "dynamic" else None)
    for batch in (3, 5, 11, 40):
        x = torch.randn(batch, 8)
        if how == "mark_dynamic":
            torch._dynamo.mark_dynamic(x, 0)
        torch.testing.assert_close(compiled(x), scaled(x))
    assert len(backend.compiled) == 1
    (shape,) = [s.shape for s in backend.compiled[0].signature.inputs]
    assert isinstance(shape[0], str)  # the batch is a symbol
    assert shape[1] == 8 or how == "dynamic"  # dynamic=True makes every dim dynamic


def test_the_process_thread_setting_is_kept():
    """A user who set torch's threads compiles without Dynamo's "Global num_threads state
    changed while dynamo tracing" (the backend used to apply its own budget: the cores), and
    the setting stays."""
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    torch.set_num_threads(other)
    try:
        fn = torch.compile(lambda x: torch.special.erfinv(x.tanh()) * 2, backend="byoc_torch")
        x = torch.randn(8)
        torch.testing.assert_close(fn(x), torch.special.erfinv(x.tanh()) * 2)
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)


def test_guard_failure_recompiles():
    backend = Counting()
    compiled = torch.compile(scaled, backend=backend, dynamic=False)
    for x in (torch.randn(4, 8), torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8)):
        torch.testing.assert_close(compiled(x), scaled(x))
    assert [c.signature.inputs[0].dtype for c in backend.compiled] == ["float32", "float64"]


def test_module_weights_and_no_grad():
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
    backend = Counting()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_backend_verifies_like_compile(monkeypatch):
    """With an empty deny-list, verification alone finds TVM's wrong selu (elu) in a Dynamo
    graph and moves it to LibTorch, as compile does."""
    monkeypatch.setattr("byoc_torch.frontend.importer.deny_list_match", lambda node: None)
    backend = Counting()

    def f(x):
        return nn.functional.selu(x) * 2

    x = torch.randn(24)
    torch.testing.assert_close(torch.compile(f, backend=backend)(x), f(x))
    ((record,),) = [c.fallbacks for c in backend.compiled]
    assert (record.op, str(record.reason)) == (
        "aten.elu.default",
        "TVM result differs from PyTorch",
    )


def test_fake_example_inputs_become_real_ones():
    """A backend may get FakeTensors (e.g. behind AOTAutograd): byoc_torch compiles and
    verifies on random real tensors of their shapes and dtypes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from byoc_torch.dynamo import compile_graph

    def f(x, idx):
        return torch.special.erfinv(torch.tanh(x)) + idx.float()

    gm = torch.fx.symbolic_trace(f)
    with FakeTensorMode():
        fakes = [torch.empty(4, 8), torch.empty(4, 8, dtype=torch.int64)]
    run = compile_graph(gm, fakes, placement="tvm")
    assert [s.dtype for s in run.compiled.signature.inputs] == ["float32", "int64"]
    x, idx = torch.randn(4, 8), torch.randint(0, 5, (4, 8))
    torch.testing.assert_close(run(x, idx), f(x, idx))


def test_options_reach_compile():
    backend = byoc_torch.dynamo_backend(placement="tvm", require_full_compilation=True)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as info:
        torch.compile(scaled, backend=backend)(torch.randn(4, 8))
    assert isinstance(info.value.inner_exception, FullCompilationError)
    with pytest.raises(TypeError, match="no_such_option"):
        byoc_torch.dynamo_backend(no_such_option=1)


def test_torch_compile_options_dict_reaches_the_backend(monkeypatch):
    """PyTorch's documented way to pass backend options, torch.compile(..., options={...}),
    works with the backend "byoc_torch": the dict becomes the compile's Options."""
    from byoc_torch import driver

    seen, made = [], []
    real = driver.compile_with_options

    def spy(model, inputs, opts, **kwargs):
        seen.append(opts)
        made.append(real(model, inputs, opts, **kwargs))
        return made[-1]

    monkeypatch.setattr(driver, "compile_with_options", spy)
    options = {"placement": "tvm", "torch_executed_ops": ["aten.tanh"], "verify": False}
    x = torch.randn(4, 8)
    got = torch.compile(scaled, backend="byoc_torch", options=options)(x)
    torch.testing.assert_close(got, scaled(x))
    # num_threads: the process's own, which the backend leaves as it is
    assert seen == [byoc_torch.Options(**options, num_threads=torch.get_num_threads())]
    assert "aten.tanh.default" in made[0].torch_ops  # forced to LibTorch by the option
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as info:
        torch.compile(scaled, backend="byoc_torch", options={"require_full_compilation": True})(x)
    assert isinstance(info.value.inner_exception, FullCompilationError)


def test_torch_compile_bad_options_are_option_errors():
    x = torch.randn(4, 8)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as info:
        torch.compile(scaled, backend="byoc_torch", options={"no_such_option": 1})(x)
    assert isinstance(info.value.inner_exception, byoc_torch.errors.OptionTypeError)
    assert "unknown byoc_torch option(s) ['no_such_option']" in str(info.value.inner_exception)
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed) as info:
        torch.compile(scaled, backend="byoc_torch", mode="max-autotune")(x)
    assert isinstance(info.value.inner_exception, byoc_torch.OptionError)
    assert "mode='max-autotune' has no byoc_torch meaning" in str(info.value.inner_exception)


def test_compiled_model_inside_torch_compile_is_one_op_in_the_graph():
    compiled = byoc_torch.compile(nn.Tanh(), (torch.randn(4, 8),), placement="tvm")

    def f(x):
        return compiled(x * 2) + 1

    explanation = torch._dynamo.explain(f)(torch.randn(4, 8))
    assert explanation.graph_break_count == 0
    (graph,) = explanation.graphs
    assert any(n.target is torch.ops.byoc_torch.execute.default for n in graph.graph.nodes)
    x = torch.randn(4, 8)
    torch.testing.assert_close(torch.compile(f, backend="eager")(x), torch.tanh(x * 2) + 1)


def test_entry_point_works_without_importing_byoc_torch(tmp_path):
    """pyproject.toml's torch_dynamo_backends entry point, as an installed distribution
    declares it: the subprocess never imports byoc_torch itself."""
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    dist = tmp_path / "byoc_torch_entry-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: byoc_torch_entry\nVersion: 0.0\n")
    lines = [f"{name} = {target}" for name, target in entry_points["torch_dynamo_backends"].items()]
    (dist / "entry_points.txt").write_text("[torch_dynamo_backends]\n" + "\n".join(lines) + "\n")
    script = textwrap.dedent(
        """
        import sys
        import torch

        def f(x):
            return torch.special.erfinv(torch.tanh(x)) + 1

        assert "byoc_torch" not in sys.modules
        x = torch.randn(4, 8)
        torch.testing.assert_close(torch.compile(f, backend="byoc_torch")(x), f(x))
        assert "byoc_torch" in sys.modules
        print("ok")
        """
    )
    # the distribution is found where an installed one would be: on the path
    proc = fresh_python("-c", script, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
