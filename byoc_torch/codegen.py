"""Codegen ``relax.ext.torch``: ``Codegen="torch"`` functions -> one torch runtime module.

Place in the data flow: after the partition pass. Two ways in:

* :class:`LowerTorchFunctions` (what ``byoc_torch.compile`` uses) calls the codegen, attaches
  the runtime module to the IRModule's ``external_mods`` and replaces each call of a torch
  function by ``call_pure_packed`` of its symbol. The runtime returns its outputs as tensors
  that own LibTorch's memory: no copy in either direction.
* TVM's stock ``relax.transform.RunCodegen()`` also works: it calls the same global function
  and emits destination-passing calls, which the runtime serves by copying into TVM's outputs.

After the executors are chosen, :func:`weights_in_packages_only` rewrites a lowered module so
that a subgraph running an AOTInductor package that froze constants is called with the
package's inputs alone: those constants then live only in the package, not also among TVM's.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence

import tvm
import tvm_ffi
from tvm import relax

import relay_ext

from .ir import torch_functions
from .runtime import SubgraphSpec, make_runtime_module

logger = logging.getLogger(__name__)

__all__ = [
    "LowerTorchFunctions",
    "build_runtime_module",
    "torch_codegen",
    "weights_in_packages_only",
]


def _num_outputs(func: relax.Function) -> tuple[int, bool]:
    ret = func.ret_ty
    if isinstance(ret, relax.TupleType):
        return len(ret.fields), True
    return 1, False


@tvm_ffi.register_global_func("relax.ext.torch", override=True)
def torch_codegen(funcs, options=None, constant_names=None) -> list:
    """Build one torch runtime module for all given external functions.

    Each function must carry ``global_symbol`` and ``torch_script`` (set by the partition
    pass). Returns a list holding that one module, as Relax's RunCodegen expects.
    """
    return [build_runtime_module(funcs)] if len(funcs) else []


def build_runtime_module(funcs, metadata: str = "") -> tvm_ffi.Module:
    """One torch runtime module for ``funcs`` (possibly none), carrying ``metadata``."""
    specs = []
    for func in funcs:
        attrs = func.attrs
        symbol = attrs.get("global_symbol") if attrs is not None else None
        script = attrs.get("torch_script") if attrs is not None else None
        if symbol is None or script is None:
            raise ValueError(
                "relax.ext.torch: every function needs the attributes 'global_symbol' and "
                "'torch_script'; run byoc_torch.partition_for_torch to create them"
            )
        num_outputs, returns_tuple = _num_outputs(func)
        modules = dict(attrs.get("torch_modules") or {})
        specs.append(
            SubgraphSpec(
                str(symbol),
                relay_ext.script_text(script),
                num_inputs=sum(isinstance(p.ty, relax.TensorType) for p in func.params),
                num_outputs=num_outputs,
                returns_tuple=returns_tuple,
                modules={str(n): base64.b64decode(str(v)) for n, v in modules.items()},
            )
        )
    module = make_runtime_module(specs, metadata)
    logger.debug("relax.ext.torch: %d subgraph(s) -> one torch runtime module", len(specs))
    return module


@tvm.transform.module_pass(opt_level=0, name="LowerTorchFunctions")
class LowerTorchFunctions:
    """ModulePass: compile every ``Codegen="torch"`` function with ``relax.ext.torch`` and call
    it by value (``call_pure_packed``), so its outputs reach TVM without a copy.

    ``metadata`` is stored in the runtime module (created even when there are no torch
    functions, if metadata is given); byoc_torch keeps the model's signature there.
    """

    def __init__(self, metadata: str = "") -> None:
        self.metadata = metadata

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        funcs = torch_functions(mod)
        if not funcs and not self.metadata:
            return mod
        modules = [build_runtime_module(list(funcs.values()), self.metadata)]
        ret_types = {name: f.ret_ty for name, f in funcs.items()}

        @relax.expr_functor.mutator
        class _Rewrite(relax.PyExprMutator):
            def visit_call_(self, call: relax.Call) -> relax.Expr:
                call = super().visit_call_(call)
                op = call.op
                if isinstance(op, tvm.ir.GlobalVar) and op.name_hint in ret_types:
                    # A shape argument only defines symbolic variables for TVM: not passed.
                    tensors = [a for a in call.args if not isinstance(a.ty, relax.ShapeType)]
                    # The call's own type is in the caller's symbolic variables (the
                    # function's return type is in the function's own).
                    return relax.op.call_pure_packed(op.name_hint, *tensors, ty_args=call.ty)
                return call

        out = tvm.IRModule({}, attrs=mod.attrs)
        for gv, f in mod.functions.items():
            if gv.name_hint in funcs:
                continue
            if isinstance(f, relax.Function):
                f = _Rewrite().visit_expr(f)
            out[gv] = f
        external = list(out.attrs.get("external_mods", [])) if out.attrs is not None else []
        out = out.with_attr("external_mods", external + modules)
        return relax.transform.Normalize()(out)


_CALL_PURE_PACKED = tvm.ir.Op.get("relax.call_pure_packed")


def _symbol_called(call: relax.Call) -> str | None:
    """The symbol ``call`` calls by value (``call_pure_packed`` of an extern function), or None."""
    if call.op != _CALL_PURE_PACKED or not isinstance(call.args[0], relax.ExternFunc):
        return None
    return str(call.args[0].global_symbol)


def weights_in_packages_only(
    lowered: tvm.IRModule, specs: Sequence[SubgraphSpec], metadata: str
) -> tuple[tvm.IRModule, list[str]]:
    """``lowered`` (as :class:`LowerTorchFunctions` made it) with every subgraph of ``specs``
    that runs an AOTInductor package leaving out some of its inputs made package-only: its
    calls pass the package's inputs alone, and a new torch runtime module (carrying
    ``metadata``) holds specs saying so. The inputs left out are the constants the package
    froze in; dropped from the calls, TVM keeps no copy of them (a weight lives once). A
    subgraph qualifies only when at each of its calls every input left out is a constant.

    Returns the module and the symbols made package-only (none: ``lowered`` as it is)."""
    candidates = {
        str(spec.symbol): spec
        for spec in specs
        if len(spec.aoti_package) and not spec.package_only
        if len(spec.aoti_inputs) < int(spec.num_inputs)
    }

    @relax.expr_functor.visitor
    class _Check(relax.PyExprVisitor):
        def visit_call_(self, call: relax.Call) -> None:
            super().visit_call_(call)
            symbol = _symbol_called(call)
            spec = candidates.get(symbol) if symbol is not None else None
            if spec is None:
                return
            args = list(call.args[1:])
            kept = {int(k) for k in spec.aoti_inputs}
            left_out = [a for k, a in enumerate(args) if k not in kept]
            if len(args) != int(spec.num_inputs) or not all(
                isinstance(a, tvm.ir.expr.Constant) for a in left_out
            ):
                del candidates[symbol]

    funcs = [f for f in lowered.functions.values() if isinstance(f, relax.Function)]
    for func in funcs:
        _Check().visit_expr(func)
    if not candidates:
        return lowered, []

    @relax.expr_functor.mutator
    class _Rewrite(relax.PyExprMutator):
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = super().visit_call_(call)
            symbol = _symbol_called(call)
            if symbol not in candidates:
                return call
            inputs = [call.args[1 + int(k)] for k in candidates[symbol].aoti_inputs]
            return relax.op.call_pure_packed(symbol, *inputs, ty_args=call.ty)

    new_specs = [
        candidates[str(s.symbol)].package_only_copy() if str(s.symbol) in candidates else s
        for s in specs
    ]
    out = tvm.IRModule({}, attrs=lowered.attrs)
    for gv, f in lowered.functions.items():
        out[gv] = _Rewrite().visit_expr(f) if isinstance(f, relax.Function) else f
    external = [m for m in lowered.attrs["external_mods"] if m.kind != "torch"]
    out = out.with_attr("external_mods", [*external, make_runtime_module(new_specs, metadata)])
    symbols = sorted(candidates)
    logger.debug("subgraph(s) %s run only as their AOTInductor packages", ", ".join(symbols))
    return relax.transform.Normalize()(out), symbols
