"""``torch_executed_modules``: run whole submodules in LibTorch, as scripted TorchScript.

Place in the data flow: before torch.export. ``byoc_torch.compile`` calls
:func:`hide_forced_modules`, which scripts each forced submodule with ``torch.jit.script`` (so
its forward may branch and loop on tensor values, which torch.export cannot capture) and swaps
it, for the duration of the export, for a stand-in that calls a custom op
``byoc_torch_fm::m<k>``. torch.export records one node for that op; TVM has no converter for
it, so the frontend turns it into a torchop whose TorchScript calls the scripted module, which
travels with the torchop (``modules`` attribute) into the runtime.

The custom op's fake (shape) function reuses what one eager run on the example inputs showed:
an output dim equal to an input dim follows that input dim (symbolically, under dynamic
shapes); any other dim is taken as the constant it was. A module whose output sizes depend on
tensor values therefore needs static shapes.

The custom ops live only as long as the ExportedProgram that calls them: each op has its own
``torch.library.Library`` handle, destroyed (definition, kernel, fake function and the
``torch.ops`` entry) by :func:`release_forced_modules` — which ``compile`` and ``report`` call
when they finish — or when the program is garbage-collected. Freed names (``m0``, ``m1``, ...)
are reused, the lowest first, so neither torch's op registry nor the names grow across
compiles.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import OptionError, OptionTypeError, ScriptError

logger = logging.getLogger(__name__)

__all__ = [
    "ForcedModule",
    "forced_module_for_op",
    "hide_forced_modules",
    "release_forced_modules",
    "release_program",
    "tie_to_program",
]

NAMESPACE = "byoc_torch_fm"
_LOCK = threading.Lock()
_BY_OP: dict[str, ForcedModule] = {}  # live ops only, by name
_LIBRARIES: dict[str, torch.library.Library] = {}  # the registration handle of each live op
_RELEASES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # program -> finalizer


@dataclass(frozen=True)
class ForcedModule:
    """A submodule forced to LibTorch: its scripted form and the op that stands for it."""

    qualname: str
    type_name: str
    op_name: str  # e.g. "m3" in namespace byoc_torch_fm
    attribute: str  # its name inside a subgraph's TorchScript module, e.g. "mod_3"
    payload: bytes  # torch.jit.save of the scripted module
    returns_tuple: bool
    num_outputs: int

    @property
    def payload_b64(self) -> str:
        return base64.b64encode(self.payload).decode("ascii")


def forced_module_for_op(target: object) -> ForcedModule | None:
    """The forced module an FX node's target stands for, if any."""
    schema = getattr(target, "_schema", None)
    if schema is None:
        return None
    ns, _, name = schema.name.partition("::")
    return _BY_OP.get(name) if ns == NAMESPACE else None


def _matches(name: str, module: nn.Module, targets: Sequence[str | type]) -> bool:
    for t in targets:
        if isinstance(t, str) and t == name:
            return True
        if isinstance(t, type) and isinstance(module, t):
            return True
    return False


def _select(model: nn.Module, targets: Sequence[str | type]) -> list[tuple[str, nn.Module]]:
    chosen: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix, _ in chosen if prefix):
            continue  # inside a module already forced whole
        if _matches(name, module, targets):
            chosen.append((name, module))
    names = {n for n, _ in chosen}
    missing = [t for t in targets if isinstance(t, str) and t not in names]
    if missing:
        available = [n for n, _ in model.named_modules() if n][:20]
        raise OptionError(
            f"torch_executed_modules: no submodule named {missing}; submodules include "
            f"{available} (to force every instance of a class, pass the class itself)"
        )
    return chosen


def _record_calls(
    model: nn.Module, chosen: list[tuple[str, nn.Module]], example_inputs: tuple
) -> dict[str, tuple[tuple, object]]:
    """Run the model once and record each chosen module's (inputs, outputs)."""
    seen: dict[str, tuple[tuple, object]] = {}
    handles = []
    for name, module in chosen:

        def hook(mod, args, kwargs, output, name=name):
            if kwargs:
                raise OptionTypeError(
                    f"torch_executed_modules: '{name}' is called with keyword arguments "
                    f"{sorted(kwargs)}; only positional tensor arguments are supported"
                )
            seen.setdefault(name, (args, output))

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _script(name: str, module: nn.Module) -> bytes:
    try:
        scripted = torch.jit.script(module)
    except Exception as err:
        raise ScriptError(
            f"torch_executed_modules: '{name}' ({type(module).__name__}) cannot be scripted "
            f"with torch.jit.script: {err}"
        ) from err
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def _flat_outputs(name: str, output: object) -> tuple[list[torch.Tensor], bool]:
    if isinstance(output, torch.Tensor):
        return [output], False
    if (
        isinstance(output, tuple | list)
        and output
        and all(isinstance(o, torch.Tensor) for o in output)
    ):
        return list(output), True
    raise OptionTypeError(
        f"torch_executed_modules: '{name}' returns {type(output).__name__}; only a tensor or a "
        "tuple of tensors is supported"
    )


def _define_op(name: str, module: nn.Module, args: tuple, outputs: list[torch.Tensor]) -> str:
    for k, a in enumerate(args):
        if not isinstance(a, torch.Tensor):
            raise OptionTypeError(
                f"torch_executed_modules: argument {k} of '{name}' is a {type(a).__name__}; "
                "only tensor arguments are supported"
            )
    with _LOCK:
        op = next(f"m{k}" for k in range(len(_LIBRARIES) + 1) if f"m{k}" not in _LIBRARIES)
        library = _LIBRARIES[op] = torch.library.Library(NAMESPACE, "FRAGMENT")
    try:
        _register(library, op, name, module, args, outputs)
    except BaseException:
        release_forced_modules([op])
        raise
    return op


def _register(
    library: torch.library.Library,
    op: str,
    name: str,
    module: nn.Module,
    args: tuple,
    outputs: list[torch.Tensor],
) -> None:
    """Define ``op`` in ``library``: schema, the eager kernel and the fake (shape) function."""
    library.define(f"{op}(Tensor[] xs) -> Tensor[]")
    example_shapes = [tuple(a.shape) for a in args]

    def run(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out, _ = _flat_outputs(name, module(*xs))
        inputs = {x.untyped_storage().data_ptr() for x in xs}
        return [o.clone() if o.untyped_storage().data_ptr() in inputs else o for o in out]

    def fake(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        result = []
        for o in outputs:
            shape = []
            for v in o.shape:
                source = next(
                    (
                        (i, d)
                        for i, s in enumerate(example_shapes)
                        for d, dim in enumerate(s)
                        if dim == v and i < len(xs)
                    ),
                    None,
                )
                shape.append(xs[source[0]].shape[source[1]] if source else v)
            result.append(xs[0].new_empty(shape, dtype=o.dtype) if xs else torch.empty(shape))
        return result

    library.impl(op, run, "CompositeExplicitAutograd")
    torch.library.register_fake(f"{NAMESPACE}::{op}", fake, lib=library)


def release_forced_modules(ops: Sequence[str]) -> None:
    """Deregister the custom ops named ``ops`` (idempotent) and free their names."""
    for op in ops:
        with _LOCK:
            library = _LIBRARIES.pop(op, None)
            _BY_OP.pop(op, None)
        if library is not None:
            library._destroy()  # torch's own handle: definition, kernel, fake, torch.ops entry
            logger.debug("released %s::%s", NAMESPACE, op)


def tie_to_program(program: object, forced: Sequence[ForcedModule]) -> None:
    """Release the ops of ``forced`` when ``program`` is garbage-collected, or earlier by
    :func:`release_program`."""
    if forced:
        ops = tuple(f.op_name for f in forced)
        _RELEASES[program] = weakref.finalize(program, release_forced_modules, ops)


def release_program(program: object) -> None:
    """Release the ops the forced modules of ``program`` registered (see module doc)."""
    finalizer = _RELEASES.pop(program, None)
    if finalizer is not None:
        finalizer()


class _StandIn(nn.Module):
    """Takes a forced module's place during torch.export: one opaque custom-op call."""

    def __init__(self, op: str, returns_tuple: bool) -> None:
        super().__init__()
        self.op = op
        self.returns_tuple = returns_tuple

    def forward(self, *xs: torch.Tensor):
        out = getattr(getattr(torch.ops, NAMESPACE), self.op)(list(xs))
        return tuple(out) if self.returns_tuple else out[0]


def _set_submodule(model: nn.Module, qualname: str, new: nn.Module) -> None:
    parent_name, _, child = qualname.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@contextlib.contextmanager
def hide_forced_modules(
    model: nn.Module, example_inputs: tuple, targets: Sequence[str | type]
) -> Iterator[list[ForcedModule]]:
    """Within the block, each forced submodule of ``model`` is replaced by a custom-op call.

    Yields the :class:`ForcedModule` records; restores the original submodules on exit. The
    ops stay registered (the exported program calls them) until released: pass the program
    to :func:`tie_to_program`. If the block fails, they are released at once.
    """
    if not targets:
        yield []
        return
    chosen = _select(model, targets)
    if not chosen:
        raise OptionError(f"torch_executed_modules: no submodule matches {list(targets)}")
    if any(name == "" for name, _ in chosen):
        raise OptionError(
            "torch_executed_modules: the whole model matches; run it with torch.jit.script "
            "instead of compiling it"
        )
    calls = _record_calls(model, chosen, example_inputs)
    forced: list[ForcedModule] = []
    swapped: list[tuple[str, nn.Module]] = []
    try:
        for name, module in chosen:
            if name not in calls:
                raise OptionError(
                    f"torch_executed_modules: '{name}' is never called by the model's forward"
                )
            args, output = calls[name]
            outputs, returns_tuple = _flat_outputs(name, output)
            payload = _script(name, module)
            op = _define_op(name, module, args, outputs)
            record = ForcedModule(
                name,
                type(module).__name__,
                op,
                f"mod_{op[1:]}",
                payload,
                returns_tuple,
                len(outputs),
            )
            with _LOCK:
                _BY_OP[op] = record
            forced.append(record)
            _set_submodule(model, name, _StandIn(op, returns_tuple))
            swapped.append((name, module))
            logger.debug("forced module %s (%s) -> %s::%s", name, record.type_name, NAMESPACE, op)
        yield forced
    except BaseException:
        release_forced_modules([f.op_name for f in forced])
        raise
    finally:
        for name, module in reversed(swapped):
            _set_submodule(model, name, module)
