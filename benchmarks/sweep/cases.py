"""The sweep's case data: one tiny seeded model per ATen op family, plus byoc_torch's own
probes (dynamic shapes, boundary crossings, forced LibTorch)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .case import Case, Fn, forced
from .more_cases import class_cases, generation_cases, model_cases

logger = logging.getLogger(__name__)
__all__ = ["CASES", "select_cases"]


def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype)


def uniform(lo: float, hi: float, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(*shape, dtype=dtype) * (hi - lo) + lo


def randint(lo: int, hi: int, *shape: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    return torch.randint(lo, hi, shape, dtype=dtype)


def randbool(*shape: int) -> torch.Tensor:
    return torch.rand(*shape) > 0.5


def spd(n: int, batch: int = 2, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A batch of well-conditioned symmetric positive definite matrices."""
    a = torch.randn(batch, n, n, dtype=dtype)
    return a @ a.transpose(-1, -2) + n * torch.eye(n, dtype=dtype)


def _fn(
    name: str,
    category: str,
    fn: Callable[..., object],
    make_inputs: Callable[[], tuple[torch.Tensor, ...]],
    **tol: float,
) -> Case:
    return Case(name, category, lambda: Fn(fn), make_inputs, **tol)


def _mod(
    name: str,
    category: str,
    make_model: Callable[[], nn.Module],
    make_inputs: Callable[[], tuple[torch.Tensor, ...]],
    **tol: float,
) -> Case:
    return Case(name, category, make_model, make_inputs, **tol)


def _x(*shape: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (randn(*shape),)


def _u(lo: float, hi: float, *shape: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (uniform(lo, hi, *shape),)


def _xy(*shape: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (randn(*shape), randn(*shape))


def _unary_cases() -> list[Case]:
    c = "unary"
    x = _x(4, 6)
    pos = _u(0.1, 4.0, 4, 6)
    unit = _u(-0.9, 0.9, 4, 6)
    return [
        _fn("abs", c, torch.abs, x),
        _fn("neg", c, torch.neg, x),
        _fn("exp", c, torch.exp, x),
        _fn("exp2", c, torch.exp2, x),
        _fn("expm1", c, torch.expm1, x),
        _fn("log", c, torch.log, pos),
        _fn("log2", c, torch.log2, pos),
        _fn("log10", c, torch.log10, pos),
        _fn("log1p", c, torch.log1p, pos),
        _fn("sqrt", c, torch.sqrt, pos),
        _fn("rsqrt", c, torch.rsqrt, pos),
        _fn("sin", c, torch.sin, x),
        _fn("cos", c, torch.cos, x),
        _fn("tan", c, torch.tan, unit),
        _fn("asin", c, torch.asin, unit),
        _fn("acos", c, torch.acos, unit),
        _fn("atan", c, torch.atan, x),
        _fn("sinh", c, torch.sinh, x),
        _fn("cosh", c, torch.cosh, x),
        _fn("tanh", c, torch.tanh, x),
        _fn("asinh", c, torch.asinh, x),
        _fn("acosh", c, torch.acosh, _u(1.1, 4.0, 4, 6)),
        _fn("atanh", c, torch.atanh, unit),
        _fn("sigmoid", c, torch.sigmoid, x),
        _fn("logit", c, lambda t: torch.logit(t, eps=1e-6), _u(0.05, 0.95, 4, 6)),
        _fn("erf", c, torch.erf, x),
        _fn("erfc", c, torch.erfc, x),
        _fn("relu", c, torch.relu, x),
        _fn("relu6", c, F.relu6, _u(-8, 8, 4, 6)),
        _fn("gelu", c, F.gelu, x),
        _fn("gelu_tanh", c, lambda t: F.gelu(t, approximate="tanh"), x),
        _fn("silu", c, F.silu, x),
        _fn("mish", c, F.mish, x),
        _fn("softplus", c, lambda t: F.softplus(t, beta=2.0, threshold=5.0), x),
        _fn("hardswish", c, F.hardswish, _u(-4, 4, 4, 6)),
        _fn("hardsigmoid", c, F.hardsigmoid, _u(-4, 4, 4, 6)),
        _fn("elu", c, F.elu, x),
        _fn("selu", c, F.selu, x),
        _fn("celu", c, lambda t: F.celu(t, alpha=0.5), x),
        _fn("leaky_relu", c, lambda t: F.leaky_relu(t, 0.1), x),
        _fn("hardtanh", c, lambda t: F.hardtanh(t, -0.5, 0.5), x),
        _fn("softsign", c, F.softsign, x),
        _fn("logsigmoid", c, F.logsigmoid, x),
        _fn("tanhshrink", c, F.tanhshrink, x),
        _fn("softshrink", c, lambda t: F.softshrink(t, 0.5), x),
        _fn("hardshrink", c, lambda t: F.hardshrink(t, 0.5), x),
        _fn("floor", c, torch.floor, _u(-5, 5, 4, 6)),
        _fn("ceil", c, torch.ceil, _u(-5, 5, 4, 6)),
        _fn("round", c, torch.round, _u(-5, 5, 4, 6)),
        _fn("round_decimals", c, lambda t: torch.round(t, decimals=2), _u(-5, 5, 4, 6)),
        _fn("trunc", c, torch.trunc, _u(-5, 5, 4, 6)),
        _fn("frac", c, torch.frac, _u(-5, 5, 4, 6)),
        _fn("sign", c, torch.sign, x),
        _fn("reciprocal", c, torch.reciprocal, pos),
        _fn("square", c, torch.square, x),
        _fn("sinc", c, torch.sinc, x),
        _fn("deg2rad", c, torch.deg2rad, x),
        _fn("nan_to_num", c, lambda t: torch.nan_to_num(torch.log(t), posinf=9.0), _u(-1, 1, 4, 6)),
        _fn("clamp", c, lambda t: torch.clamp(t, -0.5, 0.7), x),
        _fn("clamp_tensor", c, lambda t, lo: torch.clamp(t, min=lo), _xy(4, 6)),
        _fn("isnan_isinf", c, lambda t: (torch.isnan(t.log()), torch.isinf(1 / t.relu())), x),
        _fn("signbit", c, torch.signbit, x),
    ]


def _special_cases() -> list[Case]:
    c = "special"
    pos = _u(0.2, 5.0, 4, 6)
    return [
        _fn("erfinv", c, torch.special.erfinv, _u(-0.95, 0.95, 4, 6)),
        _fn("lgamma", c, torch.lgamma, pos),
        _fn("digamma", c, torch.digamma, pos),
        _fn("polygamma1", c, lambda t: torch.polygamma(1, t), pos),
        _fn("mvlgamma", c, lambda t: torch.mvlgamma(t, 2), _u(1.0, 5.0, 4, 6)),
        _fn("i0", c, torch.i0, _u(-3, 3, 4, 6)),
        _fn("i0e", c, torch.special.i0e, _u(-3, 3, 4, 6)),
        _fn("i1", c, torch.special.i1, _u(-3, 3, 4, 6)),
        _fn("i1e", c, torch.special.i1e, _u(-3, 3, 4, 6)),
        _fn("ndtr", c, torch.special.ndtr, _x(4, 6)),
        _fn("ndtri", c, torch.special.ndtri, _u(0.05, 0.95, 4, 6)),
        _fn("log_ndtr", c, torch.special.log_ndtr, _x(4, 6)),
        _fn("erfcx", c, torch.special.erfcx, _u(-1, 3, 4, 6)),
        _fn("entr", c, torch.special.entr, _u(0.01, 2, 4, 6)),
        _fn("bessel_j0", c, torch.special.bessel_j0, _u(0, 6, 4, 6)),
        _fn("bessel_j1", c, torch.special.bessel_j1, _u(0, 6, 4, 6)),
        _fn("zeta", c, torch.special.zeta, lambda: (uniform(1.5, 4, 4, 6), uniform(0.5, 2, 4, 6))),
        _fn("xlogy", c, torch.xlogy, lambda: (uniform(0, 2, 4, 6), uniform(0.1, 2, 4, 6))),
        _fn(
            "xlog1py", c, torch.special.xlog1py, lambda: (uniform(0, 2, 4, 6), uniform(0, 2, 4, 6))
        ),
        _fn("igamma", c, torch.igamma, lambda: (uniform(0.5, 3, 4, 6), uniform(0.1, 3, 4, 6))),
        _fn("igammac", c, torch.igammac, lambda: (uniform(0.5, 3, 4, 6), uniform(0.1, 3, 4, 6))),
        _fn("lgamma_f64", c, torch.lgamma, lambda: (uniform(0.2, 5, 4, 6, dtype=torch.float64),)),
    ]


def _binary_cases() -> list[Case]:
    c = "binary"
    xy = _xy(4, 6)
    return [
        _fn("add_broadcast", c, lambda a, b: a + b, lambda: (randn(4, 6), randn(6))),
        _fn("sub_alpha", c, lambda a, b: torch.sub(a, b, alpha=2), xy),
        _fn("mul", c, torch.mul, xy),
        _fn("div", c, torch.div, lambda: (randn(4, 6), uniform(0.5, 2, 4, 6))),
        _fn(
            "div_floor",
            c,
            lambda a, b: torch.div(a, b, rounding_mode="floor"),
            lambda: (uniform(-9, 9, 4, 6), uniform(0.5, 2, 4, 6)),
        ),
        _fn(
            "div_trunc",
            c,
            lambda a, b: torch.div(a, b, rounding_mode="trunc"),
            lambda: (uniform(-9, 9, 4, 6), uniform(0.5, 2, 4, 6)),
        ),
        _fn("remainder", c, torch.remainder, lambda: (uniform(-9, 9, 4, 6), uniform(0.5, 2, 4, 6))),
        _fn("fmod", c, torch.fmod, lambda: (uniform(-9, 9, 4, 6), uniform(0.5, 2, 4, 6))),
        _fn("pow", c, torch.pow, lambda: (uniform(0.1, 3, 4, 6), randn(4, 6))),
        _fn("pow_scalar", c, lambda a: a**3 + 2.0**a, _x(4, 6)),
        _fn("atan2", c, torch.atan2, xy),
        _fn("maximum", c, torch.maximum, xy),
        _fn("minimum", c, torch.minimum, xy),
        _fn("fmax", c, torch.fmax, xy),
        _fn("hypot", c, torch.hypot, xy),
        _fn("logaddexp", c, torch.logaddexp, xy),
        _fn("logaddexp2", c, torch.logaddexp2, xy),
        _fn("nextafter", c, torch.nextafter, xy),
        _fn("copysign", c, torch.copysign, xy),
        _fn("lerp", c, lambda a, b: torch.lerp(a, b, 0.3), xy),
        _fn("addcmul", c, lambda a, b: torch.addcmul(a, a, b, value=0.5), xy),
        _fn("addcdiv", c, lambda a, b: torch.addcdiv(a, a, b.abs() + 1, value=0.5), xy),
        _fn("heaviside", c, lambda a, b: torch.heaviside(a.round(), b), xy),
        _fn("ldexp", c, torch.ldexp, lambda: (randn(4, 6), randint(-3, 4, 4, 6))),
        _fn(
            "float_pow_int_tensor", c, lambda a, n: a**n, lambda: (randn(4, 6), randint(0, 4, 4, 6))
        ),
    ]


def _int_bool_cases() -> list[Case]:
    c = "int/bool"
    ii = lambda: (randint(-50, 50, 4, 6), randint(1, 50, 4, 6))  # noqa: E731

    def i32() -> tuple[torch.Tensor, ...]:
        return randint(0, 100, 4, 6, dtype=torch.int32), randint(0, 100, 4, 6, dtype=torch.int32)

    return [
        _fn("int_add_mul", c, lambda a, b: a * b + a, ii),
        _fn("int_floor_divide", c, torch.floor_divide, ii),
        _fn("int_remainder", c, torch.remainder, ii),
        _fn("int_div_true", c, lambda a, b: a / b, ii),
        _fn("int_abs_neg", c, lambda a, b: torch.abs(a) - b, ii),
        _fn("int_clamp", c, lambda a, b: torch.clamp(a, -10, 10), ii),
        _fn("bitwise_and_or_xor", c, lambda a, b: (a & b, a | b, a ^ b), i32),
        _fn("bitwise_not", c, lambda a, b: torch.bitwise_not(a), i32),
        _fn("bitwise_shift", c, lambda a, b: (a << 2, b >> 1), i32),
        _fn("gcd_lcm", c, lambda a, b: (torch.gcd(a, b), torch.lcm(a, b)), i32),
        _fn(
            "int8_add",
            c,
            lambda a, b: a + b,
            lambda: (randint(-50, 50, 8, dtype=torch.int8), randint(-50, 50, 8, dtype=torch.int8)),
        ),
        _fn(
            "uint8_to_float",
            c,
            lambda a: a.to(torch.float32) / 255.0,
            lambda: (randint(0, 256, 8, dtype=torch.uint8),),
        ),
        _fn("float_to_int", c, lambda a: (a * 10).to(torch.int32), _x(4, 6)),
        _fn("int_promote_float", c, lambda a, b: a + b, lambda: (randint(0, 9, 4, 6), randn(4, 6))),
        _fn("compare_eq_lt_ge", c, lambda a, b: (a == b, a < b, a >= b), ii),
        _fn("compare_float", c, lambda a, b: (a > b, a != b, torch.isclose(a, b)), _xy(4, 6)),
        _fn(
            "logical_ops",
            c,
            lambda a, b: (a & b, a | b, torch.logical_xor(a, b), ~a),
            lambda: (randbool(4, 6), randbool(4, 6)),
        ),
        _fn(
            "where",
            c,
            lambda m, a, b: torch.where(m, a, b),
            lambda: (randbool(4, 6), randn(4, 6), randn(4, 6)),
        ),
        _fn("where_scalar", c, lambda a: torch.where(a > 0, a, 0.0), _x(4, 6)),
        _fn("bool_any_all", c, lambda m: (m.any(1), m.all(0), m.any()), lambda: (randbool(4, 6),)),
        _fn("bool_sum", c, lambda m: m.sum(1), lambda: (randbool(4, 6),)),
        _fn("argmax_argmin", c, lambda a: (a.argmax(1), a.argmin(0, keepdim=True)), _x(4, 6)),
        _fn("argmax_int", c, lambda a: a.argmax(), lambda: (randint(0, 1000, 4, 6),)),
        _fn("int_sum_prod", c, lambda a: (a.sum(0), a.prod(1)), lambda: (randint(-3, 4, 4, 6),)),
        _fn("int_cumsum", c, lambda a: torch.cumsum(a, 1), lambda: (randint(-9, 9, 4, 6),)),
        _fn("int_max_dim", c, lambda a: a.max(1), lambda: (randint(0, 1000, 4, 6),)),
        _fn("bool_to_float_mean", c, lambda a: (a > 0).float().mean(), _x(4, 6)),
    ]


def _reduction_cases() -> list[Case]:
    c = "reduction"
    x = _x(4, 6)
    return [
        _fn("sum_dim", c, lambda t: t.sum(1), x),
        _fn("mean_keepdim", c, lambda t: t.mean((0, 1), keepdim=True), x),
        _fn("prod", c, lambda t: t.prod(1), _u(0.5, 1.5, 4, 6)),
        _fn("amax_amin", c, lambda t: (t.amax(1), t.amin(0)), x),
        _fn("max_dim", c, lambda t: torch.max(t, 1), x),
        _fn("min_dim_keepdim", c, lambda t: torch.min(t, 0, keepdim=True), x),
        _fn("std_var", c, lambda t: (t.std(1), t.var(0, unbiased=False)), x),
        _fn("var_mean", c, lambda t: torch.var_mean(t, 1), x),
        _fn("std_mean", c, lambda t: torch.std_mean(t, 0, correction=0), x),
        _fn("norm_p2", c, lambda t: torch.norm(t, dim=1), x),
        _fn("norm_p1_inf", c, lambda t: (t.norm(p=1, dim=1), t.norm(p=float("inf"), dim=0)), x),
        _fn("vector_norm_p3", c, lambda t: torch.linalg.vector_norm(t, 3, dim=1), x),
        _fn("logsumexp", c, lambda t: torch.logsumexp(t, 1), x),
        _fn("count_nonzero", c, lambda t: torch.count_nonzero(t.round(), 1), x),
        _fn(
            "nansum_nanmean", c, lambda t: (torch.nansum(t.log(), 1), torch.nanmean(t.log(), 1)), x
        ),
        _fn("aminmax", c, lambda t: torch.aminmax(t, dim=1), x),
        _fn("softmax", c, lambda t: F.softmax(t, -1), x),
        _fn("log_softmax", c, lambda t: F.log_softmax(t, 0), x),
        _fn("median_all", c, torch.median, x),
        _fn("median_dim", c, lambda t: torch.median(t, 1), x),
        _fn("nanmedian", c, lambda t: torch.nanmedian(t, 1), x),
        _fn("mode", c, lambda t: torch.mode(t, 1), lambda: (randint(0, 4, 4, 6).float(),)),
        _fn("kthvalue", c, lambda t: torch.kthvalue(t, 3, 1), x),
        _fn("quantile", c, lambda t: torch.quantile(t, 0.3, dim=1), x),
        _fn("cosine_similarity", c, lambda a, b: F.cosine_similarity(a, b, dim=1), _xy(4, 6)),
        _fn("pairwise_distance", c, F.pairwise_distance, _xy(4, 6)),
        _fn("cdist", c, torch.cdist, lambda: (randn(5, 3), randn(4, 3))),
        _fn("pdist", c, F.pdist, _x(5, 3)),
    ]


def _scan_sort_cases() -> list[Case]:
    c = "scan/sort"
    x = _x(4, 6)
    return [
        _fn("cumsum", c, lambda t: torch.cumsum(t, 1), x),
        _fn("cumprod", c, lambda t: torch.cumprod(t, 1), _u(0.5, 1.5, 4, 6)),
        _fn("logcumsumexp", c, lambda t: torch.logcumsumexp(t, 1), x),
        _fn("cummax", c, lambda t: torch.cummax(t, 1), x),
        _fn("cummin", c, lambda t: torch.cummin(t, 0), x),
        _fn("sort", c, lambda t: torch.sort(t, 1), x),
        _fn(
            "sort_descending_stable",
            c,
            lambda t: torch.sort(t, dim=1, descending=True, stable=True),
            lambda: (randint(0, 4, 4, 6).float(),),
        ),
        _fn("argsort", c, lambda t: torch.argsort(t, 0), x),
        _fn("msort", c, torch.msort, x),
        _fn("topk", c, lambda t: torch.topk(t, 3, 1), x),
        _fn("topk_smallest", c, lambda t: torch.topk(t, 2, 0, largest=False), x),
        _fn("topk_int", c, lambda t: torch.topk(t, 2, 1), lambda: (randperm_rows(4, 6),)),
    ]


def randperm_rows(rows: int, cols: int) -> torch.Tensor:
    """Integer rows without ties (so sort/topk indices are unique)."""
    return torch.stack([torch.randperm(cols) for _ in range(rows)])


def _indexing_cases() -> list[Case]:
    c = "indexing"
    x = _x(4, 6)
    idx = lambda: (randn(4, 6), randint(0, 6, 4, 3))  # noqa: E731
    return [
        _fn("gather", c, lambda t, i: torch.gather(t, 1, i), idx),
        _fn("take_along_dim", c, lambda t, i: torch.take_along_dim(t, i, 1), idx),
        _fn("take", c, lambda t, i: torch.take(t, i), lambda: (randn(4, 6), randint(0, 24, 5))),
        _fn(
            "index_select",
            c,
            lambda t, i: torch.index_select(t, 1, i),
            lambda: (randn(4, 6), randint(0, 6, 5)),
        ),
        _fn("advanced_index", c, lambda t, i: t[i], lambda: (randn(4, 6), randint(0, 4, 5))),
        _fn(
            "advanced_index_2d",
            c,
            lambda t, i, j: t[i, j],
            lambda: (randn(4, 6), randint(0, 4, 5), randint(0, 6, 5)),
        ),
        _fn(
            "scatter_src",
            c,
            lambda t, s: torch.zeros(4, 6).scatter(1, s.argsort(1)[:, :3], t[:, :3]),
            _xy(4, 6),
        ),
        _fn("scatter_value", c, lambda t, i: t.scatter(1, i, 2.5), idx),
        _fn("scatter_add", c, lambda t, i: torch.zeros(4, 6).scatter_add(1, i, t[:, :3]), idx),
        _fn(
            "scatter_reduce_amax",
            c,
            lambda t, i: torch.zeros(4, 6).scatter_reduce(1, i, t[:, :3], "amax"),
            idx,
        ),
        _fn(
            "scatter_reduce_mean",
            c,
            lambda t, i: t.scatter_reduce(1, i, t[:, :3], "mean", include_self=False),
            idx,
        ),
        _fn(
            "index_add",
            c,
            lambda t, i: t.index_add(0, i, torch.ones(3, 6)),
            lambda: (randn(4, 6), randint(0, 4, 3)),
        ),
        _fn("index_copy", c, lambda t, s: t.index_copy(0, torch.tensor([2, 0]), s[:2]), _xy(4, 6)),
        _fn("index_fill", c, lambda t: t.index_fill(1, torch.tensor([0, 3]), -1.0), x),
        _fn(
            "index_put",
            c,
            lambda t, i, v: torch.index_put(t, (i,), v),
            lambda: (randn(6), torch.tensor([1, 4, 2]), randn(3)),
        ),
        _fn(
            "index_put_accumulate",
            c,
            lambda t, i, v: torch.index_put(t, (i,), v, accumulate=True),
            lambda: (randn(6), torch.tensor([1, 4, 1]), randn(3)),
        ),
        _fn("setitem_slice", c, _setitem, x),
        _fn("masked_fill", c, lambda t: t.masked_fill(t > 0.5, -1.0), x),
        _fn(
            "masked_fill_tensor",
            c,
            lambda t, m: t.masked_fill(m, float("-inf")).softmax(1),
            lambda: (randn(4, 6), torch.tensor([[False] * 5 + [True]] * 4)),
        ),
        _fn(
            "searchsorted",
            c,
            lambda s, v: torch.searchsorted(s, v),
            lambda: (torch.sort(randn(10)).values, randn(7)),
        ),
        _fn(
            "searchsorted_right_2d",
            c,
            lambda s, v: torch.searchsorted(s, v, right=True),
            lambda: (torch.sort(randn(3, 10), 1).values, randn(3, 4)),
        ),
        _fn(
            "bucketize",
            c,
            lambda v, b: torch.bucketize(v, b),
            lambda: (randn(4, 6), torch.linspace(-2, 2, 9)),
        ),
        _fn(
            "embedding_fn",
            c,
            lambda w, i: F.embedding(i, w),
            lambda: (randn(10, 4), randint(0, 10, 2, 5)),
        ),
        _fn("one_hot", c, lambda i: F.one_hot(i, 7), lambda: (randint(0, 7, 2, 5),)),
        _fn("narrow_select", c, lambda t: (t.narrow(1, 2, 3), t.select(0, 1)), x),
        _fn("slice_step", c, lambda t: t[::2, 1::3], x),
    ]


def _setitem(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t[:, 1:3] = 0.0
    t[0] = t[0] * 2
    return t


def _data_dependent_cases() -> list[Case]:
    c = "data-dependent"
    x = _x(4, 6)
    return [
        _fn("nonzero", c, lambda t: torch.nonzero(t > 0), x),
        _fn("argwhere", c, lambda t: torch.argwhere(t > 0.5), x),
        _fn("masked_select", c, lambda t: torch.masked_select(t, t > 0), x),
        _fn("bool_mask_index", c, lambda t: t[t > 0] * 2, x),
        _fn("unique", c, lambda t: torch.unique(t), lambda: (randint(0, 5, 10),)),
        _fn(
            "unique_counts",
            c,
            lambda t: torch.unique(t, return_counts=True),
            lambda: (randint(0, 5, 10),),
        ),
        _fn("bincount", c, lambda t: torch.bincount(t, minlength=8), lambda: (randint(0, 8, 20),)),
        _fn(
            "repeat_interleave_tensor",
            c,
            lambda t, r: torch.repeat_interleave(t, r, 0),
            lambda: (randn(4), randint(0, 3, 4)),
        ),
    ]


def _shape_cases() -> list[Case]:
    c = "shape"
    x = _x(4, 6)
    img = _x(1, 2, 5, 6)
    return [
        _fn("unfold", c, lambda t: t.unfold(1, 3, 2), x),
        _fn("roll", c, lambda t: torch.roll(t, 2, 1), x),
        _fn("roll_multi", c, lambda t: torch.roll(t, (1, -2), (0, 1)), x),
        _fn("roll_flat", c, lambda t: torch.roll(t, 3), x),
        _fn("flip", c, lambda t: torch.flip(t, (0, 1)), x),
        _fn("rot90", c, lambda t: torch.rot90(t, 1, (0, 1)), x),
        _fn("tril_triu", c, lambda t: (torch.tril(t), torch.triu(t, 1)), x),
        _fn("tril_neg_diag", c, lambda t: torch.tril(t, -1), x),
        _fn("diag_1d", c, torch.diag, _x(5)),
        _fn("diag_2d", c, lambda t: torch.diag(t, 1), x),
        _fn("diagonal", c, lambda t: torch.diagonal(t, offset=-1), x),
        _fn("diag_embed", c, torch.diag_embed, _x(2, 4)),
        _fn("trace", c, torch.trace, x),
        _fn("repeat", c, lambda t: t.repeat(2, 1, 3), x),
        _fn("tile", c, lambda t: torch.tile(t, (2,)), x),
        _fn("repeat_interleave", c, lambda t: torch.repeat_interleave(t, 2, dim=1), x),
        _fn("expand", c, lambda t: t[:, None, :].expand(4, 3, 6) + 0, x),
        _fn("cat_stack", c, lambda a, b: (torch.cat([a, b], 1), torch.stack([a, b], 0)), _xy(4, 6)),
        _fn("split_chunk", c, lambda t: (*torch.split(t, [2, 4], 1), *torch.chunk(t, 2, 0)), x),
        _fn("unbind", c, lambda t: torch.unbind(t, 0), x),
        _fn("movedim_permute", c, lambda t: (t.movedim(0, 2), t.permute(2, 0, 1)), _x(2, 3, 4)),
        _fn("flatten_unflatten", c, lambda t: t.flatten(1).unflatten(1, (6, 2)), _x(3, 4, 3)),
        _fn("pad_constant", c, lambda t: F.pad(t, (1, 2, 0, 1), value=0.5), img),
        _fn("pad_reflect", c, lambda t: F.pad(t, (2, 1, 1, 2), mode="reflect"), img),
        _fn("pad_replicate", c, lambda t: F.pad(t, (2, 1, 1, 2), mode="replicate"), img),
        _fn("pad_circular", c, lambda t: F.pad(t, (2, 1, 1, 2), mode="circular"), img),
        _fn("pixel_shuffle", c, lambda t: F.pixel_shuffle(t, 2), _x(1, 8, 3, 3)),
        _fn("pixel_unshuffle", c, lambda t: F.pixel_unshuffle(t, 2), _x(1, 2, 4, 6)),
        _fn("channel_shuffle", c, lambda t: F.channel_shuffle(t, 2), _x(1, 4, 3, 3)),
        _fn("im2col_unfold", c, lambda t: F.unfold(t, 2, stride=1), img),
        _fn("col2im_fold", c, lambda t: F.fold(t, (4, 5), 2), _x(1, 8, 12)),
        _fn(
            "meshgrid",
            c,
            lambda a, b: torch.meshgrid(a, b, indexing="ij"),
            lambda: (randn(3), randn(4)),
        ),
        _fn("arange_linspace", c, lambda t: t + torch.arange(6) * 0.5 + torch.linspace(0, 1, 6), x),
        _fn("full_like_eye", c, lambda t: torch.full_like(t, 3.0) + torch.eye(4, 6), x),
        _fn("triu_indices", c, lambda t: t[torch.triu_indices(4, 4, 1).unbind(0)], _x(4, 4)),
        _fn("cross", c, lambda a, b: torch.linalg.cross(a, b), _xy(4, 3)),
    ]


def _linalg_cases() -> list[Case]:
    c = "linalg"
    la = {"rtol": 1e-4, "atol": 1e-4}
    return [
        _fn("matmul", c, torch.matmul, lambda: (randn(3, 4, 5), randn(5, 2))),
        _fn("bmm", c, torch.bmm, lambda: (randn(2, 3, 4), randn(2, 4, 5))),
        _fn(
            "baddbmm",
            c,
            lambda m, a, b: torch.baddbmm(m, a, b, beta=0.5, alpha=2.0),
            lambda: (randn(2, 3, 5), randn(2, 3, 4), randn(2, 4, 5)),
        ),
        _fn("addmm", c, torch.addmm, lambda: (randn(5), randn(3, 4), randn(4, 5))),
        _fn(
            "einsum",
            c,
            lambda a, b: torch.einsum("bij,bjk->bik", a, b),
            lambda: (randn(2, 3, 4), randn(2, 4, 5)),
        ),
        _fn(
            "outer_dot_mv",
            c,
            lambda a, b, m: (torch.outer(a, b), torch.dot(a, b), m @ a),
            lambda: (randn(4), randn(4), randn(3, 4)),
        ),
        _fn("kron", c, torch.kron, lambda: (randn(2, 3), randn(2, 2))),
        _fn(
            "tensordot",
            c,
            lambda a, b: torch.tensordot(a, b, dims=([1, 2], [0, 1])),
            lambda: (randn(2, 3, 4), randn(3, 4, 5)),
        ),
        _fn("cholesky", c, torch.linalg.cholesky, lambda: (spd(4),), **la),
        _fn("inverse", c, torch.linalg.inv, lambda: (spd(4),), **la),
        _fn("det", c, torch.linalg.det, lambda: (spd(3),), **la),
        _fn("slogdet", c, torch.linalg.slogdet, lambda: (randn(2, 4, 4),), **la),
        _fn("logdet", c, torch.logdet, lambda: (spd(3),), **la),
        _fn("qr", c, lambda a: tuple(t.abs() for t in torch.linalg.qr(a)), _x(5, 3), **la),
        _fn("solve", c, torch.linalg.solve, lambda: (spd(4), randn(2, 4, 2)), **la),
        _fn(
            "solve_triangular",
            c,
            lambda a, b: torch.linalg.solve_triangular(torch.linalg.cholesky(a), b, upper=False),
            lambda: (spd(4), randn(2, 4, 2)),
            **la,
        ),
        _fn(
            "cholesky_solve",
            c,
            lambda a, b: torch.cholesky_solve(b, torch.linalg.cholesky(a)),
            lambda: (spd(4), randn(2, 4, 2)),
            **la,
        ),
        _fn("lu_factor", c, lambda a: torch.linalg.lu_factor(a), lambda: (spd(3),), **la),
        _fn("svdvals", c, torch.linalg.svdvals, _x(4, 3), **la),
        _fn("eigvalsh", c, torch.linalg.eigvalsh, lambda: (spd(4),), **la),
        _fn("pinv", c, torch.linalg.pinv, _x(4, 3), **la),
        _fn("matrix_exp", c, torch.linalg.matrix_exp, lambda: (randn(2, 3, 3) * 0.5,), **la),
        _fn("matrix_norm_fro", c, torch.linalg.matrix_norm, _x(2, 3, 4)),
        _fn("matrix_norm_nuc", c, lambda a: torch.linalg.matrix_norm(a, "nuc"), _x(3, 4), **la),
        _mod("linear", c, lambda: nn.Linear(6, 3), _x(4, 6)),
        _mod("bilinear", c, lambda: nn.Bilinear(3, 4, 2), lambda: (randn(5, 3), randn(5, 4))),
    ]


def _pool_cases() -> list[Case]:
    c = "pooling"
    img = _x(1, 2, 7, 9)
    return [
        _fn("max_pool1d", c, lambda t: F.max_pool1d(t, 3, 2), _x(1, 3, 10)),
        _fn("max_pool2d", c, lambda t: F.max_pool2d(t, 2), img),
        _fn("max_pool2d_ceil", c, lambda t: F.max_pool2d(t, 3, 2, ceil_mode=True), img),
        _fn("max_pool2d_dilation", c, lambda t: F.max_pool2d(t, 2, 1, padding=1, dilation=2), img),
        _fn("max_pool2d_indices", c, lambda t: F.max_pool2d(t, 2, return_indices=True), img),
        _fn("max_pool3d", c, lambda t: F.max_pool3d(t, 2), _x(1, 2, 4, 4, 4)),
        _fn(
            "max_unpool2d",
            c,
            lambda t: F.max_unpool2d(*F.max_pool2d(t, 2, return_indices=True), 2),
            _x(1, 2, 4, 6),
        ),
        _fn("avg_pool1d", c, lambda t: F.avg_pool1d(t, 3, 2), _x(1, 3, 10)),
        _fn("avg_pool2d", c, lambda t: F.avg_pool2d(t, 2), img),
        _fn("avg_pool2d_ceil", c, lambda t: F.avg_pool2d(t, 3, 2, ceil_mode=True), img),
        _fn(
            "avg_pool2d_no_pad_count",
            c,
            lambda t: F.avg_pool2d(t, 3, 2, padding=1, count_include_pad=False),
            img,
        ),
        _fn("avg_pool2d_divisor", c, lambda t: F.avg_pool2d(t, 2, divisor_override=3), img),
        _fn("avg_pool3d", c, lambda t: F.avg_pool3d(t, 2, padding=1), _x(1, 2, 4, 4, 4)),
        _fn("adaptive_avg_pool1d", c, lambda t: F.adaptive_avg_pool1d(t, 4), _x(1, 3, 10)),
        _fn("adaptive_avg_pool2d", c, lambda t: F.adaptive_avg_pool2d(t, (3, 4)), img),
        _fn("adaptive_max_pool1d", c, lambda t: F.adaptive_max_pool1d(t, 4), _x(1, 3, 10)),
        _fn("adaptive_max_pool2d", c, lambda t: F.adaptive_max_pool2d(t, 3), img),
        _fn(
            "adaptive_max_pool2d_indices",
            c,
            lambda t: F.adaptive_max_pool2d(t, (3, 4), return_indices=True),
            img,
        ),
        _fn(
            "fractional_max_pool2d",
            c,
            lambda t, s: F.fractional_max_pool2d(t, 2, output_size=(4, 5), _random_samples=s),
            lambda: (randn(1, 2, 8, 9), torch.rand(1, 2, 2)),
        ),
        _fn("lp_pool2d", c, lambda t: F.lp_pool2d(t, 2, 2), img),
    ]


def _conv_cases() -> list[Case]:
    c = "conv"
    tol = {"rtol": 1e-4, "atol": 1e-4}
    return [
        _mod("conv1d", c, lambda: nn.Conv1d(3, 4, 3, padding=1), _x(2, 3, 10), **tol),
        _mod("conv2d", c, lambda: nn.Conv2d(3, 4, 3), _x(1, 3, 8, 8), **tol),
        _mod(
            "conv2d_stride_dilation",
            c,
            lambda: nn.Conv2d(3, 4, 3, stride=2, padding=2, dilation=2),
            _x(1, 3, 9, 9),
            **tol,
        ),
        _mod(
            "conv2d_groups",
            c,
            lambda: nn.Conv2d(4, 6, 3, groups=2, bias=False),
            _x(1, 4, 6, 6),
            **tol,
        ),
        _mod(
            "conv2d_depthwise",
            c,
            lambda: nn.Conv2d(4, 4, 3, groups=4, padding=1),
            _x(1, 4, 6, 6),
            **tol,
        ),
        _mod("conv2d_same", c, lambda: nn.Conv2d(2, 3, 4, padding="same"), _x(1, 2, 7, 7), **tol),
        _mod(
            "conv2d_reflect",
            c,
            lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
            _x(1, 2, 6, 6),
            **tol,
        ),
        _mod("conv3d", c, lambda: nn.Conv3d(2, 3, 2), _x(1, 2, 4, 4, 4), **tol),
        _mod(
            "conv_transpose1d", c, lambda: nn.ConvTranspose1d(3, 2, 3, stride=2), _x(1, 3, 6), **tol
        ),
        _mod(
            "conv_transpose2d",
            c,
            lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1),
            _x(1, 3, 5, 5),
            **tol,
        ),
        _mod(
            "conv_transpose2d_groups",
            c,
            lambda: nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2),
            _x(1, 4, 3, 3),
            **tol,
        ),
        _mod(
            "conv_transpose3d",
            c,
            lambda: nn.ConvTranspose3d(2, 2, 2, stride=2),
            _x(1, 2, 3, 3, 3),
            **tol,
        ),
    ]


def _norm_cases() -> list[Case]:
    c = "norm"
    tol = {"rtol": 1e-4, "atol": 1e-4}
    return [
        _mod("layer_norm", c, lambda: nn.LayerNorm(6), _x(3, 4, 6), **tol),
        _fn("layer_norm_no_affine", c, lambda t: F.layer_norm(t, (4, 6)), _x(3, 4, 6), **tol),
        _mod("group_norm", c, lambda: nn.GroupNorm(2, 4), _x(2, 4, 3, 3), **tol),
        _mod("instance_norm", c, lambda: nn.InstanceNorm2d(3, affine=True), _x(2, 3, 4, 4), **tol),
        _mod("batch_norm2d", c, lambda: _with_stats(nn.BatchNorm2d(3)), _x(2, 3, 4, 4), **tol),
        _mod("batch_norm1d", c, lambda: _with_stats(nn.BatchNorm1d(5)), _x(4, 5), **tol),
        _mod("rms_norm", c, lambda: nn.RMSNorm(6), _x(3, 6), **tol),
        _fn("local_response_norm", c, lambda t: F.local_response_norm(t, 3), _x(1, 5, 3, 3), **tol),
        _fn("normalize", c, lambda t: F.normalize(t, dim=1), _x(4, 6), **tol),
    ]


def _with_stats(bn: nn.Module) -> nn.Module:
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    return bn


def _nn_cases() -> list[Case]:
    c = "nn"
    tol = {"rtol": 1e-4, "atol": 1e-4}
    img = _x(1, 2, 4, 5)
    grid = lambda: (randn(1, 2, 4, 5), uniform(-1.1, 1.1, 1, 3, 3, 2))  # noqa: E731
    return [
        _mod(
            "embedding",
            c,
            lambda: nn.Embedding(10, 4, padding_idx=0),
            lambda: (randint(0, 10, 2, 5),),
        ),
        _mod(
            "embedding_bag_mean",
            c,
            lambda: nn.EmbeddingBag(10, 4, mode="mean"),
            lambda: (randint(0, 10, 3, 4),),
        ),
        _mod(
            "embedding_bag_max",
            c,
            lambda: nn.EmbeddingBag(10, 4, mode="max"),
            lambda: (randint(0, 10, 3, 4),),
        ),
        _fn(
            "embedding_bag_offsets",
            c,
            lambda w, i: F.embedding_bag(i, w, torch.tensor([0, 2, 5]), mode="sum"),
            lambda: (randn(10, 4), randint(0, 10, 7)),
        ),
        _fn("histc", c, lambda t: torch.histc(t, bins=5, min=-2, max=2), _x(50)),
        _fn("interp_nearest", c, lambda t: F.interpolate(t, scale_factor=2), img),
        _fn(
            "interp_nearest_exact",
            c,
            lambda t: F.interpolate(t, size=(7, 3), mode="nearest-exact"),
            img,
        ),
        _fn(
            "interp_bilinear",
            c,
            lambda t: F.interpolate(t, size=(7, 9), mode="bilinear"),
            img,
            **tol,
        ),
        _fn(
            "interp_bilinear_align",
            c,
            lambda t: F.interpolate(t, scale_factor=1.5, mode="bilinear", align_corners=True),
            img,
            **tol,
        ),
        _fn(
            "interp_bicubic", c, lambda t: F.interpolate(t, size=(6, 7), mode="bicubic"), img, **tol
        ),
        _fn("interp_area", c, lambda t: F.interpolate(t, size=(3, 2), mode="area"), img, **tol),
        _fn(
            "interp_linear_1d",
            c,
            lambda t: F.interpolate(t, size=7, mode="linear"),
            _x(1, 2, 5),
            **tol,
        ),
        _fn(
            "interp_trilinear",
            c,
            lambda t: F.interpolate(t, scale_factor=2, mode="trilinear"),
            _x(1, 1, 2, 3, 3),
            **tol,
        ),
        _fn(
            "interp_bilinear_antialias",
            c,
            lambda t: F.interpolate(t, size=(2, 3), mode="bilinear", antialias=True),
            img,
            **tol,
        ),
        _fn(
            "grid_sample_bilinear",
            c,
            lambda t, g: F.grid_sample(t, g, align_corners=False),
            grid,
            **tol,
        ),
        _fn(
            "grid_sample_nearest_border",
            c,
            lambda t, g: F.grid_sample(
                t, g, mode="nearest", padding_mode="border", align_corners=True
            ),
            grid,
            **tol,
        ),
        _fn(
            "affine_grid",
            c,
            lambda th: F.affine_grid(th, [1, 1, 3, 4], align_corners=False),
            _x(1, 2, 3),
            **tol,
        ),
        _fn(
            "sdpa",
            c,
            F.scaled_dot_product_attention,
            lambda: (randn(1, 2, 4, 8), randn(1, 2, 4, 8), randn(1, 2, 4, 8)),
            **tol,
        ),
        _fn(
            "sdpa_causal",
            c,
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
            lambda: (randn(1, 2, 4, 8), randn(1, 2, 4, 8), randn(1, 2, 4, 8)),
            **tol,
        ),
        _mod("multihead_attention", c, lambda: _MHA(), _x(2, 5, 8), **tol),
        _mod("lstm", c, lambda: _RNN(nn.LSTM(4, 5, batch_first=True)), _x(2, 3, 4), **tol),
        _mod("gru", c, lambda: _RNN(nn.GRU(4, 5, batch_first=True)), _x(2, 3, 4), **tol),
        _fn("cross_entropy", c, F.cross_entropy, lambda: (randn(4, 5), randint(0, 5, 4)), **tol),
        _fn(
            "nll_loss_weight",
            c,
            lambda t, y: F.nll_loss(t.log_softmax(1), y, torch.arange(1.0, 6.0)),
            lambda: (randn(4, 5), randint(0, 5, 4)),
            **tol,
        ),
        _fn(
            "mse_l1_smoothl1",
            c,
            lambda a, b: (F.mse_loss(a, b), F.l1_loss(a, b), F.smooth_l1_loss(a, b, beta=0.5)),
            _xy(4, 6),
            **tol,
        ),
        _fn("huber_loss", c, lambda a, b: F.huber_loss(a, b, delta=0.7), _xy(4, 6), **tol),
        _fn(
            "kl_div",
            c,
            lambda a, b: F.kl_div(a.log_softmax(1), b.softmax(1), reduction="batchmean"),
            _xy(4, 6),
            **tol,
        ),
        _fn(
            "bce_with_logits",
            c,
            lambda a, b: F.binary_cross_entropy_with_logits(a, b.sigmoid()),
            _xy(4, 6),
            **tol,
        ),
        _fn("dropout_eval", c, lambda t: F.dropout(t, 0.5, training=False), _x(4, 6)),
    ]


class _MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class _RNN(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def _fft_complex_cases() -> list[Case]:
    c = "fft/complex"
    tol = {"rtol": 1e-4, "atol": 1e-4}
    return [
        _fn("rfft_abs", c, lambda t: torch.fft.rfft(t).abs(), _x(3, 8), **tol),
        _fn(
            "rfft_irfft",
            c,
            lambda t: torch.fft.irfft(torch.fft.rfft(t) * 0.5, n=8),
            _x(3, 8),
            **tol,
        ),
        _fn("fft_real_imag", c, lambda t: torch.view_as_real(torch.fft.fft(t)), _x(3, 8), **tol),
        _fn("rfft2", c, lambda t: torch.view_as_real(torch.fft.rfft2(t)), _x(2, 4, 6), **tol),
        _fn(
            "polar",
            c,
            lambda a, b: torch.view_as_real(torch.polar(a, b)),
            lambda: (uniform(0.5, 1.5, 4), randn(4)),
            **tol,
        ),
        _fn(
            "complex_mul_abs",
            c,
            lambda a, b: (torch.complex(a, b) * torch.complex(b, a)).abs(),
            _xy(4, 6),
            **tol,
        ),
        _fn(
            "stft_abs",
            c,
            lambda t: torch.stft(
                t, 8, hop_length=4, return_complex=True, window=torch.ones(8)
            ).abs(),
            _x(2, 32),
            **tol,
        ),
    ]


def _dtype_cases() -> list[Case]:
    c = "dtype"
    h, bf, d = torch.float16, torch.bfloat16, torch.float64
    return [
        _fn(
            "f16_add_mul",
            c,
            lambda a, b: a * b + a,
            lambda: (randn(4, 6, dtype=h), randn(4, 6, dtype=h)),
        ),
        _fn("f16_matmul", c, torch.matmul, lambda: (randn(4, 8, dtype=h), randn(8, 3, dtype=h))),
        _fn("f16_softmax", c, lambda t: t.softmax(-1), lambda: (randn(4, 6, dtype=h),)),
        _fn("f16_erfinv", c, torch.erfinv, lambda: (uniform(-0.9, 0.9, 4, 6, dtype=h),)),
        _fn("f16_to_f32", c, lambda t: t.float().exp(), lambda: (randn(4, 6, dtype=h),)),
        _fn(
            "bf16_add_gelu",
            c,
            lambda a, b: F.gelu(a + b),
            lambda: (randn(4, 6, dtype=bf), randn(4, 6, dtype=bf)),
        ),
        _fn(
            "bf16_layer_norm", c, lambda t: F.layer_norm(t, (6,)), lambda: (randn(4, 6, dtype=bf),)
        ),
        _fn("bf16_lgamma", c, torch.lgamma, lambda: (uniform(0.5, 4, 4, 6, dtype=bf),)),
        _fn("f64_exp_tanh", c, lambda t: torch.exp(t).tanh(), lambda: (randn(4, 6, dtype=d),)),
        _fn("f64_erfinv", c, torch.erfinv, lambda: (uniform(-0.9, 0.9, 4, 6, dtype=d),)),
        _fn("f64_matmul", c, torch.matmul, lambda: (randn(4, 5, dtype=d), randn(5, 3, dtype=d))),
        _fn("f64_cumsum", c, lambda t: torch.cumsum(t, 0), lambda: (randn(4, 6, dtype=d),)),
        _fn(
            "f64_logcumsumexp",
            c,
            lambda t: torch.logcumsumexp(t, 1),
            lambda: (randn(4, 6, dtype=d),),
        ),
        _fn("mixed_f16_f32", c, lambda a, b: a + b, lambda: (randn(4, 6, dtype=h), randn(4, 6))),
    ]


def _mixed_cases() -> list[Case]:
    c = "mixed"
    tol = {"rtol": 1e-4, "atol": 1e-4}
    return [
        _fn(
            "chain_native_fallback",
            c,
            lambda t: torch.relu(torch.lgamma(torch.special.erfinv(torch.tanh(t) * 0.9).abs() + 1)),
            _x(4, 6),
            **tol,
        ),
        _fn(
            "fallback_tuple_feeds_native",
            c,
            lambda t: torch.kthvalue(t, 2, 1)[0].exp() + torch.cummax(t, 1)[1].float().sum(1),
            _x(4, 6),
            **tol,
        ),
        _fn("sort_then_gather", c, lambda t: torch.gather(t, 1, t.argsort(1)[:, :2]) * 2, _x(4, 6)),
        _fn(
            "topk_then_scatter",
            c,
            lambda t: torch.zeros_like(t).scatter(1, t.topk(2, 1).indices, 1.0),
            _x(4, 6),
        ),
    ]


def _dyn(
    name: str,
    fn: Callable[..., object],
    make_inputs: Callable[[], tuple[torch.Tensor, ...]],
    make_alt_inputs: Callable[[], tuple[torch.Tensor, ...]],
    dynamic_shapes: object,
    **tol: float,
) -> Case:
    # Fn.forward takes *xs: torch.export wants the per-input specs nested in one tuple.
    return Case(
        name,
        "dynamic",
        lambda: Fn(fn),
        make_inputs,
        dynamic_shapes=(dynamic_shapes,),
        make_alt_inputs=make_alt_inputs,
        **tol,
    )


def _dynamic_cases() -> list[Case]:
    b = torch.export.Dim("b", min=2, max=64)
    n = torch.export.Dim("n", min=5, max=64)
    h2 = 2 * torch.export.Dim("h", min=4, max=32)
    tol = {"rtol": 1e-4, "atol": 1e-4}
    return [
        _dyn(
            "dyn_erfinv",
            lambda t: torch.special.erfinv(torch.tanh(t) * 0.9) * 2,
            _x(3, 6),
            _x(5, 6),
            ({0: b},),
        ),
        _dyn("dyn_kthvalue", lambda t: torch.kthvalue(t, 2, 1), _x(3, 6), _x(7, 6), ({0: b},)),
        _dyn("dyn_unfold", lambda t: t.unfold(1, 3, 2), _x(2, 9), _x(2, 12), ({1: n},)),
        _dyn(
            "dyn_logcumsumexp_view",
            lambda t: torch.logcumsumexp(t.view(t.shape[0], -1), 1),
            _x(3, 2, 3),
            _x(4, 2, 3),
            ({0: b},),
        ),
        _dyn(
            "dyn_searchsorted",
            lambda s, v: torch.searchsorted(s, v),
            lambda: (torch.sort(randn(10)).values, randn(5)),
            lambda: (torch.sort(randn(10)).values, randn(9)),
            (None, {0: n}),
        ),
        _dyn(
            "dyn_cat_fallback",
            lambda t: torch.cat([torch.lgamma(t.abs() + 1), t], 0),
            _x(3, 4),
            _x(6, 4),
            ({0: b},),
        ),
        _dyn(
            "dyn_adaptive_max_pool2d",
            lambda t: F.adaptive_max_pool2d(t, 3),
            _x(1, 2, 6, 7),
            _x(1, 2, 9, 8),
            ({2: n, 3: torch.export.Dim("w", min=4, max=64)},),
        ),
        _dyn("dyn_nonzero", lambda t: torch.nonzero(t > 0), _x(4, 6), _x(5, 6), ({0: b},)),
        _dyn(
            "dyn_sort_reshape",
            lambda t: torch.sort(t.reshape(-1, 2), 1).values.sum(1),
            _x(4, 6),
            _x(5, 6),
            ({0: b},),
        ),
        _dyn(
            "dyn_conv_pool",
            lambda t: F.max_pool2d(F.avg_pool2d(t, 2, ceil_mode=True), 2),
            _x(1, 2, 8, 8),
            _x(1, 2, 12, 8),
            ({2: h2},),
            **tol,
        ),
    ]


# Cases re-run with every op forced into LibTorch (they exercise TorchScript generation over
# many argument kinds: tensor lists, optional tensor lists, strings, dtypes, inf, symbolic ints).
FORCED_CASES = (
    "cat_stack",
    "split_chunk",
    "unbind",
    "advanced_index_2d",
    "index_put_accumulate",
    "setitem_slice",
    "pad_reflect",
    "pad_circular",
    "interp_bilinear_align",
    "interp_nearest",
    "interp_linear_1d",
    "conv2d_groups",
    "conv_transpose2d",
    "max_pool2d_indices",
    "avg_pool2d_divisor",
    "max_unpool2d",
    "layer_norm",
    "batch_norm2d",
    "group_norm",
    "embedding_bag_offsets",
    "sdpa_causal",
    "lstm",
    "one_hot",
    "arange_linspace",
    "full_like_eye",
    "where_scalar",
    "nan_to_num",
    "sort_descending_stable",
    "scatter_reduce_mean",
    "int_div_true",
    "div_floor",
    "f16_matmul",
    "bf16_layer_norm",
    "f64_matmul",
    "bool_mask_index",
    "repeat_interleave_tensor",
    "unique_counts",
    "im2col_unfold",
    "col2im_fold",
    "grid_sample_bilinear",
    "selu",
    "sub_alpha",
    "logaddexp",
    "compare_float",
    "nansum_nanmean",
    "rfft_irfft",
    "multihead_attention",
    "bitwise_shift",
    "dyn_erfinv",
    "dyn_unfold",
    "dyn_logcumsumexp_view",
    "dyn_cat_fallback",
    "dyn_nonzero",
    "dyn_sort_reshape",
    "dyn_conv_pool",
)


def _force(ops: Sequence[str]) -> tuple[tuple[str, object], ...]:
    return (("torch_executed_ops", tuple(ops)),)


def _boundary_cases() -> list[Case]:
    """Cases aimed at byoc_torch's own seams: views and odd tensors crossing TVM <-> LibTorch."""
    c = "boundary"
    x = _x(4, 6)
    return [
        Case(
            "view_permute_to_tvm",
            c,
            lambda: Fn(lambda t: t.permute(1, 0) + 1),
            x,
            options=_force(["aten.permute"]),
        ),
        Case(
            "view_expand_to_tvm",
            c,
            lambda: Fn(lambda t: t[:, None, :].expand(4, 3, 6) * 2),
            x,
            options=_force(["aten.expand"]),
        ),
        Case(
            "view_slice_step_to_tvm",
            c,
            lambda: Fn(lambda t: t[::2, 1::3] * 2),
            x,
            options=_force(["aten.slice"]),
        ),
        Case(
            "view_diagonal_to_tvm",
            c,
            lambda: Fn(lambda t: t.diagonal() * 2),
            x,
            options=_force(["aten.diagonal"]),
        ),
        _fn(
            "unfold_to_tvm",
            c,
            lambda t: t.unfold(1, 3, 2) * 2 + t.unfold(1, 3, 2).sum(-1, True),
            _x(2, 9),
        ),
        _fn("identity_output", c, lambda t: t, x),
        _fn("input_and_fallback_outputs", c, lambda t: (t, torch.lgamma(t.abs() + 1)), x),
        _fn("duplicate_fallback_outputs", c, lambda t: (torch.erfinv(t * 0.1),) * 2, x),
        _fn(
            "fallback_output_twice_used",
            c,
            lambda t: (lambda e: (e, e * 2, e.sum()))(torch.special.i0(t)),
            x,
        ),
        _fn(
            "scalar_0d_input",
            c,
            lambda a, b: torch.lgamma(a.abs() + 1) * b,
            lambda: (randn(), randn(4)),
        ),
        _fn("empty_input", c, lambda t: torch.special.erfinv(t * 0.5), _x(0, 4)),
        _fn(
            "noncontiguous_input", c, lambda t: torch.logcumsumexp(t, 1), lambda: (randn(6, 4).t(),)
        ),
        _fn(
            "channels_last_input",
            c,
            lambda t: F.adaptive_max_pool2d(t, 2) + 1,
            lambda: (randn(1, 3, 5, 5).to(memory_format=torch.channels_last),),
        ),
        _fn(
            "constant_tensor_in_fallback",
            c,
            lambda t: torch.bucketize(t, torch.tensor([-1.0, 0.0, 0.5, 2.0])),
            x,
        ),
        _mod("parameter_in_fallback", c, lambda: _ParamFallback(), x, rtol=1e-4, atol=1e-4),
        _fn("many_fallback_groups", c, _many_groups, x, rtol=1e-4, atol=1e-4),
        _fn("rfft_complex_output", c, lambda t: torch.fft.rfft(t), _x(3, 8), rtol=1e-4, atol=1e-4),
        _fn("inplace_ops", c, _inplace, x),
    ]


class _ParamFallback(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(6) + 0.5)
        self.register_buffer("steps", torch.linspace(-2, 2, 5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.lgamma(self.w) * x, torch.searchsorted(self.steps, x.contiguous())


def _many_groups(t: torch.Tensor) -> torch.Tensor:
    for _ in range(4):
        t = torch.special.erfinv(torch.tanh(t) * 0.9)
        t = t.exp().sum(1, keepdim=True) * t
    return t


def _inplace(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.mul_(2).add_(1)
    t[t > 1] = 0.0
    t.index_put_((torch.tensor([0, 2]),), torch.ones(2, 6), accumulate=True)
    return t


def _all_cases() -> list[Case]:
    cases = [
        *_unary_cases(),
        *_special_cases(),
        *_binary_cases(),
        *_int_bool_cases(),
        *_reduction_cases(),
        *_scan_sort_cases(),
        *_indexing_cases(),
        *_data_dependent_cases(),
        *_shape_cases(),
        *_linalg_cases(),
        *_pool_cases(),
        *_conv_cases(),
        *_norm_cases(),
        *_nn_cases(),
        *_fft_complex_cases(),
        *_dtype_cases(),
        *_mixed_cases(),
        *_dynamic_cases(),
        *_boundary_cases(),
        *class_cases(),
        *model_cases(),
        *generation_cases(),
    ]
    by_name = {case.name: case for case in cases}
    cases += [forced(by_name[name]) for name in FORCED_CASES]
    names = Counter(case.name for case in cases)
    dup = [n for n, k in names.items() if k > 1]
    if dup:
        raise ValueError(f"duplicate sweep case names: {dup}")
    return cases


CASES: tuple[Case, ...] = tuple(_all_cases())


def select_cases(names: Sequence[str]) -> list[Case]:
    """The cases named in ``names`` (in that order); an unknown name is an error."""
    by_name = {case.name: case for case in CASES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"unknown sweep case(s): {unknown}")
    return [by_name[n] for n in names]


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
