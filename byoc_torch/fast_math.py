"""Vectorizable exp, tanh and sigmoid for TVM's CPU kernels.

Place in the data flow: inside :func:`byoc_torch.schedules.build`, on the Relax module before
it is legalized. TVM lowers ``exp`` (and ``tanh``, ``sigmoid``, which use it) to LLVM's
``llvm.exp`` intrinsic, which x86 code generation turns into one scalar libm call per element
even inside a vectorized loop; a fused elementwise chain with a sigmoid then ran 2x slower
than eager PyTorch (whose kernels use SLEEF's vector functions). :class:`FastMath` rewrites
the float32 ``relax.exp``, ``relax.tanh``, ``relax.sigmoid`` and ``relax.nn.silu`` into
kernels of plain arithmetic (a Cody-Waite range reduction and a degree-6 polynomial, Cephes'
coefficients), which LLVM vectorizes. Accuracy: within 2 ulp of float32's exp on the range
where the result is a normal number, and so within float32 tolerances of PyTorch's ops;
``nan`` stays ``nan``, ``exp`` overflows to ``inf`` and underflows to 0 where float32 does
(subnormal results flush to 0).
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx

from .ir import rewrite_tvm_functions

__all__ = ["FastMath", "fast_exp", "fast_sigmoid", "fast_tanh"]

_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375  # ln 2 split in two, so that n * ln2 is exact in float32
_LN2_LO = -2.12194440e-4
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1)
_EXP_HALF = 5.0000001201e-1
_EXP_MAX = 88.72283935546875  # above: exp overflows float32
_EXP_MIN = -87.33654022216797  # below: the result is subnormal (flushed to 0)
_TANH_SMALL = 0.625  # below: tanh's odd polynomial; above: from exp
_TANH_POLY = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1)
_TANH_CUBE = -3.33332819422e-1


def _f(value: float) -> tirx.PrimExpr:
    return tirx.const(value, "float32")


def _pow2(n: tirx.PrimExpr) -> tirx.PrimExpr:
    """2**n for an int32 ``n`` in [-126, 127], built from its exponent bits."""
    bits = tirx.shift_left(n + 127, tirx.const(23, "int32"))
    return tirx.reinterpret("float32", bits)


def _let(name: str, value: tirx.PrimExpr, body, dtype: str = "float32") -> tirx.PrimExpr:
    """``body(v)`` with ``v`` bound to ``value`` once (the expression tree stays small)."""
    var = tirx.Var(name, dtype)
    return tirx.Let(var, value, body(var))


def fast_exp(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """exp(x) for a float32 expression, in arithmetic LLVM can vectorize."""
    return _let("x", x, _exp)


def _exp(x: tirx.Var) -> tirx.PrimExpr:
    def reduced(c: tirx.Var) -> tirx.PrimExpr:
        return _let("n", tirx.floor(c * _f(_LOG2E) + _f(0.5)), lambda n: scaled(c, n))

    def scaled(c: tirx.Var, n: tirx.Var) -> tirx.PrimExpr:
        def poly(r: tirx.Var) -> tirx.PrimExpr:
            p = _f(_EXP_POLY[0])
            for coef in _EXP_POLY[1:]:
                p = p * r + _f(coef)
            p = (p * r + _f(_EXP_HALF)) * r * r + r + _f(1.0)
            return _let("k", n.astype("int32"), lambda k: _scale(p, k), "int32")

        return _let("r", c - n * _f(_LN2_HI) - n * _f(_LN2_LO), poly)

    value = _let("c", tirx.max(tirx.min(x, _f(_EXP_MAX)), _f(_EXP_MIN)), reduced)
    value = tirx.Select(x > _f(_EXP_MAX), _f(float("inf")), value)
    value = tirx.Select(x < _f(_EXP_MIN), _f(0.0), value)
    return tirx.Select(tirx.isnan(x), x, value)  # nan stays nan


def _scale(p: tirx.PrimExpr, k: tirx.Var) -> tirx.PrimExpr:
    """p * 2**k for k in [-126, 128], in two factors (2**128 is not a float32)."""
    half = tirx.shift_right(k, tirx.const(1, "int32"))
    return _let("h", half, lambda h: p * _pow2(h) * _pow2(k - h), "int32")


def fast_tanh(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """tanh(x) for a float32 expression: an odd polynomial near 0, else from exp(-2|x|)."""
    return _let("x", x, _tanh)


def _tanh(x: tirx.Var) -> tirx.PrimExpr:
    def small(z: tirx.Var) -> tirx.PrimExpr:
        p = _f(_TANH_POLY[0])
        for c in _TANH_POLY[1:]:
            p = p * z + _f(c)
        return (p * z + _f(_TANH_CUBE)) * z * x + x

    def large(e: tirx.Var) -> tirx.PrimExpr:
        return _let("t", (_f(1.0) - e) / (_f(1.0) + e), lambda t: tirx.Select(x < _f(0.0), -t, t))

    return tirx.Select(
        tirx.abs(x) < _f(_TANH_SMALL),
        _let("z", x * x, small),
        _let("e", fast_exp(_f(-2.0) * tirx.abs(x)), large),
    )


def fast_sigmoid(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """1 / (1 + exp(-x)) for a float32 expression."""
    return _f(1.0) / (_f(1.0) + fast_exp(-x))


def _silu(x: tirx.PrimExpr) -> tirx.PrimExpr:
    return _let("x", x, lambda v: v * fast_sigmoid(v))


_REWRITES = {
    "relax.exp": (fast_exp, "fast_exp"),
    "relax.tanh": (fast_tanh, "fast_tanh"),
    "relax.sigmoid": (fast_sigmoid, "fast_sigmoid"),
    "relax.nn.silu": (_silu, "fast_silu"),
}


def _elementwise(fn):
    def compute(a: te.Tensor) -> te.Tensor:
        return te.compute(a.shape, lambda *i: fn(a(*i)), name="fast_math")

    return compute


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        op = call.op
        if not isinstance(op, tvm.ir.Op) or op.name not in _REWRITES:
            return call
        ty = call.args[0].ty
        if not isinstance(ty, relax.TensorType) or str(ty.dtype) != "float32":
            return call
        fn, hint = _REWRITES[op.name]
        return self.builder_.call_te(_elementwise(fn), call.args[0], primfunc_name_hint=hint)


@tvm.transform.module_pass(opt_level=0, name="byoc_torch.FastMath")
class FastMath:
    """Rewrite float32 exp / tanh / sigmoid / silu calls of every Relax function that is not
    external (``Codegen``) into vectorizable kernels (see module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_tvm_functions(mod, _Rewriter(mod))
