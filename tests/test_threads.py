"""Concurrent calls of one compiled model."""

from __future__ import annotations

import threading

import torch

import byoc_torch
from byoc_torch.models import get_example


def test_eight_threads_times_1000_calls_share_one_compiled_model():
    model, (x,) = get_example("demo")
    compiled = byoc_torch.compile(model, (x,))
    inputs = [torch.randn_like(x) for _ in range(8)]
    expected = [compiled(i) for i in inputs]  # single-threaded results, compared bitwise
    with torch.no_grad():
        for got, i in zip(expected, inputs, strict=True):
            torch.testing.assert_close(got, model(i), rtol=1e-4, atol=1e-4)
    errors: list[BaseException] = []
    wrong = []

    def worker(k: int) -> None:
        try:
            for _ in range(1000):
                got = compiled(inputs[k])
                if not all(torch.equal(g, e) for g, e in zip(got, expected[k], strict=True)):
                    wrong.append(k)
                    return
        except BaseException as err:  # collected and re-raised by the test
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert not wrong, f"threads {wrong} got wrong results"
