"""TVMScript: modules with torchops and Codegen="torch" functions print and parse back.

The declared types of a torchop use symbolic variables local to the call (bound by its type
relation), which are free in the function; structural equality maps them (map_free_vars)."""

from __future__ import annotations

import re

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


def test_a_python_function_prints_as_its_torchscript_source_and_an_edit_takes_effect():
    def soft(a: torch.Tensor, k: float) -> torch.Tensor:
        return torch.tanh(a / k) * k

    x = relax.Var("x", relax.TensorType([4], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(call_torch(soft, x, 2.0)))
    mod = bb.get()
    text = mod.script()
    # The function is code in the torchop's script, not an archive: TorchScript's own rendering
    # of it, as a method the script's forward calls.
    call = mod["main"].body.blocks[0].bindings[0].value
    assert dict(call.attrs["modules"]) == {}
    script = "\n".join(call.attrs["script"])
    name = re.search(r"return self\.(fn_[0-9a-f]{16})\(a0, 2\.0\)", script).group(1)
    assert f"def {name}(self, a: Tensor," in script
    assert "torch.tanh(torch.div(a, k))" in script
    assert f'"def {name}(self, a: Tensor,"' in text  # printed inline, line by line
    assert len(text) < 2000, len(text)  # a base64 zip of the function is about 3,000 characters
    round_trip(mod)
    edited = tvm.script.from_source(text.replace("torch.tanh(", "torch.sigmoid("))
    part = byoc_torch.partition_for_torch(edited)
    ex = relax.build(byoc_torch.LowerTorchFunctions()(part), target="llvm")
    t = torch.linspace(-3, 3, 4)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(t.numpy())).numpy()
    torch.testing.assert_close(torch.from_numpy(got), torch.sigmoid(t / 2.0) * 2.0)


def test_a_function_that_does_not_compile_on_its_own_travels_as_an_archive():
    @torch.jit.script
    def helper(a: torch.Tensor) -> torch.Tensor:
        return a * 3

    def uses_helper(a: torch.Tensor) -> torch.Tensor:
        return helper(a) + 1  # its TorchScript code calls __torch__.helper

    x = relax.Var("x", relax.TensorType([4], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(call_torch(uses_helper, x)))
    mod = bb.get()
    call = mod["main"].body.blocks[0].bindings[0].value
    ((name, payload),) = call.attrs["modules"].items()
    assert payload.startswith("UEsDB")  # base64 of torch.jit.save's zip archive
    assert f"return self.{name}.forward(a0)" in "\n".join(call.attrs["script"])
    round_trip(mod)
    part = byoc_torch.partition_for_torch(mod)
    ex = relax.build(byoc_torch.LowerTorchFunctions()(part), target="llvm")
    t = torch.linspace(-1, 1, 4)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(t.numpy())).numpy()
    torch.testing.assert_close(torch.from_numpy(got), t * 3 + 1)


def test_two_calls_of_one_function_in_a_group_define_its_method_once():
    def twice(a: torch.Tensor) -> torch.Tensor:
        return a * 2

    x = relax.Var("x", relax.TensorType([4], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        a = bb.emit(call_torch(twice, x))
        bb.emit_func_output(bb.emit(call_torch(twice, a)))
    part = byoc_torch.partition_for_torch(bb.get())
    (func,) = byoc_torch.torch_functions(part).values()
    script = "\n".join(func.attrs["torch_script"])
    assert len(re.findall(r"^def fn_[0-9a-f]{16}\(self", script, re.MULTILINE)) == 1
    ex = relax.build(byoc_torch.LowerTorchFunctions()(part), target="llvm")
    t = torch.linspace(-1, 1, 4)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(t.numpy())).numpy()
    torch.testing.assert_close(torch.from_numpy(got), t * 4)
