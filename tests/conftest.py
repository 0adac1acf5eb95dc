"""Shared helpers for byoc_torch's tests."""

from __future__ import annotations

import warnings

import pytest
import torch

import byoc_torch

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


class Lambda(torch.nn.Module):
    """A module around a function, for one-op and few-op test models."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def compile_and_check(model: torch.nn.Module, inputs: tuple, *, rtol=None, atol=None, **options):
    """Compile ``model`` with byoc_torch, run it, assert it matches eager; return the compiled
    module."""
    model = model.eval()
    compiled = byoc_torch.compile(model, inputs, **options)
    with torch.no_grad():
        expected = model(*inputs)
    got = compiled(*inputs)
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    return compiled


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
