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
from typing import NamedTuple

import torch
import tvm
import tvm_ffi
from tvm import relax

from . import _defaults
from .errors import ArtifactError, InputError, InputTypeError
from .names import dtype_name, torch_dtype
from .records import FallbackRecord
from .reporting import Report
from .signature import InputSpec, Signature, count_leaves, is_plain_leaf, unflatten
from .tensors import flatten_tvm, to_tvm, tvm_ready
from .threads import apply_thread_budget

logger = logging.getLogger(__name__)

__all__ = ["CompiledModule", "load"]

METADATA_FUNC = "__byoc_torch_metadata__"

# Element access of a VM result array in one FFI call (tvm_ffi.Array.__getitem__ makes two).
# With a torch tensor among the call's arguments the array carries torch's DLPack exchange
# API, so the element comes back as a torch tensor.
_ARRAY_GET_ITEM = tvm_ffi.get_global_func("ffi.ArrayGetItem")


_ALIGNMENT = _defaults.TVM_ALIGNMENT


def _dynamic_shape_ok(
    shape: torch.Size,
    rank: int,
    static_dims: tuple[tuple[int, int], ...],
    symbol_dims: tuple[tuple[int, str, int, int | None], ...],
    symbols: dict[str, int],
) -> bool:
    """Does a shape with symbolic dims match its spec (each symbol bound once, inside its
    range), binding symbols in ``symbols``?"""
    if len(shape) != rank:
        return False
    for d, want in static_dims:
        if shape[d] != want:
            return False
    for d, name, lower, upper in symbol_dims:
        n = shape[d]
        if symbols.setdefault(name, n) != n or n < lower or (upper is not None and n > upper):
            return False
    return True


class _InputCheck(NamedTuple):
    """One input's checks, precomputed from its :class:`InputSpec` for the fast path."""

    dtype: torch.dtype | None  # None: no torch dtype has the spec's name (never passes)
    static_shape: tuple[int, ...] | None  # the whole shape when every dim is static
    rank: int
    static_dims: tuple[tuple[int, int], ...]  # (dim, size) of the static dims
    # (dim, symbol, min, max) of the dynamic dims; max None when unbounded
    symbol_dims: tuple[tuple[int, str, int, int | None], ...]

    @classmethod
    def of(cls, spec: InputSpec, ranges: dict[str, tuple[int, int | None]]) -> _InputCheck:
        try:
            dtype = torch_dtype(spec.dtype)
        except ValueError:
            dtype = None
        static = tuple((d, n) for d, n in enumerate(spec.shape) if isinstance(n, int))
        symbols = tuple(
            (d, n, *ranges.get(n, (0, None)))
            for d, n in enumerate(spec.shape)
            if not isinstance(n, int)
        )
        whole = tuple(spec.shape) if not symbols else None
        return cls(dtype, whole, len(spec.shape), static, symbols)


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
        # Process-wide: TVM's and LibTorch's pools get the model's budget (byoc_torch.threads).
        self.thread_budget = apply_thread_budget(signature.num_threads)
        # TVM's VirtualMachine keeps per-call state (registers), so it is not safe to share
        # between threads: each thread gets its own, created on first use.
        self._local = threading.local()
        self._main_function()  # build the calling thread's VM now, so errors surface here
        self._num_outputs = count_leaves(signature.outputs)
        self._checks = tuple(_InputCheck.of(spec, signature.ranges) for spec in signature.inputs)
        self._on_cpu = self.device_type == "cpu"
        outputs = signature.outputs
        self._single_leaf = is_plain_leaf(outputs)
        self._flat_tuple = outputs["t"] == "tuple" and all(is_plain_leaf(c) for c in outputs["c"])
        # How the VM returns its results, learnt from the first call (it is fixed by the
        # compiled function): None = not yet seen, True = one flat array of the output
        # tensors, False = anything else (handled by the general path).
        self._flat_result: bool | None = None
        self._output_indices = range(self._num_outputs)

    # -- calling ------------------------------------------------------------------------------
    def __call__(self, *inputs: torch.Tensor):
        # The fast path: every check of _check_inputs, made cheap with what the constructor
        # precomputed, written inline (a Python call costs as much as several checks). It only
        # accepts; whatever it does not accept goes to _check_inputs, which raises the precise
        # error (or prepares inputs it accepts, e.g. tensor subclasses).
        checks = self._checks
        args: list | None = None
        if len(inputs) == len(checks):
            args = []
            symbols: dict[str, int] = {}
            on_cpu = self._on_cpu
            for x, check in zip(inputs, checks, strict=True):
                dtype, static_shape, rank, static_dims, symbol_dims = check
                if type(x) is not torch.Tensor or x.dtype is not dtype:
                    args = None
                    break
                if static_shape is not None:
                    if x.shape != static_shape:
                        args = None
                        break
                elif not _dynamic_shape_ok(x.shape, rank, static_dims, symbol_dims, symbols):
                    args = None
                    break
                if not (x.is_cpu if on_cpu else x.is_cuda):
                    args = None
                    break
                if x.requires_grad:
                    x = x.detach()
                if not x.is_contiguous() or x.data_ptr() % _ALIGNMENT:
                    x = x.clone(memory_format=torch.contiguous_format)
                args.append(x)
        if args is None:
            args = self._check_inputs(inputs)
        try:
            main = self._local.main
        except AttributeError:
            main = self._main_function()
        result = main(*args)
        if not self._flat_result:
            return unflatten(iter(self._flatten_result(result)), self.signature.outputs)
        # The VM returns one array of the output tensors; with a torch tensor among the
        # arguments tvm-ffi hands each element back as a torch tensor (DLPack, no copy).
        if self._single_leaf:
            out = _ARRAY_GET_ITEM(result, 0)
            return out if type(out) is torch.Tensor else torch.from_dlpack(out)
        flat = []
        for i in self._output_indices:
            out = _ARRAY_GET_ITEM(result, i)
            flat.append(out if type(out) is torch.Tensor else torch.from_dlpack(out))
        if self._flat_tuple:
            return tuple(flat)
        return unflatten(iter(flat), self.signature.outputs)

    def _flatten_result(self, result) -> list[torch.Tensor]:
        """The general path for the VM's result: any nesting, TVM or torch tensors. Also
        learns whether later calls can take the fast path."""
        flat = [t if type(t) is torch.Tensor else torch.from_dlpack(t) for t in flatten_tvm(result)]
        if len(flat) != self._num_outputs:
            raise RuntimeError(
                f"byoc_torch: the compiled model returned {len(flat)} tensors, its signature "
                f"expects {self._num_outputs}"
            )
        if self._flat_result is None:
            self._flat_result = isinstance(result, tvm_ffi.Array) and len(result) == len(flat)
            logger.debug("VM result is a flat array of the outputs: %s", self._flat_result)
        return flat

    def _main_function(self) -> tvm_ffi.Function:
        main = getattr(self._local, "main", None)
        if main is None:
            vm = relax.VirtualMachine(self.executable, self.device)
            main = self._local.main = vm["main"]
            self._local.vm = vm
        return main

    def _check_inputs(self, inputs: Sequence[torch.Tensor]) -> list:
        """Check every input against the signature, raising the precise error; return them
        as TVM takes them."""
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
                else:
                    lower, upper = self.signature.ranges.get(want, (0, None))
                    if got < lower or (upper is not None and got > upper):
                        allowed = f"{lower}..{upper}" if upper is not None else f">= {lower}"
                        raise InputError(
                            f"byoc_torch: {where} dim {d} ({want}) is {got}, outside the range "
                            f"the model was exported for ({allowed})"
                        )
            if x.device.type != self.device_type:
                raise InputError(
                    f"byoc_torch: {where} is on {x.device}, the model was compiled for "
                    f"{self.signature.device}"
                )
            if x.requires_grad:
                x = x.detach()
            # A subclass (e.g. nn.Parameter) crosses as a TVM view, as plain tensors did
            # before the fast path; tvm-ffi exchanges a plain tensor itself.
            args.append(tvm_ready(x) if type(x) is torch.Tensor else to_tvm(x))
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
