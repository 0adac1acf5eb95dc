"""TVMScript: modules with torchops and Codegen="torch" functions print and parse back.

The declared types of a torchop use symbolic variables local to the call (bound by its type
relation), which are free in the function; structural equality maps them (map_free_vars)."""

from __future__ import annotations

import torch
import tvm
from tvm import relax, tirx

import byoc_torch
from byoc_torch import call_torch


def round_trip(mod: tvm.IRModule) -> tvm.IRModule:
    text = mod.script()
    assert "metadata[" not in text  # everything is printed inline: readable, editable
    back = tvm.script.from_source(text)
    tvm.ir.assert_structural_equal(back, mod, map_free_vars=True)
    return back


class Model(torch.nn.Module):
    def forward(self, x):
        return torch.special.erfinv(torch.tanh(x)) * 2 + torch.special.erfinv(x).sum(-1, True)


def test_frontend_module_and_its_partition_round_trip():
    batch = torch.export.Dim("batch")
    ep = torch.export.export(Model(), (torch.rand(3, 4) - 0.5,), dynamic_shapes={"x": {0: batch}})
    mod = byoc_torch.from_exported_program(ep)
    round_trip(mod)
    part = byoc_torch.partition_for_torch(mod)
    assert byoc_torch.torch_functions(part)
    back = round_trip(part)
    # The parsed module builds and runs like the original.
    ex = relax.build(byoc_torch.LowerTorchFunctions()(back), target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = torch.rand(5, 4) - 0.5
    got = vm["main"](tvm.runtime.tensor(x.numpy()))
    got = got[0] if not isinstance(got, tvm.runtime.Tensor) else got
    torch.testing.assert_close(torch.from_numpy(got.numpy()), Model()(x))


def test_call_torch_module_with_a_scripted_submodule_round_trips():
    @torch.jit.script
    def scale(a: torch.Tensor, k: float) -> torch.Tensor:
        return a * k

    n = tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType([n, 3], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        a = bb.emit(call_torch(scale, x, 0.5))
        b = bb.emit(call_torch(torch.ops.aten.split, a, 1, 1))
        bb.emit_func_output(b)
    mod = bb.get()
    round_trip(mod)
    round_trip(byoc_torch.partition_for_torch(mod))


def test_an_edited_script_parses_into_a_torchop():
    x = relax.Var("x", relax.TensorType([4], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(call_torch(torch.ops.aten.sin, x)))
    text = bb.get().script().replace("torch.ops.aten.sin(a0)", "torch.ops.aten.cos(a0)")
    edited = tvm.script.from_source(text)
    part = byoc_torch.partition_for_torch(edited)
    ex = relax.build(byoc_torch.LowerTorchFunctions()(part), target="llvm")
    t = torch.linspace(0, 1, 4)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(t.numpy())).numpy()
    torch.testing.assert_close(torch.from_numpy(got), torch.cos(t))
