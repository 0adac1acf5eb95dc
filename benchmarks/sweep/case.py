"""What a sweep case and its result are (see benchmarks/sweep/__init__.py)."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from byoc_torch.testing import Lambda as Fn  # an nn.Module whose forward is fn(*inputs)

logger = logging.getLogger(__name__)

__all__ = ["CORRECT", "FORCED_PREFIX", "STATUSES", "Case", "Fn", "Result", "forced"]

FORCED_PREFIX = "forced:"
STATUSES = ("native", "fallback", "wrong", "error")
CORRECT = ("native", "fallback")


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One sweep case: a tiny model and its example inputs.

    ``make_model`` and ``make_inputs`` run right after ``torch.manual_seed(seed)``, so weights and
    inputs are the same on every run. ``rtol``/``atol`` override the per-dtype tolerances for
    floating outputs. A case with ``dynamic_shapes`` is exported with them and, when
    ``make_alt_inputs`` is given, also checked on those inputs of other sizes.
    """

    name: str
    category: str
    make_model: Callable[[], nn.Module]
    make_inputs: Callable[[], tuple[torch.Tensor, ...]]
    rtol: float | None = None
    atol: float | None = None
    force_torch: bool = False
    dynamic_shapes: object = None  # handed to torch.export.export
    make_alt_inputs: Callable[[], tuple[torch.Tensor, ...]] | None = None  # other sizes
    options: tuple[tuple[str, object], ...] = ()  # byoc_torch.compile options
    # False for ops whose values are undefined (empty_like): only shapes and dtypes compare.
    compare_values: bool = True
    # A generation loop instead of one call: ``make_model`` builds a Hugging Face model,
    # ``make_inputs`` gives (input_ids, attention_mask) prompts, and ``model.generate`` runs
    # through ``torch.compile(model.forward, backend=byoc_torch..., dynamic=True)`` with
    # these settings (``new_tokens``, ``sample``), token for token against eager.
    generate: tuple[tuple[str, object], ...] = ()

    @property
    def seed(self) -> int:
        base = self.name.removeprefix(FORCED_PREFIX)
        return zlib.crc32(base.encode()) & 0x7FFFFFFF


def forced(case: Case) -> Case:
    """``case`` with every ATen op forced into LibTorch (``torch_executed_ops``): a test of the
    TorchScript byoc_torch writes, on the same model and inputs."""
    return replace(case, name=FORCED_PREFIX + case.name, category="forced", force_torch=True)


@dataclass
class Result:
    """The outcome of one case.

    ``stage`` is where an error happened (``export``, ``compile``, ``run``) or ``compare`` for a
    wrong result. ``plain_tvm`` is ``ok``, ``wrong``, ``error`` or ``skipped`` (the same model
    through TVM's own importer, without byoc_torch).
    """

    name: str
    category: str
    status: str
    fallback_ops: list[str] = field(default_factory=list)
    fallback_reasons: list[str] = field(default_factory=list)
    num_torch_subgraphs: int = 0
    stage: str = ""
    error_type: str = ""
    detail: str = ""
    plain_tvm: str = "skipped"
    plain_tvm_detail: str = ""
    seconds: float = 0.0
    traceback: str = ""

    @property
    def correct(self) -> bool:
        return self.status in CORRECT


# Seeded input makers. Each returns one tensor; call them inside ``make_inputs``.
