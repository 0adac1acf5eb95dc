"""How close two floating results must be to count as equal: one table for the whole package.

Place in the data flow: verification compares TVM's value of every node with PyTorch's using
it; the demo, the overhead study, the sweep and the tests compare whole outputs with it.

A reduction (a matmul, a convolution, a sum) adds K rounded terms, and two correct
implementations that add them in different orders differ by about ``eps * sqrt(K)`` times the
size of the terms, not of the result (whose terms may cancel). PyTorch's own tests widen their
tolerances the same way for such ops. :func:`reduction_tolerance` scales the per-dtype
tolerance by ``sqrt(K)`` and the absolute part also by the terms' magnitude; :func:`reduction_size`
reads K and that magnitude off an FX node of the ops that reduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["TOLERANCES", "reduction_size", "reduction_tolerance", "tolerance"]

# (rtol, atol) per floating or complex dtype; integer and bool values compare exactly.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float32: (1e-4, 1e-5),
    torch.float64: (1e-7, 1e-9),
    torch.complex64: (1e-4, 1e-5),
    torch.complex128: (1e-7, 1e-9),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing two values of ``dtype``: exact for integers and bool."""
    if dtype.is_floating_point or dtype.is_complex:
        return TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    return 0.0, 0.0


def reduction_tolerance(dtype: torch.dtype, k: int, magnitude: float = 1.0) -> tuple[float, float]:
    """(rtol, atol) for a value that sums ``k`` terms of about ``magnitude`` each: the
    per-dtype tolerance grown by ``sqrt(k)``, the absolute part also by the magnitude (at
    least 1). Exact for integers and bool; ``k <= 1`` is :func:`tolerance` itself."""
    rtol, atol = tolerance(dtype)
    if k <= 1 or (rtol == 0.0 and atol == 0.0):
        return rtol, atol
    grow = math.sqrt(k)
    return rtol * grow, atol * grow * max(magnitude, 1.0)


def _amax(x: object) -> float:
    if isinstance(x, torch.Tensor) and x.numel() and (x.is_floating_point() or x.is_complex()):
        return float(x.detach().abs().max())
    return 1.0


def _dims_product(x: torch.Tensor, dims: object) -> int:
    if dims is None or dims == []:
        return x.numel()
    dims = [dims] if isinstance(dims, int) else list(dims)
    return math.prod(x.shape[d] for d in dims) if x.dim() else 1


def reduction_size(target: object, args: tuple, kwargs: dict) -> tuple[int, float]:
    """(K, magnitude of one term) of an op call that reduces (1, 1.0 for any other op).
    ``args`` hold the op's argument values (tensors where the node takes tensors)."""
    rule = _REDUCTIONS.get(getattr(target, "overloadpacket", None))
    if rule is None:
        return 1, 1.0
    try:
        return rule(args, kwargs)
    except (IndexError, TypeError, ValueError, RuntimeError):
        return 1, 1.0


def _matmul(a: int, b: int) -> Callable:
    def rule(args: tuple, kwargs: dict) -> tuple[int, float]:
        x, y = args[a], args[b]
        return int(x.shape[-1]), _amax(x) * _amax(y)

    return rule


def _conv(args: tuple, kwargs: dict) -> tuple[int, float]:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    k = math.prod(w.shape[2:]) * (w.shape[0] if transposed else w.shape[1])
    return int(k), _amax(x) * _amax(w)


def _sum(args: tuple, kwargs: dict) -> tuple[int, float]:
    x = args[0]
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    return _dims_product(x, dims), _amax(x)


aten = torch.ops.aten
_REDUCTIONS: dict[object, Callable[[tuple, dict], tuple[int, float]]] = {
    aten.mm: _matmul(0, 1),
    aten.bmm: _matmul(0, 1),
    aten.matmul: _matmul(0, 1),
    aten.addmm: _matmul(1, 2),
    aten.baddbmm: _matmul(1, 2),
    aten.linear: _matmul(0, 1),
    aten.convolution: _conv,
    aten.sum: _sum,
    aten.cumsum: _sum,
}
