"""PartitionForTorch on whole modules, in TVM's Before/Expected style: the partitioned module
must be structurally equal to a hand-built Expected (functions, attributes, scripts, calls)."""

from __future__ import annotations

import tvm
from tvm import relax

import byoc_torch
import relay_ext

T = relax.TensorType([4], "float32")
SIN = "def forward(self, a0: Tensor) -> Tensor:\n    return torch.sin(a0)\n"


def _sin(bb: relax.BlockBuilder, x: relax.Expr, node: str) -> relax.Var:
    call = relay_ext.torchop(
        [x], script=SIN, in_types=[T], out_type=T, op_name="aten.sin", nodes=[node]
    )
    return bb.emit(call)


def _torch_function(name: str, n_out: int, script: str, body) -> relax.Function:
    """A lifted function as the pass should write it: one parameter, ``n_out`` results."""
    p0 = relax.Var("p0", T)
    bb = relax.BlockBuilder()
    with bb.function(name, [p0], private=True):
        outs = body(bb, p0)
        bb.emit_func_output(relax.Tuple(outs) if n_out > 1 else outs[0])
    func = bb.get()[name]
    attrs = {
        "Codegen": "torch",
        "global_symbol": name,
        "torch_script": relay_ext.script_lines(script),
        "torch_ops": ["aten.sin"] * len(body.ops),
        "torch_modules": {},
    }
    return func.with_attrs(attrs)


def _op_script(n_ops: int, forward: str) -> str:
    ops = "".join(
        f"def op{k}(self, a0: Tensor) -> Tensor:\n    return torch.sin(a0)\n\n"
        for k in range(n_ops)
    )
    return ops + forward


def test_alternating_chain_gives_two_functions_around_the_native_op():
    x = relax.Var("x", T)
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            a = _sin(bb, x, "n0")
            b = bb.emit(relax.op.cos(a))
            c = _sin(bb, b, "n2")
            out = bb.emit_output(c)
        bb.emit_func_output(out)
    before = bb.get()

    script = _op_script(
        1, "def forward(self, a0: Tensor) -> Tensor:\n    v0 = self.op0(a0)\n    return v0\n"
    )

    def first(bb, p):
        return [_sin(bb, p, "n0")]

    def second(bb, p):
        return [_sin(bb, p, "n2")]

    first.ops = second.ops = ["n"]
    f0 = _torch_function("torch_main_0", 1, script, first)
    f1 = _torch_function("torch_main_1", 1, script, second)
    bb = relax.BlockBuilder()
    g0 = bb.add_func(f0, "torch_main_0")
    g1 = bb.add_func(f1, "torch_main_1")
    xe = relax.Var("x", T)
    with bb.function("main", [xe]):
        with bb.dataflow():
            a = bb.emit(relax.Call(g0, [xe]))
            b = bb.emit(relax.op.cos(a))
            c = bb.emit(relax.Call(g1, [b]))
            out = bb.emit_output(c)
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(byoc_torch.partition_for_torch(before), bb.get())


def test_independent_torch_ops_merge_into_one_function_with_a_tuple_result():
    x = relax.Var("x", T)
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            a = _sin(bb, x, "n0")
            b = _sin(bb, x, "n1")
            out = bb.emit_output(bb.emit(relax.op.cos(bb.emit(relax.op.add(a, b)))))
        bb.emit_func_output(out)
    before = bb.get()

    script = _op_script(
        2,
        "def forward(self, a0: Tensor) -> Tuple[Tensor, Tensor]:\n"
        "    v0 = self.op0(a0)\n    v1 = self.op1(a0)\n    return (v0, v1)\n",
    )

    def both(bb, p):
        return [_sin(bb, p, "n0"), _sin(bb, p, "n1")]

    both.ops = ["n0", "n1"]
    bb = relax.BlockBuilder()
    g0 = bb.add_func(_torch_function("torch_main_0", 2, script, both), "torch_main_0")
    xe = relax.Var("x", T)
    with bb.function("main", [xe]):
        with bb.dataflow():
            pair = bb.emit(relax.Call(g0, [xe]))
            a = bb.emit(relax.TupleGetItem(pair, 0))
            b = bb.emit(relax.TupleGetItem(pair, 1))
            out = bb.emit_output(bb.emit(relax.op.cos(bb.emit(relax.op.add(a, b)))))
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(byoc_torch.partition_for_torch(before), bb.get())
