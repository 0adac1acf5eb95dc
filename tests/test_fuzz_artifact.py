"""Corrupt or hostile serialized torch modules: a clear Python error every time, never a crash.

A few hundred mutated artifacts here (hypothesis); benchmarks/fuzz_artifact.py runs 10,000+.
"""

from __future__ import annotations

import struct

import pytest
import tvm_ffi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byoc_torch.testing.artifacts import reseal, valid_artifact

load_bytes = tvm_ffi.get_global_func("ffi.Module.load_from_bytes.torch")


VALID = valid_artifact()


def check(data: bytes) -> None:
    """Loading either works or raises an exception that says what is wrong."""
    try:
        load_bytes(data)
    except (ValueError, RuntimeError, TypeError) as err:
        assert "byoc_torch" in str(err), f"unclear error: {err}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, len(VALID) * 8 - 1), min_size=1, max_size=8))
def test_bit_flips(bits):
    data = bytearray(VALID)
    for b in bits:
        data[b // 8] ^= 1 << (b % 8)
    check(bytes(data))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(VALID) - 1))
def test_truncation(n):
    check(VALID[:n])


# Offsets of length/count fields: metadata length (20), function count (28 + len(metadata)),
# first symbol length (right after the count), its input count (after the symbol).
META_LEN = struct.unpack_from("<Q", VALID, 20)[0]
SYM_LEN = struct.unpack_from("<Q", VALID, 32 + META_LEN)[0]
FIELDS = [
    (20, "<Q"),
    (28 + META_LEN, "<I"),
    (32 + META_LEN, "<Q"),
    (40 + META_LEN + SYM_LEN, "<I"),
    (44 + META_LEN + SYM_LEN, "<I"),
]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(FIELDS), st.sampled_from([2**31 - 1, 2**32 - 1, 2**63, 2**64 - 1, 10**9]))
def test_huge_lengths_and_counts(field, value):
    """Resealed, so the length checks themselves are exercised (no huge allocation)."""
    offset, fmt = field
    data = bytearray(VALID)
    size = struct.calcsize(fmt)
    struct.pack_into(fmt, data, offset, value % (1 << (8 * size)))
    with pytest.raises(ValueError, match="byoc_torch"):
        load_bytes(reseal(bytes(data)))


@settings(max_examples=100, deadline=None)
@given(st.integers(20, len(VALID) - 1))
def test_resealed_truncation(n):
    with pytest.raises(ValueError, match="corrupt byoc_torch artifact"):
        load_bytes(reseal(VALID[:n]))


def test_damage_is_caught_by_the_checksum():
    data = bytearray(VALID)
    data[-10] ^= 0x40
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_bytes(bytes(data))


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=512))
def test_random_bytes(data):
    check(data)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(8, len(VALID)))
def test_random_bytes_after_a_valid_header(tail, cut):
    check(VALID[:cut] + tail)


def test_valid_artifact_still_loads():
    mod = load_bytes(VALID)
    assert sorted(str(s) for s in mod["__byoc_torch_symbols__"]()) == ["f", "g"]


@pytest.mark.parametrize("version", [0, 4, 255])  # 1 to 3 are read
def test_other_format_versions_are_refused(version):
    data = bytearray(VALID)
    struct.pack_into("<I", data, 8, version)
    with pytest.raises(ValueError, match=f"format version {version}"):
        load_bytes(bytes(data))


def test_a_format_2_artifact_still_loads():
    """Format 2 is format 3 without the package-only byte that ends each function's record
    (here the last byte before g's symbol, and the last byte of all): rewritten that way and
    resealed, it loads, and its subgraphs are not package-only."""
    g_symbol = struct.pack("<Q", 1) + b"g"
    at = VALID.index(g_symbol)
    assert VALID[at - 1] == 0 and VALID[-1] == 0  # the two package-only flags
    older = bytearray(VALID[: at - 1] + VALID[at:-1])
    struct.pack_into("<I", older, 8, 2)
    mod = load_bytes(reseal(bytes(older)))
    specs = list(mod["__byoc_torch_specs__"]())
    assert [(str(s.symbol), s.package_only) for s in specs] == [("f", False), ("g", False)]
    with pytest.raises(ValueError, match="trailing bytes"):
        load_bytes(reseal(bytes(older) + b"\x00"))  # a format-2 record has no flag to read
