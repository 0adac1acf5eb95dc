"""Small models for tests and benchmarks, and the compile-run-compare helper they share."""

from __future__ import annotations

import enum
from collections.abc import Callable

import torch

__all__ = ["Activation", "Lambda", "compile_and_check"]


class Activation(enum.Enum):
    """An enum a model takes as an input (torch.export specializes it like a str); importable
    by name in a fresh process, where a loaded model checks it."""

    COS = "cos"
    SIN = "sin"


class Lambda(torch.nn.Module):
    """A module around a function, for one-op and few-op models."""

    def __init__(self, fn: Callable[..., object]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> object:
        return self.fn(*xs)


def compile_and_check(
    model: torch.nn.Module,
    inputs: tuple,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    **options,
):
    """Compile ``model`` with byoc_torch, run it, assert it matches eager; return the compiled
    module.

    ``placement`` defaults to ``"tvm"`` here: tests of the frontend, the partitioner, the
    runtime and verification assert what runs where, which must not depend on timings
    (measured placement has tests of its own, with a fake cost model).
    """
    import byoc_torch

    options.setdefault("placement", "tvm")
    model = model.eval()
    compiled = byoc_torch.compile(model, inputs, **options)
    with torch.no_grad():
        expected = model(*inputs)
    got = compiled(*inputs)
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    return compiled
