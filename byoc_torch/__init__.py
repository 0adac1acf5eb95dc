"""byoc_torch: run any PyTorch model on TVM; what TVM cannot handle runs in LibTorch.

The pipeline, one room per stage, in data-flow order (docs/architecture.md has the map):

* :mod:`byoc_torch.frontend`   ExportedProgram -> Relax, unsupported nodes as ``relax.torchop``
  (the operator itself is in :mod:`relay_ext`);
* :mod:`byoc_torch.partition`  maximal cycle-free torchop groups -> ``Codegen="torch"`` functions;
* :mod:`byoc_torch.codegen`    ``relax.ext.torch``: those functions -> one C++ runtime module;
* :mod:`byoc_torch.verify`     build failures and wrong values moved to LibTorch;
* :mod:`byoc_torch.driver`     ``compile``: the whole pipeline and ``relax.build``;
* :mod:`byoc_torch.compiled`   the callable result (an ``nn.Module``), ``export`` and
  :func:`load`;
* :mod:`byoc_torch.torch_library` the op ``torch.ops.byoc_torch.execute`` and its object, what
  PyTorch's tracers and serializers see of a compiled model;
* :mod:`byoc_torch.dynamo`     the ``torch.compile`` backend ``"byoc_torch"``.

The top level is the user's API: ``compile``, ``report``, ``load``/``load_bytes``,
``CompiledModule``, ``Options``, ``Report`` (with ``FallbackRecord`` and ``Reason``), the errors,
``call_torch``, ``export_program`` and ``dynamo_backend``. The pieces for driving TVM by hand
live in :mod:`byoc_torch.relax` (``from_exported_program``, ``PartitionForTorch``,
``partition_for_torch``, ``LowerTorchFunctions``, ``torch_codegen``, ``torch_functions``); their
former top-level names (``byoc_torch.partition_for_torch`` ...) remain as aliases of those.

Importing the package loads the C++ runtime and what loading an artifact needs; the compiler
(TVM's PyTorch importer and the stages above) is imported on first use, so
``byoc_torch.load`` never pulls it in.
"""

from __future__ import annotations

import importlib

from . import (
    _env,  # noqa: F401  (GOMP_SPINCOUNT, before anything loads torch)
    runtime,  # noqa: F401  (loads the C++ runtime first)
)
from . import quiet as _quiet
from . import threads as _threads
from .compiled import CompiledModule, load, load_bytes
from .errors import (
    ArtifactError,
    BuildFailure,
    ByocTorchError,
    CompiledModelError,
    CPUFeatureError,
    ExportError,
    FallbackError,
    FullCompilationError,
    InputError,
    InputTypeError,
    OptionError,
    OptionTypeError,
    ScriptError,
    TorchOpTypeError,
    UnregisteredOpError,
    VerificationError,
)
from .options import Options
from .records import FallbackRecord, Reason
from .reporting import Report

# Before TVM starts a thread pool: its idle workers sleep instead of spinning against LibTorch,
# and it pins no threads to cores, unless the user set these (byoc_torch.threads).
_threads.set_env_defaults()
# BYOC_TORCH_LOG=debug shows what byoc_torch keeps off the terminal (byoc_torch.quiet).
_quiet.configure_from_env()

# Public names served lazily: name -> module that defines it.
_LAZY = {
    "call_torch": "torch_calls",
    "compile": "driver",
    "export_program": "driver",
    "export_executable": "executables",
    "report": "driver",
    "dynamo_backend": "dynamo",
}
# The Relax-facing pieces live in byoc_torch.relax; their former top-level names are aliases.
_RELAX_ALIASES = (
    "LowerTorchFunctions",
    "PartitionForTorch",
    "from_exported_program",
    "partition_for_torch",
    "torch_codegen",
    "torch_functions",
)


def __getattr__(name: str) -> object:
    if name == "relax" or name in _RELAX_ALIASES:
        relax = importlib.import_module(".relax", __name__)
        return relax if name == "relax" else getattr(relax, name)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'byoc_torch' has no attribute {name!r}")
    importlib.import_module(".codegen", __name__)  # registers relax.ext.torch for RunCodegen
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"relax"})


__all__ = [
    "ArtifactError",
    "BuildFailure",
    "ByocTorchError",
    "CPUFeatureError",
    "CompiledModelError",
    "CompiledModule",
    "ExportError",
    "FallbackError",
    "FallbackRecord",
    "FullCompilationError",
    "InputError",
    "InputTypeError",
    "OptionError",
    "OptionTypeError",
    "Options",
    "Reason",
    "Report",
    "ScriptError",
    "TorchOpTypeError",
    "UnregisteredOpError",
    "VerificationError",
    "call_torch",
    "compile",
    "dynamo_backend",
    "export_executable",
    "export_program",
    "load",
    "load_bytes",
    "relax",
    "report",
]

__version__ = "0.1.0"
