"""byoc_torch's errors, one hierarchy.

Place in the data flow: raised by every stage; imported by all of them and by users who catch
them. Each error also derives from the builtin exception its situation calls for
(``TypeError`` for a wrong type, ``ValueError`` for a bad value, ``RuntimeError`` for a failure
while compiling), so ``except ValueError`` keeps working where it did. Each is registered with
tvm-ffi's error registry, so one raised inside a callback that TVM's C++ calls (a pass, a type
relation) reaches the user with its type.

The torchop's type error, :class:`relay_ext.TorchOpTypeError`, belongs to the operator package
(:mod:`relay_ext`), which does not depend on byoc_torch; it is re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import tvm_ffi

from relay_ext import TorchOpTypeError

if TYPE_CHECKING:
    from .records import FallbackRecord

__all__ = [
    "ArtifactError",
    "BuildFailure",
    "ByocTorchError",
    "CPUFeatureError",
    "CompiledModelError",
    "ExportError",
    "FallbackError",
    "FullCompilationError",
    "InputError",
    "InputTypeError",
    "OptionError",
    "OptionTypeError",
    "ScriptError",
    "TorchOpTypeError",
    "UnregisteredOpError",
    "VerificationError",
]


class ByocTorchError(Exception):
    """Base of every error byoc_torch raises on purpose."""


@tvm_ffi.register_error
class FallbackError(ByocTorchError, ValueError):
    """An FX node that cannot run in LibTorch either (e.g. it passes a complex value to TVM,
    or cannot be expressed as a TorchScript function of tensor inputs)."""


@tvm_ffi.register_error
class ScriptError(FallbackError, TypeError):
    """Something cannot be written as TorchScript, so it cannot run in LibTorch: a submodule or
    function ``torch.jit.script`` rejects, or a value TorchScript cannot type. The one type for
    "cannot script" (a :class:`FallbackError`, and a ``TypeError`` as PyTorch's own)."""


@tvm_ffi.register_error
class ExportError(ByocTorchError, RuntimeError):
    """``torch.export`` cannot capture the model (e.g. Python control flow on tensor values);
    the message says which way around it byoc_torch offers."""


@tvm_ffi.register_error
class FullCompilationError(ByocTorchError, RuntimeError):
    """``require_full_compilation=True`` and some ops would run in LibTorch."""

    def __init__(self, records: Sequence[FallbackRecord] | str) -> None:
        if isinstance(records, str):  # re-created from its message after crossing the FFI
            self.records = []
            super().__init__(records)
            return
        self.records = list(records)
        lines = [
            f"  {r.node} ({r.op}): {r.reason}" + (f": {r.detail}" if r.detail else "")
            for r in self.records
        ]
        super().__init__(
            f"require_full_compilation=True, but {len(self.records)} op(s) would run in "
            "LibTorch:\n" + "\n".join(lines)
        )


@tvm_ffi.register_error
class BuildFailure(ByocTorchError, RuntimeError):
    """``relax.build`` failed and no single TVM-side node explains it."""


@tvm_ffi.register_error
class VerificationError(ByocTorchError, RuntimeError):
    """Verification did not settle: values kept differing after the round limit."""


@tvm_ffi.register_error
class InputError(ByocTorchError, ValueError):
    """A call's input has the wrong shape or device for the compiled model."""


@tvm_ffi.register_error
class InputTypeError(ByocTorchError, TypeError):
    """A call has the wrong number of inputs, or an input of the wrong type or dtype."""


@tvm_ffi.register_error
class OptionError(ByocTorchError, ValueError):
    """An option names something that does not exist (an op no registry knows), or is given
    to a stage that cannot honour it; the message lists what is valid."""


@tvm_ffi.register_error
class OptionTypeError(OptionError, TypeError):
    """An option that does not exist, or is given a value of the wrong type (an
    :class:`OptionError`, and a ``TypeError`` as Python's own for a wrong keyword)."""


@tvm_ffi.register_error
class ArtifactError(ByocTorchError, ValueError):
    """A file is not a loadable byoc_torch artifact (damaged, foreign or unreadable)."""


@tvm_ffi.register_error
class CompiledModelError(ByocTorchError, RuntimeError):
    """An operation a compiled model does not support, such as moving it to another device or
    converting it to another dtype (its executable is built for one device and dtype)."""


@tvm_ffi.register_error
class UnregisteredOpError(ByocTorchError, ValueError):
    """A subgraph's TorchScript calls ``torch.ops.<ns>.<op>`` that this process has not
    registered (raised by the C++ runtime when it compiles the subgraph, at compile time or
    when an artifact is loaded). Register the op first: import the Python module that defines
    it with ``torch.library``, or ``torch.ops.load_library`` its C++ library."""


@tvm_ffi.register_error
class CPUFeatureError(ByocTorchError, RuntimeError):
    """An artifact was compiled for a CPU with instruction-set features this CPU lacks
    (byoc_torch.cpu)."""


def first_line(error: BaseException) -> str:
    """``error``'s type and the first line of its message (at most 300 characters): how a
    report names a failure it recovered from."""
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0][:300] if text else type(error).__name__
