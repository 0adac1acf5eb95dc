"""``export_executable``: a hand-built Relax module's executable as a byoc_torch artifact.

Place in the data flow: for TVM users, after ``relax.build`` of a module whose torch parts
``LowerTorchFunctions`` compiled (``call_torch``, ``partition_for_torch``). ``byoc_torch.load``
needs what a compiled model's artifact carries: the seal (:mod:`byoc_torch.artifact_file`) and
a :class:`~byoc_torch.signature.Signature` in the torch runtime module's metadata. A compiled
model gets its signature from the exported program; here it is read off the Relax function's
parameters (names, dtypes, dims: an int, or a symbolic dim's name) and its return type (a
tensor, or nested tuples of tensors). The result loads with ``byoc_torch.load`` as a
:class:`~byoc_torch.compiled.CompiledModule` (inputs checked, outputs as torch tensors), and
with ``tvm.runtime.load_module`` as before.
"""

from __future__ import annotations

import os
from pathlib import Path

import tvm
from tvm import relax

from .artifact_file import export_file
from .compiled import set_metadata
from .errors import OptionError
from .options import checked_num_threads
from .signature import InputSpec, Signature

__all__ = ["export_executable", "signature_of"]


def _dim(d: tvm.ir.PrimExpr, where: str) -> int | str:
    if isinstance(d, tvm.tirx.IntImm):
        return int(d.value)
    if isinstance(d, tvm.tirx.Var):
        return str(d.name)
    raise OptionError(f"export_executable: {where} has dim {d}: only ints and plain symbols")


def _outputs(ty: relax.Type, where: str) -> dict:
    if isinstance(ty, relax.TensorType):
        return {"t": "leaf"}
    if isinstance(ty, relax.TupleType):
        return {"t": "tuple", "c": [_outputs(f, where) for f in ty.fields]}
    raise OptionError(
        f"export_executable: {where} returns {type(ty).__name__}; a byoc_torch artifact "
        "returns tensors or (nested) tuples of tensors"
    )


def signature_of(
    mod: tvm.IRModule, function: str = "main", *, device: str = "cpu", num_threads=None
) -> Signature:
    """The :class:`Signature` of ``mod[function]``: its tensor parameters (names, dtypes,
    dims) and its return nesting."""
    if function not in [gv.name_hint for gv in mod.get_global_vars()]:
        raise OptionError(f"export_executable: the module has no function '{function}'")
    func = mod[function]
    if not isinstance(func, relax.Function):
        raise OptionError(f"export_executable: '{function}' is not a Relax function")
    specs = []
    for param in func.params:
        ty = param.ty
        where = f"parameter '{param.name}' of '{function}'"
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise OptionError(
                f"export_executable: {where} is {type(ty).__name__}, not a tensor of known "
                "rank; a byoc_torch artifact takes tensors"
            )
        dims = tuple(_dim(d, where) for d in ty.shape.values)
        specs.append(InputSpec(param.name, str(ty.dtype), dims))
    return Signature(
        inputs=tuple(specs),
        outputs=_outputs(func.ret_ty, f"'{function}'"),
        device=device,
        num_threads=checked_num_threads(num_threads),
    )


def export_executable(
    executable: tvm.runtime.Module,
    path: str | os.PathLike,
    mod: tvm.IRModule,
    *,
    function: str = "main",
    device: str = "cpu",
    num_threads: int | None = None,
) -> Path:
    """Write ``executable`` (``relax.build`` of ``mod``, whose torch functions
    ``LowerTorchFunctions`` compiled) as an artifact :func:`byoc_torch.load` and
    ``artifact_file.load_file`` take: sealed, with the signature of ``mod[function]``.

    ``device`` is the device the executable was built for (``"cpu"`` or ``"cuda"``).
    Raises :class:`OptionError` when the function's parameters are not tensors, or when the
    executable runs nothing in LibTorch (then ``export_library`` and
    ``tvm.runtime.load_module`` are all it needs).
    """
    signature = signature_of(mod, function, device=device, num_threads=num_threads)
    try:
        set_metadata(executable, signature.to_json())
    except ValueError as err:
        raise OptionError(
            "export_executable: this executable has no LibTorch runtime module (nothing of it "
            "runs in LibTorch): write it with export_library and load it with "
            "tvm.runtime.load_module. Was LowerTorchFunctions run before relax.build?"
        ) from err
    return export_file(executable, path)
