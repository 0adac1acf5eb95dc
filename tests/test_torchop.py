"""The torchop operator and its type relation (relay_ext)."""

from __future__ import annotations

import pytest
import tvm
import tvm_ffi
from tvm import relax, tirx

import relay_ext
from relay_ext import TorchOpTypeError

SCRIPT = "def forward(self) -> Tensor:\n    return torch.zeros([1])\n"


def f32(*shape):
    return relax.TensorType(list(shape), "float32")


def infer(args_types, in_types, out_type, name="aten.test"):
    """Type of a torchop call over fresh vars of ``args_types``, as a BlockBuilder infers it."""
    params = [relax.Var(f"x{i}", t) for i, t in enumerate(args_types)]
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        y = bb.emit(
            relay_ext.torchop(
                params, script=SCRIPT, in_types=in_types, out_type=out_type, op_name=name
            )
        )
        bb.emit_func_output(y)
    return bb.get()["main"].ret_ty, params


def test_zero_inputs():
    ty, _ = infer([], [], f32(2, 3))
    assert tvm_ffi.structural_equal(ty, f32(2, 3))


def test_one_input_static():
    ty, _ = infer([f32(4, 5)], [f32(4, 5)], relax.TensorType([5, 4], "int64"))
    assert tvm_ffi.structural_equal(ty, relax.TensorType([5, 4], "int64"))


def test_many_inputs_with_symbols():
    n, m = tirx.Var("n", "int64"), tirx.Var("m", "int64")
    s0, s1 = tirx.Var("s0", "int64"), tirx.Var("s1", "int64")
    ty, _ = infer(
        [f32(n, 3), f32(n, m), relax.TensorType([m], "int32")],
        [f32(s0, 3), f32(s0, s1), relax.TensorType([s1], "int32")],
        f32(s0 * 2, s1 + 1),
    )
    assert ty.ndim == 2
    dims = list(ty.shape.values)
    analyzer = tvm.sym.Analyzer()
    assert analyzer.can_prove_equal(dims[0], n * 2)
    assert analyzer.can_prove_equal(dims[1], m + 1)


def test_tuple_output():
    s0 = tirx.Var("s0", "int64")
    n = tirx.Var("batch", "int64")
    out = relax.TupleType([f32(s0), relax.TensorType([s0], "int64")])
    ty, _ = infer([f32(n, 7)], [f32(s0, 7)], out)
    assert isinstance(ty, relax.TupleType) and len(ty.fields) == 2
    assert str(ty.fields[1].dtype) == "int64"
    assert tvm.sym.Analyzer().can_prove_equal(ty.fields[0].shape.values[0], n)


def test_static_input_into_symbolic_signature():
    s0 = tirx.Var("s0", "int64")
    ty, _ = infer([f32(6)], [f32(s0)], f32(s0, s0))
    assert [int(d) for d in ty.shape.values] == [6, 6]


def test_data_dependent_output_dim_keeps_rank_only():
    s0, u0 = tirx.Var("s0", "int64"), tirx.Var("u0", "int64")
    ty, _ = infer([f32(8)], [f32(s0)], relax.TensorType([u0, 1], "int64"))
    assert ty.shape is None and ty.ndim == 2 and str(ty.dtype) == "int64"


def test_unknown_input_shape_gives_unknown_output_shape():
    s0 = tirx.Var("s0", "int64")
    ty, _ = infer([relax.TensorType(dtype="float32", ndim=1)], [f32(s0)], f32(s0))
    assert ty.shape is None and ty.ndim == 1


def test_type_relation_does_not_run_the_script():
    # The script would fail if executed; inference must not care.
    params = [relax.Var("x", f32(2))]
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        y = bb.emit(
            relay_ext.torchop(
                params,
                script="this is not TorchScript",
                in_types=[f32(2)],
                out_type=f32(2),
                op_name="aten.bogus",
            )
        )
        bb.emit_func_output(y)
    assert tvm_ffi.structural_equal(bb.get()["main"].ret_ty, f32(2))


@pytest.mark.parametrize(
    "args, in_types, message",
    [
        ([f32(2)], [f32(2), f32(2)], r"torchop 'aten.test': expects 2 input tensor\(s\), got 1"),
        ([relax.TensorType([2], "int32")], [f32(2)], r"input 0 has dtype int32, expected float32"),
        ([f32(2, 2)], [f32(2)], r"input 0 has rank 2, expected 1"),
        ([f32(3)], [f32(2)], r"input 0 dim 0 is 3, expected 2"),
    ],
)
def test_rejections_name_op_and_mismatch(args, in_types, message):
    with pytest.raises(TorchOpTypeError, match=message):
        infer(args, in_types, f32(2))


def test_rejects_inconsistent_symbol():
    s0 = tirx.Var("s0", "int64")
    with pytest.raises(
        TorchOpTypeError, match=r"input 1 dim 0 is 4, but the signature needs it equal"
    ):
        infer([f32(3), f32(4)], [f32(s0), f32(s0)], f32(s0))


def test_rejects_non_tensor_argument():
    with pytest.raises(TorchOpTypeError, match=r"input 0 has type .*expected a tensor"):
        infer([relax.ShapeType(ndim=1)], [f32(2)], f32(2))


def test_bad_declared_output_is_rejected_at_construction():
    with pytest.raises(TorchOpTypeError, match="output type must be a tensor"):
        relay_ext.torchop([], script=SCRIPT, in_types=[], out_type=relax.ShapeType(ndim=1))


def test_unpartitioned_torchop_gives_clear_build_error():
    x = relax.Var("x", f32(2))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        y = bb.emit(relay_ext.torchop([x], script=SCRIPT, in_types=[f32(2)], out_type=f32(2)))
        bb.emit_func_output(y)
    with pytest.raises(ValueError, match=r"reached legalization.*partition_for_torch"):
        relax.build(bb.get(), target="llvm")


def test_is_torchop():
    x = relax.Var("x", f32(2))
    call = relay_ext.torchop([x], script=SCRIPT, in_types=[f32(2)], out_type=f32(2))
    assert relay_ext.is_torchop(call)
    assert not relay_ext.is_torchop(relax.op.add(x, x))


def test_affine_pattern_binds_its_symbol():
    n, t = tirx.Var("n", "int64"), tirx.Var("t", "int64")
    s0 = tirx.Var("s0", "int64")
    # x: (n,) defines n; y: (2n, 4) against the pattern (2*s0, 4) binds s0 = n.
    ty, _ = infer([f32(n), f32(n * 2, 4)], [f32(t), f32(s0 * 2, 4)], f32(s0 * 2, 4))
    assert ty.shape is not None
    assert tvm.sym.Analyzer().can_prove_equal(ty.shape.values[0], n * 2)


def test_affine_pattern_with_static_dim():
    s0 = tirx.Var("s0", "int64")
    ty, _ = infer([f32(7)], [f32(s0 + 3)], f32(s0))
    assert [int(d) for d in ty.shape.values] == [4]


def test_type_error_keeps_its_exact_type_through_a_cpp_pass():
    # Normalize (C++) runs the Python type relation; the error crosses the FFI twice.
    x = relax.Var("x", f32(3))
    call = relay_ext.torchop([x], script=SCRIPT, in_types=[f32(2)], out_type=f32(2))
    mod = tvm.IRModule({"main": relax.Function([x], call, f32(2))})
    with pytest.raises(TorchOpTypeError, match=r"input 0 dim 0 is 3, expected 2") as info:
        relax.transform.Normalize()(mod)
    assert type(info.value) is TorchOpTypeError


def test_script_is_stored_as_lines_and_read_back_whole():
    source = "def forward(self) -> Tensor:\n    return torch.zeros([1])\n"
    call = relay_ext.torchop([], script=source, in_types=[], out_type=f32(1))
    assert list(call.attrs["script"]) == source.split("\n")
    assert relay_ext.script_text(call.attrs["script"]) == source
