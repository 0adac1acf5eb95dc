"""Coverage and correctness classes (issue 11): models torch.export accepts run through
byoc_torch and match eager, or fail with a clear error naming the node -- never silently wrong.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

import byoc_torch
from byoc_torch.bisection import minimal_subset
from byoc_torch.errors import ExportError, FallbackError, InputError
from byoc_torch.frontend.deny_list import check_tvm_version
from byoc_torch.records import FallbackRecord, Reason
from byoc_torch.testing import Lambda, compile_and_check
from byoc_torch.tolerances import reduction_size, reduction_tolerance, tolerance
from byoc_torch.verify import _compare, minimal_blame


# -- complex, None and constant outputs ----------------------------------------------------------
@pytest.mark.parametrize(
    "fn, shape",
    [
        (lambda x: torch.fft.rfft(x), (4, 6)),
        (lambda x: torch.polar(x.abs() + 0.5, x), (4, 6)),
        (lambda x: torch.view_as_complex(x.reshape(4, 3, 2)), (4, 6)),
        (lambda x: torch.linalg.eig(x), (4, 4)),
        (lambda x: torch.fft.ifft(x), (4, 8)),  # a lazily conjugated result
    ],
    ids=["rfft", "polar", "view_as_complex", "linalg_eig", "ifft"],
)
def test_complex_outputs_come_back_complex_as_views(fn, shape):
    x = torch.randn(*shape)
    compiled = compile_and_check(Lambda(fn), (x,))
    outs = compiled(x)
    for out in outs if isinstance(outs, tuple) else (outs,):
        assert out.is_complex()
        assert out._base is not None  # view_as_complex of the real tensor: no copy


def test_none_and_shape_outputs_are_returned():
    x = torch.randn(4, 6)
    compiled = compile_and_check(Lambda(lambda x: (x + 1, None, x.shape[1], 2.5)), (x,))
    assert compiled(x)[1:] == (None, 6, 2.5)
    only_shape = compile_and_check(Lambda(lambda x: torch.broadcast_shapes(x.shape, (1, 6))), (x,))
    assert only_shape(x) == (4, 6)


class Spectrum(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x), None, 3


def test_item_output_is_a_python_number():
    x = torch.randn(4, 6)
    model = Lambda(lambda x: (x * 2, torch.special.erfinv(x.tanh()).sum().item()))
    compiled = compile_and_check(model, (x,), rtol=1e-4, atol=1e-5)  # a float32 sum
    assert isinstance(compiled(x)[1], float)


def test_outputs_and_ranges_survive_export_and_load(tmp_path):
    model = Spectrum()
    x = torch.randn(4, 8)
    shapes = {"x": {0: Dim("b", min=2, max=64)}}
    compiled = byoc_torch.compile(model, (x,), dynamic_shapes=shapes, placement="tvm")
    path = compiled.export(tmp_path / "m.so")
    script = f"""
        import torch, byoc_torch
        m = byoc_torch.load({str(path)!r})
        x = torch.randn(7, 8)
        spec, none, three = m(x)
        torch.testing.assert_close(spec, torch.fft.rfft(x))
        assert none is None and three == 3 and spec.is_complex()
        try:
            m(torch.randn(65, 8))
        except byoc_torch.InputError as err:
            print("refused:", err)
    """
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "outside the range the model was exported for (2..64)" in run.stdout


# -- custom ops and other namespaces -------------------------------------------------------------
CUSTOM_OP = """
import torch

@torch.library.custom_op("byoc_test::scaled_sin", mutates_args=())
def scaled_sin(x: torch.Tensor, k: float) -> torch.Tensor:
    return torch.sin(x) * k

@scaled_sin.register_fake
def _(x, k):
    return torch.empty_like(x)
"""
exec(CUSTOM_OP)


def test_custom_op_runs_in_libtorch_and_the_artifact_names_it(tmp_path):
    model = Lambda(lambda x: torch.ops.byoc_test.scaled_sin(x.exp(), 3.0) + 1)
    compiled = compile_and_check(model, (torch.randn(4, 6),))
    assert compiled.torch_ops == ["byoc_test.scaled_sin.default"]
    assert compiled.signature.foreign_ops == ("byoc_test::scaled_sin",)
    assert compiled.signature.op_namespaces == ("byoc_test",)
    path = compiled.export(tmp_path / "custom.so")
    load = f"""
        import torch, byoc_torch
        try:
            m = byoc_torch.load({str(path)!r})
        except byoc_torch.UnregisteredOpError as err:
            print("refused:", err)
        else:
            x = torch.randn(4, 6)
            torch.testing.assert_close(m(x), torch.sin(x.exp()) * 3.0 + 1)
            print("ran", m.signature.op_namespaces)
    """
    with_op = textwrap.dedent(CUSTOM_OP) + textwrap.dedent(load)
    for script, expected in (
        (
            textwrap.dedent(load),
            "calls torch.ops.byoc_test.scaled_sin (byoc_test::scaled_sin), which is not registered",
        ),
        (with_op, "ran ('byoc_test',)"),
    ):
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        assert expected in run.stdout


# -- random ops ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn",
    [
        lambda x: torch.dropout(x, 0.5, True),
        lambda x: F.dropout(x, 0.3, training=True) * 2,
        lambda x: torch.rand_like(x) + x,
        lambda x: torch.bernoulli(torch.sigmoid(x)) * x,
    ],
    ids=["dropout_train", "functional_dropout", "rand_like", "bernoulli"],
)
def test_random_ops_follow_pytorchs_generator(fn):
    model, x = Lambda(fn), torch.randn(8, 16)
    compiled = byoc_torch.compile(model, (x,), placement="tvm")
    assert any(r.reason == Reason.RANDOM for r in compiled.fallbacks)
    torch.manual_seed(123)
    got = compiled(x)
    torch.manual_seed(123)
    torch.testing.assert_close(got, model(x))
    assert not torch.equal(compiled(x), got)  # a new draw, not a constant


def test_dropout_in_train_mode_is_not_the_identity():
    x = torch.ones(64, 64)
    out = byoc_torch.compile(Lambda(lambda x: torch.dropout(x, 0.5, True)), (x,))(x)
    assert set(out.unique().tolist()) == {0.0, 2.0}


# -- torch.export's own failures -----------------------------------------------------------------
class SdpaThenView(nn.Module):
    def forward(self, q):
        y = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return y.transpose(1, 2).reshape(2, 5, -1).view(-1, 16)


def test_sdpa_then_view_with_batch_two():
    compile_and_check(SdpaThenView(), (torch.randn(2, 2, 5, 8),))


def test_failing_decomposition_keeps_its_culprit_whole(monkeypatch):
    """When torch's run_decompositions fails (here: sin's decomposition raises), the op to
    blame is kept whole and the report says why."""
    default = torch.export.default_decompositions

    def broken():
        table = default()

        def fail(*args, **kwargs):
            raise ValueError("Cannot view a tensor (test)")

        table[torch.ops.aten.sin.default] = fail
        return table

    monkeypatch.setattr(torch.export, "default_decompositions", broken)
    model = Lambda(lambda x: torch.sin(x).view(-1) + torch.cos(x).sum() + F.gelu(x).view(-1))
    compiled = compile_and_check(model, (torch.randn(4, 6),))
    (note,) = compiled.report().notes
    assert note.startswith("kept whole: aten.sin.default, because torch's run_decompositions")
    assert "(ValueError: Cannot view a tensor (test))" in note


def test_training_batch_norm_on_captured_tensors():
    rm, rv = torch.zeros(6), torch.ones(6)
    model = Lambda(lambda x: F.batch_norm(x, rm.clone(), rv.clone(), training=True))
    compile_and_check(model, (torch.randn(4, 6),))


def test_data_dependent_branch_names_the_ways_around():
    model = Lambda(lambda x: x + 1 if x.sum() > 0 else x - 1)
    with pytest.raises(ExportError, match=r"torch_executed_modules.*torch\.cond.*torch\.compile"):
        byoc_torch.compile(model, (torch.randn(3),))


class Erfinv(nn.Module):
    def forward(self, x):
        return torch.special.erfinv(x.tanh()) * 2


def test_dynamic_dims_out_of_range_are_refused():
    model = Erfinv()
    shapes = {"x": {0: Dim("b", min=2, max=64)}}
    compiled = byoc_torch.compile(model, (torch.randn(4, 3),), dynamic_shapes=shapes)
    assert list(compiled.signature.ranges.values()) == [(2, 64)]
    for n in (2, 64):
        x = torch.randn(n, 3)
        torch.testing.assert_close(compiled(x), model(x))
    for n in (0, 1, 65, 100):
        with pytest.raises(InputError, match=rf"dim 0 \(\w+\) is {n}, outside the range"):
            compiled(torch.randn(n, 3))


class _PoolTwice(nn.Module):
    def forward(self, t):
        return F.max_pool2d(F.avg_pool2d(t, 2, ceil_mode=True), 2)


@pytest.mark.parametrize(
    "forced", [(), ("aten.avg_pool2d.default", "aten.max_pool2d_with_indices.default")]
)
def test_an_input_dim_sized_by_an_expression_builds_and_is_checked(forced):
    """A dim exported as ``2*h`` failed the build even with every op in LibTorch (TVM's VM
    cannot solve h from it); it builds, runs at other sizes, and refuses an odd one."""
    shapes = {"t": {2: 2 * Dim("h", min=4, max=32)}}
    compiled = byoc_torch.compile(
        _PoolTwice(), (torch.randn(1, 2, 8, 8),), dynamic_shapes=shapes, torch_executed_ops=forced
    )
    assert sorted(r.op for r in compiled.fallbacks) == sorted(forced)
    for h in (12, 64):
        t = torch.randn(1, 2, h, 8)
        torch.testing.assert_close(compiled(t), _PoolTwice()(t))
    with pytest.raises(InputError, match=r"dim 2 is 11, but .* a dim of 2\*\w+: no whole value"):
        compiled(torch.randn(1, 2, 11, 8))


# -- boundary cases ------------------------------------------------------------------------------
def test_zero_size_libtorch_result_transposed_into_tvm():
    compile_and_check(Lambda(lambda x: torch.special.erfinv(x).t() + 1), (torch.randn(0, 3),))


def test_uint64_result_from_libtorch():
    model = Lambda(lambda x: (x * 10).abs().to(torch.uint64))
    compiled = compile_and_check(model, (torch.randn(4, 5),), torch_executed_ops=["aten._to_copy"])
    assert compiled.torch_ops == ["aten._to_copy.default"]


class CsrBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.eye(6).to_sparse_csr())

    def forward(self, x):
        return x @ self.w.to_dense()


def test_sparse_csr_buffer_runs():
    compile_and_check(CsrBuffer(), (torch.randn(4, 6),))


def test_sparse_coo_input_is_a_clear_error():
    model = Lambda(lambda s, d: torch.sparse.mm(s, d))
    with pytest.raises(FallbackError, match=r"input \w+ is a torch.sparse_coo tensor.*to_dense"):
        byoc_torch.compile(model, (torch.eye(6).to_sparse(), torch.randn(6, 3)))


def test_sparse_output_is_a_clear_error():
    with pytest.raises(FallbackError, match=r"model output \w+ is a torch.sparse_coo tensor"):
        byoc_torch.compile(Lambda(lambda x: (x * 2).to_sparse()), (torch.randn(4, 6),))


# -- higher-order ops ----------------------------------------------------------------------------
def test_cond_with_a_libtorch_op_in_a_branch():
    def fn(x):
        return torch.cond(x.sum() > 0, lambda x: torch.special.erfinv(x.tanh()), torch.cos, (x,))

    compiled = compile_and_check(Lambda(fn), (torch.randn(4, 6).abs(),))
    assert compiled.torch_ops == ["aten.erfinv.default"]
    x = -torch.randn(4, 6).abs()
    torch.testing.assert_close(compiled(x), torch.cos(x))


def _while(x, y):
    from torch._higher_order_ops.while_loop import while_loop

    def cond(i, t):
        return i < 3

    def body(i, t):
        return i + 1, torch.special.erfinv(torch.tanh(t)) * y

    return while_loop(cond, body, (torch.tensor(0), x))[1] + 1


def _map(x, y):
    from torch._higher_order_ops.map import map as hmap

    return hmap(lambda row, b: torch.special.erfinv(row.tanh()) + b, x, y).relu()


@pytest.mark.parametrize("fn", [_while, _map], ids=["while_loop", "map"])
def test_while_loop_and_map_run_in_libtorch(fn):
    compiled = compile_and_check(Lambda(fn), (torch.randn(3, 4), torch.randn(4)))
    assert any(op.startswith("higher_order.") for op in compiled.torch_ops)
    x, y = torch.randn(3, 4), torch.randn(4)
    torch.testing.assert_close(compiled(x, y), fn(x, y))


# -- verification --------------------------------------------------------------------------------
def test_tolerance_grows_with_reduction_size():
    a, b = torch.randn(2, 8, 256), torch.randn(2, 256, 8)
    k, magnitude = reduction_size(torch.ops.aten.bmm.default, (a, b), {})
    assert k == 256 and magnitude == pytest.approx(float(a.abs().max() * b.abs().max()))
    ref = torch.bmm(a, b)
    got = ref + 5e-5  # float32 rounding of a 256-term sum
    assert _compare(got, ref) is not None  # the per-dtype tolerance alone is too tight
    assert _compare(got, ref, k, magnitude) is None
    assert _compare(ref + 1e-2, ref, k, magnitude) is not None  # a real error still shows
    assert reduction_tolerance(torch.int64, 256) == tolerance(torch.int64) == (0.0, 0.0)


def test_bmm_with_long_reduction_stays_in_tvm():
    model = Lambda(lambda a, b: torch.bmm(a, b) * 3)
    compiled = compile_and_check(model, (torch.randn(2, 8, 256), torch.randn(2, 256, 8)))
    assert compiled.torch_ops == []


def test_minimal_subset_finds_the_culprits():
    calls = []

    def works(items):
        calls.append(items)
        return {3, 17} <= set(items)

    assert minimal_subset(list(range(40)), works) == [3, 17]
    assert len(calls) < 30


def test_minimal_blame_keeps_all_when_moving_all_is_not_enough():
    blamed = {n: FallbackRecord(n, "aten.x", Reason.DIFFERS) for n in ("a", "b", "c")}
    assert minimal_blame(blamed, lambda names: False) == blamed
    assert list(minimal_blame(blamed, lambda names: "b" in names)) == ["b"]


def test_blame_is_shrunk_to_the_wrong_node(monkeypatch):
    """TVM's selu is wrong; its consumers differ too but only selu moves."""
    monkeypatch.setattr("byoc_torch.frontend.importer.deny_list_match", lambda node: None)
    model = Lambda(lambda x: torch.softmax(F.selu(x) @ x.t(), -1).sum(0) + x.mean())
    compiled = compile_and_check(model, (torch.randn(6, 6),))
    assert [r.op for r in compiled.fallbacks] == ["aten.elu.default"]


def test_verify_without_example_inputs_warns_and_derives_them():
    model = Lambda(lambda x: F.selu(x) + 1)
    ep = torch.export.export(model, (torch.randn(4, 6),))
    ep.example_inputs = None
    with pytest.warns(UserWarning, match="no example inputs; verification runs on random"):
        compiled = byoc_torch.compile(ep, placement="tvm")
    x = torch.randn(4, 6)
    torch.testing.assert_close(compiled(x), model(x))


def test_deny_list_applies_without_verification():
    model = Lambda(lambda x: F.selu(x))
    x = torch.randn(24)
    compiled = byoc_torch.compile(model, (x,), verify=False, placement="tvm")
    assert [(r.op, r.reason) for r in compiled.fallbacks] == [
        ("aten.elu.default", Reason.DENY_LIST)
    ]
    torch.testing.assert_close(compiled(x), model(x))


def test_deny_list_tvm_release_is_checked():
    assert check_tvm_version("0.27.0.post1", running="0.27.0.post1")
    with pytest.warns(UserWarning, match="made with TVM 0.26.0, this is TVM 0.27.0.post1"):
        assert not check_tvm_version("0.26.0", running="0.27.0.post1")
    with pytest.raises(ValueError, match="names no TVM release"):
        check_tvm_version(None)
