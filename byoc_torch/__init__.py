"""byoc_torch: run any PyTorch model on TVM; what TVM cannot handle runs in LibTorch.

Stages, in data-flow order (one module each):

* :mod:`byoc_torch.frontend`   ExportedProgram -> Relax, unsupported nodes as ``relax.torchop``
  (the operator itself is in :mod:`relay_ext`);
* :mod:`byoc_torch.partition`  maximal cycle-free torchop groups -> ``Codegen="torch"`` functions;
* :mod:`byoc_torch.codegen`    ``relax.ext.torch``: those functions -> one C++ runtime module;
* :mod:`byoc_torch.api`        ``compile``: the whole pipeline and ``relax.build``;
* :mod:`byoc_torch.compiled`   the callable result, ``export`` and :func:`load`.
"""

from . import runtime  # noqa: F401  (loads the C++ runtime first)
from .api import compile, export_program, report
from .codegen import LowerTorchFunctions, torch_codegen
from .compiled import CompiledModule, load
from .frontend import FallbackRecord, FullCompilationError, from_exported_program
from .options import Options
from .partition import PartitionForTorch, partition_for_torch, torch_functions
from .report import Report

__all__ = [
    "CompiledModule",
    "FallbackRecord",
    "FullCompilationError",
    "LowerTorchFunctions",
    "Options",
    "PartitionForTorch",
    "Report",
    "compile",
    "export_program",
    "from_exported_program",
    "load",
    "partition_for_torch",
    "report",
    "torch_codegen",
    "torch_functions",
]

__version__ = "0.1.0"
