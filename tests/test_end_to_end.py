"""Models through byoc_torch.compile, checked against eager PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

import byoc_torch
from byoc_torch.models import EXAMPLES
from byoc_torch.testing import Lambda, compile_and_check

# --- single unsupported ops of several kinds -------------------------------------------------

SINGLE_OPS = {
    "erfinv (unary special)": (
        lambda x: torch.special.erfinv(x),
        lambda: (torch.rand(3, 5) * 1.8 - 0.9,),
    ),
    "lgamma (unary special)": (lambda x: torch.lgamma(x), lambda: (torch.rand(4, 4) * 5 + 0.1,)),
    "logcumsumexp (scan)": (lambda x: torch.logcumsumexp(x, 1), lambda: (torch.randn(3, 6),)),
    "kthvalue (tuple out)": (lambda x: torch.kthvalue(x, 2, 1), lambda: (torch.randn(4, 5),)),
    "searchsorted (int out)": (
        lambda s, x: torch.searchsorted(s, x),
        lambda: (torch.sort(torch.randn(10)).values, torch.randn(7)),
    ),
    "adaptive_max_pool2d (pool)": (
        lambda x: nn.functional.adaptive_max_pool2d(x, 3),
        lambda: (torch.randn(2, 3, 8, 8),),
    ),
    "histc (reduction)": (
        lambda x: torch.histc(x, bins=5, min=-2, max=2),
        lambda: (torch.randn(50),),
    ),
    "polar (binary)": (
        lambda a, b: torch.view_as_real(torch.polar(a, b)),
        lambda: (torch.rand(4) + 0.5, torch.randn(4)),
    ),
    "unfold (shape op)": (lambda x: x.unfold(1, 3, 2), lambda: (torch.randn(2, 9),)),
    "index_put (converter raises)": (
        lambda x: x.index_put((torch.tensor([0]),), torch.tensor(1.0)),
        lambda: (torch.randn(2, 9),),
    ),
    "heaviside (converter raises)": (
        lambda x: torch.heaviside(x, torch.tensor(0.5)),
        lambda: (torch.randn(2, 9),),
    ),
}


@pytest.mark.parametrize("name", sorted(SINGLE_OPS))
def test_single_unsupported_op(name):
    fn, make_inputs = SINGLE_OPS[name]
    compiled = compile_and_check(Lambda(fn), make_inputs())
    assert compiled.fallbacks, "expected at least one op to run in LibTorch"


def test_converter_failure_is_recorded_with_its_message():
    model = Lambda(lambda x: x.index_put((torch.tensor([0]),), torch.tensor(1.0)) * 2)
    compiled = compile_and_check(model, (torch.randn(2, 9),))
    (rec,) = [r for r in compiled.fallbacks if r.op.startswith("aten.index_put")]
    assert rec.reason == "TVM's converter raised"
    assert "IndexPut requires" in rec.detail  # TVM's own message is kept


# --- chains, diamonds, branches --------------------------------------------------------------


def test_chain_mixing_supported_and_unsupported():
    def fn(x):
        a = torch.tanh(x)  # TVM
        b = torch.special.erfinv(a * 0.9)  # torch
        c = b * 2 + 1  # TVM
        d = torch.lgamma(c.abs() + 1)  # torch
        return torch.relu(d)  # TVM

    compiled = compile_and_check(Lambda(fn), (torch.randn(8, 8),))
    assert compiled.num_torch_subgraphs() == 2


def test_diamond():
    def fn(x):
        a = torch.special.erfinv(torch.tanh(x) * 0.9)  # torch
        left = torch.logcumsumexp(a, 1)  # torch
        right = torch.exp(a)  # TVM
        return torch.lgamma((left + right).abs() + 1)  # torch

    compiled = compile_and_check(Lambda(fn), (torch.randn(4, 6),))
    # erfinv+logcumsumexp merge; lgamma sits behind the TVM node on the other side.
    assert compiled.num_torch_subgraphs() == 2


def test_independent_branches_merge_into_one_subgraph():
    def fn(x, y):
        a = torch.special.erfinv(torch.tanh(x) * 0.9)  # branch 1, depth 2
        b = torch.lgamma(torch.sigmoid(torch.exp(y)) + 1)  # branch 2, depth 3
        c = torch.logcumsumexp(y, 0)  # branch 3, depth 1
        return a.sum() + b.sum() + c.sum()

    compiled = compile_and_check(Lambda(fn), (torch.randn(5), torch.randn(5)))
    assert len(compiled.fallbacks) == 3
    assert compiled.num_torch_subgraphs() == 1


def test_multiple_outputs():
    def fn(x):
        values, indices = torch.kthvalue(x, 3, 1)
        return values * 2, indices, torch.special.erfinv(torch.tanh(x))

    compiled = compile_and_check(Lambda(fn), (torch.randn(4, 7),))
    out = compiled(torch.randn(4, 7))
    assert isinstance(out, tuple) and len(out) == 3
    assert out[1].dtype == torch.int64


def test_integer_tensors():
    def fn(a, b):
        return torch.bitwise_xor(a, b), torch.searchsorted(torch.arange(0, 100, 7), a)

    compile_and_check(Lambda(fn), (torch.randint(0, 100, (6,)), torch.randint(0, 100, (6,))))


def test_int32_and_uint8_tensors():
    def fn(a, b):
        return torch.bucketize(a.to(torch.float32), torch.tensor([0.0, 10.0, 50.0])) + a.to(
            torch.int64
        ), b.to(torch.int32) * 2

    compile_and_check(
        Lambda(fn),
        (
            torch.randint(0, 100, (6,), dtype=torch.int32),
            torch.randint(0, 255, (6,), dtype=torch.uint8),
        ),
    )


def test_bool_tensors():
    def fn(x):
        mask = x > 0
        picked = torch.logcumsumexp(x, 0)
        return torch.logical_not(mask), torch.where(mask, picked, x)

    compile_and_check(Lambda(fn), (torch.randn(9),))


def test_fallback_op_uses_parameter():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(6, 6))
            self.register_buffer("boundaries", torch.linspace(-3, 3, 11))

        def forward(self, x):
            h = torch.special.erfinv(torch.tanh(x @ self.weight) * 0.9)
            h = h + torch.lgamma(self.weight.abs() + 1).sum(0)  # fallback on the parameter
            return torch.searchsorted(self.boundaries, h.contiguous())  # fallback on a buffer

    model = M()
    compiled = compile_and_check(model, (torch.randn(3, 6),))
    assert compiled.num_torch_subgraphs() >= 1
    # The buffer crosses into its torch function as an argument (a TVM constant), its values
    # are not baked into the function's TorchScript.
    mod = _partitioned(model, (torch.randn(3, 6),))
    passed = _constants_passed_to_torch(mod)
    assert any(c.shape == (11,) and np.array_equal(c, model.boundaries.numpy()) for c in passed)
    for f in byoc_torch.torch_functions(mod).values():
        assert "tensor(" not in str(f.attrs["torch_script"])


def _constants_passed_to_torch(mod) -> list[np.ndarray]:
    """The constant arguments of every call of a torch function in ``mod``'s main."""
    names = set(byoc_torch.torch_functions(mod))
    found: list[np.ndarray] = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name_hint", None) in names:
            found.extend(a.value.numpy() for a in expr.args if isinstance(a, tvm.ir.Constant))

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return found


def _partitioned(model, inputs):
    ep = torch.export.export(model.eval(), inputs)
    return byoc_torch.partition_for_torch(byoc_torch.from_exported_program(ep))


def test_exported_program_is_accepted():
    model = Lambda(lambda x: torch.lgamma(x.abs() + 1))
    x = torch.randn(4)
    ep = torch.export.export(model, (x,))
    compiled = byoc_torch.compile(ep)
    torch.testing.assert_close(compiled(x), model(x))


def test_forced_op_runs_in_torch():
    model = Lambda(lambda x: torch.tanh(x) + 1)
    for spelling in (
        "aten.tanh",
        "aten.tanh.default",
        torch.ops.aten.tanh,
        torch.ops.aten.tanh.default,
    ):
        compiled = compile_and_check(model, (torch.randn(5),), torch_executed_ops=[spelling])
        assert [(r.op, r.reason) for r in compiled.fallbacks] == [
            ("aten.tanh.default", "forced op (torch_executed_ops)")
        ]


def test_fully_supported_model_has_no_fallback():
    compiled = compile_and_check(
        nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (torch.randn(3, 4),)
    )
    assert compiled.fallbacks == ()
    assert compiled.num_torch_subgraphs() == 0


# --- small models with unsupported ops inside ------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_builtin_models(name):
    model, inputs = EXAMPLES[name]()
    compiled = compile_and_check(model, inputs, rtol=1e-4, atol=1e-4)
    assert compiled.fallbacks


def test_transformer_style_model_runs_unsupported_ops_in_torch():
    model, inputs = EXAMPLES["transformer"]()
    compiled = compile_and_check(model, inputs, rtol=1e-4, atol=1e-4)
    ops = set(compiled.torch_ops)
    assert {"aten.logcumsumexp.default", "aten.lgamma.default"} <= ops


def test_cnn_style_model_runs_unsupported_ops_in_torch():
    model, inputs = EXAMPLES["cnn"]()
    compiled = compile_and_check(model, inputs, rtol=1e-4, atol=1e-4)
    assert "aten.adaptive_max_pool2d.default" in compiled.torch_ops
    assert compiled.num_torch_subgraphs() == 1  # erfinv and the pooling sit on independent branches


# --- call-time errors ------------------------------------------------------------------------


class ErfinvPlus(nn.Module):
    def forward(self, x, y):
        return torch.special.erfinv(x) + y


@pytest.fixture(scope="module")
def erfinv_model():
    return byoc_torch.compile(ErfinvPlus(), (torch.rand(2, 3), torch.rand(2, 3)))


def test_wrong_number_of_inputs(erfinv_model):
    with pytest.raises(TypeError, match=r"takes 2 input\(s\) \(x, y\), got 1"):
        erfinv_model(torch.rand(2, 3))


def test_wrong_shape(erfinv_model):
    with pytest.raises(ValueError, match=r"input 1 \('y'\) has shape \(2, 4\), expected \(2, 3\)"):
        erfinv_model(torch.rand(2, 3), torch.rand(2, 4))


def test_wrong_rank(erfinv_model):
    with pytest.raises(ValueError, match="expected rank 2"):
        erfinv_model(torch.rand(6), torch.rand(2, 3))


def test_wrong_dtype(erfinv_model):
    with pytest.raises(TypeError, match="input 0 \\('x'\\) has dtype float64, expected float32"):
        erfinv_model(torch.rand(2, 3, dtype=torch.float64), torch.rand(2, 3))


def test_not_a_tensor(erfinv_model):
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        erfinv_model([1.0, 2.0], torch.rand(2, 3))


def test_non_contiguous_input_is_handled(erfinv_model):
    x = torch.rand(3, 2).t()
    y = torch.rand(2, 3)
    torch.testing.assert_close(erfinv_model(x, y), torch.special.erfinv(x) + y)


@pytest.mark.parametrize(
    ("executor", "inside"),
    [
        ("torchscript", "'torch_main_0'.*_embedding_bag.*raised inside LibTorch"),
        ("aot_inductor", "'torch_main_0' raised inside its AOTInductor package"),
    ],
)
def test_torch_exception_names_subgraph_and_keeps_working(executor, inside):
    """A LibTorch error inside a subgraph is raised naming the subgraph and what ran it, with
    LibTorch's message and without its C++ backtrace; the model keeps working."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.bag = nn.EmbeddingBag(10, 4, mode="sum")

        def forward(self, ids):
            return self.bag(ids) * 2

    model = M().eval()
    compiled = byoc_torch.compile(
        model, (torch.randint(0, 10, (2, 3)),), placement="tvm", torch_executor=executor
    )
    with pytest.raises(
        RuntimeError,
        match=rf"(?s)byoc_torch subgraph {inside}: .*not in the valid range",
    ) as err:
        compiled(torch.tensor([[1, 2, 30], [0, 1, 2]]))
    assert "Exception raised from" not in str(err.value)
    ok = torch.tensor([[1, 2, 3], [0, 1, 2]])
    torch.testing.assert_close(compiled(ok), model(ok))


def test_unknown_option():
    with pytest.raises(TypeError, match=r"unknown byoc_torch option\(s\) \['bogus'\]"):
        byoc_torch.compile(Lambda(torch.tanh), (torch.rand(2),), bogus=1)


def test_bad_model_type():
    with pytest.raises(TypeError, match=r"expected an nn\.Module or an ExportedProgram"):
        byoc_torch.compile(lambda x: x, (torch.rand(2),))


def test_unaligned_input_view_is_handled(erfinv_model):
    base = torch.rand(7, 3)
    x = base[1:3]  # contiguous, but its data starts 12 bytes into the storage
    y = torch.rand(2, 3)
    torch.testing.assert_close(erfinv_model(x, y), torch.special.erfinv(x) + y)


class DynamicModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        h = self.fc(x)
        a = torch.special.erfinv(torch.tanh(h) * 0.9)
        b = torch.logcumsumexp(h.reshape(-1, 4), 1)
        k = torch.kthvalue(h, 2, 1)[0]
        return a.sum(1) + k, b


def test_symbolic_dims_flow_through_torchops():
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(
        DynamicModel().eval(), (torch.randn(4, 8),), dynamic_shapes={"x": {0: batch}}
    )
    mod = byoc_torch.from_exported_program(ep)
    ret = mod["main"].ret_ty
    # (batch,) and (2*batch, 4): every output keeps its symbolic shape through the torchops.
    assert all(f.shape is not None for f in ret.fields)
    compiled = byoc_torch.compile(ep)
    for n in (1, 3, 17, 64):
        x = torch.randn(n, 8)
        torch.testing.assert_close(compiled(x), ep.module()(x))


def test_data_dependent_size_feeds_tvm_ops():
    """x[x > 0] has a size only known at run time; TVM still compiles the multiply after it."""
    model = Lambda(lambda x: x[x > 0] * 2)
    compiled = byoc_torch.compile(model, (torch.randn(20),))
    for _ in range(3):
        x = torch.randn(20)
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize(
    "fn, make, op",
    [
        (
            lambda a, b: a / b,
            lambda: (torch.randint(1, 9, (5,)), torch.randint(1, 9, (5,))),
            "aten.div.Tensor",
        ),
        (
            lambda t: nn.functional.unfold(t, 2),
            lambda: (torch.randn(1, 2, 5, 6),),
            "aten.index.Tensor",
        ),
    ],
    ids=["int_true_division", "im2col_unfold"],
)
def test_conversion_with_wrong_type_falls_back(fn, make, op):
    compiled = compile_and_check(Lambda(fn), make())
    (rec,) = [r for r in compiled.fallbacks if r.op == op]
    assert rec.reason == "TVM's conversion has the wrong type"
    assert "PyTorch gives" in rec.detail


class Linalg(nn.Module):
    def forward(self, a, b):
        return torch.linalg.inv(a) @ b + torch.linalg.cholesky(a) + torch.linalg.solve(a, b)


def test_linear_algebra_runs_whole_in_torch_with_its_error_checks():
    a, b = torch.eye(4) * 2 + 0.1, torch.randn(4, 4)
    compiled = compile_and_check(Linalg(), (a, b))
    assert "aten.linalg_inv.default" in compiled.torch_ops
    with pytest.raises(RuntimeError, match="singular"):
        compiled(torch.zeros(4, 4), b)


def test_match_cast_between_torch_ops_is_respected():
    """index (LibTorch) -> match_cast (sizes it) -> mul (LibTorch): the match_cast is a node
    between them, so they are two subgraphs, not one that would need its own output."""
    model = Lambda(lambda x: x[x > 0] * 2)
    compiled = compile_and_check(
        model, (torch.randn(20),), torch_executed_ops=["aten.mul", "aten.gt", "aten.index"]
    )
    assert compiled.num_torch_subgraphs() == 2


def test_wrong_tuple_element_type_blames_the_tuple_producer():
    """TVM's max_pool2d(return_indices=True) gives float32 indices: the pooling op itself
    moves to LibTorch (its getitem has no TorchScript of its own)."""
    model = Lambda(lambda t: nn.functional.max_pool2d(t, 2, return_indices=True))
    compiled = compile_and_check(model, (torch.randn(1, 2, 6, 6),))
    (rec,) = compiled.fallbacks
    assert rec.op.startswith("aten.max_pool2d_with_indices")
    assert rec.reason == "TVM's conversion has the wrong type"


def test_complex_value_shared_by_many_consumers_is_recomputed_per_cluster():
    """GPT-like rotary embeddings: one complex tensor used in every layer, with TVM layers in
    between. Each consumer gets its own LibTorch cluster, so no cycle through TVM."""
    from byoc_torch.models import GPTLike

    torch.manual_seed(0)
    model = GPTLike(vocab=50, dim=32, heads=2, layers=2, seq=8).eval()
    compiled = compile_and_check(model, (torch.randint(0, 50, (1, 8)),), rtol=1e-4, atol=1e-4)
    assert "aten.polar.default" in compiled.torch_ops
    assert compiled.num_torch_subgraphs() == 2  # one per layer


class SeqModel(nn.Module):
    """Batch and sequence length both dynamic; LibTorch ops on the sequence axis."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        h = self.proj(x)
        h = torch.logcumsumexp(h, dim=1)  # along the sequence
        return torch.special.erfinv(torch.tanh(h) * 0.9).mean(dim=1)


def test_dynamic_batch_and_sequence_across_export_and_load(tmp_path):
    batch = torch.export.Dim("batch", min=1, max=16)
    seq = torch.export.Dim("seq", min=2, max=64)
    model = SeqModel().eval()
    compiled = byoc_torch.compile(
        model, (torch.randn(2, 5, 8),), dynamic_shapes={"x": {0: batch, 1: seq}}
    )
    loaded = byoc_torch.load(compiled.export(tmp_path / "seq.so"))
    for b, t in [(1, 2), (3, 7), (16, 64), (5, 33)]:
        x = torch.randn(b, t, 8)
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(compiled(x), expected)
        torch.testing.assert_close(loaded(x), expected)


def test_wrong_device_is_rejected(erfinv_model):
    x = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match=r"input 0 \('x'\) is on meta"):
        erfinv_model(x, torch.rand(2, 3))
