"""Codegen ``relax.ext.torch``: ``Codegen="torch"`` functions -> one torch runtime module.

Place in the data flow: after the partition pass. Two ways in:

* :class:`LowerTorchFunctions` (what ``byoc_torch.compile`` uses) calls the codegen, attaches
  the runtime module to the IRModule's ``external_mods`` and replaces each call of a torch
  function by ``call_pure_packed`` of its symbol. The runtime returns its outputs as tensors
  that own LibTorch's memory: no copy in either direction.
* TVM's stock ``relax.transform.RunCodegen()`` also works: it calls the same global function
  and emits destination-passing calls, which the runtime serves by copying into TVM's outputs.
"""

from __future__ import annotations

import base64
import logging

import tvm
import tvm_ffi
from tvm import relax

import relay_ext

from .ir import torch_functions
from .runtime import SubgraphSpec, make_runtime_module

logger = logging.getLogger(__name__)

__all__ = ["LowerTorchFunctions", "build_runtime_module", "torch_codegen"]


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
