"""The compiled model as PyTorch users hold it: an nn.Module taking what the model took
(pytrees, keyword inputs, specialized scalars), its repr, device moves, training flag and
autograd behaviour, and the op ``byoc_torch::execute`` that tracers record."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn
from torch.export import Dim

import byoc_torch
from byoc_torch import ArtifactError, CompiledModelError, InputError, InputTypeError
from byoc_torch.errors import ScriptError
from byoc_torch.signature import Signature
from byoc_torch.testing import Lambda


class Erfinv(nn.Module):
    def forward(self, x):
        return torch.special.erfinv(torch.tanh(x)) + torch.relu(x)  # erfinv: LibTorch


class Tree(nn.Module):
    """Positional pytrees, a specialized int, keyword inputs (one a float)."""

    def forward(self, xs, d, n, *, y, scale=1.0):
        a = torch.special.erfinv(torch.tanh(xs[0])) * n + d["a"] + y * scale
        return a, [xs[1] - d["b"]["c"]]


def _tree_inputs(batch: int = 2):
    xs = [torch.randn(batch, 3), torch.randn(batch, 3)]
    d = {"a": torch.randn(batch, 3), "b": {"c": torch.randn(batch, 3)}}
    return (xs, d, 3), {"y": torch.randn(batch, 3), "scale": 2.0}


@pytest.fixture(scope="module")
def erfinv():
    return byoc_torch.compile(Erfinv(), (torch.randn(4, 8),), placement="tvm")


@pytest.fixture(scope="module")
def tree():
    args, kwargs = _tree_inputs()
    return byoc_torch.compile(Tree(), args, kwargs=kwargs, placement="tvm")


# --- nn.Module -------------------------------------------------------------------------------


def test_compiled_model_is_a_registered_submodule(erfinv):
    parent = nn.Sequential(nn.Linear(8, 8), erfinv)
    assert isinstance(erfinv, nn.Module)
    assert [name for name, _ in parent.named_children()] == ["0", "1"]
    assert parent[1] is erfinv
    x = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(parent(x), Erfinv()(parent[0](x)))
        torch.testing.assert_close(erfinv.forward(x), Erfinv()(x))
    assert parent.to("cpu") is parent  # a move that changes nothing is allowed


def test_repr_names_inputs_device_and_torch_ops(erfinv):
    text = repr(erfinv)
    assert text.startswith("CompiledModule(inputs=[x: float32(4, 8)], device=cpu, ")
    assert "torch_ops=1 ['aten.erfinv.default'], torch_subgraphs=1, artifact=" in text


@pytest.mark.parametrize(
    "move, target",
    [
        (lambda m: m.to("meta"), "meta"),
        (lambda m: m.to(torch.float64), "torch.float64"),
        (lambda m: m.half(), "torch.float16"),
    ],
)
def test_moving_or_converting_is_a_clear_error(erfinv, move, target):
    parent = nn.Sequential(erfinv)
    with pytest.raises(CompiledModelError, match=re.escape(target)):
        move(parent)
    with pytest.raises(
        CompiledModelError,
        match=r"a compiled model runs where it was compiled \(cpu",
    ):
        move(erfinv)


def test_report_and_torch_ops_survive_export_and_load(erfinv, tmp_path):
    loaded = byoc_torch.load(erfinv.export(tmp_path / "m.so"))
    assert loaded.torch_ops == erfinv.torch_ops == ["aten.erfinv.default"]
    assert [r.node for r in loaded.fallbacks] == [r.node for r in erfinv.fallbacks]
    assert [r.reason for r in loaded.fallbacks] == [r.reason for r in erfinv.fallbacks]
    assert loaded.report().to_dict() == erfinv.report().to_dict()
    x = torch.randn(4, 8)
    torch.testing.assert_close(loaded(x), Erfinv()(x))


# --- training flag and autograd --------------------------------------------------------------


class DropoutModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.head = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))

    def forward(self, x):
        return torch.special.erfinv(torch.tanh(self.head(self.drop(x))))


def test_compile_restores_every_training_flag():
    model = DropoutModel().train()
    model.head.eval()  # a mixed state must come back as it was, not all-train
    before = {name: m.training for name, m in model.named_modules()}
    compiled = byoc_torch.compile(model, (torch.randn(2, 8),), placement="tvm")
    assert {name: m.training for name, m in model.named_modules()} == before
    x = torch.randn(2, 8)
    with torch.no_grad():  # the compiled model computes as the model does in eval mode
        torch.testing.assert_close(compiled(x), model.eval()(x))


def test_parent_with_trainable_layers_needs_no_grad(erfinv):
    parent = nn.Sequential(nn.Linear(8, 8), erfinv)
    x = torch.randn(4, 8)
    with pytest.raises(InputError, match=r"inference-only .* torch\.no_grad\(\)"):
        parent(x)  # the Linear's output requires grad
    with torch.no_grad():
        out = parent(x)
    assert not out.requires_grad


def test_op_refuses_inputs_requiring_grad(erfinv):
    x = torch.randn(4, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"byoc_torch: input 0 requires grad, but a compiled"):
        torch.ops.byoc_torch.execute(erfinv.torch_executable, [x])
    with torch.no_grad():
        (out,) = torch.ops.byoc_torch.execute(erfinv.torch_executable, [x])
        torch.testing.assert_close(out, Erfinv()(x))


# --- pytree, keyword and scalar inputs -------------------------------------------------------


def test_pytree_and_keyword_inputs(tree):
    args, kwargs = _tree_inputs()
    kwargs = {"scale": kwargs["scale"], "y": kwargs["y"]}  # another keyword order
    got = tree(*args, **kwargs)
    expected = Tree()(*args, **kwargs)
    assert isinstance(got, tuple) and isinstance(got[1], list)
    torch.testing.assert_close(got, expected)
    assert [s.name for s in tree.signature.inputs] == ["xs_0", "xs_1", "d_a", "d_b_c", "y"]


def test_specialized_scalar_with_another_value_is_an_input_error(tree):
    (xs, d, _), kwargs = _tree_inputs()
    with pytest.raises(
        InputError,
        match=re.escape(
            "byoc_torch: input args[2] is 4, but the model was compiled with args[2]=3 "
            "(torch.export specializes Python scalars)"
        ),
    ):
        tree(xs, d, 4, **kwargs)
    with pytest.raises(InputError, match=re.escape("input kwargs['scale'] is 1.5")):
        tree(xs, d, 3, y=kwargs["y"], scale=1.5)
    with pytest.raises(InputError, match=re.escape("input args[2] is 3.0")):
        tree(xs, d, 3.0, **kwargs)  # same value, another type


def test_other_structure_is_an_input_type_error(tree):
    (xs, d, n), kwargs = _tree_inputs()
    with pytest.raises(
        InputTypeError,
        match=re.escape("takes keyword input(s) ['y', 'scale'], got ['y']"),
    ):
        tree(xs, d, n, y=kwargs["y"])
    with pytest.raises(
        InputTypeError,
        match=re.escape(
            "(nested as (((*, *), {'a': *, 'b': {'c': *}}, *), {'y': *, 'scale': *}), "
            "expected (([*, *], {'a': *, 'b': {'c': *}}, *), {'y': *, 'scale': *}))"
        ),
    ):
        tree(tuple(xs), d, n, **kwargs)
    with pytest.raises(InputTypeError, match=re.escape("got args[0][0], args[1]['a']")):
        tree([xs[0]], {"a": d["a"]}, **kwargs)


def test_keyword_inputs_need_kwargs_at_compile_time(erfinv):
    with pytest.raises(
        InputTypeError,
        match=re.escape("takes positional inputs only (x), got keyword input(s) ['x']"),
    ):
        erfinv(x=torch.randn(4, 8))


def test_pytree_inputs_keep_dynamic_dims():
    args, kwargs = _tree_inputs(batch=4)
    batch = Dim("batch", min=2, max=64)
    dynamic_shapes = {
        "xs": [{0: batch}, {0: batch}],
        "d": {"a": {0: batch}, "b": {"c": {0: batch}}},
        "n": None,
        "y": {0: batch},
        "scale": None,
    }
    compiled = byoc_torch.compile(
        Tree(), args, kwargs=kwargs, dynamic_shapes=dynamic_shapes, placement="tvm"
    )
    for b in (2, 7):
        args, kwargs = _tree_inputs(batch=b)
        torch.testing.assert_close(compiled(*args, **kwargs), Tree()(*args, **kwargs))


# --- tracing: the op and its fake kernel -----------------------------------------------------


class Doubler(nn.Module):
    def forward(self, x):
        return torch.cat([torch.special.erfinv(torch.tanh(x)), x]), x.sum(0)


def test_fake_kernel_gives_symbolic_output_shapes():
    batch = Dim("batch", min=2, max=32)
    compiled = byoc_torch.compile(
        Doubler(), (torch.randn(4, 3),), dynamic_shapes={"x": {0: batch}}, placement="tvm"
    )
    assert compiled.signature.output_specs[0].shape[1] == 3
    parent = nn.Sequential(compiled)
    with torch.no_grad():
        ep = torch.export.export(parent, (torch.randn(4, 3),), dynamic_shapes=({0: batch},))
    (execute,) = [n for n in ep.graph.nodes if n.target is torch.ops.byoc_torch.execute.default]
    first, second = execute.meta["val"]
    (user_input,) = ep.graph_signature.user_inputs
    (placeholder,) = [n for n in ep.graph.nodes if n.name == user_input]
    symbol = str(placeholder.meta["val"].shape[0].node.expr)
    assert str(first.shape[0].node.expr) == f"2*{symbol}"
    assert tuple(second.shape) == (3,)
    for b in (3, 9):  # a batch other than the example's
        x = torch.randn(b, 3)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(x), Doubler()(x))


def test_jit_trace_records_the_op_not_a_constant(erfinv):
    with torch.no_grad():
        traced = torch.jit.trace(erfinv, (torch.randn(4, 8),))
    kinds = [n.kind() for n in traced.graph.nodes()]
    assert "byoc_torch::execute" in kinds
    x = torch.randn(4, 8)  # not the example: a baked-in answer would differ
    with torch.no_grad():
        torch.testing.assert_close(traced(x), Erfinv()(x))


class FlatTree(nn.Module):
    """Inputs TorchScript can type: a list, a dict of tensors, an int, keyword inputs."""

    def forward(self, xs, d, n, *, y, scale=1.0):
        return {"a": torch.special.erfinv(torch.tanh(xs[0])) * n + d["a"] + y * scale}


def _flat_tree_inputs():
    (xs, d, n), kwargs = _tree_inputs()
    return (xs, {"a": d["a"]}, n), kwargs


def test_jit_script_of_pytree_model():
    args, kwargs = _flat_tree_inputs()
    compiled = byoc_torch.compile(FlatTree(), args, kwargs=kwargs, placement="tvm")
    scripted = torch.jit.script(compiled)
    (xs, d, n), kwargs = _flat_tree_inputs()  # not the example inputs
    torch.testing.assert_close(scripted(xs, d, n, **kwargs), FlatTree()(xs, d, n, **kwargs))
    with pytest.raises(torch.jit.Error, match=re.escape("input args[2] differs from the value")):
        scripted(xs, d, 5, **kwargs)


def test_jit_script_names_an_input_it_cannot_type(tree):
    with pytest.raises(
        ScriptError,  # a TypeError, as PyTorch's own
        match=re.escape("TorchScript cannot type input arg1: a dict input needs str keys and"),
    ):
        torch.jit.script(tree)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("constants", [[99, 1]], "stored input constant 99=1 is not a leaf's scalar"),
        ("paths", ["args[0]"], "stored input structure has 7 leaves, 1 paths"),
        ("spec", "[1, {", "stored input structure is unreadable"),
    ],
)
def test_stored_input_tree_is_checked(tree, field, value, message):
    assert Signature.from_json(tree.signature.to_json()) == tree.signature
    data = json.loads(tree.signature.to_json())
    data["input_tree"][field] = value
    with pytest.raises(ArtifactError, match=re.escape(message)):
        Signature.from_json(json.dumps(data))


def test_op_outputs_never_alias_inputs():
    """The op's schema promises fresh outputs; a model returning its input gets a copy (the
    VM hands the input itself back, and functionalization relies on the schema)."""
    compiled = byoc_torch.compile(
        Lambda(lambda x, y: (x, torch.special.erfinv(y))),
        (torch.randn(3), torch.rand(3)),
        placement="tvm",
    )
    x, y = torch.randn(3), torch.rand(3)
    first, second = torch.ops.byoc_torch.execute(compiled.torch_executable, [x, y])
    assert first.data_ptr() != x.data_ptr()
    torch.testing.assert_close((first, second), (x, torch.special.erfinv(y)))
