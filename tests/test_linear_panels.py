"""The runtime's panel multiply (runtime/linear_panels.cc): ``pack_linear_panels`` lays an
(out, in) weight out in 16-column panels, ``linear_panels`` multiplies by them; against a float64
multiply on every edge the kernel has (rows not a multiple of its 6, columns not of 16, inner
sizes past its 512-long block, strided inputs, no bias, one and two threads), and the errors
bad input gets."""

from __future__ import annotations

import pytest
import torch

import byoc_torch  # noqa: F401  (loads the runtime, which registers the ops)

pack = torch.ops.byoc_torch.pack_linear_panels
multiply = torch.ops.byoc_torch.linear_panels


def test_the_panels_are_the_weights_columns_sixteen_at_a_time_zero_padded():
    w = torch.arange(20 * 3, dtype=torch.float32).reshape(20, 3)  # (out, in)
    panels = pack(w)
    assert panels.shape == (2, 3, 16) and panels.is_contiguous()
    torch.testing.assert_close(panels[0], w[:16].t(), rtol=0, atol=0)
    torch.testing.assert_close(panels[1, :, :4], w[16:].t(), rtol=0, atol=0)
    assert panels[1, :, 4:].abs().sum() == 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("rows", "inner", "cols"),
    [(1, 1, 1), (5, 7, 3), (6, 16, 16), (13, 40, 17), (128, 256, 64), (7, 1100, 33), (65, 192, 10)],
)
def test_the_multiply_agrees_with_addmm(rows, inner, cols, threads):
    gen = torch.Generator().manual_seed(rows * 1000 + inner + cols)
    x = torch.randn(rows, inner, generator=gen)
    w = torch.randn(cols, inner, generator=gen)
    b = torch.randn(cols, generator=gen)
    panels = pack(w)
    # against float64: the kernel and ATen sum in other orders (1e-5 of a sum's spread)
    tol = {"rtol": 1e-5, "atol": 1e-5 * inner**0.5}

    def exact(bias, a):
        return (a.double() @ w.double().t() + (0 if bias is None else bias.double())).float()

    strided = torch.randn(rows, 2 * inner, generator=gen)[:, ::2]  # rows read with a step
    wide = torch.randn(rows, inner + 5, generator=gen)[:, 2 : inner + 2]  # a row stride
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for a in (x, strided, wide):
            torch.testing.assert_close(multiply(a, panels, b, cols), exact(b, a), **tol)
        torch.testing.assert_close(multiply(x, panels, None, cols), exact(None, x), **tol)
    finally:
        torch.set_num_threads(before)


def test_no_rows_or_no_inner_values_give_the_bias_or_zeros():
    w, b = torch.randn(3, 0), torch.randn(3)
    torch.testing.assert_close(multiply(torch.randn(4, 0), pack(w), b, 3), b.expand(4, 3))
    torch.testing.assert_close(multiply(torch.randn(4, 0), pack(w), None, 3), torch.zeros(4, 3))
    assert multiply(torch.randn(0, 5), pack(torch.randn(3, 5)), b, 3).shape == (0, 3)


def test_bad_input_is_a_clear_error():
    w = torch.randn(20, 8)
    panels = pack(w)
    with pytest.raises(RuntimeError, match=r"linear_panels: the input must be a 2-d float32"):
        multiply(torch.randn(2, 8, dtype=torch.float64), panels, None, 20)
    with pytest.raises(RuntimeError, match=r"linear_panels: panels of sizes \[2, 8, 16\] do not"):
        multiply(torch.randn(2, 9), panels, None, 20)
    with pytest.raises(RuntimeError, match=r"do not hold an \(40, 8\) weight"):
        multiply(torch.randn(2, 8), panels, None, 40)
    with pytest.raises(RuntimeError, match=r"linear_panels: the bias must be float32 of 20"):
        multiply(torch.randn(2, 8), panels, torch.randn(19), 20)
    with pytest.raises(RuntimeError, match=r"pack_linear_panels: the weight must be a 2-d"):
        pack(torch.randn(2, 3, 4))
