"""Tensors between PyTorch and TVM on the Python side: DLPack views both ways.

Place in the data flow: the compiled model hands its inputs to TVM's VM with :func:`to_tvm`
and flattens the VM's (possibly nested) result with :func:`flatten_tvm`; verification and the
sweep use the same two.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import tvm

from ._defaults import TVM_ALIGNMENT

__all__ = ["flatten_tvm", "to_tvm"]


def to_tvm(x: torch.Tensor) -> tvm.runtime.Tensor:
    """A TVM view of ``x`` without a copy, when TVM can take it as it is.

    TVM's kernels need compact tensors whose data is 64-byte aligned. A non-contiguous tensor
    or an unaligned view (e.g. ``x[1:]``) is copied once into a fresh compact tensor.
    """
    if not x.is_contiguous() or x.data_ptr() % TVM_ALIGNMENT:
        x = x.clone(memory_format=torch.contiguous_format)
    return tvm.runtime.from_dlpack(x)


def flatten_tvm(value) -> list:
    if isinstance(value, tvm.runtime.Tensor):
        return [value]
    if isinstance(value, Sequence) or hasattr(value, "__len__"):
        out = []
        for v in value:
            out.extend(flatten_tvm(v))
        return out
    raise TypeError(f"byoc_torch: unexpected VM result {type(value).__name__}")
