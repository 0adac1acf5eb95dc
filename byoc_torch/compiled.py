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

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import tvm
from torch.utils import _pytree as pytree
from tvm import relax

from .frontend import FallbackRecord
from .report import Report

logger = logging.getLogger(__name__)

__all__ = ["CompiledModule", "InputSpec", "Signature", "load", "output_structure", "to_tvm"]

METADATA_FUNC = "__byoc_torch_metadata__"
SIGNATURE_VERSION = 1
_ALIGNMENT = 64  # bytes; what TVM's compiled kernels assume of their inputs


@dataclass(frozen=True)
class InputSpec:
    """One user input: its name, dtype and dims (an int, or a symbol name for a dynamic dim)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class Signature:
    """What a compiled model takes and returns; stored inside the exported artifact."""

    inputs: tuple[InputSpec, ...]
    outputs: dict  # nesting of the outputs, see output_structure()
    device: str = "cpu"
    report: dict | None = None  # Report.to_dict() of the compile that made the artifact

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": SIGNATURE_VERSION,
                "inputs": [
                    {"name": i.name, "dtype": i.dtype, "shape": list(i.shape)} for i in self.inputs
                ],
                "outputs": self.outputs,
                "device": self.device,
                "report": self.report,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Signature:
        try:
            data = json.loads(text)
            if data.get("version") != SIGNATURE_VERSION:
                raise ValueError(f"signature version {data.get('version')}")
            inputs = tuple(
                InputSpec(str(i["name"]), str(i["dtype"]), tuple(i["shape"]))
                for i in data["inputs"]
            )
            outputs = data["outputs"]
            _count_leaves(outputs)  # validates the nesting
            return cls(inputs, outputs, str(data.get("device", "cpu")), data.get("report"))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"byoc_torch artifact has an unreadable signature: {err}") from err


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
        self._num_outputs = _count_leaves(signature.outputs)

    # -- calling ------------------------------------------------------------------------------
    def __call__(self, *inputs: torch.Tensor):
        args = self._check_inputs(inputs)
        result = self._main_function()(*args)
        flat = [torch.from_dlpack(t) for t in _flatten_tvm(result)]
        if len(flat) != self._num_outputs:
            raise RuntimeError(
                f"byoc_torch: the compiled model returned {len(flat)} tensors, its signature "
                f"expects {self._num_outputs}"
            )
        return _unflatten(iter(flat), self.signature.outputs)

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
            raise TypeError(
                f"byoc_torch: the compiled model takes {len(specs)} input(s) ({names}), "
                f"got {len(inputs)}"
            )
        symbols: dict[str, int] = {}
        args = []
        for k, (x, spec) in enumerate(zip(inputs, specs, strict=True)):
            where = f"input {k} ('{spec.name}')"
            if not isinstance(x, torch.Tensor):
                raise TypeError(
                    f"byoc_torch: {where} must be a torch.Tensor, got {type(x).__name__}"
                )
            dtype = str(x.dtype).removeprefix("torch.")
            if dtype != spec.dtype:
                raise TypeError(f"byoc_torch: {where} has dtype {dtype}, expected {spec.dtype}")
            if x.dim() != len(spec.shape):
                raise ValueError(
                    f"byoc_torch: {where} has shape {tuple(x.shape)}, expected rank "
                    f"{len(spec.shape)} {_shape_str(spec.shape)}"
                )
            for d, (got, want) in enumerate(zip(x.shape, spec.shape, strict=True)):
                if isinstance(want, int):
                    if got != want:
                        raise ValueError(
                            f"byoc_torch: {where} has shape {tuple(x.shape)}, expected "
                            f"{_shape_str(spec.shape)} (dim {d} must be {want})"
                        )
                elif symbols.setdefault(want, got) != got:
                    raise ValueError(
                        f"byoc_torch: {where} dim {d} is {got} but symbol {want} is already "
                        f"{symbols[want]}"
                    )
            if x.device.type != self.device_type:
                raise ValueError(
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


def to_tvm(x: torch.Tensor) -> tvm.runtime.Tensor:
    """A TVM view of ``x`` without a copy, when TVM can take it as it is.

    TVM's kernels need compact tensors whose data is 64-byte aligned. A non-contiguous tensor
    or an unaligned view (e.g. ``x[1:]``) is copied once into a fresh compact tensor.
    """
    if not x.is_contiguous() or x.data_ptr() % _ALIGNMENT:
        x = x.clone(memory_format=torch.contiguous_format)
    return tvm.runtime.from_dlpack(x)


def output_structure(spec: pytree.TreeSpec) -> dict:
    """The nesting of a model's outputs as plain JSON: a leaf (one tensor), a tuple, a list or
    a dict of those. Named tuples (e.g. torch.return_types) come back as plain tuples."""
    if spec.is_leaf():
        return {"t": "leaf"}
    children = [output_structure(c) for c in spec.children_specs]
    if spec.type is dict:
        return {"t": "dict", "k": [str(k) for k in spec.context], "c": children}
    if spec.type is list:
        return {"t": "list", "c": children}
    return {"t": "tuple", "c": children}


def _count_leaves(node: dict) -> int:
    kind = node["t"]
    if kind == "leaf":
        return 1
    if kind not in ("tuple", "list", "dict"):
        raise ValueError(f"unknown output kind {kind!r}")
    return sum(_count_leaves(c) for c in node["c"])


def _unflatten(leaves, node: dict):
    kind = node["t"]
    if kind == "leaf":
        return next(leaves)
    children = [_unflatten(leaves, c) for c in node["c"]]
    if kind == "dict":
        return dict(zip(node["k"], children, strict=True))
    return children if kind == "list" else tuple(children)


def _shape_str(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _flatten_tvm(value) -> list:
    if isinstance(value, tvm.runtime.Tensor):
        return [value]
    if isinstance(value, Sequence) or hasattr(value, "__len__"):
        out = []
        for v in value:
            out.extend(_flatten_tvm(v))
        return out
    raise TypeError(f"byoc_torch: unexpected VM result {type(value).__name__}")


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
_LOADED_MAX = 16
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
        raise ValueError(f"byoc_torch.load: {path} is not a loadable artifact: {err}") from err
    with _LOADED_LOCK:
        _LOADED[key] = executable
        while len(_LOADED) > _LOADED_MAX:
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
        raise ValueError(f"byoc_torch.load: {path} was not written by byoc_torch (no signature)")
    signature = Signature.from_json(text)
    return CompiledModule(executable, signature)
