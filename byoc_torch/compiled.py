"""The compiled model: torch tensors in, torch tensors out; export to and load from one file.

Place in the data flow: last stage. ``byoc_torch.compile`` builds the Relax VM executable and
wraps it in :class:`CompiledModule`, which seals it once (TVM's ``export_library``: one shared
object holding the native code, the VM bytecode and the torch runtime module with its
TorchScript, and a seal, :mod:`byoc_torch.artifact_file`) and holds those bytes;
``CompiledModule.export`` writes them, pickling carries them, and :func:`load` reads a file
through :mod:`byoc_torch.artifact_file` (read once, verified, loaded) in any process.

Inputs cross into TVM with DLPack, without a copy (a non-contiguous or unaligned input is
copied once first: TVM kernels need compact, 64-byte aligned data). Outputs come back with
DLPack, without a copy.

:class:`CompiledModule` is a ``torch.nn.Module``. Called eagerly it runs the VM directly (the
fast path); while PyTorch traces it (``torch.jit.trace``/``script``, ``torch.export``,
``torch.compile``) or hands it tensors it cannot run directly (fake tensors), it calls the op
``torch.ops.byoc_torch.execute`` on its TorchScript object (:mod:`byoc_torch.torch_library`),
so the traced program calls the compiled model instead of baking in its answer.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
import tvm
import tvm_ffi
from torch._subclasses.fake_tensor import is_fake
from tvm import relax

from . import _defaults, artifact_file, torch_library
from .cpu import check_host
from .errors import (
    ArtifactError,
    CompiledModelError,
    InputError,
    InputTypeError,
)
from .names import dtype_name
from .records import FallbackRecord, Reason
from .reporting import Report
from .runtime.module import TorchRuntime, make_checked_call
from .signature import Signature, count_leaves, is_plain_leaf, unflatten
from .tensors import flatten_tvm, to_tvm, tvm_ready
from .threads import apply_thread_budget

logger = logging.getLogger(__name__)

__all__ = ["CompiledModule", "load", "load_bytes"]


# Element access of a VM result array in one FFI call (tvm_ffi.Array.__getitem__ makes two).
# With a torch tensor among the call's arguments the array carries torch's DLPack exchange
# API, so the element comes back as a torch tensor.
_ARRAY_GET_ITEM = tvm_ffi.get_global_func("ffi.ArrayGetItem")


_is_tracing = torch._C._is_tracing  # torch.jit.trace is recording
_is_compiling = torch.compiler.is_compiling  # torch.compile / torch.export is tracing
_grad_enabled = torch.is_grad_enabled

# The VM's main behind C++ input checks (runtime/checked_call.cc), and DLPack device codes.
_DEVICE_CODES = {"cpu": 1, "cuda": 2}


class _Where:
    """``input k ('name')`` in an error message, formatted only when one is raised (the
    check runs on every call the C++ check does not accept)."""

    __slots__ = ("k", "name")

    def __init__(self, k: int, name: str) -> None:
        self.k, self.name = k, name

    def __str__(self) -> str:
        return f"input {self.k} ('{self.name}')"


class _SlowPath(Exception):
    """Raised inside the fast path to hand a call to the slow path."""


class CompiledModule(torch.nn.Module):
    """A model compiled by byoc_torch: a ``torch.nn.Module`` called like the original model
    (the same positional inputs, pytrees and keyword inputs).

    Inference only: an input that requires grad, with grad mode on, is an InputError (call it
    under ``torch.no_grad()``). It runs on the device it was compiled for; moving or converting
    it (``.to``, ``.cuda``, ``.half``) is a CompiledModelError. Forward hooks are not run (the
    call skips ``nn.Module``'s hook machinery to keep its fixed cost low).

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
        artifact: bytes | None = None,
        state: Sequence[torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.training = False  # a compiled model computes as its model did in eval mode
        self.executable = executable
        self.signature = signature
        self.ir_module = ir_module
        self._report = report
        if not fallbacks and signature.report is not None:
            fallbacks = _fallbacks_of(self.report())
        self.fallbacks = tuple(fallbacks)
        self._tree = signature.input_tree
        self.device = tvm.device(signature.device)
        # Process-wide: TVM's and LibTorch's pools get the model's budget (byoc_torch.threads).
        self.thread_budget = apply_thread_budget(signature.num_threads)
        # TVM's VirtualMachine keeps per-call state (registers), so it is not safe to share
        # between threads: each thread gets its own, created on first use.
        self._local = threading.local()
        self._main_function()  # build the calling thread's VM now, so errors surface here
        self._mutations = signature.mutations
        # The buffers the model updates in place: its last inputs, passed and updated by every
        # call (the model's own tensors after a compile, the stored values after a load).
        self._state = tuple(state) if state is not None else tuple(signature.stored_state())
        if len(self._state) != len(signature.state):
            raise CompiledModelError(
                f"byoc_torch: the compiled model updates buffer(s) {list(signature.state)}, "
                f"given {len(self._state)} value(s)"
            )
        self._num_outputs = count_leaves(signature.outputs) + len(self._mutations)
        outputs = signature.outputs
        plain = not self._mutations  # the VM's result is the outputs, nothing after them
        self._single_leaf = plain and is_plain_leaf(outputs)
        self._flat_tuple = (
            plain and outputs["t"] == "tuple" and all(is_plain_leaf(c) for c in outputs["c"])
        )
        # How the VM returns its results, learnt from the first call (it is fixed by the
        # compiled function): None = not yet seen, True = one flat array of the output
        # tensors, False = anything else (handled by the general path).
        self._flat_result: bool | None = None
        self._output_indices = range(self._num_outputs)
        self._call_specs, self._symbol_ranges = _call_specs(signature)
        # What PyTorch's tracers see (torch.ops.byoc_torch.execute's first argument), made now:
        # torch.export finds a module's TorchScript objects before it traces.
        if artifact is None:
            artifact = self._exported_bytes()
        torch_library.remember(artifact, executable)  # before the object reads its signature
        self.torch_executable = torch_library.executable_object(artifact)
        self._artifact_size = len(artifact)

    # -- calling ------------------------------------------------------------------------------
    def __call__(self, *inputs, **kwargs):
        if kwargs or self._tree is not None:
            inputs = self._flat_inputs(inputs, kwargs)
        if _is_compiling() or _is_tracing():  # in this order: Dynamo folds the first
            return self._traced_call(inputs)
        if self._mutations:
            return self._mutating_call(inputs)
        # The fast path: one FFI call. The runtime's checked call (runtime/checked_call.cc)
        # makes every check of _check_inputs, and what TVM's kernels assume, in C++, then runs
        # the VM; it returns None when it does not accept an input. An input that requires
        # grad under grad mode goes to the slow path, which raises the error.
        try:
            checked = self._local.checked
        except AttributeError:
            checked = self._checked_function()
        try:
            if _grad_enabled():
                for x in inputs:
                    if x.requires_grad:  # DLPack would drop it silently: the slow path raises
                        raise _SlowPath
            out = checked(*inputs)
        except Exception:  # e.g. an input DLPack cannot carry (meta): the slow path names it
            out = None  # (an error inside the model is raised there again)
        if out is not None:
            if self._single_leaf and type(out) is torch.Tensor:
                return out
            return self._convert_result(out)
        return self._slow_call(inputs)

    forward = __call__

    def _mutating_call(self, inputs: Sequence):
        """A call of a model that updates inputs in place: the new values the VM returns after
        the outputs are copied into the caller's tensors (and into the state the model holds,
        which follows the caller's inputs)."""
        if self._state:
            taken = len(self.signature.inputs) - len(self._state)
            if len(inputs) != taken:
                names = ", ".join(s.name for s in self.signature.inputs[:taken])
                raise InputTypeError(
                    f"byoc_torch: the compiled model takes {taken} input(s) ({names}), got "
                    f"{len(inputs)}"
                )
            inputs = (*inputs, *self._state)
        args = self._check_inputs(inputs)
        if args is None:  # tensors only PyTorch's tracers know (fake, functional)
            return self._traced_call(inputs)
        flat = self._apply_mutations(inputs, self._flatten_result(self._main_function()(*args)))
        return unflatten(iter(flat), self.signature.outputs)

    def _apply_mutations(self, inputs: Sequence, flat: list) -> list:
        """``flat`` without the mutated inputs' new values, which are copied into ``inputs``."""
        if not self._mutations:
            return flat
        n = len(flat) - len(self._mutations)
        with torch.no_grad():
            for k, value in zip(self._mutations, flat[n:], strict=True):
                inputs[k].copy_(value)
        return flat[:n]

    def _checked_function(self):
        checked = self._local.checked = make_checked_call(
            self._main_function(),
            self._call_specs,
            self._symbol_ranges,
            _DEVICE_CODES[self.device_type],
            self._single_leaf,
        )
        return checked

    def _slow_call(self, inputs: Sequence):
        """The call path for what the checked call does not accept: the one Python check
        (:meth:`_check_inputs`) raises the precise error, or returns the inputs made
        acceptable (detached, compact, aligned; tensor subclasses as TVM views)."""
        args = self._check_inputs(inputs)
        if args is None:  # tensors only PyTorch's tracers know (fake, functional)
            return self._traced_call(inputs)
        try:
            main = self._local.main
        except AttributeError:
            main = self._main_function()
        return self._convert_result(main(*args))

    def _convert_result(self, result):
        """Torch tensors in the model's output structure, from the VM's result."""
        if self._single_leaf and type(result) is torch.Tensor:  # unwrapped by the checked call
            return result
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

    def _flat_inputs(self, inputs: tuple, kwargs: dict) -> tuple:
        """A call's pytree/keyword inputs as the flat tensors the executable takes."""
        if self._tree is None:
            raise InputTypeError(
                f"byoc_torch: the compiled model takes positional inputs only "
                f"({', '.join(s.name for s in self.signature.inputs)}), got keyword input(s) "
                f"{sorted(kwargs)}; compile with kwargs={{...}} to call it with keywords"
            )
        return tuple(self._tree.tensors(inputs, kwargs))

    def _traced_call(self, inputs: Sequence[torch.Tensor]):
        """The call as PyTorch's tracers record it: one ``byoc_torch::execute`` op."""
        if self._mutations:
            names = [self.signature.inputs[k].name for k in self._mutations]
            raise CompiledModelError(
                f"byoc_torch: this compiled model updates its input(s) or buffer(s) {names} in "
                "place, which the op PyTorch's tracers record (byoc_torch::execute) cannot do: "
                "call it eagerly, not inside torch.jit, torch.export or torch.compile"
            )
        if _is_compiling():  # Dynamo and torch.export trace the checks with symbolic sizes
            self._check_inputs(inputs, prepare=False)
        else:  # torch.jit.trace must record neither the checks nor their sizes, only the op
            state = torch._C._get_tracing_state()
            torch._C._set_tracing_state(None)
            try:
                self._check_inputs(inputs, prepare=False)
            finally:
                torch._C._set_tracing_state(state)
        flat = torch.ops.byoc_torch.execute.default(self.torch_executable, list(inputs))
        return unflatten(iter(flat), self.signature.outputs)

    def _flatten_result(self, result) -> list[torch.Tensor]:
        """The general path for the VM's result: any nesting, TVM or torch tensors. Also
        learns whether later calls can take the fast path."""
        flat = [t if type(t) is torch.Tensor else torch.from_dlpack(t) for t in flatten_tvm(result)]
        if len(flat) != self._num_outputs:
            raise CompiledModelError(
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

    def _check_inputs(self, inputs: Sequence[torch.Tensor], prepare: bool = True) -> list | None:
        """Check every input against the signature, raising the precise error; return them
        as TVM takes them, or None when some are fake (only a tracer can run them) or when
        not asked to ``prepare`` them."""
        specs = self.signature.inputs
        if len(inputs) != len(specs):
            names = ", ".join(s.name for s in specs)
            raise InputTypeError(
                f"byoc_torch: the compiled model takes {len(specs)} input(s) ({names}), "
                f"got {len(inputs)}"
            )
        symbols: dict[str, int] = {}
        args = []
        fake = False
        for k, (x, spec) in enumerate(zip(inputs, specs, strict=True)):
            where = _Where(k, spec.name)  # formatted only in an error message
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
                    if not want.isidentifier() and not _reachable(want, got):
                        raise InputError(
                            f"byoc_torch: {where} dim {d} is {got}, but the model was exported "
                            f"for a dim of {want}: no whole value of its symbol gives {got}"
                        )
            if x.device.type != self.device_type:
                raise InputError(
                    f"byoc_torch: {where} is on {x.device}, the model was compiled for "
                    f"{self.signature.device}"
                )
            if x.requires_grad:
                if _grad_enabled():
                    raise InputError(
                        f"byoc_torch: {where} requires grad, but a compiled model is "
                        "inference-only (its outputs carry no gradient); call it under "
                        "torch.no_grad() or torch.inference_mode()"
                    )
                x = x.detach()
            if not prepare:
                continue
            if type(x) is not torch.Tensor and is_fake(x):  # fake tensors are subclasses
                fake = True
                continue
            # A subclass (e.g. nn.Parameter) crosses as a TVM view, as plain tensors did
            # before the fast path; tvm-ffi exchanges a plain tensor itself.
            args.append(tvm_ready(x) if type(x) is torch.Tensor else to_tvm(x))
        self._check_derived(symbols)
        return None if fake or not prepare else args

    def _check_derived(self, symbols: dict[str, int]) -> None:
        """Each derived dim (``s0 + 2``) against the symbol it derives from, both bound."""
        for dim, (base, a, b) in self.signature.derived.items():
            if dim in symbols and base in symbols and symbols[dim] != a * symbols[base] + b:
                k = next(k for k, s in enumerate(self.signature.inputs) if dim in s.shape)
                where = _Where(k, self.signature.inputs[k].name)
                raise InputError(
                    f"byoc_torch: {where} dim {self.signature.inputs[k].shape.index(dim)} "
                    f"({dim}) is {symbols[dim]}, but {base} is {symbols[base]}, which makes "
                    f"it {a * symbols[base] + b}"
                )

    @property
    def device_type(self) -> str:
        return "cuda" if self.signature.device.startswith("cuda") else "cpu"

    # -- export -------------------------------------------------------------------------------
    def export(self, path: str | os.PathLike) -> Path:
        """Write one self-contained artifact (a shared object, sealed with its length and
        SHA-256: :mod:`byoc_torch.artifact_file`) that :func:`load` reads: the sealed bytes
        this model holds (made once, when it was compiled or loaded), so a loaded model is
        written back byte for byte. The file appears whole or not at all (written beside
        ``path``, then renamed). A model that updates buffers in place is written again with
        the buffers' values of now in its signature."""
        if self._state:
            set_metadata(self.executable, self.signature.with_state(self._state).to_json())
            return artifact_file.write_file(artifact_file.export_bytes(self.executable), path)
        return artifact_file.write_file(torch_library.artifact_of(self.torch_executable), path)

    @property
    def state(self) -> dict[str, torch.Tensor]:
        """The buffers the model updates in place, by name: after a compile, the model's own
        tensors (every call updates them, as ``ep.module()`` does); after a load, the values
        the artifact stored, held by this module."""
        return dict(zip(self.signature.state, self._state, strict=True))

    def _exported_bytes(self) -> bytes:
        """The artifact :meth:`export` writes, as bytes (sealed)."""
        return artifact_file.export_bytes(self.executable)

    def __reduce__(self):
        """Pickle (``torch.save``, ``copy.deepcopy``) as the artifact's bytes; unpickling loads
        them with :func:`load_bytes`, so it runs the artifact's checks and code like
        :func:`load` (unpickle only what you trust); a damaged one fails the unpickling with
        an :class:`ArtifactError` naming the file being read (:func:`_unpickle`)."""
        artifact = torch_library.artifact_of(self.torch_executable)
        if self._state:  # the state's values of now travel beside the artifact
            return (_unpickle, (artifact, [t.detach().clone() for t in self._state]))
        return (_unpickle, (artifact,))

    # -- nn.Module ----------------------------------------------------------------------------
    def __prepare_scriptable__(self) -> torch.nn.Module:
        """What ``torch.jit.script`` compiles in place of this module (also as a parent's
        submodule): a module whose generated ``forward`` calls ``torch.ops.byoc_torch.execute``
        (see :func:`byoc_torch.torch_library.scripted`)."""
        return torch_library.scripted(self)

    def _apply(self, fn, recurse: bool = True):
        """``.to``/``.cuda``/``.half``…: the executable runs on one device and dtype, so only a
        conversion that changes nothing is allowed (e.g. a parent model's ``.to("cpu")``)."""
        probe = torch.empty(0, device=self.device_type)
        try:
            moved = fn(probe)
        except Exception as err:
            raise CompiledModelError(
                f"byoc_torch: a compiled model runs where it was compiled "
                f"({self.signature.device}) and cannot be moved or converted: {err}"
            ) from err
        if moved.device.type != probe.device.type or moved.dtype != probe.dtype:
            raise CompiledModelError(
                f"byoc_torch: a compiled model runs where it was compiled "
                f"({self.signature.device}, its weights and dtypes are part of the "
                f"executable) and cannot be moved to {moved.device} or converted to "
                f"{moved.dtype}; compile the model again for that device or dtype"
            )
        return self

    def extra_repr(self) -> str:
        ins = ", ".join(f"{s.name}: {s.dtype}{_shape_str(s.shape)}" for s in self.signature.inputs)
        ops = self.torch_ops
        return (
            f"inputs=[{ins}], device={self.signature.device}, "
            f"torch_ops={len(ops)} {sorted(set(ops))}, "
            f"torch_subgraphs={self.num_torch_subgraphs()}, artifact={self._artifact_size} bytes"
        )

    # -- inspection ---------------------------------------------------------------------------
    def report(self) -> Report:
        """Where every node runs and why (see :mod:`byoc_torch.report`).

        A loaded model reads the report its artifact carries.
        """
        if self._report is None:
            if self.signature.report is None:
                raise ArtifactError("byoc_torch: this artifact carries no report")
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


def _fallbacks_of(report: Report) -> list[FallbackRecord]:
    """The fallback records a report lists (a loaded model's records)."""
    return [
        FallbackRecord(n.node, n.op, Reason.parse(n.reason), n.detail)
        for n in report.torch_nodes()
        if n.op != "getitem"
    ]


def _call_specs(signature: Signature) -> tuple[list[list[int]], list[list[int]]]:
    """The checked call's input specs (runtime/checked_call.cc): [dtype code, bits, lanes,
    rank, dims...] with a symbolic dim as -(symbol number + 1); and each symbol's allowed
    [min, max] (max -1: unbounded), followed for a derived dim (``s0 + 2``) by [symbol
    number of s0, a, b] (the dim is a * s0 + b)."""
    symbols: dict[str, int] = {}
    specs = []
    for spec in signature.inputs:
        try:
            dtype = tvm_ffi.dtype(spec.dtype)
            head = [dtype.type_code, dtype.bits, dtype.lanes]
        except Exception:  # a dtype tvm-ffi cannot name: nothing passes (code 255)
            head = [255, 0, 0]
        dims = [
            d if isinstance(d, int) else -(symbols.setdefault(d, len(symbols)) + 1)
            for d in spec.shape
        ]
        specs.append([*head, len(dims), *dims])
    bounds = []
    for name in symbols:  # in symbol-number order
        lower, upper = signature.ranges.get(name, (0, None))
        bounds.append([lower, -1 if upper is None else upper])
        if name in signature.derived:
            base, a, b = signature.derived[name]
            bounds[-1] += [symbols[base], a, b]
    return specs, bounds


@functools.cache
def _linear_dim(expr: str) -> tuple[int, int] | None:
    """(a, b) when the dim ``expr`` (torch's text of it, e.g. ``2*s39 + 1``) is ``a*s + b``
    of one symbol with whole a >= 1 and b, else None (not checked beyond its range)."""
    import sympy

    parsed = sympy.sympify(expr)
    symbols = list(parsed.free_symbols)
    if len(symbols) != 1:
        return None
    poly = sympy.Poly(parsed, symbols[0])
    if poly.degree() != 1 or not all(c.is_integer for c in poly.all_coeffs()):
        return None
    a, b = (int(c) for c in poly.all_coeffs())
    return (a, b) if a >= 1 else None


def _reachable(expr: str, got: int) -> bool:
    """Is ``got`` a value of the dim ``expr`` for a whole value of its symbol?"""
    linear = _linear_dim(expr)
    return linear is None or (got - linear[1]) % linear[0] == 0


def _shape_str(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _torch_modules(executable) -> list:
    """The torch runtime modules inside an executable (a VMExecutable or a loaded module)."""
    return [runtime.module for runtime in TorchRuntime.find(executable)]


def running_torch_modules(executable) -> list:
    """The torch runtime modules of ``executable``: its own (what ``export`` serializes) and,
    when it is not runnable as it is (a C source module inside), the copy in the module TVM's
    ``jit`` exported and loaded, which every VirtualMachine over it runs (jit caches it). Modes
    and AOTInductor packages must reach both."""
    own = _torch_modules(executable)
    running = _torch_modules(executable.jit())
    return own + [m for m in running if all(not m.same_as(o) for o in own)]


def set_metadata(executable, text: str) -> None:
    """Replace the signature metadata the executable's torch runtime module carries (the
    driver builds first and sets the final signature, report included, afterwards)."""
    runtimes = TorchRuntime.find(executable)
    if not runtimes:
        raise ArtifactError("byoc_torch: this executable has no torch runtime module")
    for runtime in runtimes:
        runtime.set_metadata(text)


def _runtime_symbols(executable) -> list[str]:
    return [s for runtime in TorchRuntime.find(executable) for s in runtime.symbols()]


def _metadata(executable) -> str | None:
    for runtime in TorchRuntime.find(executable):
        text = runtime.metadata()
        if text:
            return text
    return None


def load(
    path: str | os.PathLike, *, allow_unsealed: bool = _defaults.LOAD_ALLOW_UNSEALED
) -> CompiledModule:
    """Load an artifact written by :meth:`CompiledModule.export`.

    The whole file is verified (length and SHA-256, :mod:`byoc_torch.artifact_file`) before
    the dynamic loader sees it; a damaged file raises :class:`ArtifactError`. A file without
    byoc_torch's seal (e.g. plain ``export_library`` output) is refused unless
    ``allow_unsealed=True``. Loading runs the TorchScript inside the artifact: load only
    artifacts you trust.
    """
    data = artifact_file.read_file(path)  # read once: these bytes are verified, loaded and kept
    return load_bytes(data, source=str(path), allow_unsealed=allow_unsealed)


def load_bytes(
    data: bytes,
    *,
    source: str = "<bytes>",
    allow_unsealed: bool = _defaults.LOAD_ALLOW_UNSEALED,
    state: Sequence[torch.Tensor] | None = None,
) -> CompiledModule:
    """:func:`load` of an artifact held in memory (``artifact_file.export_bytes`` of a
    ``CompiledModule.executable``, or a sealed file's bytes); ``source`` names it in errors.
    ``state``: the tensors of the buffers the model updates in place (default: the values the
    artifact stores)."""
    executable = artifact_file.load_bytes(data, source=source, allow_unsealed=allow_unsealed)
    return _from_executable(executable, source, bytes(data), state)


def _unpickle(data: bytes, state: list | None = None) -> CompiledModule:
    """:func:`load_bytes` of a compiled model being unpickled (with the values of the buffers
    it updates), its errors naming the file ``torch.load`` or ``pickle.load`` reads (found on
    the caller's stack)."""
    return load_bytes(data, source=_unpickling_source(), state=state)


def _unpickling_source() -> str:
    """``"<file> (a compiled model pickled inside it)"`` for the file the innermost
    ``torch.load`` / ``pickle.load`` on the stack reads, else ``"<bytes>"``."""
    frame = sys._getframe(1)
    for _ in range(64):
        if frame is None:
            break
        if frame.f_code.co_name in ("load", "_load"):
            f = frame.f_locals.get("f", frame.f_locals.get("file"))
            name = f if isinstance(f, str | os.PathLike) else getattr(f, "name", None)
            if isinstance(name, str | os.PathLike):
                return f"{os.fspath(name)} (a compiled model pickled inside it)"
        frame = frame.f_back
    return "<bytes>"


def _from_executable(
    executable: tvm.runtime.Module, source: str, artifact: bytes, state: list | None = None
) -> CompiledModule:
    text = _metadata(executable)
    if text is None:
        raise ArtifactError(
            f"byoc_torch.load: {source} carries no byoc_torch signature: it was not written by "
            "CompiledModule.export or byoc_torch.export_executable (an executable built from a "
            "Relax module: write it with byoc_torch.export_executable(ex, path, mod))"
        )
    signature = Signature.from_json(text)
    check_host(signature.cpu, source)
    if artifact_file.sealed_digest(artifact) is None:  # loaded unsealed (allow_unsealed=True)
        artifact = artifact_file.seal_bytes(artifact)  # trusted by the caller: the op runs it
    return CompiledModule(executable, signature, artifact=artifact, state=state)
