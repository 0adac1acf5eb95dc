"""The artifact file: TVM's shared object, sealed with its length and SHA-256, verified before
the dynamic loader sees it.

Place in the data flow: between :mod:`byoc_torch.compiled` and the disk (or any byte store),
the one home of an artifact's bytes. A compiled model is sealed once (:func:`export_bytes`:
TVM's ``export_library`` output with a trailer) and holds those bytes; ``CompiledModule.export``
writes them with :func:`write_file` (atomically), pickling carries them. ``byoc_torch.load``
reads a file ONCE (:func:`read_file`), verifies the bytes it read (one SHA-256 pass; the
digest the seal records is then the executable's key) and hands exactly those bytes to TVM
through a private copy (a fresh file in a new ``0700`` directory), so what is ``dlopen``-ed is
what was verified (no time-of-check / time-of-use gap on the user's path): :func:`load_bytes`,
:func:`load_file`.

The trailer (version 1, 64 bytes, little-endian) follows the last byte of the shared object;
ELF loaders ignore trailing bytes, so ``tvm.runtime.load_module`` of a sealed file still works::

    MAGIC (8) | u64 payload length | SHA-256 of the payload (32) | u32 format version |
    u32 trailer length (64) | MAGIC (8)

A file with no MAGIC anywhere is *unsealed* (plain ``export_library`` output, or a sealed file
cut before its trailer): refused unless the caller opts in (``allow_unsealed=True``), and then
only checked to be an ELF file whose headers fit in it. A file carrying MAGIC that does not
verify is always refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import tvm

from . import _defaults
from .errors import ArtifactError, UnregisteredOpError
from .quiet import quietly

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "TRAILER_SIZE",
    "export_bytes",
    "load_bytes",
    "load_file",
    "read_file",
    "seal_bytes",
    "seal_file",
    "sealed_digest",
    "verify_bytes",
    "write_file",
]

MAGIC = b"\xb7BYOCSL\n"
FORMAT_VERSION = 1
_TRAILER = struct.Struct("<8sQ32sII8s")
TRAILER_SIZE = _TRAILER.size  # 64
# Where the version and the trailer length sit, counted from the end of the file: they are
# read before the rest, so a later format version (another length) is named, not misparsed.
_TAIL = struct.Struct("<II8s")


def _trailer(payload: bytes | memoryview) -> bytes:
    digest = hashlib.sha256(payload).digest()
    return _TRAILER.pack(MAGIC, len(payload), digest, FORMAT_VERSION, TRAILER_SIZE, MAGIC)


def seal_bytes(payload: bytes) -> bytes:
    """``payload`` (a shared object's bytes) followed by its trailer."""
    return bytes(payload) + _trailer(payload)


def seal_file(path: str | os.PathLike) -> None:
    """Append the trailer to the shared object at ``path`` (as written by export_library)."""
    with open(path, "r+b") as fh:
        payload = fh.read()
        if payload.endswith(MAGIC):
            raise ArtifactError(f"byoc_torch: {path} already carries a byoc_torch seal")
        fh.write(_trailer(payload))


def sealed_digest(data: bytes) -> bytes | None:
    """The payload SHA-256 the seal at the end of ``data`` records (None: no seal there). Not
    a verification: it names an artifact whose bytes this process made or verified."""
    if len(data) < TRAILER_SIZE or data[-len(MAGIC) :] != MAGIC:
        return None
    return _TRAILER.unpack_from(data, len(data) - TRAILER_SIZE)[2]


def verify_bytes(data: bytes, source: str, *, allow_unsealed: bool = False) -> bytes:
    """The verified payload of ``data`` (what may be ``dlopen``-ed); ``source`` names it in
    errors. Raises :class:`ArtifactError` saying what is wrong."""
    return _verified(data, source, allow_unsealed)[0]


def _verified(data: bytes, source: str, allow_unsealed: bool) -> tuple[bytes, bytes]:
    """(:func:`verify_bytes` of ``data``, the payload's SHA-256): for a sealed artifact the
    digest its seal records, checked by the one hashing pass; an unsealed one (allowed) is
    hashed once."""
    where = f"byoc_torch.load: {source}"
    size = len(data)
    if size >= _TAIL.size and data[-len(MAGIC) :] == MAGIC:
        version, trailer_size, _ = _TAIL.unpack_from(data, size - _TAIL.size)
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"{where}: unknown artifact format version {version} (this byoc_torch reads "
                f"version {FORMAT_VERSION})"
            )
        if trailer_size != TRAILER_SIZE or size < TRAILER_SIZE:
            raise ArtifactError(f"{where}: damaged seal (trailer length {trailer_size})")
        head, length, digest, _, _, _ = _TRAILER.unpack_from(data, size - TRAILER_SIZE)
        if head != MAGIC:
            raise ArtifactError(f"{where}: damaged seal (its first magic is wrong)")
        have = size - TRAILER_SIZE
        if length > have:
            raise ArtifactError(
                f"{where}: truncated: the seal records {length} bytes, {have} are present"
            )
        if length < have:
            raise ArtifactError(
                f"{where}: {have - length} unexpected byte(s) before the seal (it records "
                f"{length} bytes)"
            )
        payload = memoryview(data)[:have]
        if hashlib.sha256(payload).digest() != digest:
            raise ArtifactError(f"{where}: checksum mismatch (SHA-256): the file is damaged")
        return bytes(payload), digest
    at = data.rfind(MAGIC)
    if at >= 0:
        end = _complete_trailer_end(data)
        if end is not None:
            raise ArtifactError(
                f"{where}: trailing garbage: {size - end} byte(s) after the seal (it ends at "
                f"byte {end})"
            )
        raise ArtifactError(
            f"{where}: damaged or truncated seal (a byoc_torch seal marker at byte {at}, but no "
            "complete seal ends the file)"
        )
    if not allow_unsealed:
        raise ArtifactError(
            f"{where}: no byoc_torch seal: the file is truncated, or was not written by "
            "CompiledModule.export (e.g. plain export_library output). Re-export it, or pass "
            "allow_unsealed=True to load an unsealed file you trust (only its ELF headers are "
            "checked then)"
        )
    _check_elf_extent(data, where)
    return bytes(data), hashlib.sha256(data).digest()


def _complete_trailer_end(data: bytes) -> int | None:
    """Where the last complete version-1 trailer in ``data`` ends, if there is one."""
    at = data.rfind(MAGIC)
    while at >= 0:
        start = at + len(MAGIC) - TRAILER_SIZE
        if start >= 0 and data[start : start + len(MAGIC)] == MAGIC:
            _, length, _, version, trailer_size, _ = _TRAILER.unpack_from(data, start)
            if (version, trailer_size, length) == (FORMAT_VERSION, TRAILER_SIZE, start):
                return at + len(MAGIC)
        at = data.rfind(MAGIC, 0, at)
    return None


def _check_elf_extent(data: bytes, where: str) -> None:
    """An unsealed file must be a 64-bit little-endian ELF whose program headers, section
    headers and the segments and sections they describe lie inside the file (a truncated
    shared object makes ``dlopen`` map past its end: SIGBUS)."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ArtifactError(f"{where}: not a 64-bit little-endian ELF shared object")
    phoff, shoff = struct.unpack_from("<QQ", data, 32)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 54)
    extents = [(phoff, phentsize * phnum), (shoff, shentsize * shnum)]
    for k in range(phnum):
        base = phoff + k * phentsize
        if base + 56 <= len(data):
            offset, _, _, filesz = struct.unpack_from("<QQQQ", data, base + 8)
            extents.append((offset, filesz))
    for k in range(shnum):
        base = shoff + k * shentsize
        if base + 64 <= len(data):
            kind = struct.unpack_from("<I", data, base + 4)[0]
            offset, size = struct.unpack_from("<QQ", data, base + 24)
            if kind != 8:  # SHT_NOBITS (.bss) occupies no file bytes
                extents.append((offset, size))
    end = max(offset + size for offset, size in extents)
    if end > len(data):
        raise ArtifactError(f"{where}: truncated ELF: it needs {end} bytes, {len(data)} present")


# -- loading ------------------------------------------------------------------------------------
_LOADED: OrderedDict[bytes, tvm.runtime.Module] = OrderedDict()
_LOADED_LOCK = threading.Lock()


def load_bytes(
    data: bytes, *, source: str = "<bytes>", allow_unsealed: bool = _defaults.LOAD_ALLOW_UNSEALED
) -> tvm.runtime.Module:
    """Verify ``data`` (a sealed artifact) and load it with TVM; ``source`` names it in errors.

    TVM's load_module of a shared library keeps about 130 KB per call alive (measured with
    benchmarks/leaks.py; it happens without byoc_torch's module too), so the executables of the
    last few artifacts are remembered, keyed by the SHA-256 of the verified bytes (the digest
    the seal records, checked once: the bytes are hashed once per load).
    """
    payload, key = _verified(data, source, allow_unsealed)
    with _LOADED_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    executable = _load_private_copy(payload, source)
    with _LOADED_LOCK:
        _LOADED[key] = executable
        while len(_LOADED) > _defaults.LOADED_ARTIFACTS_KEPT:
            _LOADED.popitem(last=False)
    return executable


def load_file(
    path: str | os.PathLike, *, allow_unsealed: bool = _defaults.LOAD_ALLOW_UNSEALED
) -> tvm.runtime.Module:
    """Read the file at ``path`` once, verify it and load the verified bytes (see module doc)."""
    return load_bytes(read_file(path), source=str(path), allow_unsealed=allow_unsealed)


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of the artifact file at ``path``, read once (they are what is verified,
    loaded and kept). No file there is a FileNotFoundError; an unreadable one an
    :class:`ArtifactError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"byoc_torch.load: no artifact at {path}")
    try:
        return path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"byoc_torch.load: cannot read {path}: {err}") from err


@quietly
def _load_private_copy(payload: bytes, source: str) -> tvm.runtime.Module:
    """``tvm.runtime.load_module`` of ``payload`` written to a new private directory, which is
    removed again once the loader has mapped the file."""
    directory = tempfile.mkdtemp(prefix="byoc_torch_load_")  # mode 0700, a fresh name
    try:
        copy = os.path.join(directory, "artifact.so")
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o500)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        try:
            return tvm.runtime.load_module(copy)
        except UnregisteredOpError:  # the artifact is fine; the process lacks a custom op
            raise
        except Exception as err:
            raise ArtifactError(
                f"byoc_torch.load: {source} is not a loadable artifact: {err}"
            ) from err
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def export_file(executable: tvm.runtime.Module, path: str | os.PathLike) -> Path:
    """Write ``executable`` as a sealed artifact at ``path`` (:func:`export_bytes`, then
    :func:`write_file`)."""
    return write_file(export_bytes(executable), path)


def write_file(sealed: bytes, path: str | os.PathLike) -> Path:
    """Write ``sealed`` (an artifact's sealed bytes, :func:`export_bytes`) at ``path``: whole or
    not at all (written beside ``path``, flushed, then renamed over it). An artifact without a
    seal is an :class:`ArtifactError` (nothing would load it)."""
    if sealed_digest(sealed) is None:
        raise ArtifactError(f"byoc_torch: refusing to write {path}: the bytes carry no seal")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.so")
    try:
        with open(partial, "wb") as fh:
            fh.write(sealed)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


@quietly
def export_bytes(executable: tvm.runtime.Module) -> bytes:
    """The sealed artifact of ``executable`` as bytes (what ``CompiledModule.export`` writes)."""
    with tempfile.TemporaryDirectory(prefix="byoc_torch_export_") as directory:
        path = os.path.join(directory, "artifact.so")
        executable.export_library(path)
        return seal_bytes(Path(path).read_bytes())
