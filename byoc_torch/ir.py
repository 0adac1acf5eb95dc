"""What marks byoc_torch's functions in a Relax module, one home for it.

Place in the data flow: the partition pass lifts each torch group into a function with
``Codegen="torch"``; the codegen, verification and reports find those functions here.
"""

from __future__ import annotations

import tvm
from tvm import relax

__all__ = ["CODEGEN", "torch_functions"]

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
