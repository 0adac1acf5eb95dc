"""TVM users' artifacts and errors (issue 22 item 5): export_executable, Relax ops given as
tvm.ir.Op or ATen names, build errors that name the missing step, require_full_compilation
naming the Relax variable."""

from __future__ import annotations

import re

import pytest
import torch
import tvm
from tvm import relax, tirx

import byoc_torch
from byoc_torch import artifact_file, call_torch
from byoc_torch.testing.processes import fresh_python

N = tirx.Var("n", "int64")


def hand_built() -> tvm.IRModule:
    """main(x: (n, 4), w: (4, 4)) = erfinv(tanh(x) @ w) (erfinv through call_torch)."""
    x = relax.Var("x", relax.TensorType([N, 4], "float32"))
    w = relax.Var("w", relax.TensorType([4, 4], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, w]):
        a = bb.emit(relax.op.tanh(x))
        m = bb.emit(relax.op.matmul(a, w))
        out = bb.emit(call_torch(torch.ops.aten.special_erfinv, m))
        bb.emit_func_output(out)
    return bb.get()


def expected(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.special.erfinv(torch.tanh(x) @ w)


LOAD = """
import sys, torch, byoc_torch
from byoc_torch import artifact_file
loaded = byoc_torch.load(sys.argv[1])
g = torch.Generator().manual_seed(3)
x, w = torch.randn(5, 4, generator=g), 0.3 * torch.randn(4, 4, generator=g)  # n = 5, not 3
torch.testing.assert_close(loaded(x, w), torch.special.erfinv(torch.tanh(x) @ w))
print(loaded.signature.inputs[0].name, loaded.signature.inputs[0].shape)
print(type(artifact_file.load_file(sys.argv[1])).__name__)
"""


def test_export_executable_makes_a_hand_built_module_loadable(tmp_path):
    part = byoc_torch.partition_for_torch(hand_built())
    ex = relax.build(byoc_torch.LowerTorchFunctions()(part), target="llvm")
    path = byoc_torch.export_executable(ex, tmp_path / "hand.so", part)
    assert path == tmp_path / "hand.so" and path.is_file()
    script = tmp_path / "load.py"
    script.write_text(LOAD)
    proc = fresh_python(str(script), str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["x ('n', 4)", "Module"]
    assert proc.stderr == ""
    loaded = byoc_torch.load(path)  # and here: inputs checked by name
    with pytest.raises(byoc_torch.InputError, match=r"input 1 \('w'\) has shape \(4, 5\)"):
        loaded(torch.randn(2, 4), torch.randn(4, 5))


def test_export_executable_refuses_what_it_cannot_describe(tmp_path):
    x = relax.Var("x", relax.TensorType([2, 4], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(relax.op.tanh(x)))
    plain = bb.get()
    ex = relax.build(plain, target="llvm")
    with pytest.raises(byoc_torch.OptionError, match=r"no LibTorch runtime module.*LowerTorch"):
        byoc_torch.export_executable(ex, tmp_path / "plain.so", plain)
    with pytest.raises(byoc_torch.OptionError, match=r"the module has no function 'forward'"):
        byoc_torch.export_executable(ex, tmp_path / "plain.so", plain, function="forward")
    with pytest.raises(byoc_torch.OptionError, match=r"^num_threads must be >= 1, got 0$"):
        byoc_torch.export_executable(ex, tmp_path / "plain.so", plain, num_threads=0)
    with pytest.raises(byoc_torch.OptionTypeError, match=r"num_threads must be a positive int"):
        byoc_torch.export_executable(ex, tmp_path / "plain.so", plain, num_threads="2")
    assert not (tmp_path / "plain.so").exists()


def test_load_names_export_executable_for_a_sealed_file_without_signature(tmp_path):
    x = relax.Var("x", relax.TensorType([2, 4], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(call_torch(torch.ops.aten.special_erfinv, x)))
    part = byoc_torch.partition_for_torch(bb.get())
    ex = relax.build(byoc_torch.LowerTorchFunctions()(part), target="llvm")
    path = tmp_path / "sealed.so"
    artifact_file.export_file(ex, path)  # sealed, no signature
    with pytest.raises(
        byoc_torch.ArtifactError,
        match=rf"{re.escape(str(path))} carries no byoc_torch signature.*export_executable",
    ):
        byoc_torch.load(path)


def test_relax_op_objects_act_like_their_names():
    mod = hand_built()
    by_object = byoc_torch.partition_for_torch(
        mod, torch_executed_ops=[tvm.ir.Op.get("relax.matmul")]
    )
    by_name = byoc_torch.partition_for_torch(mod, torch_executed_ops=["relax.matmul"])
    tvm.ir.assert_structural_equal(by_object, by_name, map_free_vars=True)
    assert "relax.matmul" in byoc_torch.report(by_object).to_text()
    with pytest.raises(ValueError, match=r"cannot interpret a dict as an operator"):
        byoc_torch.partition_for_torch(mod, torch_executed_ops=[{}])


def test_aten_names_act_on_the_relax_ops_the_importer_makes_of_them():
    mod = hand_built()
    tvm.ir.assert_structural_equal(
        byoc_torch.partition_for_torch(mod, torch_executed_ops=["aten.tanh.default"]),
        byoc_torch.partition_for_torch(mod, torch_executed_ops=["relax.tanh"]),
        map_free_vars=True,
    )
    tvm.ir.assert_structural_equal(
        byoc_torch.partition_for_torch(mod, torch_executed_ops=["aten.mm"]),
        byoc_torch.partition_for_torch(mod, torch_executed_ops=["relax.matmul"]),
        map_free_vars=True,
    )
    with pytest.raises(byoc_torch.OptionError, match=r"\['aten\.sin'\] match no torchop"):
        byoc_torch.partition_for_torch(mod, torch_executed_ops=["aten.sin"])  # not in mod


def test_building_a_partitioned_but_unlowered_module_names_lower_torch_functions():
    part = byoc_torch.partition_for_torch(hand_built())
    with pytest.raises(ValueError, match=r"partitioned .* but not lowered: run "
                       r"byoc_torch\.LowerTorchFunctions\(\)"):  # fmt: skip
        relax.build(part, target="llvm")
    with pytest.raises(ValueError, match=r"Run byoc_torch\.partition_for_torch .* then "
                       r"byoc_torch\.LowerTorchFunctions\(\)"):  # fmt: skip
        relax.build(hand_built(), target="llvm")


def test_require_full_compilation_names_the_relax_variable():
    mod = hand_built()
    var = mod["main"].body.blocks[0].bindings[2].var.name
    with pytest.raises(byoc_torch.FullCompilationError) as info:
        byoc_torch.partition_for_torch(mod, require_full_compilation=True)
    assert f"main/{var} (aten.special_erfinv)" in str(info.value)
    assert "?" not in str(info.value)
