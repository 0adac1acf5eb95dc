"""A custom PyTorch operator registered with ``torch.library``, for tests and docs of
``byoc_torch.call_torch``: importing this module registers ``byoc_torch_testing::scale_shift``
in the process (as a user's own op library would), so a fresh process that loads an artifact
calling it imports this module first.
"""

from __future__ import annotations

import torch

__all__ = ["scale_shift"]


@torch.library.custom_op("byoc_torch_testing::scale_shift", mutates_args=())
def scale_shift(x: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """``x * scale + shift``, computed eagerly (no TVM equivalent: a user's own kernel)."""
    return x * scale + shift


@scale_shift.register_fake
def _(x: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    return torch.empty_like(x)
