"""Tensors between PyTorch and TVM on the Python side: DLPack views both ways.

Place in the data flow: the compiled model hands its inputs to TVM's VM as torch tensors made
TVM-ready by :func:`tvm_ready` (tvm-ffi exchanges them with DLPack during the call) and
flattens the VM's (possibly nested) result with :func:`flatten_tvm`; verification and the
sweep convert with :func:`to_tvm` and use the same flattening. :func:`target_device_type` is
the one place a TVM target is mapped to the device its code runs on. :func:`random_tensor` is
the one generator of random inputs (verification without example inputs, Dynamo's fake inputs,
tuning's timing inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import tvm

from ._defaults import RANDOM_INT_HIGH, TVM_ALIGNMENT

__all__ = [
    "flatten_tvm",
    "random_tensor",
    "target_device_type",
    "to_device",
    "to_tvm",
    "tvm_ready",
]


def random_tensor(
    shape: Sequence[int],
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A random tensor: floating (and complex) values standard normal, bools a fair coin,
    integers in ``[0, RANDOM_INT_HIGH)`` (small enough to be valid indices). ``generator``:
    PyTorch's global one when None."""
    shape = list(shape)
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=generator, device=device).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator, device=device) > 0.5
    return torch.randint(0, RANDOM_INT_HIGH, shape, generator=generator, device=device).to(dtype)


def target_device_type(target) -> str:
    """``"cuda"`` for a CUDA target, ``"cpu"`` for any other: ``target`` is a TVM target string
    (``"cuda -arch=sm_80"``), a dict (``{"kind": "cuda", "arch": "sm_80"}``) or a
    ``tvm.target.Target``."""
    if isinstance(target, dict):
        kind = target.get("kind")
    elif isinstance(target, tvm.target.Target):
        kind = target.kind.name
    else:
        kind = str(target).split()[0] if str(target).strip() else ""
    return "cuda" if str(kind) == "cuda" else "cpu"


def to_device(x: torch.Tensor, device_type: str) -> torch.Tensor:
    """``x`` on the torch device of ``device_type`` (itself when it is there already)."""
    return x if x.device.type == device_type else x.to(device_type)


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
