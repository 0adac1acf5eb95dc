"""A model's outputs as TVM can return them: tensors only, complex ones as real views.

Place in the data flow: the importer applies :func:`tensor_outputs` to the (decomposed)
ExportedProgram before TVM translates it; the driver records the same facts per output in the
signature (:func:`output_leaves`), so the compiled model rebuilds what the model returns.

* A constant output (``None``, an int of a shape such as ``torch.broadcast_shapes``, a float)
  is dropped from the graph: the signature stores its value and the compiled model returns it.
* A complex tensor output crosses as ``torch.view_as_real`` of itself (a view, no copy; a
  lazily conjugated one, e.g. from ``ifft``, is resolved first): the
  graph returns that real tensor, computed inside LibTorch together with the complex value
  (:mod:`.complex`), and the compiled model returns ``torch.view_as_complex`` of it (a view).
* A Python number read from a tensor (``x.item()``) crosses as that tensor; the compiled model
  returns its ``.item()``. Any other symbolic output (a SymInt such as ``x.shape[0] + 1``, a
  SymFloat, a SymBool) crosses as a 0-d tensor made of it (``aten.scalar_tensor``, int64,
  float64 or bool), and the compiled model returns its ``.item()``: a Python number, as
  ``ep.module()`` does.
"""

from __future__ import annotations

import copy

import torch
from torch import fx
from torch.export import graph_signature as gs

from ..errors import FallbackError
from ..names import dtype_name
from .complex import FOREIGN_DTYPES

__all__ = ["mutated_inputs", "output_leaves", "tensor_outputs"]

_ITEM_OPS = (torch.ops.aten.item.default, torch.ops.aten._local_scalar_dense.default)
_KEPT_KINDS = (gs.OutputKind.USER_OUTPUT, gs.OutputKind.LOSS_OUTPUT)
CONSTANT_TYPES = (type(None), bool, int, float, str)
# The dtype of the 0-d tensor a symbolic output crosses as.
_SCALAR_DTYPES = {
    torch.SymInt: torch.int64,
    torch.SymFloat: torch.float64,
    torch.SymBool: torch.bool,
}


def _user_output_args(ep: torch.export.ExportedProgram) -> list[tuple[int, object]]:
    """(position in the output node, value) of each user output, in order."""
    out = ep.graph.output_node()
    values = list(out.args[0])
    specs = ep.graph_signature.output_specs
    return [(k, values[k]) for k, spec in enumerate(specs) if spec.kind in _KEPT_KINDS]


def output_leaves(ep: torch.export.ExportedProgram) -> list[dict]:
    """One signature leaf per user output: ``{"t": "leaf"}`` for a tensor (with ``"complex":
    dtype`` for a complex one) or ``{"t": "const", "v": value}`` for a constant."""
    leaves = []
    for _, value in _user_output_args(ep):
        if isinstance(value, fx.Node):
            val = value.meta.get("val")
            if isinstance(val, torch.Tensor) and val.layout != torch.strided:
                raise FallbackError(
                    f"model output {value.name} is a {val.layout} tensor; outputs cross by "
                    "DLPack, which holds dense (strided) tensors only: return it dense "
                    "(.to_dense()) and make it sparse after the call"
                )
            if isinstance(val, torch.Tensor):
                leaf = {"t": "leaf"}
                if val.dtype in FOREIGN_DTYPES:
                    leaf["complex"] = dtype_name(val.dtype)
                leaves.append(leaf)
                continue
            if value.target in _ITEM_OPS or type(val) in _SCALAR_DTYPES:
                # x.item(): the 0-d tensor crosses; a SymInt/SymFloat/SymBool: one made of it
                leaves.append({"t": "leaf", "item": True})
                continue
            raise FallbackError(
                f"model output {value.name} is a {type(val).__name__}; byoc_torch returns "
                "tensors, Python numbers and constants (None, bool, int, float, str) only"
            )
        if not isinstance(value, CONSTANT_TYPES):
            raise FallbackError(
                f"model output {value!r} is a {type(value).__name__}; byoc_torch returns "
                "tensors and constants (None, bool, int, float, str) only"
            )
        leaves.append({"t": "const", "v": value})
    return leaves


def mutated_inputs(ep: torch.export.ExportedProgram) -> list[str]:
    """The user inputs ``ep`` updates in place (``x.mul_(2)``), in output order; raises
    FallbackError for an updated buffer (the importer binds buffers as constants;
    ``byoc_torch.compile`` makes such buffers inputs first: :func:`byoc_torch.program.export`)."""
    names = []
    for spec in ep.graph_signature.output_specs:
        if spec.kind == gs.OutputKind.USER_INPUT_MUTATION:
            names.append(spec.target)
        elif spec.kind == gs.OutputKind.BUFFER_MUTATION:
            raise FallbackError(
                f"the model updates its buffer {spec.target} in place; this importer binds "
                "buffers into the module as constants: pass the buffer as an input (it is then "
                "updated like any input), or compile the model with byoc_torch.compile, which "
                "makes such buffers inputs of the compiled model and holds their state"
            )
    return names


def tensor_outputs(ep: torch.export.ExportedProgram, owned: bool) -> torch.export.ExportedProgram:
    """``ep`` whose graph returns only tensors, complex ones as real views, and the new values
    of the inputs it updates in place after its outputs (see module doc).
    ``ep`` itself when nothing changes; otherwise ``ep`` changed in place when ``owned``, else a
    copy."""
    leaves = output_leaves(ep)
    mutated = mutated_inputs(ep)
    if all(leaf == {"t": "leaf"} for leaf in leaves) and not mutated:
        return ep
    if not owned:
        ep = copy.deepcopy(ep)
    graph = ep.graph
    out = graph.output_node()
    values = list(out.args[0])
    specs = list(ep.graph_signature.output_specs)
    dropped: set[int] = set()
    for (k, value), leaf in zip(_user_output_args(ep), leaves, strict=True):
        if leaf["t"] == "const":
            dropped.add(k)
        elif "item" in leaf:
            tensor = value.args[0] if value.target in _ITEM_OPS else _scalar_tensor(graph, value)
            values[k] = tensor
            specs[k] = gs.OutputSpec(specs[k].kind, gs.TensorArgument(tensor.name), specs[k].target)
        elif "complex" in leaf:
            with graph.inserting_before(out):  # resolve_conj: a no-op unless conjugated
                resolved = graph.call_function(torch.ops.aten.resolve_conj.default, (value,))
                real = graph.call_function(torch.ops.aten.view_as_real.default, (resolved,))
            resolved.meta["val"] = torch.resolve_conj(value.meta["val"])
            real.meta["val"] = torch.view_as_real(resolved.meta["val"])
            values[k] = real
            specs[k] = gs.OutputSpec(specs[k].kind, gs.TensorArgument(real.name), specs[k].target)
    # The new values of mutated inputs follow the user outputs, as outputs TVM returns.
    mutation = gs.OutputKind.USER_INPUT_MUTATION
    mutations = [k for k, spec in enumerate(specs) if spec.kind == mutation]
    for k in mutations:
        specs[k] = gs.OutputSpec(gs.OutputKind.USER_OUTPUT, specs[k].arg, None)
    kept = [k for k in range(len(values)) if k not in dropped and k not in mutations] + mutations
    out.args = (tuple(values[k] for k in kept),)
    ep.graph_signature.output_specs[:] = [specs[k] for k in kept]
    ep.graph_module.recompile()
    return ep


def _scalar_tensor(graph: fx.Graph, value: fx.Node) -> fx.Node:
    """A node after ``value`` (a SymInt/SymFloat/SymBool) making a 0-d tensor of it."""
    dtype = _SCALAR_DTYPES[type(value.meta["val"])]
    with graph.inserting_after(value):
        node = graph.call_function(torch.ops.aten.scalar_tensor.default, (value,), {"dtype": dtype})
    node.meta["val"] = torch.empty((), dtype=dtype, device="meta")
    fake = _fake_mode(graph)
    if fake is not None:
        with fake:
            node.meta["val"] = torch.empty((), dtype=dtype)
    return node


def _fake_mode(graph: fx.Graph):
    """The fake mode of the graph's example values, if any."""
    from torch._guards import detect_fake_mode

    vals = [n.meta.get("val") for n in graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    return detect_fake_mode(vals)
