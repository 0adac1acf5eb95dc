"""Steering options: forced ops, min_block_size, require_full_compilation, validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import byoc_torch
from byoc_torch.errors import FullCompilationError, OptionError, OptionTypeError
from byoc_torch.testing import compile_and_check


class Sandwich(nn.Module):
    """erfinv (LibTorch) -> one TVM op -> lgamma (LibTorch)."""

    def forward(self, x):
        a = torch.special.erfinv(x)
        return torch.lgamma(a * 2.0)


def test_min_block_size_absorbs_small_native_block():
    x = torch.rand(4, 5) * 0.9
    compiled = compile_and_check(Sandwich(), (x,), min_block_size=3)
    assert compiled.num_torch_subgraphs() == 1
    absorbed = [r for r in compiled.fallbacks if r.reason == "absorbed by min_block_size"]
    assert [r.op for r in absorbed] == ["aten.mul.Tensor"]


def test_min_block_size_one_disables_absorption():
    x = torch.rand(4, 5) * 0.9
    compiled = compile_and_check(Sandwich(), (x,))  # default: 1
    assert compiled.num_torch_subgraphs() == 2
    assert all(r.reason != "absorbed by min_block_size" for r in compiled.fallbacks)


def test_min_block_size_leaves_large_blocks_native():
    class M(nn.Module):
        def forward(self, x):
            a = torch.special.erfinv(x)
            b = torch.relu(torch.tanh(a * 2.0) + 1.0)  # 4 TVM ops
            return torch.lgamma(b)

    compiled = compile_and_check(M(), (torch.rand(3, 3) * 0.9,), min_block_size=4)
    assert compiled.num_torch_subgraphs() == 2
    compiled = compile_and_check(M(), (torch.rand(3, 3) * 0.9,), min_block_size=5)
    assert compiled.num_torch_subgraphs() == 1


def test_min_block_size_ignores_blocks_not_between_torch_ops():
    class M(nn.Module):
        def forward(self, x):
            return torch.special.erfinv(torch.tanh(x)) * 2.0  # TVM, torch, TVM

    compiled = compile_and_check(M(), (torch.randn(6),), min_block_size=10)
    assert [r.op for r in compiled.fallbacks] == ["aten.erfinv.default"]


def test_require_full_compilation_lists_every_fallback():
    class M(nn.Module):
        def forward(self, x):
            y = x.index_put((torch.tensor([0]),), torch.tensor(1.0))
            return torch.special.erfinv(torch.tanh(y)) + torch.lgamma(x.abs() + 1)

    with pytest.raises(FullCompilationError) as info:
        byoc_torch.compile(M(), (torch.randn(2, 3),), require_full_compilation=True)
    msg = str(info.value)
    assert "3 op(s) would run in LibTorch" in msg
    assert "aten.erfinv.default): unsupported by TVM's importer" in msg
    assert "aten.lgamma.default): unsupported by TVM's importer" in msg
    assert "TVM's converter raised: ValueError: IndexPut requires" in msg


def test_require_full_compilation_passes_for_supported_model():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    compile_and_check(model, (torch.randn(2, 3),), require_full_compilation=True)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"min_block_size": 0}, ValueError, "min_block_size must be >= 1"),
        ({"min_block_size": "3"}, TypeError, "min_block_size must be an int"),
        ({"torch_executed_ops": [3.5]}, ValueError, "cannot interpret a float as an operator"),
        ({"torch_executed_modules": [3]}, TypeError, "neither a module type"),
    ],
)
def test_bad_option_values(kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        byoc_torch.Options(**kwargs)
    assert isinstance(info.value, byoc_torch.OptionError)  # and the builtin the test names


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"target": "nonsense"}, OptionError, r"target 'nonsense' is not a TVM target"),
        ({"target": {"kind": "llvm", "bogus": 1}}, OptionError, "Unknown config option 'bogus'"),
        ({"target": 3}, OptionTypeError, "target must be a TVM target string, dict"),
        ({"placement": "fast"}, OptionError, r"placement must be one of \['measured', 'tvm'\]"),
        ({"tune_trials": -1}, OptionError, "tune_trials must be >= 0"),
        ({"num_threads": 0}, OptionError, "num_threads must be >= 1"),
        ({"num_threads": 1.5}, OptionTypeError, "num_threads must be a positive int"),
    ],
)
def test_bad_option_values_are_option_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        byoc_torch.Options(**kwargs)


def test_unknown_options_are_option_type_errors():
    with pytest.raises(OptionTypeError, match=r"unknown byoc_torch option\(s\) \['bogus'\]"):
        byoc_torch.Options.from_kwargs({"bogus": 1})
    with pytest.raises(OptionTypeError, match="must be a dict of option names, got list"):
        byoc_torch.Options.from_kwargs([("placement", "tvm")])


def test_target_is_an_option_with_its_default_in_defaults():
    from byoc_torch import _defaults

    assert byoc_torch.Options().target == _defaults.TARGET
    opts = byoc_torch.Options(target={"kind": "llvm"})
    assert str(opts.tvm_target().kind.name) == "llvm"
    wanted = byoc_torch.Options(target={"kind": "llvm"}, placement="tvm")
    assert opts.replace(placement="tvm") == wanted


def test_target_by_position_and_by_keyword_compile_the_same():
    model = Sandwich()
    x = torch.rand(4, 5) * 0.9
    y = torch.rand(4, 5) * 0.9  # not the example input
    by_position = byoc_torch.compile(model, (x,), {"kind": "llvm"}, placement="tvm")
    by_keyword = byoc_torch.compile(model, (x,), target={"kind": "llvm"}, placement="tvm")
    as_option = byoc_torch.compile(model, (x,), **{"target": "llvm", "placement": "tvm"})
    for compiled in (by_position, by_keyword, as_option):
        torch.testing.assert_close(compiled(y), model(y))
        assert compiled.torch_ops == by_position.torch_ops
    with pytest.raises(OptionError, match="is not a TVM target"):
        byoc_torch.compile(model, (x,), target="nonsense")


def test_options_dataclass_documents_defaults():
    opts = byoc_torch.Options()
    assert opts.min_block_size == 1
    assert opts.torch_executed_ops == () and opts.torch_executed_modules == ()
    assert opts.require_full_compilation is False


def test_partition_enforces_require_full_compilation():
    ep = torch.export.export(Sandwich(), (torch.rand(2, 2),))
    mod = byoc_torch.from_exported_program(ep)
    with pytest.raises(FullCompilationError, match=r"erfinv \(aten\.erfinv\.default\)"):
        byoc_torch.partition_for_torch(mod, require_full_compilation=True)


def test_keep_params_as_input_imports_them_as_inputs_and_compiles():
    import byoc_torch

    class Lin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(8, 4)

        def forward(self, x):
            return torch.special.erfinv(torch.tanh(self.lin(x)))

    model, x = Lin().eval(), torch.randn(3, 8)
    mod = byoc_torch.from_exported_program(
        torch.export.export(model, (x,)), keep_params_as_input=True
    )
    assert [p.name for p in mod["main"].params] == ["x", "p_lin_weight", "p_lin_bias"]
    compiled = byoc_torch.compile(model, (x,), keep_params_as_input=True, placement="tvm")
    other = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(other), model(other))
