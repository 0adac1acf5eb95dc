"""export -> load, in this process and in a fresh one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import byoc_torch
from byoc_torch.models import get_example


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    model, inputs = get_example("demo")
    compiled = byoc_torch.compile(model, inputs)
    path = compiled.export(tmp_path_factory.mktemp("artifact") / "demo.so")
    return model, inputs, compiled, path


def test_load_in_same_process(demo):
    model, inputs, compiled, path = demo
    loaded = byoc_torch.load(path)
    with torch.no_grad():
        expected = model(*inputs)
    torch.testing.assert_close(loaded(*inputs), expected, rtol=1e-4, atol=1e-4)
    assert loaded.num_torch_subgraphs() == compiled.num_torch_subgraphs() >= 1


def test_load_in_fresh_process_gives_same_outputs(demo, tmp_path):
    _, example, compiled, path = demo
    torch.manual_seed(1)
    inputs = tuple(torch.randn_like(x) for x in example)  # not the example inputs
    assert not any(torch.equal(a, b) for a, b in zip(inputs, example, strict=True))
    torch.save(inputs, tmp_path / "inputs.pt")
    expected = compiled(*inputs)
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch, byoc_torch
        m = byoc_torch.load({str(path)!r})
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        out = m(*inputs)
        torch.save(out, {str(tmp_path / "got.pt")!r})
        print("subgraphs", m.num_torch_subgraphs())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"subgraphs {compiled.num_torch_subgraphs()}" in proc.stdout
    got = torch.load(tmp_path / "got.pt")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_loaded_module_checks_inputs(demo):
    loaded = byoc_torch.load(demo[3])
    with pytest.raises(ValueError, match=r"input 0 \('x'\) has shape"):
        loaded(torch.rand(2, 3, 8, 8))


def test_missing_artifact():
    with pytest.raises(FileNotFoundError, match="no artifact at"):
        byoc_torch.load("/nonexistent/model.so")


def test_corrupt_artifact(tmp_path):
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"not a shared object at all")
    with pytest.raises(ValueError, match=f"{bad}: no byoc_torch seal"):
        byoc_torch.load(bad)
    with pytest.raises(ValueError, match=f"{bad}: not a 64-bit little-endian ELF"):
        byoc_torch.load(bad, allow_unsealed=True)


def test_artifact_without_byoc_torch_signature(tmp_path):
    import tvm
    from tvm import relax

    x = relax.Var("x", relax.TensorType([2], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(x)
    path = tmp_path / "plain.so"
    relax.build(bb.get(), target="llvm").export_library(str(path))
    assert tvm.runtime.load_module(str(path)) is not None
    with pytest.raises(ValueError, match="no byoc_torch seal"):
        byoc_torch.load(path)
    with pytest.raises(ValueError, match=r"carries no byoc_torch signature.*export_executable"):
        byoc_torch.load(path, allow_unsealed=True)


CUSTOM_FRESH = textwrap.dedent(
    """
    import sys, torch, byoc_torch
    if sys.argv[2] == "register":
        import byoc_torch.testing.custom_ops  # the op library, registered before loading
    try:
        m = byoc_torch.load(sys.argv[1])
    except byoc_torch.UnregisteredOpError as err:
        print(type(err).__name__, err)
        sys.exit(3)
    torch.save(m(torch.linspace(-2, 2, 12).reshape(3, 4)), sys.argv[3])
    """
)


def test_model_with_a_custom_op_exports_and_loads_where_the_op_is_registered(tmp_path):
    from byoc_torch.testing.custom_ops import scale_shift

    class WithCustomOp(torch.nn.Module):
        def forward(self, x):
            return torch.relu(scale_shift(torch.tanh(x), 2.0, 0.5))

    model = WithCustomOp()
    compiled = byoc_torch.compile(model, (torch.randn(3, 4),), placement="tvm")
    assert compiled.torch_ops == ["byoc_torch_testing.scale_shift.default"]
    path = compiled.export(tmp_path / "custom.so")
    out = tmp_path / "got.pt"
    run = [sys.executable, "-c", CUSTOM_FRESH, str(path)]
    proc = subprocess.run([*run, "register", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    x = torch.linspace(-2, 2, 12).reshape(3, 4)  # not the example input
    torch.testing.assert_close(torch.load(out), model(x))
    proc = subprocess.run([*run, "skip", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "UnregisteredOpError" in proc.stdout
    assert "torch.ops.byoc_torch_testing.scale_shift" in proc.stdout
