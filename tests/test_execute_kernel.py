"""The op ``torch.ops.byoc_torch.execute``'s C++ kernel (runtime/executable.h) in this process:
its SHA-256 against hashlib, its seal check against artifact_file.verify_bytes (the same
verdict and message on every kind of damage), a damaged artifact or a mismatched signature
refused before anything is loaded, the input checks' errors (the messages of the Python
path), concurrent calls each right, and the executable of a model this process holds reused,
not loaded again. The C++
programs without Python are in tests/test_deploy_cpp.py."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import struct

import pytest
import torch
import tvm_ffi
from torch.export import Dim

import byoc_torch
from byoc_torch import torch_library
from byoc_torch.artifact_file import MAGIC, TRAILER_SIZE, load_bytes, seal_bytes, verify_bytes
from byoc_torch.errors import ArtifactError, InputError, InputTypeError
from byoc_torch.runtime.module import TorchRuntime
from byoc_torch.testing.concurrency import hammer

_SHA256 = tvm_ffi.get_global_func("byoc_torch.Sha256")
_VERIFY = tvm_ffi.get_global_func("byoc_torch.VerifySealedArtifact")


class Erfinv(torch.nn.Module):
    def forward(self, x):
        return torch.special.erfinv(torch.tanh(x)) + torch.relu(x)


@pytest.fixture(scope="module")
def compiled():
    return byoc_torch.compile(Erfinv(), (torch.randn(4, 8),), placement="tvm")


@pytest.mark.parametrize("size", [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 70001])
def test_sha256_matches_hashlib(size):
    data = random.Random(size).randbytes(size)
    assert bytes(_SHA256(data)) == hashlib.sha256(data).digest()


def _damaged(sealed: bytes) -> dict[str, bytes]:
    payload_size = len(sealed) - TRAILER_SIZE
    flipped = bytearray(sealed)
    flipped[payload_size // 2] ^= 0x10
    version = bytearray(sealed)
    struct.pack_into("<I", version, len(sealed) - 16, 7)
    trailer_size = bytearray(sealed)
    struct.pack_into("<I", trailer_size, len(sealed) - 12, 65)
    first_magic = bytearray(sealed)
    first_magic[payload_size] ^= 0xFF
    return {
        "cut 1": sealed[:-1],
        "cut 10": sealed[:-10],
        "cut 64": sealed[:-64],
        "cut 100": sealed[:-100],
        "bit flip": bytes(flipped),
        "garbage after": sealed + b"\0" * 7,
        "seal twice": sealed + sealed[-TRAILER_SIZE:],
        "inserted": sealed[:10] + b"xyz" + sealed[10:],
        "dropped": sealed[:10] + sealed[13:],
        "version 7": bytes(version),
        "trailer length": bytes(trailer_size),
        "first magic": bytes(first_magic),
        "magic only": MAGIC,
    }


def test_seal_check_in_cpp_agrees_with_python():
    sealed = seal_bytes(random.Random(0).randbytes(5000))
    assert _VERIFY(sealed, "x") == len(sealed) - TRAILER_SIZE
    assert verify_bytes(sealed, "x") == sealed[:-TRAILER_SIZE]
    for name, data in _damaged(sealed).items():
        with pytest.raises(ArtifactError) as python:
            verify_bytes(data, "x")
        with pytest.raises(ArtifactError) as cpp:
            _VERIFY(data, "x")
        if "no byoc_torch seal" in str(python.value):  # C++ has no allow_unsealed to offer
            assert str(cpp.value).startswith("byoc_torch.load: x: no byoc_torch seal: "), name
            assert str(cpp.value).endswith("runs sealed artifacts only"), name
        else:
            assert str(cpp.value) == str(python.value), name


def test_op_refuses_a_damaged_artifact_before_loading(compiled):
    data = bytearray(torch_library.artifact_of(compiled.torch_executable))
    data[len(data) // 3] ^= 0x01
    obj = torch_library.executable_object(bytes(data))
    with pytest.raises(
        ValueError,
        match=re.escape("the artifact a byoc_torch.Executable holds: checksum mismatch (SHA-256)"),
    ):
        torch.ops.byoc_torch.execute(obj, [torch.randn(4, 8)])


def test_the_signature_lives_in_the_artifact_alone(compiled):
    """The object pickles its artifact and no copy of the signature; the signature it reports
    (what torch.export's fake kernel reads) is the one the artifact's runtime module stores."""
    artifact = torch_library.artifact_of(compiled.torch_executable)
    obj = torch_library.executable_object(artifact)
    (text, data), _ = obj.__getstate__()
    assert text == "" and data.numpy().tobytes() == artifact
    (runtime,) = TorchRuntime.find(load_bytes(artifact))  # a fresh load of the same bytes
    stored = runtime.metadata()
    assert obj.signature() == stored
    assert json.loads(stored) == json.loads(compiled.signature.to_json())


@pytest.mark.parametrize(
    "inputs, python_error, torch_error",
    [
        ([torch.randn(4, 8, dtype=torch.float64)], InputTypeError, TypeError),
        ([torch.randn(4, 9)], InputError, ValueError),
        ([torch.randn(4)], InputError, ValueError),
        ([torch.randn(4, 8), torch.randn(4, 8)], InputTypeError, TypeError),
    ],
)
def test_op_input_errors_are_the_python_paths(compiled, inputs, python_error, torch_error):
    with pytest.raises(python_error) as python:
        compiled(*inputs)
    with pytest.raises(torch_error) as cpp:
        torch.ops.byoc_torch.execute(compiled.torch_executable, inputs)
    assert str(python.value) in str(cpp.value)


def test_op_takes_strided_and_unaligned_inputs(compiled):
    strided = torch.randn(8, 4).t()  # (4, 8), not compact
    unaligned = torch.randn(33)[1:].view(4, 8)  # starts 4 bytes past an aligned address
    assert not strided.is_contiguous() and unaligned.data_ptr() % 64 != 0
    for x in (strided, unaligned):
        (out,) = torch.ops.byoc_torch.execute(compiled.torch_executable, [x])
        torch.testing.assert_close(out, Erfinv()(x))


def _loaded_copies() -> set[str]:
    """The artifact copies mapped into this process (each load maps its private copy)."""
    with open(f"/proc/{os.getpid()}/maps") as fh:
        return {line.split()[5] for line in fh if "byoc_torch_load_" in line}


def test_op_reuses_the_executable_of_a_model_this_process_holds(compiled):
    before = _loaded_copies()
    obj = torch_library.executable_object(torch_library.artifact_of(compiled.torch_executable))
    x = torch.randn(4, 8)
    (out,) = torch.ops.byoc_torch.execute(obj, [x])
    torch.testing.assert_close(out, Erfinv()(x))
    assert _loaded_copies() == before


def test_op_checks_dynamic_dims_against_their_range():
    batch = Dim("batch", min=2, max=8)
    compiled = byoc_torch.compile(
        Erfinv(), (torch.randn(4, 8),), dynamic_shapes={"x": {0: batch}}, placement="tvm"
    )
    x = torch.randn(7, 8)  # inside the range, not the example's size
    (out,) = torch.ops.byoc_torch.execute(compiled.torch_executable, [x])
    torch.testing.assert_close(out, Erfinv()(x))
    for bad in (torch.randn(9, 8), torch.randn(1, 8)):
        with pytest.raises(InputError) as python:
            compiled(bad)
        with pytest.raises(ValueError) as cpp:
            torch.ops.byoc_torch.execute(compiled.torch_executable, [bad])
        assert "outside the range the model was exported for" in str(python.value)
        assert str(python.value) in str(cpp.value)


class CatsHead(torch.nn.Module):
    def forward(self, x, y):
        return torch.cat([x, x[:2]]) * y


def test_derived_dims_are_checked_against_their_symbol():
    """y's dim 0 is torch.export's derived dim n + 2 (the symbol "s.. + 2"): a y that does not
    fit x is an InputError on both paths (it was TVM's match_cast assertion), naming both
    sizes; one that fits runs."""
    n = Dim("n", min=3, max=64)
    compiled = byoc_torch.compile(
        CatsHead(),
        (torch.randn(5, 4), torch.randn(7, 4)),
        dynamic_shapes={"x": {0: n}, "y": {0: n + 2}},
        placement="tvm",
    )
    (derived,) = compiled.signature.derived.items()
    base = compiled.signature.inputs[0].shape[0]
    assert derived == (f"{base} + 2", (base, 1, 2))
    x, y = torch.randn(9, 4), torch.randn(11, 4)
    torch.testing.assert_close(compiled(x, y), CatsHead()(x, y))
    bad = torch.randn(12, 4)
    with pytest.raises(InputError) as python:
        compiled(x, bad)
    with pytest.raises(ValueError) as cpp:
        torch.ops.byoc_torch.execute(compiled.torch_executable, [x, bad])
    assert str(python.value) == (
        f"byoc_torch: input 1 ('y') dim 0 ({base} + 2) is 12, but {base} is 9, which makes it 11"
    )
    assert str(python.value) in str(cpp.value)


def test_op_calls_from_many_threads_at_once_are_each_right(compiled):
    """Each concurrent call runs on a VM of its own (the kernel's pool): a shared VM's
    registers would mix the threads' answers."""
    inputs = [torch.randn(4, 8) for _ in range(6)]
    expected = [torch.ops.byoc_torch.execute(compiled.torch_executable, [x])[0] for x in inputs]

    def call_is_right(k: int) -> bool:
        (out,) = torch.ops.byoc_torch.execute(compiled.torch_executable, [inputs[k]])
        return torch.equal(out, expected[k])

    hammer(6, 200, call_is_right)
