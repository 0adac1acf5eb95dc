"""byoc_torch.call_torch: PyTorch functions and custom ops inside hand-built Relax modules.

Types are checked structurally (symbolic dims stay symbolic), numerics against eager PyTorch,
and the artifact of a hand-built module is loaded in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import tvm
from tvm import relax, tirx

import byoc_torch
from byoc_torch import TorchOpTypeError, UnregisteredOpError, call_torch
from byoc_torch.testing.custom_ops import scale_shift  # registers byoc_torch_testing::*

N = tirx.Var("n", "int64")


def f32(*shape):
    return relax.TensorType(list(shape), "float32")


def build_main(params, body):
    """``main(params)`` whose bindings ``body(bb, *params)`` emits; returns the module."""
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        out = body(bb, *params)
        bb.emit_func_output(out)
    return bb.get()


def run(mod, *inputs: torch.Tensor, **partition):
    part = byoc_torch.partition_for_torch(mod, **partition)
    ex = relax.build(byoc_torch.LowerTorchFunctions()(part), target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x.numpy()) for x in inputs])
    if isinstance(out, tvm.runtime.Tensor):
        return torch.from_numpy(out.numpy())
    return [torch.from_numpy(o.numpy()) for o in out]


def test_symbolic_dim_stays_symbolic_through_a_custom_op_and_aten():
    x = relax.Var("x", f32(N, 4))
    w = relax.Var("w", f32(4, 5))

    def body(bb, x, w):
        a = bb.emit(call_torch(torch.ops.byoc_torch_testing.scale_shift, x, 2.0, 1.0))
        return bb.emit(call_torch(torch.ops.aten.mm, a, w))

    mod = build_main([x, w], body)
    tvm.ir.assert_structural_equal(mod["main"].ret_ty, f32(N, 5))
    call = mod["main"].body.blocks[0].bindings[1].value
    s = call.attrs["in_types"][0].shape.values[0]
    assert isinstance(s, tirx.Var) and s.name == "n" and not s.same_as(N)  # call-local symbol
    tvm.ir.assert_structural_equal(call.attrs["out_type"], f32(s, 5))


def test_compound_dims_and_symbolic_arithmetic():
    x = relax.Var("x", f32(N, 3))
    y = relax.Var("y", f32(N * 2, 3))

    mod = build_main([x, y], lambda bb, x, y: bb.emit(call_torch(torch.ops.aten.cat, [x, y])))
    (rows, _) = mod["main"].ret_ty.shape.values
    assert tvm.sym.Analyzer().can_prove_equal(rows, N * 3)
    got = run(mod, torch.ones(2, 3), torch.zeros(4, 3))
    torch.testing.assert_close(got, torch.cat([torch.ones(2, 3), torch.zeros(4, 3)]))

    def cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b]).reshape(-1)

    mod = build_main([x, y], lambda bb, x, y: bb.emit(call_torch(cat, x, y)))
    (dim,) = mod["main"].ret_ty.shape.values
    assert tvm.sym.Analyzer().can_prove_equal(dim, N * 9)


def test_tuple_result_and_keyword_constants():
    x = relax.Var("x", f32(N, 6))
    mod = build_main([x], lambda bb, x: bb.emit(call_torch(torch.ops.aten.split, x, 2, dim=1)))
    tvm.ir.assert_structural_equal(
        mod["main"].ret_ty, relax.TupleType([f32(N, 2), f32(N, 2), f32(N, 2)])
    )
    got = run(mod, torch.arange(12.0).reshape(2, 6))
    for g, want in zip(got, torch.arange(12.0).reshape(2, 6).split(2, dim=1), strict=True):
        torch.testing.assert_close(g, want)


def test_scripted_function_and_module_and_python_function_match_eager():
    @torch.jit.script
    def gelu_scale(a: torch.Tensor, k: float) -> torch.Tensor:
        return torch.nn.functional.gelu(a) * k

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, a: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.lin(a))

    def both(a: torch.Tensor, b: torch.Tensor):
        return torch.sin(a) + b, torch.cos(a)

    block = torch.jit.script(Block().eval())
    x = relax.Var("x", f32(N, 4))

    def body(bb, x):
        a = bb.emit(call_torch(gelu_scale, x, 3.0))
        b = bb.emit(call_torch(block, a))
        c = bb.emit(call_torch(both, a, b))
        return c

    mod = build_main([x], body)
    xt = torch.randn(5, 4)
    a = torch.nn.functional.gelu(xt) * 3.0
    with torch.no_grad():
        b = block(a)
    got = run(mod, xt)
    torch.testing.assert_close(got[0], torch.sin(a) + b)
    torch.testing.assert_close(got[1], torch.cos(a))


def test_fake_kernels_never_run_the_real_op():
    calls = []

    @torch.library.custom_op("byoc_torch_testing::counted", mutates_args=())
    def counted(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x.clone()

    @counted.register_fake
    def _(x):
        return torch.empty_like(x)

    x = relax.Var("x", f32(N, 2))
    build_main([x], lambda bb, x: bb.emit(call_torch(torch.ops.byoc_torch_testing.counted, x)))
    assert calls == []


def test_untypable_function_asks_for_out_type_and_out_type_works():
    x = relax.Var("x", f32(N, 4))

    def first_rows(a: torch.Tensor) -> torch.Tensor:
        return a[: int(a.sum().item() > 0) + 1]

    with pytest.raises(TorchOpTypeError, match=r"call_torch\(first_rows\).*out_type="):
        build_main([x], lambda bb, x: bb.emit(call_torch(first_rows, x)))

    m = tirx.Var("m", "int64")
    mod = build_main(
        [x],
        lambda bb, x: bb.emit(
            call_torch(first_rows, x, out_type=relax.TensorType([m, 4], "float32"))
        ),
    )
    # m is bound by no input: the result keeps rank and dtype, its shape is unknown.
    assert mod["main"].ret_ty.ndim == 2 and mod["main"].ret_ty.shape is None


def test_size_specialized_result_is_refused():
    x = relax.Var("x", f32(N, 4))
    with pytest.raises(TorchOpTypeError, match="holds only for particular sizes"):
        build_main([x], lambda bb, x: bb.emit(call_torch(torch.ops.aten.split, x, 3)))


def test_non_tensor_relax_argument_is_a_type_error():
    s = relax.Var("s", relax.ShapeType(ndim=2))
    with pytest.raises(TorchOpTypeError, match=r"call_torch\(aten.sin\): tensor input 0"):
        call_torch(torch.ops.aten.sin, s)


def test_unregistered_op_in_a_script_is_a_typed_error_naming_it():
    from byoc_torch.runtime import SubgraphSpec, make_runtime_module

    script = "def forward(self, a0: Tensor) -> Tensor:\n    return torch.ops.nolib.nothing(a0)\n"
    with pytest.raises(UnregisteredOpError, match=r"torch\.ops\.nolib\.nothing \(nolib::nothing\)"):
        make_runtime_module([SubgraphSpec("f", script, 1)])


FRESH = textwrap.dedent(
    """
    import sys, numpy as np, torch, tvm
    import byoc_torch
    if sys.argv[2] == "register":
        import byoc_torch.testing.custom_ops  # the user's op library
    try:
        ex = tvm.runtime.load_module(sys.argv[1])
    except byoc_torch.UnregisteredOpError as err:
        print("UnregisteredOpError:", err)
        sys.exit(3)
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    x = torch.linspace(-1, 1, 24).reshape(2, 3, 4)
    w = torch.linspace(0, 1, 36).reshape(3, 3, 2, 2)
    out = vm["main"](tvm.runtime.tensor(x.numpy()), tvm.runtime.tensor(w.numpy()))
    np.save(sys.argv[3], out.numpy())
    """
)


def hand_built_module() -> tvm.IRModule:
    """conv2d and matmul (Relax ops) around a custom op and an ATen function (call_torch)."""
    x = relax.Var("x", f32(N, 3, 4))
    w = relax.Var("w", f32(3, 3, 2, 2))

    def body(bb, x, w):
        with bb.dataflow():
            a = bb.emit(call_torch(torch.ops.byoc_torch_testing.scale_shift, x, 0.5, 0.25))
            img = bb.emit(relax.op.reshape(a, [1, 3, N, 4]))  # n rows become the height
            c = bb.emit(relax.op.nn.conv2d(img, w, padding=[1, 1, 1, 1]))
            flat = bb.emit(relax.op.reshape(c, [3, (N + 1) * 5]))
            g = bb.emit(call_torch(torch.ops.aten.erfinv, bb.emit(relax.op.tanh(flat))))
            m = bb.emit(relax.op.matmul(g, relax.op.permute_dims(g)))
            out = bb.emit_output(m)
        return out

    return build_main([x, w], body)


def eager(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    a = x * 0.5 + 0.25
    c = torch.conv2d(a.reshape(1, 3, x.shape[0], 4), w, padding=1)
    g = torch.special.erfinv(torch.tanh(c.reshape(3, -1)))
    return g @ g.T


def test_hand_built_module_round_trips_builds_exports_and_loads_in_a_fresh_process(tmp_path):
    mod = hand_built_module()
    part = byoc_torch.partition_for_torch(
        mod, torch_executed_ops=["relax.nn.conv2d", "relax.matmul"]
    )
    ops = sorted(
        str(o) for f in byoc_torch.torch_functions(part).values() for o in f.attrs["torch_ops"]
    )
    assert ops == [
        "aten.erfinv",
        "byoc_torch_testing.scale_shift",
        "relax.matmul",
        "relax.nn.conv2d",
    ]
    for m in (mod, part):
        tvm.ir.assert_structural_equal(tvm.script.from_source(m.script()), m, map_free_vars=True)
    ex = relax.build(byoc_torch.LowerTorchFunctions()(part), target="llvm")
    path = tmp_path / "hand_built.so"
    ex.export_library(str(path))

    x, w = torch.randn(2, 3, 4), torch.randn(3, 3, 2, 2)  # compile-side check, different input
    vm = relax.VirtualMachine(ex, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x.numpy()), tvm.runtime.tensor(w.numpy())).numpy()
    torch.testing.assert_close(torch.from_numpy(got), eager(x, w), rtol=1e-4, atol=1e-4)

    out = tmp_path / "out.npy"
    cmd = [sys.executable, "-c", FRESH, str(path), "register", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    x2 = torch.linspace(-1, 1, 24).reshape(2, 3, 4)
    w2 = torch.linspace(0, 1, 36).reshape(3, 3, 2, 2)
    torch.testing.assert_close(torch.from_numpy(np.load(out)), eager(x2, w2), rtol=1e-4, atol=1e-4)

    # Without the op library, loading names the missing op.
    cmd = [sys.executable, "-c", FRESH, str(path), "skip", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert "torch.ops.byoc_torch_testing.scale_shift" in proc.stdout


def test_custom_op_is_the_registered_one():
    torch.testing.assert_close(scale_shift(torch.ones(2), 2.0, 1.0), torch.full((2,), 3.0))


def test_tvms_stock_run_codegen_path_skips_the_shape_parameter():
    # (n + 1) * 5 uses n only inside a compound dim: the lifted function defines n with a
    # shape parameter, which RunCodegen passes along and the runtime skips.
    part = byoc_torch.partition_for_torch(
        hand_built_module(), torch_executed_ops=["relax.nn.conv2d", "relax.matmul"]
    )
    shaped = [
        f
        for f in byoc_torch.torch_functions(part).values()
        if any(isinstance(p.ty, relax.ShapeType) for p in f.params)
    ]
    assert shaped
    ex = relax.build(relax.transform.RunCodegen()(part), target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x, w = torch.randn(3, 3, 4), torch.randn(3, 3, 2, 2)
    got = vm["main"](tvm.runtime.tensor(x.numpy()), tvm.runtime.tensor(w.numpy())).numpy()
    torch.testing.assert_close(torch.from_numpy(got), eager(x, w), rtol=1e-4, atol=1e-4)
