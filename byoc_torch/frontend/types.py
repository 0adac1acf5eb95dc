"""torch.export's metadata as Relax types.

Place in the data flow: the importer (:mod:`byoc_torch.frontend.importer`) declares each
torchop's input and output types from the FX nodes' ``meta["val"]`` with :class:`SymbolTable`,
and checks TVM's conversions against the same metadata with :func:`type_mismatch`.
"""

from __future__ import annotations

import sympy
import torch
import tvm
from torch import fx
from torch.utils._sympy import functions as symfn
from tvm import relax, tirx

from ..errors import FallbackError
from ..names import dtype_name

__all__ = ["SymbolTable", "type_mismatch"]


class SymbolTable:
    """Maps torch.export's sympy symbols to TIR variables, one table per torchop signature."""

    def __init__(self) -> None:
        self.vars: dict[str, tirx.Var] = {}

    def var(self, name: str) -> tirx.Var:
        if name not in self.vars:
            self.vars[name] = tirx.Var(name, "int64")
        return self.vars[name]

    def to_prim(self, e: sympy.Expr) -> tvm.ir.PrimExpr:
        if isinstance(e, sympy.Integer) or (isinstance(e, int) and not isinstance(e, bool)):
            return tirx.IntImm("int64", int(e))
        if isinstance(e, sympy.Symbol):
            return self.var(e.name)
        args = [self.to_prim(a) for a in e.args]
        if isinstance(e, sympy.Add):
            return _fold(args, lambda a, b: a + b)
        if isinstance(e, sympy.Mul):
            return _fold(args, lambda a, b: a * b)
        if isinstance(e, symfn.FloorDiv):
            return tirx.floordiv(args[0], args[1])
        if isinstance(e, symfn.CeilDiv):
            return tirx.floordiv(args[0] + args[1] - 1, args[1])
        if isinstance(e, symfn.Mod | symfn.PythonMod):
            return tirx.floormod(args[0], args[1])
        if isinstance(e, sympy.Max | symfn.Max):
            return _fold(args, tirx.max)
        if isinstance(e, sympy.Min | symfn.Min):
            return _fold(args, tirx.min)
        if isinstance(e, sympy.Pow) and isinstance(e.exp, sympy.Integer) and int(e.exp) > 0:
            return _fold([args[0]] * int(e.exp), lambda a, b: a * b)
        raise FallbackError(f"symbolic size {e} has no TIR equivalent here")

    def tensor_type(self, t: torch.Tensor) -> relax.TensorType:
        dims = []
        for s in t.shape:
            if isinstance(s, torch.SymInt):
                try:
                    dims.append(self.to_prim(s.node.expr))
                except FallbackError:
                    return relax.TensorType(dtype=dtype_name(t.dtype), ndim=t.dim())
            else:
                dims.append(tirx.IntImm("int64", int(s)))
        return relax.TensorType(dims, dtype=dtype_name(t.dtype))


def _fold(args, fn):
    out = args[0]
    for a in args[1:]:
        out = fn(out, a)
    return out


def type_mismatch(node: fx.Node, value: object) -> str | None:
    """How TVM's conversion of ``node`` contradicts the type torch.export recorded, or None.

    Compares dtype, rank and static dims of a single-tensor result; anything else (tuples,
    symbolic dims) is not judged here.
    """
    meta = node.meta.get("val")
    if not isinstance(meta, torch.Tensor) or not isinstance(value, relax.Expr):
        return None
    ty = value.ty
    if not isinstance(ty, relax.TensorType):
        return None
    want_dtype = dtype_name(meta.dtype)
    got_dtype = None if ty.dtype is None else str(ty.dtype)
    want_shape = tuple(int(d) if not isinstance(d, torch.SymInt) else "?" for d in meta.shape)
    problems = []
    if got_dtype is not None and got_dtype != want_dtype:
        problems.append(f"dtype {got_dtype}")
    if ty.ndim != -1 and ty.ndim != meta.dim():
        problems.append(f"rank {ty.ndim}")
    elif isinstance(ty.shape, relax.ShapeExpr):
        for d, (got, want) in enumerate(zip(ty.shape.values, want_shape, strict=True)):
            if isinstance(got, tirx.IntImm) and isinstance(want, int) and int(got) != want:
                problems.append(f"dim {d} = {int(got)}")
    if not problems:
        return None
    return f"TVM's result has {', '.join(problems)}; PyTorch gives {want_dtype} {list(want_shape)}"
