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


# --- more shapes: diamonds, tuple results, Relax-op offload, min_block_size -------------------

ADD = "def forward(self, a0: Tensor, a1: Tensor) -> Tensor:\n    return torch.add(a0, a1)\n"
T2 = relax.TensorType([2], "float32")
SPLIT = (
    "def forward(self, a0: Tensor) -> Tuple[Tensor, Tensor]:\n"
    "    r = torch.split(a0, 2)\n    return (r[0], r[1], )\n"
)


def _add(bb: relax.BlockBuilder, x: relax.Expr, y: relax.Expr, node: str) -> relax.Var:
    call = relay_ext.torchop(
        [x, y], script=ADD, in_types=[T, T], out_type=T, op_name="aten.add", nodes=[node]
    )
    return bb.emit(call)


def _split(bb: relax.BlockBuilder, x: relax.Expr) -> relax.Var:
    out = relax.TupleType([T2, T2])
    call = relay_ext.torchop(
        [x], script=SPLIT, in_types=[T], out_type=out, op_name="aten.split", nodes=["s"]
    )
    return bb.emit(call)


def _lifted(name, param_types, ops, script, body) -> relax.Function:
    """A lifted function as the pass writes it, built by hand."""
    params = [relax.Var(f"p{k}", t) for k, t in enumerate(param_types)]
    bb = relax.BlockBuilder()
    with bb.function(name, params, private=True):
        bb.emit_func_output(body(bb, *params))
    attrs = {
        "Codegen": "torch",
        "global_symbol": name,
        "torch_script": relay_ext.script_lines(script),
        "torch_ops": ops,
        "torch_modules": {},
    }
    return bb.get()[name].with_attrs(attrs)


def _main(bb, param_types, body, dataflow=True):
    params = [relax.Var(f"x{k}", t) for k, t in enumerate(param_types)]
    with bb.function("main", params):
        if dataflow:
            with bb.dataflow():
                out = bb.emit_output(body(bb, *params))
        else:
            out = body(bb, *params)
        bb.emit_func_output(out)
    return bb.get()


def test_diamond_keeps_the_two_sides_in_separate_functions():
    def before(bb, x):
        a = _sin(bb, x, "n0")
        b = bb.emit(relax.op.cos(a))
        c = _sin(bb, a, "n2")
        return _add(bb, b, c, "n3")

    sin_script = "def op{k}(self, a0: Tensor) -> Tensor:\n    return torch.sin(a0)\n\n"
    first_script = (
        sin_script.format(k=0)
        + sin_script.format(k=1)
        + "def forward(self, a0: Tensor) -> Tuple[Tensor, Tensor]:\n"
        "    v0 = self.op0(a0)\n    v1 = self.op1(v0)\n    return (v0, v1)\n"
    )
    second_script = (
        ADD.replace("def forward", "def op0")
        + "\ndef forward(self, a0: Tensor, a1: Tensor) -> Tensor:\n"
        "    v0 = self.op0(a0, a1)\n    return v0\n"
    )

    def first(bb, p):
        a = _sin(bb, p, "n0")
        return relax.Tuple([a, _sin(bb, a, "n2")])

    bb = relax.BlockBuilder()
    g0 = bb.add_func(
        _lifted("torch_main_0", [T], ["aten.sin"] * 2, first_script, first), "torch_main_0"
    )
    g1 = bb.add_func(
        _lifted(
            "torch_main_1",
            [T, T],
            ["aten.add"],
            second_script,
            lambda bb, p, q: _add(bb, p, q, "n3"),
        ),
        "torch_main_1",
    )

    def expected(bb, x):
        pair = bb.emit(relax.Call(g0, [x]))
        a = bb.emit(relax.TupleGetItem(pair, 0))
        c = bb.emit(relax.TupleGetItem(pair, 1))
        b = bb.emit(relax.op.cos(a))
        return bb.emit(relax.Call(g1, [b, c]))

    got = byoc_torch.partition_for_torch(_main(relax.BlockBuilder(), [T], before))
    tvm.ir.assert_structural_equal(got, _main(bb, [T], expected))


def test_tuple_valued_torchop_used_outside_returns_its_fields():
    script = (
        SPLIT.replace("def forward", "def op0")
        + "\ndef forward(self, a0: Tensor) -> Tuple[Tensor, Tensor]:\n"
        "    v0 = self.op0(a0)\n    return (v0[0], v0[1])\n"
    )

    def body(bb, p):
        s = _split(bb, p)
        return relax.Tuple([bb.emit(relax.TupleGetItem(s, 0)), bb.emit(relax.TupleGetItem(s, 1))])

    bb = relax.BlockBuilder()
    g0 = bb.add_func(_lifted("torch_main_0", [T], ["aten.split"], script, body), "torch_main_0")

    def expected(bb, x):
        out = bb.emit(relax.Call(g0, [x]))
        first = bb.emit(relax.TupleGetItem(out, 0))
        second = bb.emit(relax.TupleGetItem(out, 1))
        return bb.emit(relax.Tuple([first, second]))

    got = byoc_torch.partition_for_torch(
        _main(relax.BlockBuilder(), [T], lambda bb, x: _split(bb, x))
    )
    tvm.ir.assert_structural_equal(got, _main(bb, [T], expected))


MATMUL = (
    "def forward(self, a0: Tensor, a1: Tensor) -> Tensor:\n"
    "    v0 = torch.matmul(a0, a1)\n    return v0\n"
)
A, B, C = (relax.TensorType(s, "float32") for s in ([2, 4], [4, 3], [2, 3]))


def test_relax_op_offload_of_a_module_without_dataflow_blocks():
    def before(bb, x, w):
        return bb.emit(relax.op.nn.relu(bb.emit(relax.op.matmul(x, w))))

    script = (
        MATMUL.replace("def forward", "def op0")
        + "\ndef forward(self, a0: Tensor, a1: Tensor) -> Tensor:\n"
        "    v0 = self.op0(a0, a1)\n    return v0\n"
    )

    def lifted_body(bb, p, q):
        call = relay_ext.torchop(
            [p, q], script=MATMUL, in_types=[A, B], out_type=C, op_name="relax.matmul"
        )
        return bb.emit(call)

    bb = relax.BlockBuilder()
    g0 = bb.add_func(
        _lifted("torch_main_0", [A, B], ["relax.matmul"], script, lifted_body), "torch_main_0"
    )

    x, w = relax.Var("x", A), relax.Var("w", B)
    with bb.function("main", [x, w]):
        # ConvertToDataflow (FuseOpsByPattern matches in dataflow blocks) made the block one.
        with bb.dataflow():
            y = bb.emit(relax.Call(g0, [x, w]))
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)

    mod = _main(relax.BlockBuilder(), [A, B], before, dataflow=False)
    got = byoc_torch.partition_for_torch(mod, torch_executed_ops=["relax.matmul"])
    tvm.ir.assert_structural_equal(got, bb.get())
    # Without the option the module is unchanged.
    tvm.ir.assert_structural_equal(byoc_torch.partition_for_torch(mod), mod)


EXP = "def forward(self, a0: Tensor) -> Tensor:\n    v0 = torch.exp(a0)\n    return v0\n"


def _sandwich(bb, x, middle):
    return _sin(bb, bb.emit(middle(_sin(bb, x, "n0"))), "n2")


def test_min_block_size_absorbs_a_small_relax_block_between_torchops():
    before = _main(relax.BlockBuilder(), [T], lambda bb, x: _sandwich(bb, x, relax.op.exp))
    sin_op = "def op{k}(self, a0: Tensor) -> Tensor:\n    return torch.sin(a0)\n\n"
    script = (
        sin_op.format(k=0)
        + EXP.replace("def forward", "def op1")
        + "\n"
        + sin_op.format(k=2)
        + "def forward(self, a0: Tensor) -> Tensor:\n"
        "    v0 = self.op0(a0)\n    v1 = self.op1(v0)\n    v2 = self.op2(v1)\n    return v2\n"
    )

    def body(bb, p):
        a = _sin(bb, p, "n0")
        e = relay_ext.torchop([a], script=EXP, in_types=[T], out_type=T, op_name="relax.exp")
        return _sin(bb, bb.emit(e), "n2")

    bb = relax.BlockBuilder()
    ops = ["aten.sin", "relax.exp", "aten.sin"]
    g0 = bb.add_func(_lifted("torch_main_0", [T], ops, script, body), "torch_main_0")
    expected = _main(bb, [T], lambda bb, x: bb.emit(relax.Call(g0, [x])))
    got = byoc_torch.partition_for_torch(before, min_block_size=2)
    tvm.ir.assert_structural_equal(got, expected)
    # min_block_size=1 (the default) keeps the alternating chain: two functions.
    assert len(byoc_torch.torch_functions(byoc_torch.partition_for_torch(before))) == 2


def test_min_block_size_leaves_blocks_with_an_op_that_has_no_torchscript():
    before = _main(
        relax.BlockBuilder(), [T], lambda bb, x: _sandwich(bb, x, lambda a: relax.op.cumsum(a))
    )
    got = byoc_torch.partition_for_torch(before, min_block_size=5)
    assert len(byoc_torch.torch_functions(got)) == 2
    tvm.ir.assert_structural_equal(got, byoc_torch.partition_for_torch(before))
