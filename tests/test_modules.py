"""torch_executed_modules: whole submodules in LibTorch, including data-dependent control flow."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

import byoc_torch
from byoc_torch.errors import ScriptError


class Loopy(nn.Module):
    """Loops and branches on tensor values: torch.export cannot capture this."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        i = 0
        while bool(y.abs().sum() > 1.0) and i < 10:
            y = (y * 0.5) @ self.w.abs().softmax(0)
            i += 1
        if bool(y.mean() > 0):
            y = y + 1
        else:
            y = y - 1
        return y


class TwoOut(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if bool(x.sum() > 0):
            return x.cumsum(1), x.sign()
        return x.flip(1), x.abs()


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 4)
        self.loop = Loopy()
        self.two = TwoOut()
        self.out = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.loop(torch.tanh(self.inp(x)))
        a, b = self.two(h)
        return self.out(a * b)


def test_export_alone_cannot_capture_the_model():
    with pytest.raises(GuardOnDataDependentSymNode, match="data-dependent"):
        torch.export.export(Model().eval(), (torch.randn(2, 4),))


def inputs_taking_different_paths() -> list[torch.Tensor]:
    return [
        torch.randn(2, 4),
        torch.randn(2, 4) * 50,  # many loop trips
        torch.full((2, 4), 1e-4),  # no loop trip, positive branch
        torch.full((2, 4), -1e-4),  # no loop trip, negative branch
    ]


@pytest.mark.parametrize("spec", [[Loopy, TwoOut], ["loop", "two"]], ids=["by_type", "by_name"])
def test_forced_modules_match_eager_on_every_path(spec):
    model = Model().eval()
    compiled = byoc_torch.compile(
        model, (torch.randn(2, 4),), torch_executed_modules=spec, placement="tvm"
    )
    reasons = {r.op: r.reason for r in compiled.fallbacks}
    assert reasons == {
        "module loop (Loopy)": "forced module (torch_executed_modules)",
        "module two (TwoOut)": "forced module (torch_executed_modules)",
    }
    for x in inputs_taking_different_paths():
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(compiled(x), expected)
    # The two forced modules are adjacent in the graph: one subgraph.
    assert compiled.num_torch_subgraphs() == 1


def test_rest_of_model_is_still_compiled_by_tvm():
    compiled = byoc_torch.compile(
        Model().eval(),
        (torch.randn(2, 4),),
        torch_executed_modules=[Loopy, TwoOut],
        placement="tvm",
    )
    assert len(compiled.fallbacks) == 2  # the linears, tanh and mul stay in TVM


def test_forced_module_survives_export_and_load(tmp_path):
    model = Model().eval()
    compiled = byoc_torch.compile(
        model, (torch.randn(2, 4),), torch_executed_modules=[Loopy, TwoOut]
    )
    loaded = byoc_torch.load(compiled.export(tmp_path / "m.so"))
    for x in inputs_taking_different_paths():
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x))


def test_forced_module_with_dynamic_batch():
    model = Model().eval()
    batch = torch.export.Dim("batch", min=1, max=32)
    compiled = byoc_torch.compile(
        model,
        (torch.randn(2, 4),),
        dynamic_shapes={"x": {0: batch}},
        torch_executed_modules=[Loopy, TwoOut],
    )
    for n in (1, 5, 32):
        x = torch.randn(n, 4)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x))


def test_model_is_restored_after_compile():
    model = Model().eval()
    byoc_torch.compile(model, (torch.randn(2, 4),), torch_executed_modules=["loop", "two"])
    assert isinstance(model.loop, Loopy) and isinstance(model.two, TwoOut)


def test_unknown_module_name():
    with pytest.raises(byoc_torch.OptionError, match=r"no submodule named \['lop'\]"):
        byoc_torch.compile(Model(), (torch.randn(2, 4),), torch_executed_modules=["lop"])


def test_unscriptable_module_is_reported():
    class Unscriptable(nn.Module):
        def forward(self, x):
            return x * len({1: 2}.items().__iter__.__name__)  # not TorchScript

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.u = Unscriptable()

        def forward(self, x):
            return self.u(x) + 1

    with pytest.raises(ScriptError, match=r"'u' \(Unscriptable\) cannot be scripted"):
        byoc_torch.compile(Outer(), (torch.randn(3),), torch_executed_modules=["u"])


def test_exported_program_with_modules_is_rejected():
    ep = torch.export.export(nn.Linear(2, 2), (torch.randn(1, 2),))
    with pytest.raises(ValueError, match=r"needs the nn\.Module"):
        byoc_torch.compile(ep, torch_executed_modules=["x"])
