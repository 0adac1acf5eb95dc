"""``call_torch``: a call of a PyTorch function inside a hand-built Relax function.

Place in the data flow: used by people writing Relax (BlockBuilder, TVMScript,
``tvm.relax.frontend.nn``) rather than by the PyTorch frontend. ``call_torch(fn, *args)``
returns one ``relax.torchop`` call (see :mod:`relay_ext.torchop`), exactly like the ones the
frontend emits, so the partition pass groups it with neighbouring torch work and the codegen
runs it in LibTorch. Named after ``R.call_tir`` / ``R.call_dps_packed``.

``fn`` may be

* an operator ``torch.ops.<ns>.<op>`` (packet or overload; ATen or a custom op registered
  with ``torch.library`` or in C++): the script calls ``torch.ops.<ns>.<op>(...)``, which the
  C++ runtime resolves in this process's dispatcher (runtime/op_resolver.cc);
* a TorchScript function (``torch.jit.script``) or a Python function that ``torch.jit.script``
  accepts: its TorchScript source (TorchScript's own rendering of it, what ``torch.jit.save``
  would store) becomes a method ``fn_<hash>(self, ...)`` of the torchop's script, readable and
  editable in TVMScript, which ``forward`` calls. Where that source does not compile on its
  own (the function calls other scripted functions or classes), it travels like a module:
* a scripted module: a scripted submodule of the subgraph (the torchop's ``modules``
  attribute, base64 of ``torch.jit.save``'s archive), which the script calls as
  ``self.<name>.forward(...)``.

Relax expressions among the arguments (alone, or in a list such as ``aten.cat([x, y])``) are
the call's tensor inputs; every other argument (numbers, strings, dtypes, lists of them, None)
becomes a constant of the script.

The result type is derived without running the function: the arguments become fake tensors
whose sizes are symbols of a ShapeEnv (one per symbolic Relax dim, so ``n`` stays ``n``), the
function runs on PyTorch's fake/meta kernels, and the output sizes are mapped back to TIR. When
that fails, or the result would only hold for the example sizes the symbols carry (a guard that
does not hold for other sizes), :class:`TorchOpTypeError` says to pass ``out_type=``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Callable, Sequence

import sympy
import torch
import tvm
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv
from tvm import relax, tirx

import relay_ext

from .errors import FallbackError, InputTypeError, ScriptError, TorchOpTypeError
from .frontend.torchscript import method_source, render_constants
from .frontend.types import SymbolTable
from .names import op_key, torch_dtype

__all__ = ["call_torch", "declared_types", "function_method"]

# Example sizes the symbols carry while the fake kernels run (distinct primes, so that no
# size-1 or equal-size special case is taken), and the sizes guards are re-checked at.
_HINTS = (17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79)
_PROBES = (lambda h: 2 * h + 1, lambda h: 3 * h + 2)
# Result dtypes a Relax tensor can have (complex values stay inside LibTorch).
_TVM_DTYPES = frozenset(
    {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}
    | {torch.float16, torch.bfloat16, torch.float32, torch.float64}
)


def call_torch(
    fn: object,
    *args: object,
    out_type: relax.Type | None = None,
    **kwargs: object,
) -> relax.Call:
    """A ``relax.torchop`` call running ``fn(*args, **kwargs)`` in LibTorch.

    Args:
        fn: ``torch.ops.<ns>.<op>`` (ATen or custom), a TorchScript function or scripted
            module, or a Python function ``torch.jit.script`` accepts.
        *args, **kwargs: Relax expressions with tensor types (the inputs) and constants.
        out_type: the result's Relax type (a ``TensorType`` or a ``TupleType`` of them), in
            the caller's symbolic variables; derived from PyTorch's fake kernels when omitted.

    Emit the result with ``bb.emit``; the BlockBuilder infers its type through the torchop's
    type relation, which binds the declared input types to the actual ones.
    """
    target = _Target.of(fn)
    inputs: list[relax.Expr] = []
    slots: list[tuple[str | None, object]] = []  # (keyword or None, tensor index or constant)
    for key, value in [(None, a) for a in args] + list(kwargs.items()):
        if isinstance(value, relax.Expr):
            _check_tensor(value, target.name, len(inputs))
            slots.append((key, _TensorSlot(len(inputs))))
            inputs.append(value)
        elif _is_tensor_list(value):  # e.g. aten.cat([x, y]): a List[Tensor] of inputs
            items = []
            for item in value:
                _check_tensor(item, target.name, len(inputs))
                items.append(_TensorSlot(len(inputs)))
                inputs.append(item)
            slots.append((key, _TensorList(items)))
        else:
            slots.append((key, value))
    types = [x.ty for x in inputs]
    locals_ = _LocalSymbols(types)
    if out_type is None:
        result = _fake_result(target, slots, types)
        declared_out = _result_type(result, locals_, target.name)
    else:
        declared_out = locals_.declare(out_type)
    annotations = target.annotations(slots, types)
    script = _script(target, slots, annotations, len(inputs), declared_out)
    return relay_ext.torchop(
        inputs,
        script=script,
        in_types=[locals_.declare(t) for t in types],
        out_type=declared_out,
        op_name=target.name,
        modules=target.modules,
    )


def declared_types(
    types: Sequence[relax.TensorType], out_type: relax.Type
) -> tuple[list[relax.Type], relax.Type]:
    """A torchop's declared input and output types for inputs of ``types`` and a result of
    ``out_type`` (both in the caller's symbolic variables), over call-local variables."""
    locals_ = _LocalSymbols(types)
    return [locals_.declare(t) for t in types], locals_.declare(out_type)


# ---------------------------------------------------------------------------------------------
# What is called
# ---------------------------------------------------------------------------------------------


class _TensorSlot:
    """An argument that is the call's tensor input ``index``."""

    def __init__(self, index: int) -> None:
        self.index = index


class _TensorList:
    """An argument that is a list of the call's tensor inputs."""

    def __init__(self, items: list[_TensorSlot]) -> None:
        self.items = items


def _is_tensor_list(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(isinstance(v, relax.Expr) for v in value)
    )


def _is_input(value: object) -> bool:
    return isinstance(value, _TensorSlot | _TensorList)


class _Target:
    """``fn`` in the two forms a script can call: an operator, or a scripted submodule."""

    def __init__(
        self,
        name: str,
        callee: str,
        run: Callable,
        schema_of: Callable | None = None,
        modules: dict[str, str] | None = None,
        methods: str = "",
    ) -> None:
        self.name = name  # for reports: "mylib.twice", "aten.sin", "my_function"
        self.callee = callee  # TorchScript callee: "torch.ops.mylib.twice", "self.fn_x.forward"
        self.run = run  # what the fake kernels run
        self.schema_of = schema_of  # (args, kwargs) -> schema arguments, for typed constants
        self.modules = modules or {}
        self.methods = methods  # TorchScript methods the script defines after forward

    @classmethod
    def of(cls, fn: object) -> _Target:
        packet = _packet(fn)
        if packet is not None:
            ns, op = packet._qualified_op_name.split("::")

            def schema_of(a, k):
                overload = torch._C._jit_resolve_packet(packet._qualified_op_name, *a, **k)
                return list(getattr(packet, overload or "default")._schema.arguments)

            return cls(op_key(packet), f"torch.ops.{ns}.{op}", packet, schema_of)
        if isinstance(fn, torch.jit.ScriptModule):
            graph = fn.inlined_graph
            return cls._submodule(
                fn.original_name, fn, lambda *a, **k: _run_graph(graph, [fn, *a], k)
            )
        if isinstance(fn, torch.jit.ScriptFunction):
            graph = fn.inlined_graph
            return cls._function(fn, lambda *a, **k: _run_graph(graph, list(a), k))
        if callable(fn):
            name = getattr(fn, "__name__", type(fn).__name__)
            try:
                scripted = torch.jit.script(fn)
            except Exception as err:
                raise ScriptError(
                    f"call_torch: {name} cannot be scripted with torch.jit.script, so it cannot "
                    f"run in LibTorch: {str(err).splitlines()[0] if str(err) else err}"
                ) from err
            return cls._function(scripted, fn)
        raise InputTypeError(
            f"call_torch: expected torch.ops.<ns>.<op>, a TorchScript function or module, or a "
            f"scriptable Python function; got {type(fn).__name__}"
        )

    @classmethod
    def _function(cls, fn: torch.jit.ScriptFunction, run: Callable) -> _Target:
        """A scripted function: carried as a method of the script, in TorchScript source,
        where its source compiles on its own (readable and editable in TVMScript); else as a
        saved scripted submodule."""
        method = function_method(fn)
        if method is None:
            return cls._submodule(fn.name, _wrap_function(fn), run)
        name, source = method
        arguments = list(fn.schema.arguments)

        def schema_of(a, k):
            return arguments

        return cls(fn.name, f"self.{name}", run, schema_of, methods=source)

    @classmethod
    def _submodule(cls, name: str, module: torch.jit.ScriptModule, run: Callable) -> _Target:
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
        payload = buffer.getvalue()
        attribute = "fn_" + hashlib.sha256(payload).hexdigest()[:16]
        encoded = base64.b64encode(payload).decode()
        arguments = list(module.forward.schema.arguments)[1:]  # after the module itself

        def schema_of(a, k):
            return arguments

        return cls(name, f"self.{attribute}.forward", run, schema_of, {attribute: encoded})

    def annotations(self, slots, types) -> list[str | None]:
        """The schema annotation of each slot (``List[int]`` etc.), where one is known."""
        if self.schema_of is None:
            return [None] * len(slots)
        with _fake_mode() as (env, symbols):
            fakes = [_fake_tensor(t, env, symbols) for t in types]
            a, k = _actual(slots, fakes)
            try:
                arguments = self.schema_of(a, k)
            except Exception:  # no overload matches: TorchScript reports it when compiling
                return [None] * len(slots)
        by_name = {x.name: x.type.annotation_str for x in arguments}
        out = []
        position = 0
        for key, _ in slots:
            if key is None:
                args_ = [x for x in arguments if not x.kwarg_only]
                out.append(args_[position].type.annotation_str if position < len(args_) else None)
                position += 1
            else:
                out.append(by_name.get(key))
        return out


def _packet(fn: object) -> torch._ops.OpOverloadPacket | None:
    if isinstance(fn, torch._ops.OpOverloadPacket):
        return fn
    if isinstance(fn, torch._ops.OpOverload):
        return fn.overloadpacket
    return None


def _run_graph(graph: torch._C.Graph, inputs: list, kwargs: dict) -> object:
    """Run a TorchScript graph op by op through Python's dispatcher, so that fake tensors keep
    their symbolic sizes (TorchScript's own interpreter turns them into the example sizes).
    Straight-line graphs only; control flow is an error the caller turns into "pass
    out_type="."""
    if kwargs:
        raise TypeError("keyword arguments of a TorchScript function: pass them by position")
    env: dict = dict(zip(graph.inputs(), inputs, strict=True))
    for node in graph.nodes():
        kind = node.kind()
        args = [env[v] for v in node.inputs()]
        outs = list(node.outputs())
        if kind == "prim::Constant":
            env[outs[0]] = outs[0].toIValue()
        elif kind in ("prim::ListConstruct", "prim::TupleConstruct"):
            env[outs[0]] = args if kind == "prim::ListConstruct" else tuple(args)
        elif kind in ("prim::ListUnpack", "prim::TupleUnpack"):
            env.update(zip(outs, args[0], strict=True))
        elif kind == "prim::TupleIndex" or kind == "aten::__getitem__":
            env[outs[0]] = args[0][args[1]]
        elif kind == "prim::GetAttr":
            env[outs[0]] = getattr(args[0], node.s("name"))
        elif "::" in kind and not kind.startswith("prim::"):
            ns, name = kind.split("::")
            schema = torch._C.parse_schema(node.schema())
            packet = getattr(getattr(torch.ops, ns), name)
            op = getattr(packet, schema.overload_name or "default")
            positional = [
                a for a, x in zip(args, schema.arguments, strict=True) if not x.kwarg_only
            ]
            keywords = {
                x.name: a for a, x in zip(args, schema.arguments, strict=True) if x.kwarg_only
            }
            result = op(*positional, **keywords)
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                env.update(zip(outs, result, strict=True))
        else:
            raise TypeError(f"TorchScript node {kind} is not run symbolically")
    (ret,) = list(graph.return_node().inputs())
    return env[ret]


_NAMES = {"torch": torch, "ops": torch.ops}


def function_method(fn: torch.jit.ScriptFunction) -> tuple[str, str] | None:
    """``fn`` as a TorchScript method ``fn_<hash>(self, ...)``: its name and source (TorchScript's
    own rendering of the function, what ``torch.jit.save`` stores as its code), if that source
    compiles on its own to a method of the same parameters and result; None when it does not
    (it calls other scripted functions or classes, or holds tensor constants)."""
    code = fn.code
    if "__torch__" in code or "CONSTANTS." in code:
        return None
    name = "fn_" + hashlib.sha256(code.encode()).hexdigest()[:16]
    source, found = re.subn(
        r"^def \w+\((\)?)",
        lambda m: f"def {name}(self)" if m.group(1) else f"def {name}(self, ",
        code.strip("\n") + "\n",
        count=1,
    )
    if found != 1:
        return None
    module = torch._C.ScriptModule("CallTorchCheck", torch._C.CompilationUnit(), True)
    try:
        # The names the runtime's resolver knows (runtime/op_resolver.cc): torch and ops.
        concrete = torch._C.ConcreteModuleType.from_jit_type(module._type())
        module._define(concrete, source, _NAMES.get)
        schema = module._get_method(name).schema
    except Exception:  # TorchScript's printer wrote something it cannot read back alone
        return None
    if _signature(schema.arguments[1:], schema.returns) != _signature(
        fn.schema.arguments, fn.schema.returns
    ):
        return None
    return name, source


def _signature(arguments, returns) -> tuple:
    described = [(a.name, str(a.type), repr(a.default_value), a.kwarg_only) for a in arguments]
    return described, [str(r.type) for r in returns]


def _wrap_function(fn: torch.jit.ScriptFunction) -> torch.jit.ScriptModule:
    """A scripted module whose ``forward`` calls ``fn`` with the same parameters."""
    schema = fn.schema
    params = "".join(f", {a.name}: {a.type.annotation_str}" for a in schema.arguments)
    names = ", ".join(a.name for a in schema.arguments)
    if len(schema.returns) != 1:
        raise FallbackError(f"call_torch: {fn.name} must return one value (tensor or tuple)")
    ret = schema.returns[0].type.annotation_str
    # A module of its own compilation unit, so every wrapper may define its own forward.
    cpp = torch._C.ScriptModule("CallTorch", torch._C.CompilationUnit(), True)
    source = f"def forward(self{params}) -> {ret}:\n    return fn({names})\n"
    concrete = torch._C.ConcreteModuleType.from_jit_type(cpp._type())
    cpp._define(concrete, source, lambda name: fn if name == "fn" else None)
    return torch.jit._recursive.wrap_cpp_module(cpp)


# ---------------------------------------------------------------------------------------------
# Types: Relax -> fake tensors -> Relax
# ---------------------------------------------------------------------------------------------


def _check_tensor(value: relax.Expr, name: str, index: int) -> None:
    ty = value.ty
    if not isinstance(ty, relax.TensorType):
        raise TorchOpTypeError(
            f"call_torch({name}): tensor input {index} has type {ty}; Relax arguments must be "
            "tensors (pass numbers and lists as Python values)"
        )
    if ty.dtype is None or str(ty.dtype) == "void" or ty.ndim == -1:
        raise TorchOpTypeError(
            f"call_torch({name}): tensor input {index} has type {ty}; its dtype and rank must "
            "be known"
        )


class _LocalSymbols:
    """The declared types' own symbolic variables: one per symbolic variable of the caller,
    with the same name (the torchop's type relation binds them to the caller's dims)."""

    def __init__(self, types: Sequence[relax.TensorType]) -> None:
        self.caller: dict[str, tirx.Var] = {}
        for t in types:
            for dim in _dims(t) or []:
                for v in tirx.analysis.undefined_vars(dim, []):
                    self.caller.setdefault(v.name, v)
        self.local = {name: tirx.Var(name, "int64") for name in self.caller}

    def declare(self, t: relax.Type) -> relax.Type:
        """``t`` (in the caller's variables) over the local variables."""
        if isinstance(t, relax.TupleType):
            return relax.TupleType([self.declare(f) for f in t.fields])
        if not isinstance(t, relax.TensorType):
            raise TorchOpTypeError(f"call_torch: out_type must be a tensor or tuple type, got {t}")
        dims = _dims(t)
        dtype = None if t.dtype is None else str(t.dtype)
        if dims is None:
            return relax.TensorType(dtype=dtype, ndim=t.ndim)
        analyzer = tvm.sym.Analyzer()
        for d in dims:
            for v in tirx.analysis.undefined_vars(d, []):
                local = self.local.setdefault(v.name, tirx.Var(v.name, "int64"))
                analyzer.bind(v, local)
        return relax.TensorType([analyzer.simplify(d) for d in dims], dtype=dtype)


def _dims(t: relax.TensorType) -> list[tvm.ir.PrimExpr] | None:
    return list(t.shape.values) if isinstance(t.shape, relax.ShapeExpr) else None


class _fake_mode:
    """A FakeTensorMode over a fresh ShapeEnv; yields (env, symbols by caller name)."""

    def __enter__(self):
        self.env = ShapeEnv()
        self.mode = FakeTensorMode(shape_env=self.env, allow_non_fake_inputs=True)
        self.mode.__enter__()
        return self.env, {}

    def __exit__(self, *exc) -> None:
        self.mode.__exit__(*exc)


def _symbol(env: ShapeEnv, symbols: dict, name: str) -> sympy.Symbol:
    if name not in symbols:
        from torch._dynamo.source import ConstantSource

        hint = _HINTS[len(symbols) % len(_HINTS)] + 64 * (len(symbols) // len(_HINTS))
        sym = env.create_symbol(hint, ConstantSource(f"relax_{name}"), DimDynamic.DYNAMIC)
        symbols[name] = (sym, hint)
    return symbols[name][0]


def _to_sympy(e: tvm.ir.PrimExpr, env: ShapeEnv, symbols: dict) -> sympy.Expr:
    if isinstance(e, tirx.IntImm):
        return sympy.Integer(int(e.value))
    if isinstance(e, tirx.Var):
        return _symbol(env, symbols, e.name)
    binary = {
        tirx.Add: lambda a, b: a + b,
        tirx.Sub: lambda a, b: a - b,
        tirx.Mul: lambda a, b: a * b,
        tirx.FloorDiv: lambda a, b: sympy.floor(a / b),
        tirx.FloorMod: lambda a, b: sympy.Mod(a, b),
    }
    for kind, op in binary.items():
        if isinstance(e, kind):
            return op(_to_sympy(e.a, env, symbols), _to_sympy(e.b, env, symbols))
    raise TorchOpTypeError(f"symbolic dim {e} has no PyTorch equivalent")


def _fake_tensor(t: relax.TensorType, env: ShapeEnv, symbols: dict) -> torch.Tensor:
    dims = _dims(t)
    if dims is None:  # rank known, sizes not: fresh symbols no declared input binds
        dims = [tirx.Var(f"_unknown{len(symbols)}_{k}", "int64") for k in range(t.ndim)]
    sizes = []
    for d in dims:
        expr = _to_sympy(d, env, symbols)
        if expr.is_Integer:
            sizes.append(int(expr))
            continue
        hints = {sym: hint for sym, hint in symbols.values()}
        sizes.append(env.create_symintnode(expr, hint=int(expr.xreplace(hints))))
    return torch.empty(sizes, dtype=torch_dtype(str(t.dtype)))


def _actual(slots, fakes) -> tuple[list, dict]:
    a, k = [], {}
    for key, value in slots:
        if isinstance(value, _TensorSlot):
            v = fakes[value.index]
        elif isinstance(value, _TensorList):
            v = [fakes[item.index] for item in value.items]
        else:
            v = value
        if key is None:
            a.append(v)
        else:
            k[key] = v
    return a, k


def _fake_result(target: _Target, slots, types) -> object:
    """``fn`` run on fake tensors with symbolic sizes; its result (fake tensors)."""
    how = (
        f"pass the result type explicitly, e.g. call_torch({target.name}, ..., "
        'out_type=relax.TensorType([n, 4], "float32"))'
    )
    with _fake_mode() as (env, symbols):
        fakes = [_fake_tensor(t, env, symbols) for t in types]
        a, k = _actual(slots, fakes)
        try:
            result = target.run(*a, **k)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TorchOpTypeError(
                f"call_torch({target.name}): the result type cannot be derived with PyTorch's "
                f"fake kernels ({type(err).__name__}: {first}); {how}"
            ) from err
        for guard in env.guards:
            for probe in _PROBES:
                values = {sym: probe(hint) for sym, hint in symbols.values()}
                if not bool(guard.expr.xreplace(values)):
                    raise TorchOpTypeError(
                        f"call_torch({target.name}): the result type holds only for particular "
                        f"sizes (PyTorch needed {guard.expr} of the symbolic dims); {how}"
                    )
    return result, symbols, how


def _result_type(found, locals_: _LocalSymbols, name: str) -> relax.Type:
    result, symbols, how = found
    table = SymbolTable()
    for caller_name, (sym, _) in symbols.items():
        table.vars[sym.name] = locals_.local.setdefault(caller_name, tirx.Var(caller_name, "int64"))
    if isinstance(result, torch.Tensor):
        return _tensor_type(table, result, name, how)
    if (
        isinstance(result, list | tuple)
        and result
        and all(isinstance(r, torch.Tensor) for r in result)
    ):
        return relax.TupleType([_tensor_type(table, r, name, how) for r in result])
    raise TorchOpTypeError(
        f"call_torch({name}): the function returns {type(result).__name__}, not a tensor or a "
        f"tuple of tensors; {how}"
    )


def _tensor_type(table: SymbolTable, t: torch.Tensor, name: str, how: str) -> relax.TensorType:
    if t.dtype not in _TVM_DTYPES:
        raise TorchOpTypeError(
            f"call_torch({name}): result dtype {t.dtype} has no TVM dtype; {how}"
        )
    return table.tensor_type(t)


# ---------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------


def _script(target: _Target, slots, annotations, num_inputs: int, out: relax.Type):
    constants = [
        (value, annotation)
        for (_, value), annotation in zip(slots, annotations, strict=True)
        if not _is_input(value)
    ]
    try:
        lines, rendered = render_constants(constants)
    except FallbackError as err:
        raise FallbackError(f"call_torch({target.name}): {err}") from err
    exprs = iter(rendered)
    parts = []
    for key, value in slots:
        if isinstance(value, _TensorSlot):
            text = f"a{value.index}"
        elif isinstance(value, _TensorList):
            text = "[" + ", ".join(f"a{item.index}" for item in value.items) + "]"
        else:
            text = next(exprs)
        parts.append(text if key is None else f"{key}={text}")
    call = f"{target.callee}({', '.join(parts)})"
    if isinstance(out, relax.TupleType):
        lines = [*lines, f"r = {call}"]
        ret = "(" + "".join(f"r[{k}], " for k in range(len(out.fields))) + ")"
        ret_type = "Tuple[" + ", ".join("Tensor" for _ in out.fields) + "]"
        return method_source("forward", num_inputs, ret_type, lines, ret) + target.methods
    return method_source("forward", num_inputs, "Tensor", lines, call) + target.methods
