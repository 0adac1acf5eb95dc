"""The frontend room: ExportedProgram -> Relax, with ``relax.torchop`` for what TVM cannot handle.

Files, in the order a node meets them:

* ``decompose.py``   torch.export's core-ATen decomposition (linear algebra kept whole);
* ``importer.py``    TVM's importer with byoc_torch's decision hooked into its convert map;
* ``deny_list.py``   TVM conversions known to be wrong (``deny_list.json``, versioned);
* ``modules.py``     ``torch_executed_modules``: submodules hidden behind opaque ops;
* ``outputs.py``     the outputs TVM returns: constants dropped, complex ones as real views;
* ``random.py``      random ops run in LibTorch on PyTorch's generator;
* ``complex.py``     complex values kept inside LibTorch (clusters around their sinks);
* ``torchscript.py`` the TorchScript of a fallback node (and of a whole group, for partition);
* ``higher_order.py`` ``while_loop`` and ``map`` as TorchScript loops over their subgraphs;
* ``small_blocks.py`` ``min_block_size`` on the FX graph;
* ``types.py``       torch.export metadata as Relax types.
"""

from .importer import ImportResult, from_exported_program, import_with_records

__all__ = ["ImportResult", "from_exported_program", "import_with_records"]
