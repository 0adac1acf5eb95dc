"""Concurrent calls of one compiled model."""

from __future__ import annotations

import torch

import byoc_torch
from byoc_torch.models import get_example
from byoc_torch.testing.concurrency import hammer


def test_eight_threads_times_1000_calls_share_one_compiled_model():
    model, (x,) = get_example("demo")
    compiled = byoc_torch.compile(model, (x,))
    inputs = [torch.randn_like(x) for _ in range(8)]
    expected = [compiled(i) for i in inputs]  # single-threaded results, compared bitwise
    with torch.no_grad():
        for got, i in zip(expected, inputs, strict=True):
            torch.testing.assert_close(got, model(i), rtol=1e-4, atol=1e-4)

    def call_is_right(k: int) -> bool:
        got = compiled(inputs[k])
        return all(torch.equal(g, e) for g, e in zip(got, expected[k], strict=True))

    hammer(8, 1000, call_is_right)
