"""TorchScript source for FX nodes, and for groups of them.

Place in the data flow: the frontend calls :func:`script_for_node` for every FX node that falls
back to LibTorch; the result becomes the ``script`` attribute of a ``relax.torchop``. The
partition pass calls :func:`merge_scripts` to fuse the scripts of one group into the single
TorchScript that the runtime compiles.

The source is written for LibTorch's own TorchScript compiler (``torch::jit::compile``), which
resolves ``torch.X`` to the ATen builtin ``aten::X`` but knows no Python objects. So dtypes,
layouts and memory formats are written as the integers of their ATen enums, lists get a typed
local variable instead of ``annotate``, and scalar inputs (symbolic sizes such as ``s0 * 2``) are
recomputed inside the script from the tensor inputs rather than passed in.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import fx

from ..errors import FallbackError
from .higher_order import HIGHER_ORDER_SCRIPTS, ScriptParts
from .modules import ForcedModule, forced_module_for_op

__all__ = [
    "FallbackError",
    "NodeScript",
    "merge_scripts",
    "method_source",
    "output_metas",
    "render_constants",
    "script_for_node",
    "script_for_nodes",
    "tensor_meta",
]


# ATen enum values, as TorchScript sees them (c10::ScalarType, c10::Layout, c10::MemoryFormat).
_DTYPE_CODE: dict[torch.dtype, int] = {
    torch.uint8: 0,
    torch.int8: 1,
    torch.int16: 2,
    torch.int32: 3,
    torch.int64: 4,
    torch.float16: 5,
    torch.float32: 6,
    torch.float64: 7,
    torch.complex32: 8,
    torch.complex64: 9,
    torch.complex128: 10,
    torch.bool: 11,
    torch.bfloat16: 15,
    torch.uint16: 27,
    torch.uint32: 28,
    torch.uint64: 29,
}
_LAYOUT_CODE = {torch.strided: 0, torch.sparse_coo: 1}
_MEMORY_FORMAT_CODE = {
    torch.contiguous_format: 0,
    torch.preserve_format: 1,
    torch.channels_last: 2,
    torch.channels_last_3d: 3,
}

# Python operators on SymInts that FX records as call_function nodes.
_BINARY_SYMBOLS: dict[Callable, str] = {
    operator.add: "+",
    operator.sub: "-",
    operator.mul: "*",
    operator.floordiv: "//",
    operator.mod: "%",
    operator.truediv: "/",
    operator.pow: "**",
    operator.eq: "==",
    operator.ne: "!=",
    operator.lt: "<",
    operator.le: "<=",
    operator.gt: ">",
    operator.ge: ">=",
}


def tensor_meta(node: fx.Node) -> torch.Tensor | None:
    """The fake tensor torch.export recorded for a node's output, if it is one tensor."""
    val = node.meta.get("val")
    return val if isinstance(val, torch.Tensor) else None


def output_metas(node: fx.Node) -> list[torch.Tensor] | None:
    """The node's outputs as a list of fake tensors: one for a tensor, k for a tuple/list of
    tensors; None when any output is not a tensor."""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return [val]
    if isinstance(val, list | tuple) and val and all(isinstance(v, torch.Tensor) for v in val):
        return list(val)
    return None


def is_scalar_node(node: fx.Node) -> bool:
    """True when the node produces a Python scalar (SymInt, SymFloat, SymBool, int, ...)."""
    val = node.meta.get("val")
    return isinstance(val, int | float | bool | torch.SymInt | torch.SymFloat | torch.SymBool)


@dataclass
class NodeScript:
    """TorchScript for one FX node.

    ``source`` defines the method ``forward(self, a0: Tensor, ...)`` over the tensors in
    ``inputs`` (in order) and returns a tensor, or a tuple when ``returns_tuple``.
    """

    source: str
    inputs: list[fx.Node]
    returns_tuple: bool
    num_outputs: int
    modules: dict[str, str] = field(default_factory=dict)  # attribute -> base64 payload


@dataclass
class _Writer:
    """Accumulates the statements of one TorchScript function."""

    inputs: list[fx.Node] = field(default_factory=list)
    local: dict[fx.Node, str] = field(default_factory=dict)  # values computed in this script
    lines: list[str] = field(default_factory=list)
    scalar_names: dict[fx.Node, str] = field(default_factory=dict)
    counter: int = 0

    def tensor(self, node: fx.Node) -> str:
        if node not in self.inputs:
            self.inputs.append(node)
        return f"a{self.inputs.index(node)}"

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def emit(self, line: str) -> None:
        self.lines.append(line)


def aten_callee(target: object) -> str:
    """The TorchScript callee for an operator overload: ``torch.erfinv`` for ATen, and
    ``torch.ops.<ns>.<op>`` for an op of another namespace (a custom op registered with
    ``torch.library`` or in C++), which the runtime resolves in its process's dispatcher."""
    schema = getattr(target, "_schema", None)
    if schema is None:
        raise FallbackError(f"{target} is not an operator overload")
    ns, _, name = schema.name.partition("::")
    if ns == "aten":
        return f"torch.{name}"
    return f"torch.ops.{ns}.{name}"


def _float_literal(x: float) -> str:
    if math.isnan(x):
        return 'float("nan")'
    if math.isinf(x):
        return 'float("inf")' if x > 0 else 'float("-inf")'
    return repr(float(x))


def _ts_type(annotation: str) -> str:
    # TorchScript spells SymInt as int in annotations.
    return re.sub(r"\bSymInt\b", "int", annotation)


def _render(w: _Writer, value: object, annotation: str | None = None) -> str:
    """A TorchScript expression for one argument value."""
    if isinstance(value, fx.Node):
        if value in w.local:
            return w.local[value]
        if is_scalar_node(value):
            return _render_scalar(w, value)
        if tensor_meta(value) is not None:
            return w.tensor(value)
        raise FallbackError(f"argument {value.name} is neither a tensor nor a scalar")
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_literal(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, torch.dtype):
        if value not in _DTYPE_CODE:
            raise FallbackError(f"dtype {value} has no TorchScript code here")
        return str(_DTYPE_CODE[value])
    if isinstance(value, torch.layout):
        if value not in _LAYOUT_CODE:
            raise FallbackError(f"layout {value} is not supported")
        return str(_LAYOUT_CODE[value])
    if isinstance(value, torch.memory_format):
        return str(_MEMORY_FORMAT_CODE[value])
    if isinstance(value, torch.device):
        return f'torch.device("{value}")'
    if isinstance(value, list | tuple):
        items = ", ".join(_render(w, v, _element_annotation(annotation)) for v in value)
        if annotation is not None and annotation.startswith("List["):
            name = w.fresh("l")
            w.emit(f"{name}: {_ts_type(annotation)} = [{items}]")
            return name
        return f"[{items}]"
    raise FallbackError(f"cannot write a {type(value).__name__} argument in TorchScript")


def render_constants(
    values: list[tuple[object, str | None]],
) -> tuple[list[str], list[str]]:
    """TorchScript for constant arguments (numbers, strings, dtypes, lists, ...): the
    statements that must precede their use (typed lists) and one expression per value.
    ``values`` pairs each value with its schema annotation (``"List[int]"``) or None."""
    w = _Writer()
    exprs = [_render(w, v, annotation) for v, annotation in values]
    return w.lines, exprs


def method_source(name: str, num_inputs: int, ret_type: str, lines: list[str], ret: str) -> str:
    """A TorchScript method ``name(self, a0: Tensor, ...) -> ret_type`` running ``lines``."""
    return _method(name, num_inputs, ret_type, lines, ret)


def _element_annotation(annotation: str | None) -> str | None:
    if annotation and annotation.startswith("List[") and annotation.endswith("]"):
        return annotation[5:-1]
    return None


def _render_scalar(w: _Writer, node: fx.Node) -> str:
    """Recompute a scalar (e.g. a symbolic size) inside the script from tensor inputs."""
    if node in w.scalar_names:
        return w.scalar_names[node]
    t = node.target
    args = node.args
    if t is torch.ops.aten.sym_size.int:
        expr = f"{_render(w, args[0])}.size({int(args[1])})"
    elif t is torch.ops.aten.sym_stride.int:
        expr = f"{_render(w, args[0])}.stride({int(args[1])})"
    elif t is torch.ops.aten.sym_numel.default:
        expr = f"{_render(w, args[0])}.numel()"
    elif t is torch.ops.aten.sym_storage_offset.default:
        expr = f"{_render(w, args[0])}.storage_offset()"
    elif t is torch.ops.aten._local_scalar_dense.default:
        val = node.meta.get("val")
        cast = (
            "bool"
            if isinstance(val, bool | torch.SymBool)
            else ("float" if isinstance(val, float | torch.SymFloat) else "int")
        )
        expr = f"{cast}({_render(w, args[0])})"
    elif t in _BINARY_SYMBOLS:
        expr = f"({_render(w, args[0])} {_BINARY_SYMBOLS[t]} {_render(w, args[1])})"
    elif t is operator.neg:
        expr = f"(-{_render(w, args[0])})"
    elif t in (torch.sym_max, torch.sym_min):
        fn = "max" if t is torch.sym_max else "min"
        expr = f"{fn}({_render(w, args[0])}, {_render(w, args[1])})"
    else:
        raise FallbackError(
            f"scalar input {node.name} ({node.target}) cannot be recomputed inside TorchScript"
        )
    name = w.fresh("i")
    w.emit(f"{name} = {expr}")
    w.scalar_names[node] = name
    return name


def _call_expr(w: _Writer, node: fx.Node) -> str:
    """``torch.op(args...)`` for a call_function node, arguments laid out by the op's schema."""
    if getattr(node.target, "_schema", None) is None:
        raise FallbackError(
            f"node {node.name} ({node.target}) is a higher-order or Python op that TVM's "
            "importer does not convert and that has no TorchScript form here; rewrite it with "
            "ops of torch.ops.aten or torch.cond, or run its submodule with "
            "torch_executed_modules"
        )
    callee = aten_callee(node.target)
    schema = node.target._schema
    parts: list[str] = []
    for i, arg in enumerate(schema.arguments):
        annotation = arg.type.annotation_str
        if i < len(node.args) and not arg.kwarg_only:
            parts.append(_render(w, node.args[i], annotation))
        elif arg.name in node.kwargs:
            parts.append(f"{arg.name}={_render(w, node.kwargs[arg.name], annotation)}")
    return f"{callee}({', '.join(parts)})"


def script_for_node(node: fx.Node) -> NodeScript:
    """TorchScript running one FX ``call_function`` node of an ExportedProgram graph."""
    if node.op != "call_function":
        raise FallbackError(f"node {node.name} is a {node.op}, not a call_function")
    metas = output_metas(node)
    if metas is None:
        raise FallbackError(
            f"node {node.name} ({node.target}) does not produce tensors, so it cannot run as a "
            "torchop"
        )
    forced = forced_module_for_op(node.target)
    if forced is not None:
        return _script_for_forced_module(node, forced)
    if node.target in HIGHER_ORDER_SCRIPTS:
        return _script_for_higher_order(node, len(metas))
    w = _Writer()
    call = _call_expr(w, node)
    val = node.meta["val"]
    returns_tuple = not isinstance(val, torch.Tensor)
    if returns_tuple:
        w.emit(f"r = {call}")
        ret = "(" + "".join(f"r[{k}], " for k in range(len(metas))) + ")"
        ret_type = "Tuple[" + ", ".join("Tensor" for _ in metas) + "]"
    else:
        ret, ret_type = call, "Tensor"
    source = _method("forward", len(w.inputs), ret_type, w.lines, ret)
    return NodeScript(source, list(w.inputs), returns_tuple, len(metas))


def _script_for_higher_order(node: fx.Node, num_outputs: int) -> NodeScript:
    """``while_loop`` and ``map`` as TorchScript loops over their subgraphs (see
    :mod:`.higher_order`)."""
    w = _Writer()
    parts = ScriptParts(_Writer, _call_expr, _method)
    methods, results = HIGHER_ORDER_SCRIPTS[node.target](node, w, parts)
    ret = "(" + "".join(f"{r}, " for r in results) + ")"
    ret_type = "Tuple[" + ", ".join("Tensor" for _ in results) + "]"
    source = _method("forward", len(w.inputs), ret_type, w.lines, ret)
    return NodeScript(source + "\n" + "\n".join(methods), list(w.inputs), True, num_outputs)


def _script_for_forced_module(node: fx.Node, forced: ForcedModule) -> NodeScript:
    """``self.mod_k.forward(a0, ...)`` for the custom op that stands for a forced submodule."""
    w = _Writer()
    (xs,) = node.args
    args = ", ".join(_render(w, x) for x in xs)
    w.emit(f"r = self.{forced.attribute}.forward({args})")
    if forced.returns_tuple:
        ret = "(" + "".join(f"r[{k}], " for k in range(forced.num_outputs)) + ")"
    else:
        ret = "(r, )"
    ret_type = "Tuple[" + ", ".join("Tensor" for _ in range(forced.num_outputs)) + "]"
    source = _method("forward", len(w.inputs), ret_type, w.lines, ret)
    return NodeScript(
        source, list(w.inputs), True, forced.num_outputs, {forced.attribute: forced.payload_b64}
    )


def script_for_nodes(
    members: list[fx.Node], outputs: list[tuple[fx.Node, int | None]]
) -> NodeScript:
    """TorchScript running several FX nodes (in the given topological order) as one function.

    ``outputs`` lists what the function returns: ``(node, None)`` for a tensor-valued member,
    ``(node, k)`` for element k of a tuple-valued one. The result is always a tuple. Used for
    values TVM cannot hold (complex tensors): their producers and consumers run together.
    """
    w = _Writer()
    for k, node in enumerate(members):
        if node.target is operator.getitem and node.args[0] in w.local:
            w.local[node] = f"{w.local[node.args[0]]}[{int(node.args[1])}]"
            continue
        if node.op != "call_function":
            raise FallbackError(f"node {node.name} is a {node.op}, not a call_function")
        w.emit(f"v{k} = {_call_expr(w, node)}")
        w.local[node] = f"v{k}"
    rets = [w.local[n] if idx is None else f"{w.local[n]}[{idx}]" for n, idx in outputs]
    ret_type = "Tuple[" + ", ".join("Tensor" for _ in rets) + "]"
    ret = "(" + "".join(f"{r}, " for r in rets) + ")"
    source = _method("forward", len(w.inputs), ret_type, w.lines, ret)
    return NodeScript(source, list(w.inputs), True, len(rets))


def _method(name: str, num_inputs: int, ret_type: str, lines: list[str], ret: str) -> str:
    """A TorchScript method ``name(self, a0: Tensor, ...) -> ret_type``."""
    params = "".join(f", a{k}: Tensor" for k in range(num_inputs))
    body = "".join(f"    {line}\n" for line in lines)
    return f"def {name}(self{params}) -> {ret_type}:\n{body}    return {ret}\n"


# ---------------------------------------------------------------------------------------------
# Merging the scripts of one group
# ---------------------------------------------------------------------------------------------

_DEF_RE = re.compile(r"^def forward\(self", re.MULTILINE)
_TOP_DEF_RE = re.compile(r"^(?=def )", re.MULTILINE)


@dataclass
class GroupStep:
    """One member of a group: its script and where its inputs come from.

    ``args`` holds, per input of the member's ``forward``, either ``("in", k)`` (the group's
    k-th input) or ``("val", j, idx)`` (output ``idx`` of step ``j``; idx is None for a tensor).
    """

    source: str
    args: list[tuple]
    returns_tuple: bool


def merge_scripts(
    steps: list[GroupStep], num_inputs: int, outputs: list[tuple[int, int | None]]
) -> str:
    """One TorchScript ``forward`` method running all ``steps`` in order.

    Each step's ``forward`` is renamed ``op<j>``; TorchScript inlines those calls when it
    compiles the group, so LibTorch optimizes across the whole group. ``outputs`` lists
    ``(step, idx)`` pairs the group returns; a single output is returned as a bare tensor.
    """
    defs: list[str] = []  # each method once (two steps may call the same call_torch function)
    for j, step in enumerate(steps):
        src, n = _DEF_RE.subn(f"def op{j}(self", step.source, count=1)
        if n != 1:
            raise FallbackError(f"group member {j} has no 'def forward(self' to merge")
        for method in _TOP_DEF_RE.split(src):
            if method.strip() and method not in defs:
                defs.append(method)
    body = []
    for j, step in enumerate(steps):
        call_args = []
        for a in step.args:
            if a[0] == "in":
                call_args.append(f"a{a[1]}")
            else:
                _, src_step, idx = a
                call_args.append(f"v{src_step}" if idx is None else f"v{src_step}[{idx}]")
        body.append(f"v{j} = self.op{j}({', '.join(call_args)})")
    rets = [f"v{s}" if i is None else f"v{s}[{i}]" for s, i in outputs]
    if len(rets) == 1:
        ret, ret_type = rets[0], "Tensor"
    else:
        ret = "(" + ", ".join(rets) + ")"
        ret_type = "Tuple[" + ", ".join("Tensor" for _ in rets) + "]"
    return "\n".join(defs) + "\n" + _method("forward", num_inputs, ret_type, body, ret)
