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
    "ExportError",
    "FallbackError",
    "FullCompilationError",
    "InputError",
    "InputTypeError",
    "TorchOpTypeError",
    "VerificationError",
]


class ByocTorchError(Exception):
    """Base of every error byoc_torch raises on purpose."""


@tvm_ffi.register_error
class FallbackError(ByocTorchError, ValueError):
    """An FX node that cannot run in LibTorch either (e.g. it passes a complex value to TVM,
    or cannot be expressed as a TorchScript function of tensor inputs)."""


@tvm_ffi.register_error
class ExportError(ByocTorchError, RuntimeError):
    """``torch.export`` cannot capture the model (e.g. Python control flow on tensor values);
    the message says which way around it byoc_torch offers."""


@tvm_ffi.register_error
class FullCompilationError(ByocTorchError, RuntimeError):
    """``require_full_compilation=True`` and some ops would run in LibTorch."""

    def __init__(self, records: Sequence[FallbackRecord]) -> None:
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
class ArtifactError(ByocTorchError, ValueError):
    """A file is not a loadable byoc_torch artifact (damaged, foreign or unreadable)."""
