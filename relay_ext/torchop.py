"""The ``relax.torchop`` operator and its type relation.

Place in the data flow: the frontend (``byoc_torch.frontend``) emits one ``relax.torchop`` call
per FX node TVM cannot handle; the partition pass (``byoc_torch.partition``) groups those calls
into external functions; the codegen turns each group into LibTorch work. In between, every
Relax pass that re-normalizes a call asks this module's type relation for the call's type.

A call ``R.torchop(x_0, ..., x_{n-1})`` (0..N tensor inputs) carries, as attributes:

``op_name``   what it runs, for people and reports (``"aten.erfinv.default"``);
``script``    the TorchScript source of the function it calls, stored as its list of lines
              (:func:`script_text` joins them) so that TVMScript prints it inline, readable
              and diffable, where a multi-line string would go to the omitted metadata; it
              defines the method ``forward(self, a0, ..., a{n-1})`` over the n input tensors,
              returning a tensor or a tuple of tensors;
``nodes``     names of the FX nodes it computes (for reports; may be empty);
``modules``   scripted submodules the script calls as ``self.<name>`` (name -> base64 of
              ``torch.jit.save`` bytes); empty unless torch_executed_modules forced a module;
``in_types``  the declared input types: one ``TensorType`` per input, whose dims are integers
              or symbolic variables (``s0``) local to this call;
``out_type``  the declared output type, a ``TensorType`` or a ``TupleType`` of them, whose dims
              are expressions over the symbolic variables of ``in_types``.

The type relation unifies the actual argument types with ``in_types`` (binding each symbolic
variable to the caller's dimension, checking dtype, rank and constant dims), then substitutes
the bindings into ``out_type``. It never runs the TorchScript. A dim whose expression uses a
variable no input binds (a data-dependent size) becomes unknown: the result keeps its rank and
dtype but drops its shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import tvm
import tvm_ffi
from tvm import ir, relax, tirx

OP_NAME = "relax.torchop"

__all__ = [
    "OP_NAME",
    "TorchOpTypeError",
    "get_op",
    "infer_type",
    "is_torchop",
    "script_lines",
    "script_text",
    "torchop",
]


@tvm_ffi.register_error
class TorchOpTypeError(TypeError):
    """A torchop call whose inputs do not fit the function it carries.

    Registered with tvm-ffi's error registry, so it keeps its type when TVM's C++ (the
    BlockBuilder running the type relation) re-raises it in Python.
    """


def _register() -> ir.Op:
    """Register ``relax.torchop`` once per process and return it."""
    if OP_NAME not in ir.Op.list_op_names():
        tvm_ffi.get_global_func("ir.RegisterOp")(OP_NAME, "Run a TorchScript function in LibTorch")
        op = ir.Op.get(OP_NAME)
        op.set_num_inputs(-1)  # variadic: 0..N tensor inputs
        op.set_attr("FInferType", infer_type)
        op.set_attr("FPurity", True)
        op.set_attr("FLegalize", _legalize)
    return ir.Op.get(OP_NAME)


def get_op() -> ir.Op:
    """The ``relax.torchop`` operator."""
    return _register()


def is_torchop(expr: object) -> bool:
    """True when ``expr`` is a call of ``relax.torchop``."""
    return isinstance(expr, relax.Call) and isinstance(expr.op, ir.Op) and expr.op.name == OP_NAME


def script_lines(script: str | Sequence[str]) -> list[str]:
    """TorchScript source as the list of lines IR attributes store (``script`` here, and the
    partition pass's ``torch_script``); a list is taken as already split."""
    if isinstance(script, str):
        return script.split("\n")
    return [str(line) for line in script]


def script_text(value: object) -> str:
    """The TorchScript source an IR attribute holds, as one string (lines or a string)."""
    if isinstance(value, str):
        return value
    return "\n".join(str(line) for line in value)


def torchop(
    args: Sequence[relax.Expr],
    *,
    script: str | Sequence[str],
    in_types: Sequence[relax.TensorType],
    out_type: relax.Type,
    op_name: str = "torchop",
    modules: dict[str, str] | None = None,
    nodes: Sequence[str] = (),
) -> relax.Call:
    """Build a ``relax.torchop`` call. Its type is inferred when a BlockBuilder normalizes it."""
    _check_declared_type(out_type, op_name)
    for t in in_types:
        if not isinstance(t, relax.TensorType):
            raise TorchOpTypeError(f"torchop '{op_name}': declared input type {t} is not a tensor")
    attrs = {
        "op_name": op_name,
        "script": script_lines(script),
        "in_types": list(in_types),
        "out_type": out_type,
        "modules": dict(modules or {}),
        "nodes": list(nodes),
    }
    return relax.Call(get_op(), list(args), attrs=attrs)


def _check_declared_type(t: relax.Type, op_name: str) -> None:
    if isinstance(t, relax.TensorType):
        return
    if isinstance(t, relax.TupleType) and len(t.fields) > 0:
        for f in t.fields:
            if not isinstance(f, relax.TensorType):
                raise TorchOpTypeError(
                    f"torchop '{op_name}': tuple output field {f} is not a tensor type"
                )
        return
    raise TorchOpTypeError(
        f"torchop '{op_name}': output type must be a tensor or a non-empty tuple of tensors, "
        f"got {t}"
    )


def _dtype_str(t: relax.TensorType) -> str | None:
    return None if t.dtype is None else str(t.dtype)


def _shape_dims(t: relax.TensorType) -> list[tvm.ir.PrimExpr] | None:
    if isinstance(t.shape, relax.ShapeExpr):
        return list(t.shape.values)
    return None


def infer_type(call: relax.Call, ctx: object = None) -> relax.Type:
    """FInferType of ``relax.torchop``: the call's output type from its input types.

    Raises :class:`TorchOpTypeError` naming the op and the mismatch when the arity, a dtype, a
    rank or a constant dim of an input does not fit the declared signature.
    """
    attrs = call.attrs
    name = str(attrs["op_name"])
    declared = list(attrs["in_types"])
    if len(call.args) != len(declared):
        raise TorchOpTypeError(
            f"torchop '{name}': expects {len(declared)} input tensor(s), got {len(call.args)}"
        )
    analyzer = tvm.sym.Analyzer()
    bound: dict[str, tvm.ir.PrimExpr] = {}
    deferred: list[tuple[int, int, tvm.ir.PrimExpr, tvm.ir.PrimExpr]] = []
    for i, (arg, want) in enumerate(zip(call.args, declared, strict=True)):
        got = arg.ty
        if not isinstance(got, relax.TensorType):
            raise TorchOpTypeError(f"torchop '{name}': input {i} has type {got}, expected a tensor")
        got_dtype, want_dtype = _dtype_str(got), _dtype_str(want)
        if got_dtype is not None and want_dtype is not None and got_dtype != want_dtype:
            raise TorchOpTypeError(
                f"torchop '{name}': input {i} has dtype {got_dtype}, expected {want_dtype}"
            )
        if got.ndim != -1 and want.ndim != -1 and got.ndim != want.ndim:
            raise TorchOpTypeError(
                f"torchop '{name}': input {i} has rank {got.ndim}, expected {want.ndim}"
            )
        got_dims, want_dims = _shape_dims(got), _shape_dims(want)
        if got_dims is None or want_dims is None:
            continue
        for d, (g, w) in enumerate(zip(got_dims, want_dims, strict=True)):
            if isinstance(w, tirx.Var):
                prev = bound.get(w.name)
                if prev is None:
                    bound[w.name] = g
                    analyzer.bind(w, g)
                elif _provably_different(analyzer, prev, g):
                    raise TorchOpTypeError(
                        f"torchop '{name}': input {i} dim {d} is {_dim(g)}, but the signature "
                        f"needs it equal to {_dim(prev)} (symbol {w.name})"
                    )
            else:
                deferred.append((i, d, g, w))
    # A compound dim such as 2*s0 binds its one unbound symbol when it is affine in it.
    progress = True
    while progress:
        progress = False
        for _, _, g, w in deferred:
            solved = _solve_affine(analyzer, w, g, bound)
            if solved is not None:
                var, value = solved
                bound[var.name] = value
                analyzer.bind(var, value)
                progress = True
    for i, d, g, w in deferred:
        expected = analyzer.simplify(w)
        if _provably_different(analyzer, expected, g):
            raise TorchOpTypeError(
                f"torchop '{name}': input {i} dim {d} is {_dim(g)}, expected {_dim(expected)}"
            )
    return _substitute(attrs["out_type"], analyzer, set(bound))


def _solve_affine(
    analyzer: tvm.sym.Analyzer, pattern: tvm.ir.PrimExpr, actual: tvm.ir.PrimExpr, bound: dict
) -> tuple[tirx.Var, tvm.ir.PrimExpr] | None:
    """If ``pattern`` is ``a*v + b`` in its only unbound variable v (a, b constant), the v that
    makes it equal ``actual``, when that value is provably exact; else None."""
    free = [v for v in tirx.analysis.undefined_vars(pattern, []) if v.name not in bound]
    if len({v.name for v in free}) != 1:
        return None
    v = free[0]

    def at(k: int) -> int | None:
        probe = tvm.sym.Analyzer()
        probe.bind(v, tirx.IntImm("int64", k))
        for name, value in bound.items():
            for u in tirx.analysis.undefined_vars(pattern, []):
                if u.name == name:
                    probe.bind(u, value)
        e = probe.simplify(pattern)
        return int(e.value) if isinstance(e, tirx.IntImm) else None

    p0, p1, p2 = at(0), at(1), at(2)
    if p0 is None or p1 is None or p2 is None or p1 == p0 or p2 - p1 != p1 - p0:
        return None
    a, b = p1 - p0, p0
    value = analyzer.simplify(tirx.floordiv(actual - b, a))
    if not analyzer.can_prove_equal(value * a + b, actual):
        return None
    return v, value


def _dim(e: tvm.ir.PrimExpr) -> str:
    """A dim as people write it: ``3`` rather than ``T.int64(3)``."""
    if isinstance(e, tirx.IntImm):
        return str(int(e.value))
    return str(e).replace("T.int64(", "(")


def _provably_different(analyzer: tvm.sym.Analyzer, a: tvm.ir.PrimExpr, b: tvm.ir.PrimExpr) -> bool:
    if isinstance(a, tirx.IntImm) and isinstance(b, tirx.IntImm):
        return int(a.value) != int(b.value)
    return bool(analyzer.can_prove(a != b))


def _substitute(t: relax.Type, analyzer: tvm.sym.Analyzer, bound: set[str]) -> relax.Type:
    if isinstance(t, relax.TupleType):
        return relax.TupleType([_substitute(f, analyzer, bound) for f in t.fields])
    dims = _shape_dims(t)
    dtype = _dtype_str(t)
    if dims is None:
        return relax.TensorType(dtype=dtype, ndim=t.ndim)
    out = []
    for dim in dims:
        free = [v.name for v in tirx.analysis.undefined_vars(dim, [])]
        if any(v not in bound for v in free):
            # A size no input determines (data-dependent): keep rank and dtype only.
            return relax.TensorType(dtype=dtype, ndim=len(dims))
        out.append(analyzer.simplify(dim))
    return relax.TensorType(out, dtype=dtype)


def _partitioned(bb: relax.BlockBuilder) -> bool:
    """Does the module being legalized hold functions the partition pass made
    (``Codegen="torch"``)? Then only the lowering step is missing."""
    try:
        mod = bb.get()
    except Exception:  # no module in context: say the whole recipe
        return False
    return any(
        isinstance(f, relax.Function) and f.attrs is not None and f.attrs.get("Codegen") == "torch"
        for f in mod.functions.values()
    )


def _legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    where = f"relax.torchop '{call.attrs['op_name']}' reached legalization: torchop calls run only "
    if _partitioned(bb):
        raise ValueError(
            where + 'in LibTorch, and this module is partitioned (it has Codegen="torch" '
            "functions) but not lowered: run byoc_torch.LowerTorchFunctions() on it before "
            "relax.build (relax.build(byoc_torch.LowerTorchFunctions()(partitioned), ...))."
        )
    raise ValueError(
        where + "in LibTorch. Run byoc_torch.partition_for_torch (or the PartitionForTorch "
        "pass), then byoc_torch.LowerTorchFunctions(), before relax.build; or use "
        "byoc_torch.compile."
    )


_register()
