"""The sealed artifact file (byoc_torch/artifact_file.py): every damaged file is refused with an
ArtifactError naming the file and what is wrong, before the dynamic loader sees it; a sealed
file still loads with plain tvm.runtime.load_module; the whole-file fuzz runs a few hundred
cases (benchmarks/fuzz_artifact.py; its 10,000-case figures are in docs/security.md)."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import tvm
from tvm import relax

import byoc_torch
from byoc_torch import artifact_file
from byoc_torch.artifact_file import MAGIC, TRAILER_SIZE, seal_bytes, verify_bytes
from byoc_torch.errors import ArtifactError

ROOT = Path(__file__).resolve().parent.parent


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.special.erfinv(torch.tanh(self.fc(x)) * 0.9)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    model = Model().eval()
    compiled = byoc_torch.compile(model, (torch.randn(4, 8),), placement="tvm")
    path = compiled.export(tmp_path_factory.mktemp("sealed") / "m.so")
    return model, compiled, path, path.read_bytes()


def refused(tmp_path: Path, data: bytes, match: str, **kwargs) -> None:
    bad = tmp_path / "bad.so"
    bad.write_bytes(data)
    with pytest.raises(ArtifactError, match=match) as info:
        byoc_torch.load(bad, **kwargs)
    assert str(bad) in str(info.value)


def test_export_seals_and_load_verifies(artifact):
    model, _, path, data = artifact
    assert data[-len(MAGIC) :] == MAGIC
    trailer = struct.unpack_from("<8sQ32sII8s", data, len(data) - TRAILER_SIZE)
    payload = data[:-TRAILER_SIZE]
    assert trailer == (MAGIC, len(payload), hashlib.sha256(payload).digest(), 1, 64, MAGIC)
    x = torch.randn(4, 8) * 2
    torch.testing.assert_close(byoc_torch.load(path)(x), model(x))


def test_plain_load_module_ignores_the_seal(artifact):
    """ELF loaders ignore trailing bytes: TVM alone still loads and runs a sealed file."""
    model, _, path, _ = artifact
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    x = torch.randn(4, 8) * 2
    out = vm["main"](tvm.runtime.from_dlpack(x))
    torch.testing.assert_close(torch.from_dlpack(out[0]), model(x))


@pytest.mark.parametrize(
    ("cut", "match"),
    [
        (1, "damaged or truncated seal"),
        (TRAILER_SIZE // 2, "damaged or truncated seal"),
        (TRAILER_SIZE, "no byoc_torch seal: the file is truncated"),
        (5000, "no byoc_torch seal: the file is truncated"),
    ],
)
def test_truncated_file_is_refused(artifact, tmp_path, cut, match):
    refused(tmp_path, artifact[3][:-cut], match)


def test_bit_flip_anywhere_in_the_payload_is_refused(artifact, tmp_path):
    data = bytearray(artifact[3])
    for at in (0, 100, len(data) // 2, len(data) - TRAILER_SIZE - 1):
        flipped = bytearray(data)
        flipped[at] ^= 0x10
        refused(tmp_path, bytes(flipped), r"checksum mismatch \(SHA-256\)")


def test_trailing_garbage_is_refused(artifact, tmp_path):
    refused(tmp_path, artifact[3] + b"\0" * 7, "trailing garbage: 7 byte")
    # Sealed twice: the outer seal does not cover the inner one.
    refused(tmp_path, artifact[3] + artifact[3][-TRAILER_SIZE:], r"64 unexpected byte\(s\) before")


def test_inserted_bytes_are_refused(artifact, tmp_path):
    data = artifact[3]
    refused(tmp_path, data[:10] + b"xyz" + data[10:], r"3 unexpected byte\(s\) before the seal")


def test_unknown_format_version_is_refused(artifact, tmp_path):
    data = bytearray(artifact[3])
    struct.pack_into("<I", data, len(data) - 16, 7)
    refused(tmp_path, bytes(data), "unknown artifact format version 7")


def test_damaged_seal_is_refused_even_when_unsealed_files_are_allowed(artifact, tmp_path):
    data = bytearray(artifact[3])
    data[-1] ^= 1  # the closing magic
    refused(tmp_path, bytes(data), "damaged or truncated seal", allow_unsealed=True)
    data = bytearray(artifact[3])
    data[len(data) - TRAILER_SIZE] ^= 1  # the opening magic
    refused(tmp_path, bytes(data), "damaged seal", allow_unsealed=True)


def test_unsealed_file_is_refused_unless_allowed(artifact, tmp_path):
    model, compiled, _, _ = artifact
    plain = tmp_path / "plain.so"
    compiled.executable.export_library(str(plain))
    with pytest.raises(ArtifactError, match=r"no byoc_torch seal.*allow_unsealed=True"):
        byoc_torch.load(plain)
    x = torch.randn(4, 8) * 3
    torch.testing.assert_close(byoc_torch.load(plain, allow_unsealed=True)(x), model(x))
    # Allowed, an unsealed file is still checked to be a whole ELF file.
    data = plain.read_bytes()
    refused(tmp_path, data[: len(data) // 2], "truncated ELF", allow_unsealed=True)
    refused(tmp_path, b"not a shared object", "not a 64-bit little-endian ELF", allow_unsealed=True)


def test_bytes_api_round_trip(artifact):
    """What an in-memory artifact (e.g. a pickled model) uses: export_bytes / load_bytes."""
    model, compiled, _, _ = artifact
    sealed = artifact_file.export_bytes(compiled.executable)
    assert verify_bytes(sealed, "mem") == sealed[:-TRAILER_SIZE]
    assert seal_bytes(sealed[:-TRAILER_SIZE]) == sealed
    x = torch.randn(4, 8) * 2
    torch.testing.assert_close(byoc_torch.load_bytes(sealed)(x), model(x))
    damaged = bytearray(sealed)
    damaged[5] ^= 1
    with pytest.raises(ArtifactError, match="pickled model: checksum mismatch"):
        byoc_torch.load_bytes(bytes(damaged), source="pickled model")


def test_what_is_loaded_is_what_was_verified(artifact, tmp_path, monkeypatch):
    """The loader gets a private copy of the verified bytes, never the user's path: a file
    replaced after the check cannot reach dlopen."""
    _, _, _, data = artifact
    path = tmp_path / "m.so"
    path.write_bytes(data)
    seen = []
    real = tvm.runtime.load_module

    def spy(copy):
        seen.append((copy, Path(copy).read_bytes()))
        path.write_bytes(b"replaced after the check")  # the swap a TOCTOU attack would make
        return real(copy)

    monkeypatch.setattr(artifact_file.tvm.runtime, "load_module", spy)
    artifact_file._LOADED.clear()
    byoc_torch.load(path)
    ((copy, loaded_bytes),) = seen
    assert Path(copy).resolve() != path.resolve()
    assert loaded_bytes == data[:-TRAILER_SIZE]
    assert not Path(copy).exists()  # the private copy is removed once mapped


def test_export_writes_the_sealed_bytes_the_model_holds(artifact, tmp_path, monkeypatch):
    """One artifact value: export writes the bytes sealed when the model was made (no second
    export_library run), so a loaded model is written back byte for byte, and the written
    file loads in a fresh process on another input."""
    model, compiled, _, data = artifact

    def no_second_export(*args, **kwargs):
        raise AssertionError("export ran export_library again")

    monkeypatch.setattr(tvm.runtime.Module, "export_library", no_second_export)
    again = compiled.export(tmp_path / "again.so")
    assert again.read_bytes() == data
    loaded = byoc_torch.load(again)
    assert loaded.export(tmp_path / "round.so").read_bytes() == data
    monkeypatch.undo()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, torch, byoc_torch; m = byoc_torch.load(sys.argv[1]); "
            "torch.manual_seed(7); x = torch.randn(4, 8); print(m(x).sum().item())",
            str(tmp_path / "round.so"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    torch.manual_seed(7)
    want = model(torch.randn(4, 8)).sum().item()
    assert float(proc.stdout.strip()) == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_a_model_loaded_unsealed_is_exported_sealed(artifact, tmp_path):
    model, compiled, _, _ = artifact
    plain = tmp_path / "plain.so"
    compiled.executable.export_library(str(plain))
    loaded = byoc_torch.load(plain, allow_unsealed=True)
    resealed = loaded.export(tmp_path / "resealed.so").read_bytes()
    assert resealed == seal_bytes(plain.read_bytes())
    x = torch.randn(4, 8) * 1.5
    torch.testing.assert_close(byoc_torch.load(tmp_path / "resealed.so")(x), model(x))


def test_write_file_refuses_unsealed_bytes(tmp_path):
    with pytest.raises(ArtifactError, match=r"refusing to write .*x\.so: the bytes carry no seal"):
        artifact_file.write_file(b"\x7fELF not sealed", tmp_path / "x.so")
    assert not (tmp_path / "x.so").exists()


def test_a_load_reads_the_file_once_through_artifact_file_and_hashes_once(
    artifact, tmp_path, monkeypatch
):
    """byoc_torch.load reads the file with artifact_file.read_file, and the bytes are hashed
    once (the verification pass; its digest, the seal's, keys the loaded executables)."""
    model, _, path, data = artifact
    reads, hashes = [], []
    real_read, real_sha = artifact_file.read_file, hashlib.sha256

    def read(p):
        reads.append(Path(p))
        return real_read(p)

    def sha(*args):
        hashes.append(len(args[0]) if args else 0)
        return real_sha(*args)

    monkeypatch.setattr(artifact_file, "read_file", read)
    monkeypatch.setattr(artifact_file.hashlib, "sha256", sha)
    artifact_file._LOADED.clear()
    loaded = byoc_torch.load(path)
    assert reads == [path]
    assert hashes == [len(data) - TRAILER_SIZE]
    x = torch.randn(4, 8) * 0.5
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(FileNotFoundError, match="no artifact at"):
        byoc_torch.load(tmp_path / "missing.so")


def fuzz(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    """Run the whole-file fuzz harness: (exit code, its JSON summary, its output)."""
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.fuzz_artifact", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return proc.returncode, json.loads(out.read_text()), proc.stdout[-3000:] + proc.stderr[-3000:]


def test_fuzz_whole_files(tmp_path):
    """A few hundred mutated files through the fork-server harness: no crash, hang, silent
    difference or unclear error."""
    code, summary, output = fuzz(tmp_path, "--cases", "300")
    assert code == 0, output
    totals = summary["totals"]
    assert sum(totals.values()) == 300
    assert {k: totals[k] for k in ("crash", "hang", "different", "unclear_error")} == dict.fromkeys(
        ("crash", "hang", "different", "unclear_error"), 0
    )
    assert totals["clean_error"] > 250
    assert all(sum(v.values()) > 0 for v in summary["by_kind"].values())


def test_fuzz_harness_catches_what_the_seal_prevents(tmp_path):
    """The same mutations of the file without its seal, loaded with allow_unsealed=True, crash
    the child or give silently different numbers: the harness sees and classifies both (so its
    zero counts above can fail)."""
    code, summary, output = fuzz(tmp_path, "--unsealed", "--cases", "120")
    totals = summary["totals"]
    assert code == 1, output
    assert totals["crash"] > 0 and totals["different"] > 0, totals
    crashes = [f["what"] for f in summary["failures"] if f["what"].startswith("crash")]
    assert any("SIGSEGV" in c or "SIGBUS" in c or "SIGILL" in c for c in crashes), crashes


def test_a_sealed_file_is_not_sealed_again(artifact, tmp_path):
    path = tmp_path / "twice.so"
    path.write_bytes(artifact[3])
    with pytest.raises(ArtifactError, match="already carries a byoc_torch seal"):
        artifact_file.seal_file(path)
    assert path.read_bytes() == artifact[3]
