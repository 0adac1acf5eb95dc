"""Verification against PyTorch, build-failure fallback, and the deny-list."""

from __future__ import annotations

import types

import pytest
import torch
import tvm
from torch import fx, nn
from tvm import ir, relax

import byoc_torch
from byoc_torch import bool_arith, schedules, verify
from byoc_torch.errors import BuildFailure
from byoc_torch.frontend.deny_list import load_deny_list
from byoc_torch.tensors import target_device_type
from byoc_torch.testing import Lambda, compile_and_check
from byoc_torch.verify import find_build_culprits, run_on_target

WRONG_IN_TVM = {
    "selu": (lambda x: nn.functional.selu(x), lambda: (torch.randn(24),)),
    "sub_alpha": (lambda a, b: torch.sub(a, b, alpha=2), lambda: (torch.randn(4), torch.randn(4))),
    "avg_pool2d_divisor_override": (
        lambda x: nn.functional.avg_pool2d(x, 2, divisor_override=3),
        lambda: (torch.randn(1, 2, 6, 6),),
    ),
    "avg_pool2d_exclude_pad": (
        lambda x: nn.functional.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False),
        lambda: (torch.randn(1, 2, 7, 7),),
    ),
    "max_pool2d_ceil": (
        lambda x: nn.functional.max_pool2d(x, 3, 2, ceil_mode=True),
        lambda: (torch.randn(1, 2, 8, 8),),
    ),
    "max_pool2d_return_indices": (
        lambda x: nn.functional.max_pool2d(x, 2, return_indices=True),
        lambda: (torch.randn(1, 2, 6, 6),),
    ),
    "grid_sample_bilinear_zeros": (
        lambda x, g: nn.functional.grid_sample(x, g, align_corners=False),
        lambda: (torch.randn(1, 2, 4, 4), torch.rand(1, 3, 3, 2) * 2 - 1),
    ),
    "nanmean": (
        lambda x: torch.nanmean(torch.where(x > 1, float("nan"), x), 1),
        lambda: (torch.randn(4, 6),),
    ),
    "interpolate_antialias": (
        lambda x: nn.functional.interpolate(x, size=(3, 3), mode="bilinear", antialias=True),
        lambda: (torch.randn(1, 2, 8, 8),),
    ),
}


@pytest.mark.parametrize("name", sorted(WRONG_IN_TVM))
def test_known_wrong_conversions_give_pytorchs_answer(name):
    fn, make = WRONG_IN_TVM[name]
    compile_and_check(Lambda(fn), make())


def test_verification_catches_what_the_deny_list_does_not_know(monkeypatch):
    """With an empty deny-list, verification alone finds selu's wrong elu."""
    monkeypatch.setattr("byoc_torch.frontend.importer.deny_list_match", lambda node: None)
    compiled = compile_and_check(Lambda(lambda x: nn.functional.selu(x)), (torch.randn(24),))
    (rec,) = compiled.fallbacks
    assert rec.op == "aten.elu.default"
    assert rec.reason == "TVM result differs from PyTorch"
    assert rec.detail.startswith("max abs err")


def test_consumers_of_a_wrong_node_are_not_blamed(monkeypatch):
    monkeypatch.setattr("byoc_torch.frontend.importer.deny_list_match", lambda node: None)
    model = Lambda(lambda x: torch.tanh(nn.functional.selu(x) * 3.0) + 1.0)
    compiled = compile_and_check(model, (torch.randn(16),))
    assert [r.op for r in compiled.fallbacks] == ["aten.elu.default"]


def test_an_op_that_returns_nothing_does_not_hide_the_value_it_checks(monkeypatch):
    """``.to(float64)`` exports as ``_assert_tensor_metadata(elu)`` (returns nothing; TVM
    converts it to elu's own var) and a copy. Verification compares elu itself and blames it
    alone: the assertion is not a TVM value (before, it took elu's place in verification, and
    elu's consumers were blamed with it)."""
    monkeypatch.setattr("byoc_torch.frontend.importer.deny_list_match", lambda node: None)
    model = Lambda(lambda x: nn.functional.selu(x).to(torch.float64) * 2.0)
    compiled = compile_and_check(model, (torch.randn(24),))
    assert [(r.op, r.reason) for r in compiled.fallbacks] == [
        ("aten.elu.default", "TVM result differs from PyTorch")
    ]
    assert compiled.fallbacks[0].detail.startswith("max abs err")
    imported = byoc_torch.frontend.importer.import_with_records(
        torch.export.export(model, (torch.randn(24),)), byoc_torch.Options()
    )
    asserts = [n.name for n in imported.graph.nodes if "assert" in n.name]
    assert asserts and not set(asserts) & set(imported.native_vars)
    assert "elu" in imported.native_vars


def test_elements_of_a_libtorch_tuple_are_not_tvm_values():
    """TVM takes an element out of a LibTorch op's tuple, computing nothing: not a value to
    verify (a model whose TVM side is only such elements is not verified at all)."""
    model = Lambda(lambda x: [t * 2.0 for t in torch.split(x, 2)])
    ep = torch.export.export(model, (torch.randn(6),))
    imported = byoc_torch.frontend.importer.import_with_records(
        ep, byoc_torch.Options(torch_executed_ops=["aten.split_with_sizes"])
    )
    elements = [n.name for n in imported.graph.nodes if n.name.startswith("getitem")]
    products = [n.name for n in imported.graph.nodes if n.name.startswith("mul")]
    assert len(elements) == len(products) == 3
    assert sorted(imported.native_vars) == sorted(products)


def test_values_tvm_cannot_return_do_not_blind_verification(monkeypatch, caplog):
    """Returning an intermediate value moves the boundaries of TVM's fused kernels, and TVM
    may fail to build the new kernels (a boolean multiply as a kernel's output did, from
    logaddexp's decomposition). Here no intermediate value builds at all: verification still
    catches selu's wrong elu, from the model's outputs."""
    monkeypatch.setattr("byoc_torch.frontend.importer.deny_list_match", lambda node: None)

    def build(mod, target):
        ret = mod["main"].ret_ty
        if isinstance(ret, relax.TupleType) and len(ret.fields) > 1:  # returns intermediates
            raise tvm.error.InternalError("Check failed: (t.MatchesCode(kDLFloat)) is false")
        return schedules.build(mod, target)

    monkeypatch.setattr(verify, "schedules", types.SimpleNamespace(build=build))
    model = Lambda(lambda a, b: torch.tanh(nn.functional.selu(torch.logaddexp(a, b)) * 3.0))
    with caplog.at_level("DEBUG", logger="byoc_torch.verify"):
        compiled = compile_and_check(model, (torch.randn(4, 6), torch.randn(4, 6)))
    assert [r.op for r in compiled.fallbacks] == ["aten.elu.default"]
    assert any("cannot be observed" in r.getMessage() for r in caplog.records)


def test_a_fused_kernel_that_differs_from_its_parts_is_caught(monkeypatch):
    """Without byoc_torch's NaN test, TVM folds nanmean's ``x != x`` to false
    inside the fused kernel, while every value built apart (verification's instrumented
    build) is right: only the model's own outputs show it."""
    monkeypatch.setattr(bool_arith, "_nan_test", lambda x, equal, builder: None)
    model = Lambda(lambda x: torch.nanmean(torch.where(x > 1, float("nan"), x), 1))
    torch.manual_seed(0)
    compiled = compile_and_check(model, (torch.randn(4, 6),))
    assert [(r.op, r.detail) for r in compiled.fallbacks] == [
        ("aten.ne.Tensor", "the model's outputs differ in TVM's fused kernels")
    ]


def test_logaddexp_and_isclose_compile_and_agree():
    """Their decompositions multiply booleans, which escaped verification's build as TVM's
    InternalError."""
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    b[0] = a[0]
    compile_and_check(Lambda(lambda a, b: torch.logaddexp(a, b)), (a, b))
    compile_and_check(Lambda(lambda a, b: (a > b, torch.isclose(a, b))), (a, b))


@pytest.mark.parametrize("placement", ["tvm", "measured"])
def test_pytorchs_reference_values_are_computed_once_per_compile(monkeypatch, placement):
    """Every verification round (and measured placement) reads PyTorch's value of every node
    from the one computation the compile's pipeline makes."""
    from byoc_torch import pipeline, verify
    from byoc_torch import placement as placement_pkg

    monkeypatch.setattr("byoc_torch.frontend.importer.deny_list_match", lambda node: None)
    computed, rounds = [], []
    real_reference, real_diverging = verify.reference_values, pipeline.diverging_nodes

    def reference(*args, **kwargs):
        computed.append(args[0])
        return real_reference(*args, **kwargs)

    def diverging(*args, **kwargs):
        rounds.append(1)
        return real_diverging(*args, **kwargs)

    monkeypatch.setattr(verify, "reference_values", reference)
    monkeypatch.setattr(placement_pkg, "reference_values", reference)
    monkeypatch.setattr(pipeline, "diverging_nodes", diverging)
    model = Lambda(lambda x: torch.tanh(nn.functional.selu(x) * 3.0) + 1.0)
    compiled = compile_and_check(model, (torch.randn(16),), placement=placement)
    assert [r.op for r in compiled.fallbacks] == ["aten.elu.default"]
    if placement == "tvm":
        assert len(rounds) == 2  # elu blamed, then the model verified again
    assert len(computed) == 1


def test_verification_can_be_turned_off(monkeypatch):
    """Without verification (and with an empty deny-list), TVM's wrong selu comes back
    silently: the reason it is on."""
    monkeypatch.setattr("byoc_torch.frontend.importer.deny_list_match", lambda node: None)
    model = Lambda(lambda x: nn.functional.selu(x))
    x = torch.randn(24)
    compiled = byoc_torch.compile(model, (x,), verify=False, placement="tvm")
    assert compiled.fallbacks == ()
    assert not torch.allclose(compiled(x), model(x))


class PoolNet(nn.Module):
    """A CNN whose pooling layer TVM gets wrong (divisor_override)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(2, divisor_override=3)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_cnn_with_wrong_pooling_matches_eager(monkeypatch):
    monkeypatch.setattr("byoc_torch.frontend.importer.deny_list_match", lambda node: None)
    compiled = compile_and_check(PoolNet().eval(), (torch.randn(2, 3, 8, 8),))
    assert [(r.op, r.reason) for r in compiled.fallbacks] == [
        ("aten.avg_pool2d.default", "TVM result differs from PyTorch")
    ]
    text = compiled.report().to_text()
    assert "TVM result differs from PyTorch" in text and "max abs err" in text


@pytest.fixture
def unbuildable_sinh():
    """Make relax.sinh fail in legalization (as a TVM bug would), restore it afterwards."""
    op = ir.Op.get("relax.sinh")
    original = op.get_attr("FLegalize")

    def broken(bb, call):
        raise RuntimeError("sinh legalization is broken (test)")

    op.reset_attr("FLegalize")
    op.set_attr("FLegalize", broken)
    yield
    op.reset_attr("FLegalize")
    op.set_attr("FLegalize", original)


def test_build_failure_falls_back_per_op(unbuildable_sinh):
    model = Lambda(lambda x: torch.sinh(torch.tanh(x)) + torch.cos(x))
    compiled = compile_and_check(model, (torch.randn(5),))
    (rec,) = compiled.fallbacks
    assert rec.op == "aten.sinh.default" and rec.reason == "TVM build failed"
    assert "sinh legalization is broken" in rec.detail
    assert "TVM build failed" in compiled.report().to_text()


def test_a_failure_in_lowering_is_searched_by_lowering_only(unbuildable_sinh, monkeypatch):
    """The culprit search's probes stop where the failure is: a legalization failure is
    searched with legalization and fusion only, never TVM's code generation, and the model is
    compiled once, when it builds."""
    from byoc_torch import driver

    real = driver.relax.build
    compiled_kernels: list[int] = []

    def counted(mod, target):
        compiled_kernels.append(1)
        return real(mod, target=target)

    monkeypatch.setattr(driver.relax, "build", counted)
    lowers = driver.Pipeline.lowers
    probes: list[list[str]] = []

    def recorded(self, records, names):
        probes.append(list(names))
        return lowers(self, records, names)

    monkeypatch.setattr(driver.Pipeline, "lowers", recorded)
    model = Lambda(lambda x: torch.sinh(torch.tanh(x)) + torch.cos(x) * torch.exp(x))
    compiled = byoc_torch.compile(model, (torch.randn(5),), placement="tvm", verify=False)
    assert [r.op for r in compiled.fallbacks] == ["aten.sinh.default"]
    assert len(compiled_kernels) == 1
    assert probes.count([]) == 1  # the model as it is, lowered once
    x = torch.randn(5)
    torch.testing.assert_close(compiled(x), model(x))


def _nodes(*names: str) -> list[fx.Node]:
    graph = fx.Graph()
    x = graph.placeholder("x")
    nodes = []
    for name in names:
        node = graph.call_function(torch.ops.aten.sin.default, (x,))
        node.name = name
        nodes.append(node)
    return nodes


def _builds_when(needed: set[str], calls: list[list[str]]):
    """A fake ``builds``: the model builds once every node of ``needed`` is moved."""

    def builds(names: list[str]) -> bool:
        calls.append(list(names))
        return needed <= set(names)

    return builds


@pytest.mark.parametrize(
    "needed", [{"a"}, {"d"}, {"h"}, {"b", "f"}, {"a", "h"}, {"c", "d", "g"}], ids=str
)
def test_build_culprits_are_exactly_the_nodes_whose_move_fixes_the_build(needed):
    calls: list[list[str]] = []
    records = find_build_culprits(_nodes(*"abcdefgh"), _builds_when(needed, calls), ERR)
    assert [r.node for r in records] == sorted(needed)
    assert all(r.reason == "TVM build failed" and r.op == "aten.sin.default" for r in records)
    assert records[0].detail == "RuntimeError: legalization failed"
    assert sorted(needed) in [sorted(c) for c in calls]  # moving just them was built
    assert len(calls) == len({frozenset(c) for c in calls})  # no build is tried twice


ERR = RuntimeError("legalization failed\n  at some TVM pass\n  more context")


@pytest.mark.parametrize(
    ("needed", "suspects", "most_calls"),
    [({"f"}, "f", 2), ({"b", "f"}, "bf", 4), ({"f"}, "ef", 4), ({"c"}, "f", 9)],
    ids=str,
)
def test_build_culprits_are_searched_among_the_suspects_when_moving_them_builds(
    needed, suspects, most_calls
):
    """Suspects whose move builds narrow the search to them (a few probes instead of
    2*log2(N) per culprit); wrong suspects cost one probe and the full search runs."""
    calls: list[list[str]] = []
    nodes = _nodes(*"abcdefgh")
    by_name = {n.name: n for n in nodes}
    records = find_build_culprits(
        nodes, _builds_when(needed, calls), ERR, suspects=[by_name[s] for s in suspects]
    )
    assert [r.node for r in records] == sorted(needed)
    assert len(calls) <= most_calls
    assert len(calls) == len({frozenset(c) for c in calls})


def test_shapeless_names_the_values_of_unknown_shape():
    """Values whose TVM type has no shape (T5's decode graphs: the key/value cache concat),
    alone or inside a tuple, are the suspects; known and symbolic shapes are not."""
    from types import SimpleNamespace

    from tvm import relax

    from byoc_torch.verify import shapeless

    unknown = relax.TensorType(ndim=3, dtype="float32")
    n = tvm.tirx.Var("n", "int64")
    types = {
        "a": relax.TensorType([2, 3], dtype="float32"),
        "b": unknown,
        "c": relax.TensorType([n, 3], dtype="float32"),  # symbolic: still a shape
        "d": tvm.ir.TupleType([relax.TensorType([2], dtype="float32"), unknown]),
    }
    imported = SimpleNamespace(native_vars={k: relax.Var(k, t) for k, t in types.items()})
    nodes = _nodes(*"abcde")  # e has no TVM value
    assert [x.name for x in shapeless(imported, nodes)] == ["b", "d"]


def test_nothing_is_blamed_when_the_model_builds_with_nothing_moved():
    """The build failed once but builds with no node moved: no innocent node is moved, the
    original error is raised with its context."""
    calls: list[list[str]] = []
    with pytest.raises(BuildFailure, match="builds again with no node moved") as info:
        find_build_culprits(_nodes("a", "b"), lambda names: calls.append(names) or True, ERR)
    assert calls == [[]]
    assert "RuntimeError: legalization failed\n  at some TVM pass\n  more context" in str(
        info.value
    )
    assert info.value.__cause__ is ERR


def test_build_failure_not_tied_to_an_op_is_a_clear_error():
    with pytest.raises(BuildFailure, match=r"does not help.*\nRuntimeError: boom") as info:
        find_build_culprits(_nodes("a"), lambda names: False, RuntimeError("boom"))
    assert str(info.value.__cause__) == "boom"
    with pytest.raises(BuildFailure, match="does not help"):
        find_build_culprits([], lambda names: False, RuntimeError("boom"))


def test_compile_raises_the_original_build_error_when_no_node_is_to_blame(monkeypatch):
    """A build failure that no node explains (here: the first relax.build fails, the same
    build then succeeds) is raised as BuildFailure with the original error; no innocent node
    is moved to LibTorch."""
    from byoc_torch import driver

    real = driver.relax.build
    builds: list[int] = []

    def first_build_fails(mod, target):
        builds.append(1)
        if len(builds) == 1:
            raise RuntimeError("transient failure (test)")
        return real(mod, target=target)

    monkeypatch.setattr(driver.relax, "build", first_build_fails)
    model = Lambda(lambda x: torch.special.erfinv(torch.tanh(x)))
    with pytest.raises(BuildFailure, match=r"no node moved.*\nRuntimeError: transient") as info:
        byoc_torch.compile(model, (torch.rand(5) * 0.5,), placement="tvm", verify=False)
    assert str(info.value.__cause__) == "transient failure (test)"
    assert len(builds) == 2  # the failed build, and the same model built again with nothing moved


def test_deny_list_is_versioned_and_loads():
    entries = load_deny_list()
    assert "aten.sub.Tensor" in entries
    model = Lambda(lambda a, b: torch.sub(a, b, alpha=2))
    compiled = compile_and_check(model, (torch.randn(4), torch.randn(4)))
    (rec,) = compiled.fallbacks
    assert rec.reason == "known TVM defect (deny-list)" and "deny-list v1" in rec.detail


def test_deny_list_condition_is_respected():
    """sub with alpha=1 is fine in TVM: not denied, no fallback."""
    model = Lambda(lambda a, b: torch.sub(a, b))
    compiled = compile_and_check(model, (torch.randn(4), torch.randn(4)))
    assert compiled.fallbacks == ()


def test_build_failure_in_a_tuple_producing_op_moves_the_op():
    """TVM cannot build layer_norm in bfloat16; the op returns a tuple, so the op itself (not
    its getitem) moves to LibTorch."""
    model = nn.LayerNorm(6).to(torch.bfloat16).eval()
    x = torch.randn(3, 6, dtype=torch.bfloat16)
    compiled = compile_and_check(model, (x,), rtol=1e-2, atol=1e-2)
    assert [(r.op, r.reason) for r in compiled.fallbacks] == [
        ("aten.native_layer_norm.default", "TVM build failed")
    ]


@pytest.mark.parametrize(
    ("target", "device"),
    [
        ("llvm", "cpu"),
        ({"kind": "llvm"}, "cpu"),
        ("llvm -mcpu=x86-64", "cpu"),
        ("cuda", "cuda"),
        ("cuda -arch=sm_80", "cuda"),
        ({"kind": "cuda", "arch": "sm_80"}, "cuda"),
        (tvm.target.Target({"kind": "cuda", "arch": "sm_80"}), "cuda"),
        (tvm.target.Target("llvm"), "cpu"),
    ],
    ids=str,
)
def test_target_device_type(target, device):
    assert target_device_type(target) == device


def _identity_and_double():
    x = relax.Var("x", relax.TensorType([3], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.multiply(x, relax.const(2.0, "float32")))
        bb.emit_func_output(relax.Tuple([x, y]))
    return bb.get()


def test_verification_runs_on_a_cpu_target():
    ex = relax.build(_identity_and_double(), target="llvm")
    x = torch.tensor([1.0, 2.0, 3.0])
    same, double = run_on_target(ex, [x], {"kind": "llvm"})
    assert same.device.type == double.device.type == "cpu"
    torch.testing.assert_close((same, double), (x, x * 2))


def test_verification_runs_on_the_device_of_a_cuda_target(monkeypatch):
    """No GPU here: the VM and the device moves are recorded instead of run. A CUDA target
    gets a CUDA VM and its inputs moved to CUDA; the results come back to the CPU."""
    seen: dict[str, object] = {}

    class RecordingVM:
        def __init__(self, executable, device):
            seen["device"] = device

        def __getitem__(self, name):
            return lambda *args: [torch.from_dlpack(a) * 2 for a in args]

    def move(x, device_type):
        seen.setdefault("moved to", []).append(device_type)
        return x

    monkeypatch.setattr(verify.relax, "VirtualMachine", RecordingVM)
    monkeypatch.setattr(verify, "to_device", move)
    x = torch.arange(4.0)
    (out,) = run_on_target(None, [x], {"kind": "cuda", "arch": "sm_80"})
    assert seen["device"].dlpack_device_type() == tvm.device("cuda").dlpack_device_type()
    assert seen["moved to"] == ["cuda"]
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, x * 2)
