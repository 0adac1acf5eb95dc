"""byoc_torch's Relax-facing pieces, for Relax modules built or imported by hand.

Place in the data flow: beside the driver, for users who drive TVM themselves, as TVM keeps
``partition_for_cublas`` under its backend. ``byoc_torch.compile`` needs none of these; they
run the same stages on any Relax module::

    from byoc_torch.relax import from_exported_program, partition_for_torch, LowerTorchFunctions

    mod = from_exported_program(ep)            # torchops for what TVM cannot import
    mod = partition_for_torch(mod)             # torchops -> Codegen="torch" functions
    mod = LowerTorchFunctions()(mod)           # -> one C++ runtime module, call_pure_packed
    ex = tvm.relax.build(mod, target)

Importing this module registers ``relax.ext.torch`` (:func:`torch_codegen`), so TVM's own
``relax.transform.RunCodegen()`` finds it too. The same names stay reachable at the top level
(``byoc_torch.partition_for_torch`` ...) as aliases of these.
"""

from __future__ import annotations

from . import _RELAX_ALIASES
from .codegen import LowerTorchFunctions, torch_codegen  # noqa: F401
from .frontend import from_exported_program  # noqa: F401
from .ir import torch_functions  # noqa: F401
from .partition import PartitionForTorch, partition_for_torch  # noqa: F401

# The names are listed once, in byoc_torch/__init__.py (which serves them as aliases).
__all__ = list(_RELAX_ALIASES)
