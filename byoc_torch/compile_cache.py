"""The content-addressed compile cache: what a compile produces once and can reuse.

Place in the data flow: opt-in through ``Options.cache_dir``. It holds

* AOTInductor packages of LibTorch subgraphs (``aoti/<key>.pt2``, :mod:`byoc_torch.aot_inductor`),
  keyed by :func:`package_key`: the subgraph's graph, its inputs' shapes, dtypes and dynamic
  ranges, its frozen constants' bytes, and what the package's code depends on (the torch
  version, the CPU capability inductor compiles for; not the thread count: packages take theirs
  at run time);
* measured placement's region timings (``placement.json``, the ``placement_cache`` file of
  :mod:`byoc_torch.placement.measure`, keyed by region, shapes, dtypes, target and library
  versions), unless ``placement_cache`` names another file;
* MetaSchedule tuning records (``tuning/``, the ``tuning_database`` of :mod:`byoc_torch.tuning`)
  when the compile tunes, unless ``tuning_database`` names another;
* whole compiled models (``compiled/<key>.so``, the sealed artifact ``CompiledModule.export``
  writes, its report inside), keyed by :func:`artifact_key`: the exported program (its code,
  signature, ranges, every parameter's, buffer's and constant's bytes), the options, the
  resolved target and this byoc_torch's own code and runtime library. A compile whose key is
  there only exports the model and loads the artifact (not when it tunes: the tuning
  database's contents are not in the key).

A second compile of the same model then measures and compiles only what changed. Without
``cache_dir``, packages are still kept in memory for the process (:data:`MEMORY`, the most
recent up to ``_defaults.AOTI_MEMORY_CACHE_BYTES``), as placement keeps its timings. Entries are
written to a temporary name and renamed, so concurrent compiles never see half a file; a key
is a SHA-256, so a changed input is a different entry (nothing is ever invalidated in place).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from . import _defaults

logger = logging.getLogger(__name__)

__all__ = ["MEMORY", "CompileCache", "MemoryCache", "artifact_key", "code_identity", "package_key"]


class MemoryCache:
    """The most recently used entries, up to ``limit`` bytes in all, in memory for the process
    (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get_bytes(self, kind: str, key: str) -> bytes | None:
        with self._lock:
            data = self._entries.get((kind, key))
            if data is not None:
                self._entries.move_to_end((kind, key))
            return data

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def put_bytes(self, kind: str, key: str, data: bytes) -> None:
        with self._lock:
            self._entries[(kind, key)] = data
            self._entries.move_to_end((kind, key))
            while sum(len(v) for v in self._entries.values()) > self.limit:
                self._entries.popitem(last=False)


MEMORY = MemoryCache(_defaults.AOTI_MEMORY_CACHE_BYTES)


class CompileCache:
    """A directory of entries, each ``<kind>/<key><suffix>``."""

    SUFFIX = {"aoti": ".pt2", "compiled": ".so"}

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}{self.SUFFIX.get(kind, '')}"

    def get_bytes(self, kind: str, key: str) -> bytes | None:
        path = self._path(kind, key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def put_bytes(self, kind: str, key: str, data: bytes) -> None:
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.debug("compile cache: stored %s", path)


def _environment() -> str:
    """What a package's code depends on besides the graph: the torch version and the CPU
    capability inductor compiles for (not the process's thread count: a package's kernels
    take theirs at run time or are serial, as its inductor settings say,
    :func:`byoc_torch.aot_inductor.compile_package`)."""
    capability = torch.backends.cpu.get_cpu_capability()
    return f"torch {torch.__version__}; cpu {capability}"


def package_key(
    module: torch.fx.GraphModule,
    example: Sequence[torch.Tensor],
    dynamic_shapes,
    configs: Mapping[str, object],
) -> str:
    """The cache key of an AOTInductor package of ``module`` compiled with the inductor
    settings ``configs``: a SHA-256 of its code, the settings, its inputs' dtypes, shapes and
    dynamic dims (with ranges), its constants' names, dtypes, shapes and bytes, and the
    environment (:func:`_environment`)."""
    h = hashlib.sha256()
    h.update(module.code.encode())
    h.update(repr(sorted(configs.items())).encode())
    h.update(_environment().encode())
    for x in example:
        h.update(f"{x.dtype} {tuple(x.shape)};".encode())
    h.update(repr(_dims_text(dynamic_shapes)).encode())
    for name, value in sorted(module.named_buffers()):
        _tensor_bytes(h, name, value)
    return h.hexdigest()


def _tensor_bytes(h, name: str, value: torch.Tensor) -> None:
    value = value.detach().contiguous()
    h.update(f"{name} {value.dtype} {tuple(value.shape)};".encode())
    h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")


@functools.cache
def code_identity() -> str:
    """A digest of this byoc_torch: its Python sources and its runtime library's bytes (an
    edited checkout is a different compiler, whatever its version number says)."""
    from .runtime import library_path

    h = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    try:
        h.update(library_path().read_bytes())
    except OSError:  # the runtime is loaded by now; a missing file only makes keys unique
        h.update(b"no runtime library file")
    return h.hexdigest()


def artifact_key(ep: torch.export.ExportedProgram, parts: Sequence[str]) -> str:
    """The cache key of a whole compiled model of ``ep``: a SHA-256 of its code, graph
    signature, symbolic ranges, every parameter's, buffer's and constant's name, dtype, shape
    and bytes, ``parts`` (what else the compile depends on: options, target, inputs), the
    environment (:func:`_environment`) and :func:`code_identity`."""
    h = hashlib.sha256()
    h.update(ep.graph_module.code.encode())
    h.update(str(ep.graph_signature).encode())
    h.update(repr(sorted((str(k), str(v)) for k, v in ep.range_constraints.items())).encode())
    for name, value in sorted(ep.state_dict.items()):
        _tensor_bytes(h, name, value)
    for name, value in sorted(ep.constants.items()):
        if isinstance(value, torch.Tensor):
            _tensor_bytes(h, name, value)
        else:  # a script object: only its type is known here
            h.update(f"{name} {type(value).__name__};".encode())
    for part in parts:
        h.update(f"{len(part)}:{part}".encode())
    h.update(_environment().encode())
    h.update(f"threads {torch.get_num_threads()}".encode())  # what placement measured at
    h.update(code_identity().encode())
    return h.hexdigest()


def _dims_text(dynamic_shapes) -> list:
    """``dynamic_shapes`` as plain text: each Dim by name and range."""
    if dynamic_shapes is None:
        return []
    out = []
    for spec in dynamic_shapes:
        if spec is None:
            out.append(None)
            continue
        out.append(
            {
                d: (str(v), getattr(v, "min", None), getattr(v, "max", None))
                for d, v in sorted(spec.items())
            }
        )
    return out
