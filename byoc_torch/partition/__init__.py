"""The partition room: torchop calls -> maximal cycle-free ``Codegen="torch"`` functions.

* ``grouping.py``  the grouping algorithm (maximal, cycle-free, near-linear; free of TVM types);
* ``transform.py`` the ``PartitionForTorch`` pass that applies it to Relax and lifts the groups;
* ``min_block.py`` ``min_block_size``: small TVM blocks between LibTorch ops join LibTorch.
"""

from .transform import PartitionForTorch, partition_for_torch, torch_functions

__all__ = ["PartitionForTorch", "partition_for_torch", "torch_functions"]
