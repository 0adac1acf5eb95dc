"""Boolean multiply and add as logical and / or, and float ``==`` / ``!=`` that see NaN, before
TVM compiles them.

Place in the data flow: inside :func:`byoc_torch.schedules.lower`, on the Relax module before
it is legalized (next to :mod:`byoc_torch.fast_math`).

PyTorch's decompositions multiply boolean tensors (``isfinite(a)`` is ``(a == a) * (abs(a) !=
inf)``; ``logaddexp`` and ``isclose`` use it) and TVM's importer keeps that as ``R.multiply``
on ``bool``. TVM compiles it while it stays inside a fused kernel, but once the product is a
kernel's output (a fusion boundary moved, by verification returning an intermediate value or
by a LibTorch region next to it) LLVM code generation stops: ``Check failed:
t.MatchesCode(kDLFloat)`` in ``CodeGenLLVM::CreateMul``. For booleans ``a * b`` is ``a and b``
and ``a + b`` (PyTorch's ``add`` on ``bool``) is ``a or b``; :class:`BoolArithmetic` says so.

Float comparisons, where IEEE and TVM part ways on NaN:

* TVM's LLVM code generation emits ``R.not_equal`` as an *ordered* comparison (``fcmp one``),
  false when either side is NaN, where PyTorch's ``!=`` is true: ``isfinite(nan)`` came out
  true. ``a != b`` becomes ``logical_not(a == b)`` (``fcmp oeq`` is false for NaN, as IEEE).
* TVM's arithmetic simplifier folds ``x == x`` to true and ``x != x`` to false, as for
  integers. PyTorch's decompositions test NaN that way (``nanmean``, ``nan_to_num``), so once
  the comparison shares a fused kernel with the value it tests, NaN went unseen (``nanmean``
  counted NaN elements). ``x != x`` becomes ``isnan(x)``, ``x == x`` ``not isnan(x)``.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .ir import rewrite_tvm_functions

__all__ = ["BoolArithmetic"]

_LOGICAL = {
    "relax.multiply": relax.op.logical_and,
    "relax.add": relax.op.logical_or,
}


def _nan_test(x: relax.Expr, equal: bool, builder: relax.BlockBuilder) -> relax.Expr | None:
    """``x == x`` as ``not isnan(x)``, ``x != x`` as ``isnan(x)``."""
    nan = relax.op.isnan(x)
    return relax.op.logical_not(builder.emit(nan)) if equal else nan


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        op = call.op
        if isinstance(op, tvm.ir.Op) and op.name in ("relax.equal", "relax.not_equal"):
            rewritten = self._compare(call, op.name == "relax.equal")
            return call if rewritten is None else rewritten
        if not isinstance(op, tvm.ir.Op) or op.name not in _LOGICAL:
            return call
        types = [call.ty, *(a.ty for a in call.args)]
        if not all(isinstance(t, relax.TensorType) and str(t.dtype) == "bool" for t in types):
            return call
        return _LOGICAL[op.name](*call.args)

    def _compare(self, call: relax.Call, equal: bool) -> relax.Expr | None:
        """A float ``a == b`` / ``a != b`` as IEEE has it, or None to keep ``call``."""
        a, b = call.args
        ty = a.ty
        if not isinstance(ty, relax.TensorType) or not str(ty.dtype).startswith(("float", "bf")):
            return None
        if a.same_as(b):  # TVM's simplifier folds x == x to true, x != x to false
            tested = _nan_test(a, equal, self.builder_)
            if tested is not None:
                return tested
        if equal:
            return None
        return relax.op.logical_not(self.builder_.emit(relax.op.equal(a, b)))


@tvm.transform.module_pass(opt_level=0, name="byoc_torch.BoolArithmetic")
class BoolArithmetic:
    """Rewrite ``R.multiply`` / ``R.add`` of boolean tensors (boolean result) into
    ``R.logical_and`` / ``R.logical_or``, and float ``R.equal`` / ``R.not_equal`` as the module
    doc says, in every Relax function that is not external (``Codegen``)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_tvm_functions(mod, _Rewriter(mod))
