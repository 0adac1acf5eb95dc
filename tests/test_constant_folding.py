"""byoc_torch.constant_folding: what a package's program computes from no input is computed
once at compile time; nothing else is."""

from __future__ import annotations

import torch
from torch import fx

from byoc_torch import _defaults, aot_inductor, constant_folding
from byoc_torch.testing.fx_graphs import graph_of
from byoc_torch.testing.packages import whole_program

aten = torch.ops.aten


def _masked_before() -> fx.GraphModule:
    """scores (4, 4) + where(arange(4) <= arange(4)[:, None], 0, -1e4) @ w, with lifted
    scalars: the causal mask of a decoder, as torch.export writes one."""
    attrs = {"w": torch.randn(4, 4), "zero": torch.tensor(0.0), "neg": torch.tensor(-1e4)}
    g = fx.Graph()
    scores = g.placeholder("scores")
    w, zero, neg = g.get_attr("w"), g.get_attr("zero"), g.get_attr("neg")
    cols = g.call_function(aten.arange.default, (4,), {"dtype": torch.int64})
    rows = g.call_function(aten.unsqueeze.default, (cols, 1))
    causal = g.call_function(aten.le.Tensor, (cols, rows))
    bias = g.call_function(aten.where.self, (causal, zero, neg))
    masked = g.call_function(aten.add.Tensor, (scores, bias))
    g.output(g.call_function(aten.mm.default, (masked, w)))
    return fx.GraphModule(attrs, g)


def test_the_mask_is_computed_once_and_the_rest_stays():
    """Before: the mask is arange -> unsqueeze -> le -> where over a lifted scalar. Expected:
    the where is a constant (the value the chain computes), the chain and the scalars it
    read are gone, the weight and everything the input reaches stay. Same values."""
    before = _masked_before()
    after = constant_folding.folded(before)
    expected = [
        ("placeholder", "scores", ()),  # 0
        ("get_attr", "w", ()),
        ("get_attr", "_folded_where_self", ()),
        ("call_function", "aten.add.Tensor", (0, 2)),  # 3
        ("call_function", "aten.mm.default", (3, 1)),
        ("output", "output", (4,)),
    ]
    assert graph_of(after) == expected
    mask = torch.where(torch.arange(4) <= torch.arange(4)[:, None], 0.0, -1e4)
    torch.testing.assert_close(after._folded_where_self, mask, rtol=0, atol=0)
    assert after.w is before.w and not hasattr(after, "neg") and not hasattr(after, "zero")
    scores = torch.randn(4, 4)
    torch.testing.assert_close(after(scores), before(scores), rtol=0, atol=0)


def _graph_with(build) -> fx.GraphModule:
    attrs = {"w": torch.randn(8, 8)}
    g = fx.Graph()
    x = g.placeholder("x")
    w = g.get_attr("w")
    g.output(build(g, x, w))
    return fx.GraphModule(attrs, g)


def test_what_reads_an_input_a_weight_or_chance_or_is_returned_is_not_folded():
    """Nothing to fold: a size read from the input (arange(x.size(0))), a transposed weight
    (its multiplies stay what the matrix rewrites look for), random values, a mask the
    program returns as it is, ones an in-place add writes to, and uninitialized memory. The
    module itself comes back."""

    def from_input(g, x, w):
        n = g.call_function(aten.sym_size.int, (x, 0))
        return g.call_function(aten.add.Tensor, (x, g.call_function(aten.arange.default, (n,))))

    def weight(g, x, w):
        return g.call_function(aten.mm.default, (x, g.call_function(aten.t.default, (w,))))

    def chance(g, x, w):
        noise = g.call_function(aten.rand.default, ([8],), {"dtype": torch.float32})
        return g.call_function(aten.add.Tensor, (x, noise))

    def returned(g, x, w):
        return (x, g.call_function(aten.arange.default, (8,)))

    def written(g, x, w):
        ones = g.call_function(aten.ones.default, ([8],))
        return g.call_function(aten.add_.Tensor, (ones, x))

    def uninitialized(g, x, w):
        space = g.call_function(aten.empty.memory_format, ([8],))
        return g.call_function(aten.add.Tensor, (x, g.call_function(aten.abs.default, (space,))))

    for build in (from_input, weight, chance, returned, written, uninitialized):
        module = _graph_with(build)
        assert constant_folding.folded(module) is module, build.__name__


def test_a_buffer_no_multiply_reads_is_a_source():
    """Before: x * cos(angles) + x * sin(angles), angles a buffer (rotary embeddings).
    Expected: cos and sin are constants, the buffer is gone."""
    angles = torch.outer(torch.arange(8.0), torch.tensor([1.0, 0.1, 0.01, 0.001]))
    g = fx.Graph()
    x = g.placeholder("x")
    held = g.get_attr("angles")
    cos = g.call_function(aten.cos.default, (held,))
    sin = g.call_function(aten.sin.default, (held,))
    out = g.call_function(
        aten.add.Tensor,
        (g.call_function(aten.mul.Tensor, (x, cos)), g.call_function(aten.mul.Tensor, (x, sin))),
    )
    g.output(out)
    before = fx.GraphModule({"angles": angles}, g)
    after = constant_folding.folded(before)
    assert graph_of(after) == [
        ("placeholder", "x", ()),
        ("get_attr", "_folded_cos_default", ()),
        ("get_attr", "_folded_sin_default", ()),
        ("call_function", "aten.mul.Tensor", (0, 1)),
        ("call_function", "aten.mul.Tensor", (0, 2)),
        ("call_function", "aten.add.Tensor", (3, 4)),
        ("output", "output", (5,)),
    ]
    assert not hasattr(after, "angles")
    x = torch.randn(8, 4)
    torch.testing.assert_close(after(x), before(x), rtol=0, atol=0)


def test_a_value_past_the_budget_is_recomputed_from_its_folded_sources(monkeypatch):
    """The expanded mask (64 x 8 floats, 2 KB) is past a 1 KB budget: it stays computed,
    from its source (8 floats), which is folded."""
    monkeypatch.setattr(_defaults, "AOTI_FOLD_MAX_BYTES", 1024)

    def build(g, x, w):
        row = g.call_function(aten.arange.default, (8,), {"dtype": torch.float32})
        wide = g.call_function(aten.expand.default, (row, [64, 8]))
        big = g.call_function(aten.mul.Tensor, (wide, 2))
        return g.call_function(aten.add.Tensor, (x, big))

    before = _graph_with(build)
    after = constant_folding.folded(before)
    assert graph_of(after) == [
        ("placeholder", "x", ()),
        ("get_attr", "_folded_arange_default", ()),
        ("call_function", "aten.expand.default", (1, [64, 8])),
        ("call_function", "aten.mul.Tensor", (2, 2)),
        ("call_function", "aten.add.Tensor", (0, 3)),
        ("output", "output", (4,)),
    ]
    x = torch.randn(64, 8)
    torch.testing.assert_close(after(x), before(x), rtol=0, atol=0)


class _Decoder(torch.nn.Module):
    """One causal attention over (batch, 16, 32), the mask made in forward from arange."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(32, 96)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        seq = torch.arange(16)
        mask = torch.where(seq[None, :] <= seq[:, None], 0.0, float("-inf"))
        scores = q @ k.transpose(-1, -2) / 32**0.5 + mask
        return scores.softmax(-1) @ v


def test_a_package_computes_its_mask_once_and_agrees_with_eager():
    """The package of a causal attention: its compiled module holds the mask as a constant
    (no arange left), and the package agrees with eager on another input."""
    model = _Decoder().eval()
    example = torch.randn(2, 16, 32)
    program, _, args = whole_program(model, (example,))
    compiled = program.compiled_module()
    targets = {str(n.target) for n in compiled.graph.nodes}
    assert "aten.arange.start_step" not in targets and "aten.arange.default" not in targets
    assert any(n.op == "get_attr" and n.target.startswith("_folded_") for n in compiled.graph.nodes)
    runner = _load(aot_inductor.compile_package(program))
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        expected = model(x)
    (got,) = runner(*[x if a is example else a for a in args])
    torch.testing.assert_close(got, expected)


def _load(data: bytes):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="byoc_torch_test_")) / "p.pt2"
    path.write_bytes(data)
    return torch._inductor.aoti_load_package(str(path))
