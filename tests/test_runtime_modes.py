"""Per-instance measurement state of the torch runtime: modes, fast path, counters, threads."""

from __future__ import annotations

import pytest
import torch

from byoc_torch.compiled import running_torch_modules
from byoc_torch.runtime import SubgraphSpec, make_runtime_module, measure
from byoc_torch.tensors import to_tvm
from byoc_torch.testing.concurrency import hammer

DOUBLE = "def forward(self, a: Tensor) -> Tensor:\n    return a * 2\n"
CHOLESKY = "def forward(self, a: Tensor) -> Tensor:\n    return torch.linalg_cholesky(a)\n"


def doubling_module():
    return make_runtime_module([SubgraphSpec("f", DOUBLE, 1)])


def call(mod, x: torch.Tensor) -> torch.Tensor:
    return torch.from_dlpack(mod["f"](to_tvm(x)))


def test_replay_returns_the_recorded_outputs_without_running_libtorch():
    mod = doubling_module()
    first, second = torch.ones(3), torch.full((3,), 5.0)
    assert measure.set_mode(mod, "record") == "normal"
    torch.testing.assert_close(call(mod, first), first * 2)
    assert measure.set_mode(mod, "replay") == "record"
    # Same shape, other values: replay hands back what was recorded, not second * 2.
    torch.testing.assert_close(call(mod, second), first * 2)
    assert measure.set_mode(mod, "normal") == "replay"
    torch.testing.assert_close(call(mod, second), second * 2)


def test_two_instances_with_different_modes_do_not_affect_each_other():
    a, b = doubling_module(), doubling_module()
    x, y = torch.ones(4), torch.arange(4.0)
    measure.set_mode(a, "record")
    call(a, x)
    measure.set_mode(a, "replay")
    measure.set_fast_path(b, False)
    torch.testing.assert_close(call(b, y), y * 2)  # b runs LibTorch: fresh result
    torch.testing.assert_close(call(a, y), x * 2)  # a replays its own recording
    # b never recorded: switching it to replay finds nothing, whatever a holds.
    measure.set_mode(b, "replay")
    with pytest.raises(RuntimeError, match=r"subgraph 'f': replay mode without a recorded call"):
        call(b, y)
    assert measure.set_mode(a, "normal") == "replay"
    assert measure.set_mode(b, "normal") == "replay"
    assert measure.set_fast_path(a, True) is True  # a's fast path was never touched


def test_replay_refuses_inputs_of_another_shape_or_dtype():
    mod = doubling_module()
    measure.set_mode(mod, "record")
    call(mod, torch.ones(2, 3))
    measure.set_mode(mod, "replay")
    with pytest.raises(
        ValueError,
        match=r"subgraph 'f': replay mode, but input 0 is Float\[4, 3\] and the recorded call's "
        r"was Float\[2, 3\]; record again with these inputs",
    ):
        call(mod, torch.ones(4, 3))
    with pytest.raises(ValueError, match=r"input 0 is Double\[2, 3\] and the recorded call's"):
        call(mod, torch.ones(2, 3, dtype=torch.float64))
    # The recording survives a refused call, and reset drops it.
    torch.testing.assert_close(call(mod, torch.zeros(2, 3)), torch.full((2, 3), 2.0))
    measure.reset_stats(mod)
    with pytest.raises(RuntimeError, match="replay mode without a recorded call"):
        call(mod, torch.zeros(2, 3))


def test_unknown_mode_is_refused_and_leaves_the_mode_alone():
    mod = doubling_module()
    measure.set_mode(mod, "record")
    with pytest.raises(
        ValueError,
        match=r"byoc_torch: measurement mode must be 'normal', 'record' or 'replay', got 'fast'",
    ):
        measure.set_mode(mod, "fast")
    assert measure.set_mode(mod, "normal") == "record"


def test_fast_path_switch_is_per_instance():
    """The interpreter's error carries a TorchScript traceback; the dispatcher path's does not."""
    fast, slow = (make_runtime_module([SubgraphSpec("c", CHOLESKY, 1)]) for _ in range(2))
    assert measure.set_fast_path(slow, False) is True
    bad = to_tvm(-torch.eye(3))
    with pytest.raises(RuntimeError) as fast_err:
        fast["c"](bad)
    with pytest.raises(RuntimeError) as slow_err:
        slow["c"](bad)
    assert "(aten::linalg_cholesky) raised inside LibTorch" in str(fast_err.value)
    assert "TorchScript interpreter" not in str(fast_err.value)
    assert "TorchScript interpreter" in str(slow_err.value)
    assert measure.stats(fast)["c"].single_op and measure.stats(slow)["c"].single_op


@pytest.mark.parametrize("mode_name", ["normal", "record", "replay"])
def test_counters_add_up_exactly_under_four_threads(mode_name):
    mod = doubling_module()
    x = torch.ones(8)
    if mode_name == "replay":
        measure.set_mode(mod, "record")
        call(mod, x)
    measure.set_mode(mod, mode_name)
    before = measure.stats(mod)["f"].calls
    hammer(4, 500, lambda k: torch.equal(call(mod, x), x * 2))
    s = measure.stats(mod)["f"]
    assert s.calls - before == 4 * 500
    if mode_name != "replay":
        assert s.torch_ns > 0
    measure.reset_stats(mod)
    assert measure.stats(mod)["f"] == (0, 0, True)


def test_modes_reach_the_calls_of_a_compiled_model():
    """What benchmarks/end_to_end.py relies on: the VM calls the very module instance."""
    import byoc_torch
    from byoc_torch.models import get_example

    model, (x,) = get_example("demo")
    compiled = byoc_torch.compile(model, (x,))
    mods = running_torch_modules(compiled.executable)
    assert mods and compiled.num_torch_subgraphs() > 0
    other = torch.randn_like(x) * 3
    expected_x, expected_other = compiled(x), compiled(other)
    with measure.mode(mods, "record"):
        compiled(x)
    with measure.mode(mods, "replay"):
        replayed = compiled(other)  # LibTorch's part is x's, TVM's part is other's
    assert any(not torch.equal(r, e) for r, e in zip(replayed, expected_other, strict=True)), (
        "replay ran LibTorch"
    )
    for m in mods:
        assert measure.set_mode(m, "normal") == "normal"  # the context manager restored it
    for got, want in zip(compiled(other), expected_other, strict=True):
        torch.testing.assert_close(got, want)
    for got, want in zip(compiled(x), expected_x, strict=True):
        torch.testing.assert_close(got, want)
