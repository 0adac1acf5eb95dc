"""Errors at load, typed and naming the file, for a damaged compiled part inside a pickle;
the user's input names under torch.compile (issue 22 item 6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import byoc_torch
from byoc_torch import torch_library
from byoc_torch.testing.processes import fresh_python


class Erfinv(nn.Module):
    def forward(self, x):
        return torch.special.erfinv(torch.tanh(x)) + torch.relu(x)


LOAD = """
import sys, torch, byoc_torch
try:
    torch.load(sys.argv[1], weights_only=False)
except Exception as err:
    print(type(err).__name__)
    print(err)
"""


def test_a_damaged_compiled_part_in_a_pickle_fails_the_load_naming_the_file(tmp_path):
    compiled = byoc_torch.compile(Erfinv(), (torch.randn(4, 8),), placement="tvm")
    path = tmp_path / "parent.pt"
    torch.save(nn.Sequential(nn.Linear(8, 8), compiled), path)
    data = bytearray(path.read_bytes())
    artifact = torch_library.artifact_of(compiled.torch_executable)
    # Pickle protocol 2 stores bytes as latin-1 text, UTF-8 encoded: only bytes below 0x80 are
    # stored as they are, so the damage goes into an ASCII window past the artifact's start.
    windows = range(len(artifact) // 4, len(artifact) - 64)
    start = next(k for k in windows if max(artifact[k : k + 64]) < 0x80)
    at = bytes(data).find(artifact[start : start + 64])
    assert at > 0
    data[at + 10] ^= 0x40
    path.write_bytes(bytes(data))
    script = tmp_path / "load.py"
    script.write_text(LOAD)
    proc = fresh_python(str(script), str(path))
    assert proc.returncode == 0, proc.stderr
    kind, message = proc.stdout.splitlines()[:2]
    assert kind == "ArtifactError"
    assert message == (
        f"byoc_torch.load: {path} (a compiled model pickled inside it): checksum mismatch "
        "(SHA-256): the file is damaged"
    )


@pytest.fixture
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_torch_compile_names_inputs_as_the_user_does(_fresh_dynamo):
    made = []
    backend = byoc_torch.dynamo_backend(placement="tvm")

    def recording(gm, example_inputs):
        run = backend(gm, example_inputs)
        made.append(run.compiled)
        return run

    def scaled(x, mask):
        return torch.special.erfinv(torch.tanh(x)) * mask

    fn = torch.compile(scaled, backend=recording)
    x, mask = torch.randn(4, 8), torch.ones(4, 8)
    torch.testing.assert_close(fn(x, mask), scaled(x, mask))
    assert [spec.name for spec in made[0].signature.inputs] == ["x", "mask"]
    with pytest.raises(byoc_torch.InputError, match=r"input 0 \('x'\) requires grad"):
        fn(torch.randn(4, 8, requires_grad=True), mask)

    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
    compiled = torch.compile(model, backend=recording)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    # Dynamo passes the module (L['fn']) parameters and the call's args (L['args'][0]).
    assert [spec.name for spec in made[-1].signature.inputs] == [
        "fn_0_weight",
        "fn_0_bias",
        "args_0",
    ]
    with pytest.raises(byoc_torch.InputError, match=r"input 0 \('fn_0_weight'\) requires grad"):
        compiled(x)  # grad mode on: the Linear's weight requires grad


LOAD_ARCHIVE = """
import sys, torch, byoc_torch
try:
    if sys.argv[1].endswith(".pt2"):
        torch.export.load(sys.argv[1])
    else:
        torch.jit.load(sys.argv[1])
    print("loaded")
except Exception as err:
    print(type(err).__name__)
    print(err)
"""


def test_a_damaged_compiled_part_in_a_torchscript_or_pt2_archive_fails_the_load(tmp_path):
    """The runtime checks the seal when the archive is unpickled, not at the first call."""
    compiled = byoc_torch.compile(Erfinv(), (torch.randn(4, 8),), placement="tvm")
    with torch.no_grad():
        parent = nn.Sequential(nn.Linear(8, 8), compiled).eval()
        torch.jit.save(torch.jit.trace(parent, (torch.randn(4, 8),)), tmp_path / "traced.pt")
        ep = torch.export.export(parent, (torch.randn(4, 8),))
        torch.export.save(ep, tmp_path / "parent.pt2")
    artifact = torch_library.artifact_of(compiled.torch_executable)
    script = tmp_path / "load.py"
    script.write_text(LOAD_ARCHIVE)
    for name in ("traced.pt", "parent.pt2"):
        path = tmp_path / name
        data = bytearray(path.read_bytes())
        at = bytes(data).find(artifact[len(artifact) // 2 : len(artifact) // 2 + 64])
        assert at > 0  # both archives store the artifact tensor's bytes as they are
        data[at + 10] ^= 0x40
        path.write_bytes(bytes(data))
        proc = fresh_python(str(script), str(path))
        assert proc.returncode == 0, proc.stderr
        kind, message = proc.stdout.splitlines()[:2]
        assert kind == "ValueError", (name, proc.stdout)
        assert message.startswith(
            "ArtifactError: byoc_torch.load: a compiled part inside a TorchScript or pickle "
            "archive being loaded: checksum mismatch (SHA-256): the file is damaged"
        ), (name, message)
