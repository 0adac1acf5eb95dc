"""A parent model holding a compiled part, saved every way PyTorch saves models and loaded in a
fresh process with only ``import byoc_torch``: torch.export (.pt2), torch.jit.trace and
torch.jit.script (TorchScript archives), torch.save (pickle). Every load runs inputs other
than the example's (a different batch size too), so an answer baked in at save time fails.
Loading without byoc_torch fails with an error that says to import it."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.export import Dim

import byoc_torch

ROOT = Path(__file__).resolve().parents[1]


class Erfinv(nn.Module):
    def forward(self, x):
        return torch.special.erfinv(torch.tanh(x)) + torch.relu(x)  # erfinv: LibTorch


def _parent(compiled: nn.Module) -> nn.Sequential:
    """An importable parent (nn.Sequential pickles by reference) with its own weights."""
    return nn.Sequential(nn.Linear(8, 8), compiled, nn.ReLU())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The parent saved four ways, and inputs/expected outputs for batch 6 (example: 4)."""
    out = tmp_path_factory.mktemp("saved")
    batch = Dim("batch", min=2, max=64)
    compiled = byoc_torch.compile(
        Erfinv(), (torch.randn(4, 8),), dynamic_shapes={"x": {0: batch}}, placement="tvm"
    )
    parent = _parent(compiled).eval()
    example = torch.randn(4, 8)
    x = torch.randn(6, 8)
    with torch.no_grad():
        expected = parent[2](Erfinv()(parent[0](x)))
        torch.save({"x": x, "expected": expected}, out / "io.pt")
        ep = torch.export.export(parent, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(ep, out / "parent.pt2")
        torch.jit.save(torch.jit.trace(parent, (example,)), out / "traced.pt")
        torch.save(parent, out / "pickled.pt")
        # last: scripting swaps the compiled child for its TorchScript form in place
        torch.jit.save(torch.jit.script(parent), out / "scripted.pt")
    return out


LOADERS = {
    "pt2": "torch.export.load(str(d / 'parent.pt2')).module()",
    "trace": "torch.jit.load(str(d / 'traced.pt'))",
    "script": "torch.jit.load(str(d / 'scripted.pt'))",
    "pickle": "torch.load(d / 'pickled.pt', weights_only=False)",
}


def _run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


@pytest.mark.parametrize("how", sorted(LOADERS))
def test_parent_loads_in_fresh_process_with_import_byoc_torch(saved, how):
    proc = _run(
        f"""
        import sys
        from pathlib import Path
        import torch
        import byoc_torch
        d = Path({str(saved)!r})
        io = torch.load(d / "io.pt")
        model = {LOADERS[how]}
        with torch.no_grad():
            got = model(io["x"])
        torch.testing.assert_close(got, io["expected"])
        assert got.shape == (6, 8)
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


@pytest.mark.parametrize("how", ["pt2", "trace", "script"])
def test_loading_without_byoc_torch_says_to_import_it(saved, how):
    proc = _run(
        f"""
        import sys
        from pathlib import Path
        import torch
        d = Path({str(saved)!r})
        try:
            {LOADERS[how]}
        except Exception as err:
            print(type(err).__name__, err)
        assert "byoc_torch" not in sys.modules
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "torch.classes.byoc_torch.Executable_import_byoc_torch_to_load" in text


def test_pickle_imports_byoc_torch_itself(saved):
    """A pickle names byoc_torch's loader, so unpickling imports byoc_torch."""
    proc = _run(
        f"""
        import sys
        from pathlib import Path
        import torch
        d = Path({str(saved)!r})
        io = torch.load(d / "io.pt")
        assert "byoc_torch" not in sys.modules
        model = {LOADERS["pickle"]}
        assert "byoc_torch" in sys.modules
        with torch.no_grad():
            torch.testing.assert_close(model(io["x"]), io["expected"])
        print(type(model[1]).__name__, model[1].torch_ops)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "CompiledModule ['aten.erfinv.default']"


def test_deepcopy_and_in_process_pickle_roundtrip():
    compiled = byoc_torch.compile(Erfinv(), (torch.randn(4, 8),), placement="tvm")
    buf = io.BytesIO()
    torch.save(compiled, buf)
    buf.seek(0)
    copies = [copy.deepcopy(compiled), torch.load(buf, weights_only=False)]
    x = torch.randn(4, 8)
    for c in copies:
        assert c is not compiled and isinstance(c, byoc_torch.CompiledModule)
        torch.testing.assert_close(c(x), Erfinv()(x))
        assert c.torch_ops == compiled.torch_ops
