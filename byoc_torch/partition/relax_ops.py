"""Relax-op offload: calls of named Relax operators become torchops, in any Relax module.

Place in the data flow: the partition pass (``transform.py``) runs this first when
``torch_executed_ops`` names Relax operators (``"relax.matmul"``, ``"relax.nn.conv2d"``, ...),
and for ``min_block_size`` (a small TVM block between torch work joins it). The resulting
torchops are grouped with their torch neighbours like any other.

TVM's BYOC conventions, as the cuBLAS backend uses them: every offloadable pattern is
registered in TVM's pattern registry under the prefix ``torch`` (``torch.matmul``,
``torch.linear_bias``, ``torch.nn.conv2d_bias``, ...; see
``tvm.relax.backend.get_patterns_with_prefix("torch")``), and ``FuseOpsByPattern`` (with
``annotate_codegen=False``) lifts each match into a ``Composite`` function. Where cuBLAS then
hands the composites to its codegen, this module turns each composite call into one
``relax.torchop`` whose TorchScript computes the composite's body, and drops the composite.
Multi-op patterns keep framework idioms whole: ``matmul(x, permute_dims(w)) (+ b)`` runs as
``torch.linear``, a convolution's bias add runs with it.

Each Relax call has one TorchScript equivalent (:data:`CONVERTERS`) that honours its
attributes: strides, padding (asymmetric padding through ``constant_pad_nd``), dilation,
groups, data/kernel/output layouts (any permutation of ``NCHW``/``OIHW`` letters, through
permutes), ``out_dtype``, softmax and norm axes. An attribute LibTorch cannot express (a
packed layout such as ``NCHW4c``, norm axes that are not the trailing ones) raises
:class:`~byoc_torch.errors.FallbackError` naming the op, the attribute and what is supported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tvm
from tvm import relax
from tvm.relax.backend.pattern_registry import get_patterns_with_prefix, register_patterns
from tvm.relax.backend.utils import has_leaking_intermediate_variables
from tvm.relax.dpl import is_op, wildcard
from tvm.relax.transform import PatternCheckContext

import relay_ext

from ..errors import FallbackError, OptionError
from ..frontend.torchscript import method_source, render_constants
from ..names import RELAX_OFFLOAD_OPS, is_relax_op_name, torch_dtype

__all__ = [
    "CONVERTERS",
    "PATTERN_PREFIX",
    "is_relax_op_name",
    "offload_relax_ops",
    "relax_call_to_torchop",
    "relax_ops_for_aten",
]

PATTERN_PREFIX = "torch"

# ---------------------------------------------------------------------------------------------
# One TorchScript expression per Relax call
# ---------------------------------------------------------------------------------------------

# A converter writes the TorchScript expression of one call, given the script names of its
# tensor arguments; it raises FallbackError for attributes LibTorch cannot honour.
Converter = Callable[[relax.Call, list[str]], str]


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def _literal(value: object) -> str:
    _, (expr,) = render_constants([(value, None)])
    return expr


def _cast(expr: str, call: relax.Call) -> str:
    """``expr`` converted to the call's ``out_dtype`` when that differs from the input's."""
    out = call.attrs.out_dtype if "out_dtype" in dir(call.attrs) else None
    out = None if out is None or str(out) in ("", "void") else str(out)
    if out is None or out == str(call.args[0].ty.dtype):
        return expr
    return f"{expr}.to({_literal(torch_dtype(out))})"


def _unary(fn: str) -> Converter:
    return lambda call, a: f"{fn}({a[0]})"


def _binary(fn: str) -> Converter:
    return lambda call, a: f"{fn}({a[0]}, {a[1]})"


def _float_only(name: str, conv: Converter) -> Converter:
    def convert(call: relax.Call, a: list[str]) -> str:
        dtype = str(call.args[0].ty.dtype)
        if not dtype.startswith(("float", "bfloat")):
            raise FallbackError(
                f"{name}: dtype {dtype} is not offloaded (Relax and PyTorch round integer "
                "division differently); only floating-point inputs are"
            )
        return conv(call, a)

    return convert


def _matmul(call: relax.Call, a: list[str]) -> str:
    return _cast(f"torch.matmul({a[0]}, {a[1]})", call)


def _softmax(fn: str) -> Converter:
    return lambda call, a: f"{fn}({a[0]}, {int(call.attrs.axis)})"


def _permute_dims(call: relax.Call, a: list[str]) -> str:
    axes = call.attrs.axes
    ndim = call.args[0].ty.ndim
    order = list(reversed(range(ndim))) if axes is None else _ints(axes)
    return f"torch.permute({a[0]}, {order})"


_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


def _permutation(name: str, attr: str, layout: str, standard: str) -> list[int] | None:
    """Axis order taking ``layout`` to ``standard``; None when they are equal."""
    if layout == standard:
        return None
    if sorted(layout) != sorted(standard):
        raise FallbackError(
            f"{name}: {attr}={layout!r} is not offloaded; supported: {standard!r} and its "
            f"permutations (e.g. {standard[0] + standard[2:] + standard[1]!r}); packed layouts "
            "such as 'NCHW4c' are not"
        )
    return [layout.index(c) for c in standard]


def _conv(dims: int) -> Converter:
    name = f"relax.nn.conv{dims}d"
    data_std, kernel_std = "NC" + _SPATIAL[dims], "OI" + _SPATIAL[dims]

    def convert(call: relax.Call, a: list[str]) -> str:
        attrs = call.attrs
        data_layout, kernel_layout = str(attrs.data_layout), str(attrs.kernel_layout)
        out_layout = str(attrs.out_layout) or data_layout
        x, w = a[0], a[1]
        perm = _permutation(name, "data_layout", data_layout, data_std)
        if perm is not None:
            x = f"torch.permute({x}, {perm})"
        perm = _permutation(name, "kernel_layout", kernel_layout, kernel_std)
        if perm is not None:
            w = f"torch.permute({w}, {perm})"
        padding = _ints(attrs.padding)
        begin, end = padding[:dims], padding[dims:]
        if begin != end:  # LibTorch pads symmetrically: pad the input first
            torch_pad = [p for k in reversed(range(dims)) for p in (begin[k], end[k])]
            x = f"torch.constant_pad_nd({x}, {torch_pad}, 0.0)"
            begin = [0] * dims
        expr = (
            f"torch.conv{dims}d({x}, {w}, None, {_ints(attrs.strides)}, {begin}, "
            f"{_ints(attrs.dilation)}, {int(attrs.groups)})"
        )
        if out_layout != data_std:
            back = _permutation(name, "out_layout", out_layout, data_std)
            expr = f"torch.permute({expr}, {[back.index(k) for k in range(len(back))]})"
        return _cast(expr, call)

    return convert


def _axes(call: relax.Call) -> tuple[int, list[int]]:
    ndim = call.args[0].ty.ndim
    return ndim, sorted(int(x) % ndim for x in call.attrs.axes)


def _layer_norm(call: relax.Call, a: list[str]) -> str:
    ndim, axes = _axes(call)
    k = len(axes)
    if axes != list(range(ndim - k, ndim)):
        raise FallbackError(
            f"relax.nn.layer_norm: axes {axes} of a rank-{ndim} input are not offloaded; "
            "LibTorch normalizes over trailing axes only"
        )
    weight = a[1] if call.attrs.scale else "None"
    bias = a[2] if call.attrs.center else "None"
    eps = _literal(float(call.attrs.epsilon))
    return f"torch.layer_norm({a[0]}, {a[0]}.size()[{ndim - k}:], {weight}, {bias}, {eps})"


def _group_norm(call: relax.Call, a: list[str]) -> str:
    ndim, axes = _axes(call)
    channel = int(call.attrs.channel_axis) % ndim
    if channel != 1 or axes != list(range(2, ndim)):
        raise FallbackError(
            f"relax.nn.group_norm: channel_axis {channel} with axes {axes} is not offloaded; "
            "LibTorch needs channel_axis=1 and the spatial axes 2.."
        )
    weight = a[1] if call.attrs.scale else "None"
    bias = a[2] if call.attrs.center else "None"
    eps = _literal(float(call.attrs.epsilon))
    return f"torch.group_norm({a[0]}, {int(call.attrs.num_groups)}, {weight}, {bias}, {eps})"


def _gelu(call: relax.Call, a: list[str]) -> str:
    return f'torch.gelu({a[0]}, approximate="none")'


def _gelu_tanh(call: relax.Call, a: list[str]) -> str:
    return f'torch.gelu({a[0]}, approximate="tanh")'


CONVERTERS: dict[str, Converter] = {
    "relax.matmul": _matmul,
    "relax.nn.conv1d": _conv(1),
    "relax.nn.conv2d": _conv(2),
    "relax.nn.conv3d": _conv(3),
    "relax.nn.softmax": _softmax("torch.softmax"),
    "relax.nn.log_softmax": _softmax("torch.log_softmax"),
    "relax.nn.layer_norm": _layer_norm,
    "relax.nn.group_norm": _group_norm,
    "relax.nn.relu": _unary("torch.relu"),
    "relax.nn.gelu": _gelu,
    "relax.nn.gelu_tanh": _gelu_tanh,
    "relax.nn.silu": _unary("torch.silu"),
    "relax.permute_dims": _permute_dims,
    "relax.add": _binary("torch.add"),
    "relax.subtract": _binary("torch.sub"),
    "relax.multiply": _binary("torch.mul"),
    "relax.divide": _float_only("relax.divide", _binary("torch.div")),
    "relax.power": _binary("torch.pow"),
    "relax.maximum": _binary("torch.maximum"),
    "relax.minimum": _binary("torch.minimum"),
    "relax.exp": _unary("torch.exp"),
    "relax.log": _unary("torch.log"),
    "relax.sqrt": _unary("torch.sqrt"),
    "relax.rsqrt": _unary("torch.rsqrt"),
    "relax.tanh": _unary("torch.tanh"),
    "relax.sigmoid": _unary("torch.sigmoid"),
    "relax.sin": _unary("torch.sin"),
    "relax.cos": _unary("torch.cos"),
    "relax.abs": _unary("torch.abs"),
    "relax.negative": _unary("torch.neg"),
    "relax.erf": _unary("torch.erf"),
    "relax.floor": _unary("torch.floor"),
    "relax.ceil": _unary("torch.ceil"),
}


if set(CONVERTERS) != set(RELAX_OFFLOAD_OPS):  # names.py lists them for Options
    raise ImportError(
        "byoc_torch: partition.relax_ops.CONVERTERS and names.RELAX_OFFLOAD_OPS differ in "
        f"{sorted(set(CONVERTERS) ^ set(RELAX_OFFLOAD_OPS))}"
    )


# ---------------------------------------------------------------------------------------------
# Patterns, registered in TVM's pattern registry
# ---------------------------------------------------------------------------------------------


def _no_leak(context: PatternCheckContext) -> bool:
    return not has_leaking_intermediate_variables(context)


def _check_linear(context: PatternCheckContext) -> bool:
    weight = context.annotated_expr["weight"]
    transpose = context.annotated_expr["transpose"]
    axes = transpose.attrs.axes
    if weight.ty.ndim != 2 or (axes is not None and _ints(axes) != [1, 0]):
        return False
    bias = context.annotated_expr.get("bias")
    if bias is not None and bias.ty.ndim != 1:
        return False
    return _no_leak(context)


def _pattern_table() -> list[tuple]:
    """(name, pattern, annotations, check, the Relax op a user names to offload it), lowest
    priority first (the registry returns the later ones first)."""
    table = []
    for op in CONVERTERS:
        args = [wildcard() for _ in range(_arity(op))]
        table.append((_pattern_name(op), is_op(op)(*args), {}, None, op))
    for dims in (1, 2, 3):
        op = f"relax.nn.conv{dims}d"
        x, w, b = wildcard(), wildcard(), wildcard()
        conv = is_op(op)(x, w)
        table.append(
            (_pattern_name(op) + "_bias", is_op("relax.add")(conv, b), {"conv": conv}, _no_leak, op)
        )
    x, w, b = wildcard(), wildcard(), wildcard()
    transpose = is_op("relax.permute_dims")(w)
    linear = is_op("relax.matmul")(x, transpose)
    notes = {"weight": w, "transpose": transpose}
    table.append(("torch.linear", linear, notes, _check_linear, "relax.matmul"))
    notes_b = {**notes, "bias": b}
    table.append(
        ("torch.linear_bias", is_op("relax.add")(linear, b), notes_b, _check_linear, "relax.matmul")
    )
    return table


def _arity(op: str) -> int:
    if op in ("relax.nn.layer_norm", "relax.nn.group_norm"):
        return 3
    return int(tvm.ir.Op.get(op).num_inputs)


def _pattern_name(op: str) -> str:
    return PATTERN_PREFIX + "." + op.removeprefix("relax.")


_TABLE = _pattern_table()
_OWNER = {name: op for name, _, _, _, op in _TABLE}  # pattern -> the op that enables it
register_patterns([entry[:4] for entry in _TABLE])


# ---------------------------------------------------------------------------------------------
# Composite functions -> torchops
# ---------------------------------------------------------------------------------------------


def relax_call_to_torchop(call: relax.Call, out_type: relax.Type) -> relax.Call:
    """One Relax operator call as an equivalent torchop over its tensor arguments."""
    params = [relax.Var(f"a{k}", a.ty) for k, a in enumerate(call.args)]
    body = relax.Call(call.op, params, attrs=call.attrs)
    script = _body_script([(None, body)], params, None, out_type)
    return _torchop(call.op.name, list(call.args), params, script, out_type)


def _body_script(bindings, params, result, out_type) -> str:
    """TorchScript ``forward`` over ``params`` running ``bindings`` (var, call) in order."""
    names: dict = {p: f"a{k}" for k, p in enumerate(params)}
    lines = []
    last = None
    for j, (var, call) in enumerate(bindings):
        op = call.op.name
        converter = CONVERTERS.get(op)
        if converter is None:
            raise FallbackError(f"{op} has no TorchScript equivalent here")
        args = []
        for a in call.args:
            if a not in names:
                raise FallbackError(f"{op}: argument {a} is not a tensor the script receives")
            args.append(names[a])
        last = f"v{j}"
        lines.append(f"{last} = {converter(call, args)}")
        if var is not None:
            names[var] = last
    ret = names[result] if result is not None else last
    return method_source("forward", len(params), "Tensor", lines, ret)


def _torchop(name, args, params, script, out_type) -> relax.Call:
    from ..torch_calls import declared_types  # the call-local symbols call_torch declares

    in_types, out = declared_types([p.ty for p in params], out_type)
    return relay_ext.torchop(args, script=script, in_types=in_types, out_type=out, op_name=name)


def _composite_to_torchop(
    func: relax.Function, args: Sequence[relax.Expr], pattern: str
) -> relax.Call:
    body = func.body
    bindings = [(b.var, b.value) for block in body.blocks for b in block.bindings]
    # FuseOpsByPattern adds a shape parameter that defines symbolic variables; LibTorch
    # receives the tensors only (their sizes carry the same values).
    tensor = [isinstance(p.ty, relax.TensorType) for p in func.params]
    params = [p for p, t in zip(func.params, tensor, strict=True) if t]
    args = [a for a, t in zip(args, tensor, strict=True) if t]
    if pattern in ("torch.linear", "torch.linear_bias"):
        script = _linear_script(bindings, params)
    else:
        script = _body_script(bindings, params, body.body, func.ret_ty)
    return _torchop(_OWNER[pattern], list(args), params, script, func.ret_ty)


def _linear_script(bindings, params) -> str:
    """``torch.linear(x, w, b)`` for ``matmul(x, permute_dims(w)) (+ b)``."""
    name = {p: f"a{k}" for k, p in enumerate(params)}
    (_, permute), (product, matmul) = bindings[0], bindings[1]
    weight, x = name[permute.args[0]], name[matmul.args[0]]
    bias = "None"
    if len(bindings) == 3:
        add = bindings[2][1]
        bias = name[add.args[1] if add.args[0].same_as(product) else add.args[0]]
    expr = _cast(f"torch.linear({x}, {weight}, {bias})", matmul)
    return method_source("forward", len(params), "Tensor", [], expr)


# ATen ops whose Relax counterpart (what TVM's PyTorch importer makes of them) is not named
# "relax.<op>" or "relax.nn.<op>".
_ATEN_ALIASES = {
    "mm": ("relax.matmul",),
    "bmm": ("relax.matmul",),
    "linear": ("relax.matmul",),
    "addmm": ("relax.matmul",),
    "convolution": ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d"),
    "_softmax": ("relax.nn.softmax",),
    "_log_softmax": ("relax.nn.log_softmax",),
    "native_layer_norm": ("relax.nn.layer_norm",),
    "native_group_norm": ("relax.nn.group_norm",),
    "permute": ("relax.permute_dims",),
    "sub": ("relax.subtract",),
    "mul": ("relax.multiply",),
    "div": ("relax.divide",),
    "pow": ("relax.power",),
    "neg": ("relax.negative",),
}


def relax_ops_for_aten(name: str) -> list[str]:
    """The Relax ops byoc_torch offloads that TVM's importer makes of the ATen op ``name``
    (``"aten.tanh"``/``"aten.tanh.default"`` -> ``["relax.tanh"]``; ``"aten.mm"`` ->
    ``["relax.matmul"]``); empty for other namespaces and unknown ops."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "aten":
        return []
    op = parts[1]
    candidates = _ATEN_ALIASES.get(op, (f"relax.{op}", f"relax.nn.{op}"))
    return [c for c in candidates if c in CONVERTERS]


def _validate(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in CONVERTERS]
    if unknown:
        raise OptionError(
            f"torch_executed_ops: {unknown} match no Relax operator byoc_torch can offload; "
            f"valid Relax names: {sorted(CONVERTERS)} (and ATen names such as 'aten.tanh')"
        )


def offload_relax_ops(mod: tvm.IRModule, names: Sequence[str]) -> tvm.IRModule:
    """``mod`` with every call of the Relax operators ``names`` (and the patterns they own,
    such as a convolution's bias add) replaced by torchops."""
    _validate(names)
    wanted = set(names)
    patterns = [p for p in get_patterns_with_prefix(PATTERN_PREFIX) if _OWNER[p.name] in wanted]
    if not patterns:
        return mod
    # FuseOpsByPattern matches inside dataflow blocks: make every pure run of bindings one.
    mod = relax.transform.ConvertToDataflow(min_size=1)(mod)
    mod = relax.transform.FuseOpsByPattern(patterns, bind_constants=False, annotate_codegen=False)(
        mod
    )
    composites = {
        gv: f
        for gv, f in mod.functions.items()
        if isinstance(f, relax.Function)
        and f.attrs is not None
        and str(f.attrs.get("Composite", "")).split(".")[0] == PATTERN_PREFIX
        and str(f.attrs.get("Composite", "")) in _OWNER
    }
    if not composites:
        return mod

    @relax.expr_functor.mutator
    class _Rewrite(relax.PyExprMutator):
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = super().visit_call_(call)
            func = composites.get(call.op) if isinstance(call.op, tvm.ir.GlobalVar) else None
            if func is None:
                return call
            return _composite_to_torchop(func, call.args, str(func.attrs["Composite"]))

    out = tvm.IRModule({}, attrs=mod.attrs)
    for gv, f in mod.functions.items():
        if gv in composites:
            continue
        if isinstance(f, relax.Function):
            f = _Rewrite().visit_expr(f)
        out[gv] = f
    return relax.transform.Normalize()(out)
