"""The compiled model: torch tensors in, torch tensors out; export to and load from one file.

Place in the data flow: last stage. ``byoc_torch.compile`` builds the Relax VM executable and
wraps it in :class:`CompiledModule`; ``CompiledModule.export`` writes it with TVM's
``export_library`` (one shared object holding the native code, the VM bytecode and the torch
runtime module with its TorchScript); :func:`load` reads it back in any process.

Inputs cross into TVM with DLPack, without a copy (a non-contiguous or unaligned input is
copied once first: TVM kernels need compact, 64-byte aligned data). Outputs come back with
DLPack, without a copy.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import tvm
from tvm import relax

from . import _defaults
from .errors import ArtifactError, InputError, InputTypeError
from .names import dtype_name
from .records import FallbackRecord
from .reporting import Report
from .signature import Signature, count_leaves, unflatten
from .tensors import flatten_tvm, to_tvm

logger = logging.getLogger(__name__)

__all__ = ["CompiledModule", "load"]

METADATA_FUNC = "__byoc_torch_metadata__"


class CompiledModule:
    """A model compiled by byoc_torch. Call it like the original ``nn.Module``.

    Thread-safe: calls from several threads run concurrently, each thread on its own TVM
    VirtualMachine over the shared executable (TVM's VM is not safe to share); the LibTorch
    subgraphs are shared and safe to call concurrently.
    """

    def __init__(
        self,
        executable: tvm.runtime.Module,
        signature: Signature,
        *,
        ir_module: tvm.IRModule | None = None,
        fallbacks: Sequence[FallbackRecord] = (),
        report: Report | None = None,
    ) -> None:
        self.executable = executable
        self.signature = signature
        self.ir_module = ir_module
        self.fallbacks = tuple(fallbacks)
        self._report = report
        self.device = tvm.device(signature.device)
        # TVM's VirtualMachine keeps per-call state (registers), so it is not safe to share
        # between threads: each thread gets its own, created on first use.
        self._local = threading.local()
        self._main_function()  # build the calling thread's VM now, so errors surface here
        self._num_outputs = count_leaves(signature.outputs)

    # -- calling ------------------------------------------------------------------------------
    def __call__(self, *inputs: torch.Tensor):
        args = self._check_inputs(inputs)
        result = self._main_function()(*args)
        flat = [torch.from_dlpack(t) for t in flatten_tvm(result)]
        if len(flat) != self._num_outputs:
            raise RuntimeError(
                f"byoc_torch: the compiled model returned {len(flat)} tensors, its signature "
                f"expects {self._num_outputs}"
            )
        return unflatten(iter(flat), self.signature.outputs)

    def _main_function(self):
        main = getattr(self._local, "main", None)
        if main is None:
            vm = relax.VirtualMachine(self.executable, self.device)
            main = self._local.main = vm["main"]
            self._local.vm = vm
        return main

    def _check_inputs(self, inputs: Sequence[torch.Tensor]) -> list:
        specs = self.signature.inputs
        if len(inputs) != len(specs):
            names = ", ".join(s.name for s in specs)
            raise InputTypeError(
                f"byoc_torch: the compiled model takes {len(specs)} input(s) ({names}), "
                f"got {len(inputs)}"
            )
        symbols: dict[str, int] = {}
        args = []
        for k, (x, spec) in enumerate(zip(inputs, specs, strict=True)):
            where = f"input {k} ('{spec.name}')"
            if not isinstance(x, torch.Tensor):
                raise InputTypeError(
                    f"byoc_torch: {where} must be a torch.Tensor, got {type(x).__name__}"
                )
            dtype = dtype_name(x.dtype)
            if dtype != spec.dtype:
                raise InputTypeError(
                    f"byoc_torch: {where} has dtype {dtype}, expected {spec.dtype}"
                )
            if x.dim() != len(spec.shape):
                raise InputError(
                    f"byoc_torch: {where} has shape {tuple(x.shape)}, expected rank "
                    f"{len(spec.shape)} {_shape_str(spec.shape)}"
                )
            for d, (got, want) in enumerate(zip(x.shape, spec.shape, strict=True)):
                if isinstance(want, int):
                    if got != want:
                        raise InputError(
                            f"byoc_torch: {where} has shape {tuple(x.shape)}, expected "
                            f"{_shape_str(spec.shape)} (dim {d} must be {want})"
                        )
                elif symbols.setdefault(want, got) != got:
                    raise InputError(
                        f"byoc_torch: {where} dim {d} is {got} but symbol {want} is already "
                        f"{symbols[want]}"
                    )
            if x.device.type != self.device_type:
                raise InputError(
                    f"byoc_torch: {where} is on {x.device}, the model was compiled for "
                    f"{self.signature.device}"
                )
            if x.requires_grad:
                x = x.detach()
            args.append(to_tvm(x))
        return args

    @property
    def device_type(self) -> str:
        return "cuda" if self.signature.device.startswith("cuda") else "cpu"

    # -- export -------------------------------------------------------------------------------
    def export(self, path: str | os.PathLike) -> Path:
        """Write one self-contained artifact (a shared object) that :func:`load` reads."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.executable.export_library(str(path))
        return path

    # -- inspection ---------------------------------------------------------------------------
    def report(self) -> Report:
        """Where every node runs and why (see :mod:`byoc_torch.report`).

        A loaded model reads the report its artifact carries.
        """
        if self._report is None:
            if self.signature.report is None:
                raise ValueError("byoc_torch: this artifact carries no report")
            self._report = Report.from_dict(self.signature.report)
        return self._report

    @property
    def torch_ops(self) -> list[str]:
        """The ATen ops that run in LibTorch, one entry per fallback node."""
        return [r.op for r in self.fallbacks]

    def num_torch_subgraphs(self) -> int:
        """How many LibTorch subgraphs the compiled model calls."""
        names = _runtime_symbols(self.executable)
        return len(names)

    def __repr__(self) -> str:
        return (
            f"CompiledModule(inputs={[s.name for s in self.signature.inputs]}, "
            f"torch_ops={len(self.fallbacks)}, device={self.signature.device})"
        )


def _shape_str(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _torch_modules(executable) -> list:
    """The torch runtime modules inside an executable (a VMExecutable or a loaded module)."""
    found = []

    def visit(m) -> None:
        if m.kind == "torch":
            found.append(m)
        for sub in m.imports:
            visit(sub)

    visit(getattr(executable, "mod", executable))
    return found


def _runtime_symbols(executable) -> list[str]:
    return [str(s) for m in _torch_modules(executable) for s in m["__byoc_torch_symbols__"]()]


def _metadata(executable) -> str | None:
    for m in _torch_modules(executable):
        text = str(m[METADATA_FUNC]())
        if text:
            return text
    return None


_LOADED: OrderedDict[tuple, tvm.runtime.Module] = OrderedDict()
_LOADED_LOCK = threading.Lock()


def _load_executable(path: Path) -> tvm.runtime.Module:
    """tvm.runtime.load_module, remembering the last 16 artifacts.

    TVM's load_module of a shared library keeps about 130 KB per call alive (measured with
    benchmarks/leaks.py; it happens without byoc_torch's module too), so loading one artifact
    again and again would grow memory. A file is the same artifact while its inode, size and
    modification time are.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    with _LOADED_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    try:
        executable = tvm.runtime.load_module(str(path))
    except Exception as err:
        raise ArtifactError(f"byoc_torch.load: {path} is not a loadable artifact: {err}") from err
    with _LOADED_LOCK:
        _LOADED[key] = executable
        while len(_LOADED) > _defaults.LOADED_ARTIFACTS_KEPT:
            _LOADED.popitem(last=False)
    return executable


def load(path: str | os.PathLike) -> CompiledModule:
    """Load an artifact written by :meth:`CompiledModule.export`.

    Loading runs the TorchScript inside the artifact: load only artifacts you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"byoc_torch.load: no artifact at {path}")
    executable = _load_executable(path)
    text = _metadata(executable)
    if text is None:
        raise ArtifactError(f"byoc_torch.load: {path} was not written by byoc_torch (no signature)")
    signature = Signature.from_json(text)
    return CompiledModule(executable, signature)
