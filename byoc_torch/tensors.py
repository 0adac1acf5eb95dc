"""Tensors between PyTorch and TVM on the Python side: DLPack views both ways.

Place in the data flow: the compiled model hands its inputs to TVM's VM as torch tensors made
TVM-ready by :func:`tvm_ready` (tvm-ffi exchanges them with DLPack during the call) and
flattens the VM's (possibly nested) result with :func:`flatten_tvm`; verification and the
sweep convert with :func:`to_tvm` and use the same flattening.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import tvm

from ._defaults import TVM_ALIGNMENT

__all__ = ["flatten_tvm", "to_tvm", "tvm_ready"]


def tvm_ready(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when TVM can take its memory as it is, else a compact copy.

    TVM's kernels need compact tensors whose data is 64-byte aligned. A non-contiguous tensor
    (a transpose, channels-last) or an unaligned view (e.g. ``x[1:]``) is copied once into a
    fresh compact tensor (LibTorch's CPU allocator aligns to 64 bytes).
    """
    if not x.is_contiguous() or x.data_ptr() % TVM_ALIGNMENT:
        return x.clone(memory_format=torch.contiguous_format)
    return x


def to_tvm(x: torch.Tensor) -> tvm.runtime.Tensor:
    """A TVM view of ``x`` without a copy, when TVM can take it as it is (see
    :func:`tvm_ready`); otherwise a view of a compact copy."""
    return tvm.runtime.from_dlpack(tvm_ready(x))


def flatten_tvm(value) -> list:
    """The tensors of a VM result (a tensor or nested arrays of them), in order. Leaves are
    TVM tensors, or torch tensors when tvm-ffi converted them on the way out (it does when a
    torch tensor was among the call's arguments)."""
    if isinstance(value, tvm.runtime.Tensor | torch.Tensor):
        return [value]
    if isinstance(value, Sequence) or hasattr(value, "__len__"):
        out = []
        for v in value:
            out.extend(flatten_tvm(v))
        return out
    raise TypeError(f"byoc_torch: unexpected VM result {type(value).__name__}")
