"""``R.torchop`` in TVMScript: the parser's side of the ``relax.torchop`` operator.

Place in the data flow: imported with :mod:`relay_ext`. TVM's printer writes a call of any
``relax.<name>`` operator as ``R.<name>(args..., attr=value, ...)`` (its attributes as keyword
arguments, sorted by name), so a module with torchops prints as ``R.torchop(...)``. The parser
evaluates ``R.<name>`` as an attribute of ``tvm.script.parser.relax`` (the module scripts see as
``R``), which offers TVM's own operators only. The narrowest seam is that attribute: this module
adds ``torchop`` there (and to ``tvm.script.ir_builder.relax``, for IRBuilder code), as a
function that turns the printed keywords back into :func:`relay_ext.torchop.torchop`. Types
arrive as the parser's type proxies (``R.Tensor((s0, 3), "float32")``) and are converted with
their own ``as_ty``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tvm import relax

from .torchop import torchop

__all__ = ["register", "script_torchop"]


def _as_type(value: object) -> relax.Type:
    as_ty = getattr(value, "as_ty", None)
    return as_ty() if callable(as_ty) else value


def script_torchop(
    *args: relax.Expr,
    script: Sequence[str] | str,
    in_types: Sequence[object],
    out_type: object,
    op_name: str = "torchop",
    modules: Mapping[str, str] | None = None,
    nodes: Sequence[str] = (),
) -> relax.Call:
    """``R.torchop(x, ..., script=[...], in_types=[...], out_type=..., ...)`` as TVMScript
    writes it: the same call :func:`relay_ext.torchop.torchop` builds."""
    out = _as_type(out_type)
    if isinstance(out, list | tuple):  # a tuple type printed as R.Tuple(...) is already a type
        out = relax.TupleType([_as_type(t) for t in out])
    return torchop(
        list(args),
        script=script,
        in_types=[_as_type(t) for t in in_types],
        out_type=out,
        op_name=str(op_name),
        modules={str(k): str(v) for k, v in (modules or {}).items()},
        nodes=[str(n) for n in nodes],
    )


def register() -> None:
    """Make ``R.torchop`` resolve in TVMScript (parser and IRBuilder namespaces)."""
    from tvm.script import ir_builder, parser

    for namespace in (parser.relax, ir_builder.relax):
        namespace.torchop = script_torchop


register()
