"""Real workloads: what Dynamo hands the backend (SymInt inputs of any origin, float
attributes passed as tensors, SymInt outputs), Hugging Face ``generate`` through
``torch.compile`` token for token with its recompiles counted, exported-program semantics
(input mutations, SymInt outputs, str inputs) and sparse buffers that must never abort."""

from __future__ import annotations

import copy
import json
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import byoc_torch
from byoc_torch import FallbackError, InputError, ScriptError
from byoc_torch.dynamo import _Graph
from byoc_torch.testing import Lambda
from byoc_torch.testing.modules import Activation
from byoc_torch.testing.processes import fresh_python

ROOT = Path(__file__).resolve().parents[1]


class Recording:
    """A byoc_torch backend that keeps what it returns for every graph Dynamo hands it."""

    def __init__(self, **options) -> None:
        self.backend = byoc_torch.dynamo_backend(placement="tvm", **options)
        self.graphs: list = []

    def __call__(self, gm, example_inputs):
        run = self.backend(gm, example_inputs)
        self.graphs.append(run)
        return run

    def compiled(self) -> list:
        """Every compiled variant; a graph that fell back to eager has none."""
        return [c for g in self.graphs if isinstance(g, _Graph) for c in g.all_compiled]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


# -- what Dynamo hands the backend ----------------------------------------------------------------
def keep_last(x, n: int):
    return torch.special.erfinv(torch.tanh(x[:, -n:])) * 2


def test_symint_input_that_is_no_size_is_a_runtime_value():
    """``n`` is a SymInt no tensor has as a size: it crosses as a runtime value (no recompile
    and no new variant for other values)."""
    backend = Recording()
    compiled = torch.compile(keep_last, backend=backend, dynamic=True)
    x = torch.randn(3, 9)
    for n in (3, 5, 7):
        torch.testing.assert_close(compiled(x, n), keep_last(x, n))
    (graph,) = backend.graphs
    assert len(graph.all_compiled) == 1
    assert counters["stats"]["unique_graphs"] == 1


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.eps = 1e-3  # Dynamo passes float attributes as 0-d tensors read by .item()

    def forward(self, x):
        return torch.special.erfinv(torch.tanh(x)) / (x.abs() + self.eps)


def test_float_attribute_is_specialized_and_checked():
    model = Scaled()
    backend = Recording()
    compiled = torch.compile(model, backend=backend, dynamic=True)
    x = torch.randn(4, 8)
    torch.testing.assert_close(compiled(x), model(x))
    (graph,) = backend.graphs
    assert isinstance(graph, _Graph) and len(graph.all_compiled) == 1
    model.eps = 0.5  # another value: another variant, never a stale answer
    torch.testing.assert_close(compiled(x), model(x))
    assert len(graph.all_compiled) == 2


def returns_size(x):
    return x.cos(), x.shape[0] * 2 + 1


def test_symint_output_comes_back_as_a_python_int():
    backend = Recording()
    compiled = torch.compile(returns_size, backend=backend, dynamic=True)
    for batch in (3, 6):
        y, n = compiled(torch.ones(batch, 4))
        assert type(n) is int and n == batch * 2 + 1
        torch.testing.assert_close(y, torch.ones(batch, 4).cos())
    assert len(backend.compiled()) == 1


def test_graph_it_cannot_take_runs_eagerly_with_one_warning(monkeypatch):
    """A graph the backend cannot compile runs in PyTorch: the program goes on, and one line
    says why (once); with require_full_compilation the error is raised instead."""

    def refuse(*args, **kwargs):
        raise FallbackError("a reason the user can read")

    monkeypatch.setattr("byoc_torch.driver.compile_with_options", refuse)
    backend = Recording()
    compiled = torch.compile(scaled_sum, backend=backend)
    x = torch.randn(4, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.testing.assert_close(compiled(x), scaled_sum(x))
        torch.testing.assert_close(compiled(x * 2), scaled_sum(x * 2))
    mine = [str(w.message) for w in caught if "byoc_torch" in str(w.message)]
    assert mine == [
        "byoc_torch: a graph torch.compile captured runs in PyTorch instead "
        "(FallbackError: a reason the user can read)"
    ]
    assert backend.compiled() == []
    torch._dynamo.reset()
    strict = torch.compile(scaled_sum, backend=Recording(require_full_compilation=True))
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match="a reason the user"):
        strict(x)


def scaled_sum(x):
    return (x * 3).sum(0)


# -- Hugging Face generate through torch.compile --------------------------------------------------
# Recompiles are counted as the graphs Dynamo hands the backend (counters["stats"]
# ["unique_graphs"]), not as counters["frames"]["ok"], which also counts the frames Dynamo
# looks at and skips while a compiled forward runs (Gemma 2: 4 for one generate, with 2 graphs,
# backend="eager" too).
GENERATE_FAMILIES = ["llama", "qwen2", "mistral", "gemma2", "t5", "bart"]
# Families with a sliding-window cache (window 8): both prompts are padded to 6 tokens. The
# cache's slice of its last window - 1 entries makes Dynamo trace again (with backend="eager"
# too) for a prompt of 7 or more (prefill) and for a decode step whose cache holds fewer than
# 6 entries, after one that held 6 or more.
SLIDING_WINDOW = {"mistral", "gemma2"}


def _prompts(family: str) -> list:
    from byoc_torch.testing.hf_models import padded_prompts

    second = (6, 2) if family in SLIDING_WINDOW else (8, 5)
    return [padded_prompts(2, (6, 4), seed=1), padded_prompts(2, second, seed=2)]


def _generate_all(model, prompts) -> list[torch.Tensor]:
    """Greedy generation of each prompt, then sampled generation (top-k 8) of the first, with
    PyTorch's generator seeded before it."""
    out = [
        model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
        for ids, mask in prompts
    ]
    ids, mask = prompts[0]
    torch.manual_seed(7)
    out.append(model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=True, top_k=8))
    return out


def _graphs_with_eager_backend(model, prompts) -> int:
    """The graphs Dynamo makes for the same generates with ``backend="eager"``: what
    transformers' own code makes Dynamo trace, whatever the backend."""
    torch._dynamo.reset()
    counters.clear()
    model = copy.deepcopy(model)
    model.forward = torch.compile(model.forward, backend="eager", dynamic=True)
    _generate_all(model, prompts)
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    counters.clear()
    return graphs


@pytest.mark.parametrize("family", GENERATE_FAMILIES)
def test_generate_through_torch_compile(family):
    """The recipe users write, token for token against eager, over two prompts (left padding;
    two lengths but for sliding-window caches), greedy, then sampled with a seed: one Dynamo
    graph per phase (prefill, decode), none for the new length, and as many as with
    backend="eager"; every graph compiled by byoc_torch (no eager fallback), each in one
    variant -- a sliding-window decode step in two: torch.export, tracing the step where the
    cache's last window - 1 entries are the whole cache, assumes sliding_window == cache
    length + 2 (which Dynamo does not guard), and the next length compiles the general
    variant. The sampled run's fourth step fills the window (6 + 3 cached tokens > 8): the
    cache's code takes another branch, and Dynamo traces a third graph (backend="eager" too)."""
    from byoc_torch.testing.hf_models import hf_generator

    model = hf_generator(family)
    prompts = _prompts(family)
    expected = _generate_all(model, prompts)
    eager_graphs = _graphs_with_eager_backend(model, prompts)
    backend = Recording()
    model.forward = torch.compile(model.forward, backend=backend, dynamic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # an eager fallback warns: fail on it
        got = _generate_all(model, prompts)
    for g, want in zip(got, expected, strict=True):  # sampled: the same draws as eager
        assert torch.equal(g, want)
    # One more for BART and T5 (a cache of one entry is specialized, size 1, and the next decode
    # step traces again) and sliding-window caches (see the docstring); backend="eager" too.
    phases = 2
    graphs = counters["stats"]["unique_graphs"]
    assert phases <= graphs <= phases + 1, dict(counters["stats"])
    assert graphs == eager_graphs == len(backend.graphs)
    assert all(isinstance(g, _Graph) for g in backend.graphs)
    variants = [len(g.all_compiled) for g in backend.graphs]
    if family in SLIDING_WINDOW:  # prefill, decode, decode past the window (see the docstring)
        assert variants == [1, 2, 1], variants
    else:
        assert variants == [1] * len(backend.graphs)


# -- exported programs ----------------------------------------------------------------------------
class Mutates(nn.Module):
    def forward(self, x):
        x.mul_(2)
        return x.cos()


def test_input_mutation_reaches_the_callers_tensor():
    model = Mutates()
    compiled = byoc_torch.compile(model, (torch.randn(5),), placement="tvm")
    x = torch.randn(5)
    before = x.clone()
    out = compiled(x)
    torch.testing.assert_close(x, before * 2)  # as eager and ep.module() do
    torch.testing.assert_close(out, (before * 2).cos())


class CountsCalls(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls.add_(1)
        return x * self.calls


class Stateful(nn.Module):
    """Buffers updated in place: a submodule's counter, and a non-persistent running sum
    updated through a view of it."""

    def __init__(self) -> None:
        super().__init__()
        self.counter = CountsCalls()
        self.register_buffer("total", torch.zeros(3), persistent=False)

    def forward(self, x):
        self.total[:2].add_(x[0, :2])
        return torch.special.erfinv(torch.tanh(self.counter(x))) + self.total.sum()


def test_buffer_mutation_updates_the_models_state(tmp_path):
    """As ``ep.module()`` does: every call updates the buffers (the model's own tensors,
    which the compiled model holds); compiling leaves them alone; an exported artifact holds
    their values of the export and goes on from them after a load in a fresh process."""
    torch.manual_seed(0)
    model = Stateful()
    twin = copy.deepcopy(model)  # run eagerly beside it
    compiled = byoc_torch.compile(model, (torch.randn(2, 3),), placement="tvm")
    assert sorted(compiled.state) == ["counter.calls", "total"]
    assert compiled.state["counter.calls"] is model.counter.calls
    assert model.counter.calls.item() == 0 and not model.total.any()  # compiling ran nothing
    for _ in range(3):
        x = torch.randn(2, 3)
        torch.testing.assert_close(compiled(x), twin(x))
        torch.testing.assert_close(model.counter.calls, twin.counter.calls)
        torch.testing.assert_close(model.total, twin.total)
    assert model.counter.calls.item() == 3
    path = compiled.export(tmp_path / "stateful.so")
    compiled(torch.randn(2, 3))  # after the export: the artifact keeps the export's state
    ys = [torch.linspace(-1, 1, 6).reshape(2, 3), torch.linspace(0.5, -0.5, 6).reshape(2, 3)]
    got = _run_fresh(
        f"""
        import torch, byoc_torch
        model = byoc_torch.load({str(path)!r})
        ys = [torch.linspace(-1, 1, 6).reshape(2, 3), torch.linspace(0.5, -0.5, 6).reshape(2, 3)]
        outs = [model(y).tolist() for y in ys]
        state = {{k: v.tolist() for k, v in model.state.items()}}
        print(json.dumps({{"outs": outs, "state": state}}))
        """
    )
    for y, out in zip(ys, got["outs"], strict=True):
        torch.testing.assert_close(torch.tensor(out), twin(y))
    assert got["state"] == {"counter.calls": 5.0, "total": twin.total.tolist()}


class SizePlusOne(nn.Module):
    def forward(self, x):
        return x.cos(), x.shape[0] + 1


def test_symint_output_of_an_exported_program():
    x = torch.randn(5, 3)
    ep = torch.export.export(
        SizePlusOne(), (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=2)},)
    )
    compiled = byoc_torch.compile(ep, placement="tvm")
    y = torch.randn(9, 3)
    out, n = compiled(y)
    assert type(n) is int and n == 10 == ep.module()(y)[1]
    torch.testing.assert_close(out, y.cos())


class Mode(nn.Module):
    def forward(self, x, mode: str, flag: bool, nothing=None):
        y = x.cos() if mode == "cos" else x.sin()
        return y + 1 if flag else y


def test_str_bool_none_inputs_are_checked_like_scalars():
    x = torch.randn(4)
    compiled = byoc_torch.compile(Mode(), (x, "cos", True, None), placement="tvm")
    y = torch.randn(4)
    torch.testing.assert_close(compiled(y, "cos", True, None), Mode()(y, "cos", True, None))
    with pytest.raises(InputError, match=r"input args\[1\] is 'sin', but the model was compiled"):
        compiled(y, "sin", True, None)
    with pytest.raises(InputError, match=r"args\[2\] is False"):
        compiled(y, "cos", False, None)


class ByEnum(nn.Module):
    def forward(self, x, act: Activation):
        return x.cos() if act is Activation.COS else x.sin()


def test_enum_input_is_checked_at_call_and_after_load(tmp_path):
    """An enum member torch.export specializes is checked like a str: another member (or
    another type) is an InputError naming the input, also after loading in a fresh process."""
    compiled = byoc_torch.compile(ByEnum(), (torch.randn(4), Activation.SIN), placement="tvm")
    y = torch.randn(4)
    torch.testing.assert_close(compiled(y, Activation.SIN), ByEnum()(y, Activation.SIN))
    compiled_with = r"but the model was compiled with args\[1\]=Activation.SIN"
    with pytest.raises(InputError, match=r"input args\[1\] is Activation.COS, " + compiled_with):
        compiled(y, Activation.COS)
    with pytest.raises(InputError, match=r"input args\[1\] is 'sin', " + compiled_with):
        compiled(y, "sin")
    with pytest.raises(ScriptError, match=r"TorchScript cannot take input arg1, an enum member"):
        torch.jit.script(compiled)
    path = compiled.export(tmp_path / "by_enum.so")
    got = _run_fresh(
        f"""
        import torch, byoc_torch
        from byoc_torch.testing.modules import Activation
        model = byoc_torch.load({str(path)!r})
        y = torch.linspace(-2, 2, 4)
        same = torch.equal(model(y, Activation.SIN), y.sin())
        try:
            model(y, Activation.COS)
            error = None
        except byoc_torch.InputError as err:
            error = str(err)
        print(json.dumps({{"same": same, "error": error}}))
        """
    )
    assert got["same"] is True
    assert got["error"].startswith(
        "byoc_torch: input args[1] is Activation.COS, but the model was compiled with "
        "args[1]=Activation.SIN"
    )


def _run_fresh(code: str) -> dict:
    """Run ``code`` in a new Python process (this checkout first on the path); its last line
    of output, read as JSON."""
    proc = fresh_python("-c", "import json\n" + textwrap.dedent(code))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- sparse buffers -------------------------------------------------------------------------------
SPARSE_SCRIPT = textwrap.dedent(
    """
    import torch, byoc_torch

    class CsrBuffer(torch.nn.Module):
        def __init__(self, how):
            super().__init__()
            dense = torch.randn(6, 6)
            dense[dense < 0] = 0
            self.register_buffer("s", dense.to_sparse_csr())
            self.lin = torch.nn.Linear(4, 4)
            self.how = how

        def forward(self, x):
            if self.how == "mm":
                return self.lin(torch.sparse.mm(self.s, x))
            if self.how == "right":
                return x.t() @ self.s
            return x.t() @ self.s.to_dense()

    torch.manual_seed(0)
    x = torch.randn(6, 4, requires_grad=True)
    for how in ("mm", "right"):
        model = CsrBuffer(how)
        with torch.no_grad():
            want = model(x)
            got = byoc_torch.compile(model, (x,), placement="tvm")(x)
            torch.testing.assert_close(got, want)
        dyn = torch.compile(model, backend=byoc_torch.dynamo_backend(placement="tvm"))
        torch.testing.assert_close(dyn(x).detach(), want)
    print("ok")
    """
)


def test_sparse_csr_buffer_never_aborts():
    """In a subprocess: an abort (SIGABRT) would kill the test runner otherwise."""
    proc = fresh_python("-c", SPARSE_SCRIPT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok"


# -- verification is never blinded ---------------------------------------------------------------
def _wrong_elu(monkeypatch) -> None:
    """TVM's selu conversion is wrong (it computes elu); the deny-list that keeps it in
    LibTorch is emptied, so only verification can catch it."""
    monkeypatch.setattr("byoc_torch.frontend.importer.deny_list_match", lambda node: None)


def _records(compiled) -> dict[str, str]:
    return {r.op: str(r.reason) for r in compiled.fallbacks}


def test_wrong_conversion_after_attention_is_caught(monkeypatch):
    """Attention without dropout draws nothing: it is converted and checked like any op, and
    a wrong conversion downstream of it is caught and moved to LibTorch."""
    _wrong_elu(monkeypatch)
    model = Lambda(
        lambda q: nn.functional.selu(nn.functional.scaled_dot_product_attention(q, q, q))
    )
    q = torch.randn(1, 2, 6, 8)
    compiled = byoc_torch.compile(model, (q,), placement="tvm")
    other = torch.randn(1, 2, 6, 8)
    torch.testing.assert_close(compiled(other), model(other))
    records = _records(compiled)
    assert records.get("aten.elu.default") == "TVM result differs from PyTorch", records
    assert "random op: draws from PyTorch's generator" not in records.values()


def test_wrong_conversion_after_a_draw_is_caught(monkeypatch):
    """Values downstream of a random draw are compared on runs seeded alike."""
    _wrong_elu(monkeypatch)
    model = Lambda(lambda x: nn.functional.selu(x + torch.rand_like(x)) * 2)
    compiled = byoc_torch.compile(model, (torch.randn(4, 8),), placement="tvm")
    records = _records(compiled)
    assert records == {
        "aten.rand_like.default": "random op: draws from PyTorch's generator",
        "aten.elu.default": "TVM result differs from PyTorch",
    }
    x = torch.randn(4, 8)
    torch.manual_seed(3)
    want = model(x)
    torch.manual_seed(3)
    torch.testing.assert_close(compiled(x), want)
