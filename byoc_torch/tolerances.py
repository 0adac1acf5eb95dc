"""How close two floating results must be to count as equal: one table for the whole package.

Place in the data flow: verification compares TVM's value of every node with PyTorch's using
it; the demo, the overhead study, the sweep and the tests compare whole outputs with it.
"""

from __future__ import annotations

import torch

__all__ = ["TOLERANCES", "tolerance"]

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
