"""Relax-op offload: calls of named Relax operators run in LibTorch, in any Relax module.

Each offloaded module is built and run, and compared with TVM's own legalized build of the same
module (as TVM's BYOC codegen tests compare with the reference build)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax, tirx
from tvm.relax.backend.pattern_registry import get_patterns_with_prefix

import byoc_torch
from byoc_torch import FallbackError, FullCompilationError, OptionError


def f32(*shape):
    return relax.TensorType(list(shape), "float32")


def module(types, body, dataflow=True):
    params = [relax.Var(f"x{k}", t) for k, t in enumerate(types)]
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        if dataflow:
            with bb.dataflow():
                out = bb.emit_output(body(bb, *params))
        else:
            out = body(bb, *params)
        bb.emit_func_output(out)
    return bb.get()


def run(mod, inputs):
    ex = relax.build(mod, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(x) for x in inputs]).numpy()


def offloaded_ops(mod):
    return sorted(
        str(o) for f in byoc_torch.torch_functions(mod).values() for o in f.attrs["torch_ops"]
    )


def check_against_tvm(mod, ops, expect_ops=None, rtol=1e-4, atol=1e-4):
    """Offload ``ops``; the result must match TVM's build of the unpartitioned module."""
    rng = np.random.default_rng(0)
    inputs = [
        rng.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32")
        for p in mod["main"].params
    ]
    part = byoc_torch.partition_for_torch(mod, torch_executed_ops=ops)
    assert offloaded_ops(part) == sorted(expect_ops or ops)
    got = run(byoc_torch.LowerTorchFunctions()(part), inputs)
    np.testing.assert_allclose(got, run(mod, inputs), rtol=rtol, atol=atol)


CONV_CASES = [
    # (dims, data shape, weight shape, attrs)
    (1, (2, 4, 9), (6, 4, 3), {"strides": 2, "padding": 1}),
    (1, (2, 4, 9), (6, 2, 3), {"padding": (0, 2), "dilation": 2, "groups": 2}),
    (2, (2, 3, 8, 8), (4, 3, 3, 3), {"strides": (2, 1), "padding": (1, 0, 2, 1)}),
    (2, (1, 4, 7, 7), (4, 1, 3, 3), {"padding": 1, "dilation": (2, 1), "groups": 4}),
    (
        2,
        (2, 8, 8, 3),
        (3, 3, 3, 5),
        {"padding": 1, "data_layout": "NHWC", "kernel_layout": "HWIO"},
    ),
    (
        2,
        (2, 8, 8, 3),
        (5, 3, 3, 3),
        {"padding": (0, 1, 1, 0), "data_layout": "NHWC", "kernel_layout": "OHWI"},
    ),
    (3, (1, 2, 5, 6, 6), (4, 2, 3, 3, 3), {"strides": (1, 2, 2), "padding": (1, 1, 0, 0, 1, 1)}),
]


@pytest.mark.parametrize("dims, data, weight, attrs", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_matches_tvm(dims, data, weight, attrs, bias):
    conv = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}[dims]
    types = [f32(*data), f32(*weight)]
    out_layout = attrs.get("out_layout", attrs.get("data_layout", "NCHW"[: 2 + dims]))
    channels = weight[attrs.get("kernel_layout", "OI").index("O")] if dims == 2 else weight[0]
    bias_shape = [1] * (dims + 2)
    bias_shape[out_layout.index("C") if dims == 2 else 1] = channels
    if bias:
        types.append(f32(*bias_shape))

    def body(bb, x, w, *b):
        y = bb.emit(conv(x, w, **attrs))
        return bb.emit(relax.op.add(y, b[0])) if b else y

    check_against_tvm(module(types, body), [f"relax.nn.conv{dims}d"])


def test_conv_with_a_packed_layout_is_refused_clearly():
    mod = module(
        [f32(1, 1, 6, 6, 4), f32(2, 1, 3, 3, 4)],
        lambda bb, x, w: bb.emit(
            relax.op.nn.conv2d(x, w, data_layout="NCHW4c", kernel_layout="OIHW4i")
        ),
    )
    with pytest.raises(FallbackError, match=r"relax.nn.conv2d: data_layout='NCHW4c' is not"):
        byoc_torch.partition_for_torch(mod, torch_executed_ops=["relax.nn.conv2d"])


def test_matmul_and_linear_match_tvm():
    def body(bb, x, w, b, y):
        lin = bb.emit(
            relax.op.add(bb.emit(relax.op.matmul(x, bb.emit(relax.op.permute_dims(w)))), b)
        )
        return bb.emit(relax.op.matmul(lin, y))  # batched matmul with broadcasting

    mod = module([f32(2, 3, 8), f32(5, 8), f32(5), f32(5, 4)], body)
    check_against_tvm(mod, ["relax.matmul"], ["relax.matmul", "relax.matmul"])
    part = byoc_torch.partition_for_torch(mod, torch_executed_ops=["relax.matmul"])
    (f,) = byoc_torch.torch_functions(part).values()
    assert "torch.linear(" in "\n".join(f.attrs["torch_script"])  # the idiom stays whole


@pytest.mark.parametrize(
    "op, fn, shapes",
    [
        ("relax.nn.softmax", lambda x: relax.op.nn.softmax(x, axis=1), [(3, 5, 2)]),
        ("relax.nn.log_softmax", lambda x: relax.op.nn.log_softmax(x, axis=-1), [(3, 5)]),
        (
            "relax.nn.layer_norm",
            lambda x, g, b: relax.op.nn.layer_norm(x, g, b, axes=[-2, -1], epsilon=1e-3),
            [(2, 3, 4), (3, 4), (3, 4)],
        ),
        (
            "relax.nn.group_norm",
            lambda x, g, b: relax.op.nn.group_norm(x, g, b, 2, 1, [2, 3], epsilon=1e-4),
            [(2, 4, 3, 3), (4,), (4,)],
        ),
        ("relax.add", lambda x, y: relax.op.add(x, y), [(2, 3), (3,)]),
        ("relax.multiply", lambda x, y: relax.op.multiply(x, y), [(2, 3), (2, 1)]),
        ("relax.divide", lambda x, y: relax.op.divide(x, y), [(2, 3), (2, 3)]),
        ("relax.maximum", lambda x, y: relax.op.maximum(x, y), [(2, 3), (2, 3)]),
        ("relax.tanh", lambda x: relax.op.tanh(x), [(2, 3)]),
        ("relax.nn.gelu", lambda x: relax.op.nn.gelu(x), [(2, 3)]),
        ("relax.nn.silu", lambda x: relax.op.nn.silu(x), [(2, 3)]),
        ("relax.sigmoid", lambda x: relax.op.sigmoid(x), [(2, 3)]),
    ],
)
def test_op_matches_tvm(op, fn, shapes):
    mod = module([f32(*s) for s in shapes], lambda bb, *xs: bb.emit(fn(*xs)))
    check_against_tvm(mod, [op])


@pytest.mark.parametrize("center, scale", [(False, True), (True, False), (False, False)])
def test_layer_norm_honours_center_and_scale(center, scale):
    # Compared with eager PyTorch: TVM 0.27's legalization adds beta and gamma regardless.
    mod = module(
        [f32(2, 3, 4), f32(4), f32(4)],
        lambda bb, x, g, b: bb.emit(
            relax.op.nn.layer_norm(x, g, b, axes=[-1], center=center, scale=scale)
        ),
    )
    part = byoc_torch.partition_for_torch(mod, torch_executed_ops=["relax.nn.layer_norm"])
    x, g, b = torch.randn(2, 3, 4), torch.randn(4), torch.randn(4)
    got = run(byoc_torch.LowerTorchFunctions()(part), [x.numpy(), g.numpy(), b.numpy()])
    want = torch.layer_norm(x, [4], g if scale else None, b if center else None)
    torch.testing.assert_close(torch.from_numpy(got), want)


def test_layer_norm_over_leading_axes_is_refused():
    mod = module(
        [f32(2, 3, 4), f32(2, 3), f32(2, 3)],
        lambda bb, x, g, b: bb.emit(relax.op.nn.layer_norm(x, g, b, axes=[0, 1])),
    )
    with pytest.raises(FallbackError, match=r"relax.nn.layer_norm: axes \[0, 1\].*trailing"):
        byoc_torch.partition_for_torch(mod, torch_executed_ops=["relax.nn.layer_norm"])


def test_module_without_dataflow_blocks_and_symbolic_batch():
    n = tirx.Var("n", "int64")

    def body(bb, x, w):
        return bb.emit(relax.op.nn.relu(bb.emit(relax.op.matmul(x, w))))

    mod = module([f32(n, 8), f32(8, 3)], body, dataflow=False)
    part = byoc_torch.partition_for_torch(mod, torch_executed_ops=["relax.matmul"])
    assert offloaded_ops(part) == ["relax.matmul"]
    ex = relax.build(byoc_torch.LowerTorchFunctions()(part), target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    for rows in (1, 5):
        x, w = torch.randn(rows, 8), torch.randn(8, 3)
        got = vm["main"](tvm.runtime.tensor(x.numpy()), tvm.runtime.tensor(w.numpy())).numpy()
        torch.testing.assert_close(torch.from_numpy(got), torch.relu(x @ w))


def test_patterns_are_in_tvms_pattern_registry():
    names = {p.name for p in get_patterns_with_prefix("torch")}
    assert {
        "torch.matmul",
        "torch.linear_bias",
        "torch.nn.conv2d_bias",
        "torch.nn.softmax",
    } <= names


@pytest.mark.parametrize("name", ["relax.nn.conv4d", "aten.not_an_op", "mylib.nothing", "relax"])
def test_op_name_that_matches_nothing_lists_what_is_valid(name):
    with pytest.raises(OptionError, match=r"match no operator.*'relax.matmul'.*'relax.nn.conv2d'"):
        byoc_torch.partition_for_torch(tvm.IRModule(), torch_executed_ops=[name])


@pytest.mark.parametrize("option", [{"verify": False}, {"placement": "tvm"}, {"num_threads": 1}])
def test_options_the_pass_cannot_honour_are_refused(option):
    with pytest.raises(OptionError, match=r"PartitionForTorch cannot honour.*torch_executed_ops"):
        byoc_torch.PartitionForTorch(**option)


def test_errors_keep_their_type_through_the_pass_infrastructure():
    mod = module(
        [f32(2, 3, 4), f32(2, 3), f32(2, 3)],
        lambda bb, x, g, b: bb.emit(relax.op.nn.layer_norm(x, g, b, axes=[0, 1])),
    )
    seq = tvm.transform.Sequential(
        [byoc_torch.PartitionForTorch(torch_executed_ops=["relax.nn.layer_norm"])]
    )
    with pytest.raises(FallbackError, match=r"relax\.nn\.layer_norm: axes") as info:
        seq(mod)
    assert type(info.value) is FallbackError
    ok = module([f32(2, 3), f32(3, 4)], lambda bb, x, w: bb.emit(relax.op.matmul(x, w)))
    strict = tvm.transform.Sequential(
        [
            byoc_torch.PartitionForTorch(
                torch_executed_ops=["relax.matmul"], require_full_compilation=True
            )
        ]
    )
    with pytest.raises(FullCompilationError, match=r"1 op\(s\) would run in LibTorch") as info:
        strict(ok)
    assert type(info.value) is FullCompilationError


def test_module_from_relax_frontend_nn_matches_tvm():
    from tvm.relax.frontend import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            self.fc = nn.Linear(8, 4)
            self.conv = nn.Conv2D(3, 2, 3, padding=1)

        def forward(self, x, img):
            return nn.op.softmax(self.fc(x), axis=-1), self.conv(img)

    spec = {
        "forward": {
            "x": nn.spec.Tensor((2, 8), "float32"),
            "img": nn.spec.Tensor((1, 3, 5, 5), "float32"),
        }
    }
    mod, _ = Net().export_tvm(spec)
    ops = ["relax.matmul", "relax.nn.conv2d", "relax.nn.softmax"]
    part = byoc_torch.partition_for_torch(mod, torch_executed_ops=ops)
    assert offloaded_ops(part) == sorted(ops)
    rng = np.random.default_rng(1)
    inputs = [
        tvm.runtime.tensor(
            rng.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32")
        )
        for p in mod["forward"].params
    ]

    def outputs(m):
        vm = relax.VirtualMachine(relax.build(m, target="llvm"), tvm.cpu())
        return [o.numpy() for o in vm["forward"](*inputs)]

    for got, want in zip(
        outputs(byoc_torch.LowerTorchFunctions()(part)), outputs(mod), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_an_aten_name_on_a_relax_module_must_name_its_torchops_or_their_relax_ops():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(bb.emit(relax.op.tanh(x)))
        bb.emit_func_output(y)
    hand_built = bb.get()
    # aten.tanh is what TVM's importer makes relax.tanh of: it moves the module's tanh
    tvm.ir.assert_structural_equal(
        byoc_torch.partition_for_torch(hand_built, torch_executed_ops=["aten.tanh"]),
        byoc_torch.partition_for_torch(hand_built, torch_executed_ops=["relax.tanh"]),
    )
    with pytest.raises(OptionError, match=r"\['aten.sigmoid'\] match no torchop of this module"):
        byoc_torch.partition_for_torch(hand_built, torch_executed_ops=["aten.sigmoid"])

    class Model(torch.nn.Module):
        def forward(self, t):
            return torch.tanh(t) + 1

    ep = torch.export.export(Model(), (torch.randn(4, 8),))
    imported = byoc_torch.from_exported_program(ep, torch_executed_ops=["aten.tanh"])
    out = byoc_torch.partition_for_torch(imported, torch_executed_ops=["aten.tanh"])
    assert list(byoc_torch.torch_functions(out)) == ["torch_main_0"]
