"""Relax facts the stages share: what marks byoc_torch's functions in a module, and how a
block builder left mid-function by an exception is closed.

Place in the data flow: the partition pass lifts each torch group into a function with
``Codegen="torch"``; the codegen, verification and reports find those functions here. The
frontend and placement close the block builders of failed attempts here.
"""

from __future__ import annotations

import tvm
from tvm import relax

__all__ = ["CODEGEN", "close_blocks", "rewrite_tvm_functions", "torch_functions"]

CODEGEN = "torch"  # the Codegen attribute of a torch function (relax.ext.torch)


def torch_functions(mod: tvm.IRModule) -> dict[str, relax.Function]:
    """The external functions of ``mod`` that byoc_torch's codegen owns, by symbol."""
    out = {}
    for gv, f in mod.functions.items():
        if (
            isinstance(f, relax.Function)
            and f.attrs is not None
            and f.attrs.get("Codegen") == CODEGEN
        ):
            out[gv.name_hint] = f
    return dict(sorted(out.items()))


def rewrite_tvm_functions(mod: tvm.IRModule, rewriter: relax.PyExprMutator) -> tvm.IRModule:
    """``mod`` with each Relax function TVM compiles rewritten by ``rewriter`` (a mutator
    built over ``mod``); external functions (those with a ``Codegen`` attribute, torch's
    among them) are left as they are. The module-level body of byoc_torch's Relax passes."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function) and not (
            func.attrs is not None and "Codegen" in func.attrs
        ):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()


def close_blocks(bb: relax.BlockBuilder) -> None:
    """End the blocks an exception left open in ``bb``. TVM's BlockBuilder warns on stderr
    ("BlockBuilder destroyed with remaining blocks!") when it is destroyed with open blocks,
    and a failed import's builder is often destroyed later, by the garbage collector, outside
    the section whose C++ log lines byoc_torch captures (byoc_torch.quiet)."""
    for _ in range(64):  # a function scope opens one block; nested scopes a few
        try:
            bb._end_block()
        except tvm.error.InternalError:  # no block left
            return
