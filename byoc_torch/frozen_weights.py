"""Which constants an AOTInductor package freezes in, and which it takes as inputs.

Place in the data flow: :mod:`byoc_torch.aot_inductor` builds each subgraph's program over the
exported program's nodes; every parameter, buffer and constant the subgraph reads is frozen into
its package (:func:`frozen_values`) except those this module keeps as package inputs, which the
runtime passes at each call from the one copy the model holds. The decision is per model and per
class of constant:

* convolution weights are always frozen (oneDNN prepacks them and batch norms fold into them);
* float32 matrices of matrix multiplies are frozen unless MKL's sgemm is measured faster on
  this CPU than oneDNN's packed multiplies, which inductor makes of them
  (:func:`matmul_weights_frozen`, ``_defaults.AOTI_FREEZE_MATMUL_WEIGHTS``); frozen, TVM keeps
  no copy of them (:func:`byoc_torch.codegen.weights_in_packages_only`);
* other constants of ``_defaults.AOTI_FROZEN_MAX_BYTES`` or more (embedding tables) stay
  inputs: freezing gains a gather nothing.
"""

from __future__ import annotations

import collections
import functools
import logging
import math

import torch
from torch import fx

from . import _defaults
from .threads import one_thread
from .timing import choose, robust_times

logger = logging.getLogger(__name__)

__all__ = [
    "CONVOLUTIONS",
    "MATMULS",
    "WEIGHT_VIEWS",
    "frozen_values",
    "matmul_weights_frozen",
]


def _constant_values(ep: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    """Placeholder name -> the tensor of every parameter, buffer and constant of ``ep``."""
    sig = ep.graph_signature
    values: dict[str, torch.Tensor] = {}
    for name, fqn in {**sig.inputs_to_parameters, **sig.inputs_to_buffers}.items():
        values[name] = ep.state_dict[fqn] if fqn in ep.state_dict else ep.constants[fqn]
    for name, fqn in sig.inputs_to_lifted_tensor_constants.items():
        values[name] = ep.constants[fqn]
    return values


def frozen_values(ep: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    """Placeholder name -> the tensor of every parameter, buffer and constant of ``ep`` that
    is frozen into packages: all of them but those :func:`_package_inputs` names."""
    values = _constant_values(ep)
    for name in _package_inputs(ep, values):
        del values[name]
    return values


_aten = torch.ops.aten
# Ops between a weight and the op that reads it (a linear's weight.t(), a reshape).
WEIGHT_VIEWS = frozenset(
    {
        _aten.permute.default,
        _aten.t.default,
        _aten.transpose.int,
        _aten.view.default,
        _aten.reshape.default,
        _aten._unsafe_view.default,
        _aten.expand.default,
    }
)
MATMULS = frozenset({_aten.mm.default, _aten.addmm.default, _aten.linear.default})
CONVOLUTIONS = frozenset({_aten.convolution.default})


def _package_inputs(ep: torch.export.ExportedProgram, values: dict[str, torch.Tensor]) -> list[str]:
    """The constants of ``values`` (by placeholder name) that packages take as inputs rather
    than frozen in: the runtime passes them at each call from the one copy the model holds.

    * Float32 matrices a matrix multiply reads (directly or through views), unless
      :func:`matmul_weights_frozen` freezes them (inductor packs them for oneDNN then).
    * Any other constant of ``_defaults.AOTI_FROZEN_MAX_BYTES`` or more (an embedding table):
      freezing does nothing for a gather, and an input may be shared with the rest of the
      model (a tied embedding) where a frozen copy would live twice.

    Convolution weights stay frozen whatever their size: oneDNN's prepacking of them, and
    the batch norms folded into them, are what make convolutions fast."""
    matrices = _matmul_matrices(ep, values)
    large = _large_constants(ep, values, matrices)
    if _matmul_verdict(matrices)[0]:
        return large
    return sorted(set(large) | set(matrices), key=list(values).index)


def matmul_weights_frozen(ep: torch.export.ExportedProgram) -> tuple[bool, str]:
    """Whether packages of ``ep``'s subgraphs freeze the float32 matrices its matrix multiplies
    read (``_defaults.AOTI_FREEZE_MATMUL_WEIGHTS``; by default measured on this CPU, see
    :func:`_matmul_verdict`), and why, for the report ("" when it reads none)."""
    return _matmul_verdict(_matmul_matrices(ep, _constant_values(ep)))


def _matmul_matrices(
    ep: torch.export.ExportedProgram, values: dict[str, torch.Tensor]
) -> dict[str, list[tuple[int, int, int]]]:
    """The float32 matrices of ``values`` that a matrix multiply reads (directly or through
    views) and no convolution, by placeholder name, in graph order, each with the (rows, inner,
    columns) of the multiplies that read it (rows from the example's sizes; a multiply whose
    sizes are unknown is left out of the list)."""
    found: dict[str, list[tuple[int, int, int]]] = {}
    for node in ep.graph.nodes:
        value = values.get(node.name) if node.op == "placeholder" else None
        if value is None or value.dim() != 2 or value.dtype != torch.float32:
            continue
        readers = _reader_nodes(node)
        if any(r.target in CONVOLUTIONS for r in readers):
            continue
        matmuls = [r for r in readers if r.target in MATMULS]
        if matmuls:
            found[node.name] = [s for r in matmuls if (s := _gemm_shape(r, value)) is not None]
    return found


def _gemm_shape(matmul: fx.Node, weight: torch.Tensor) -> tuple[int, int, int] | None:
    """(rows, inner, columns) of ``matmul`` multiplying by ``weight``, from its output's sizes
    (a symbolic size by its example value); None when they are unknown."""
    out = matmul.meta.get("val")
    if not isinstance(out, torch.Tensor) or out.dim() < 1:
        return None
    sizes = []
    for d in out.shape:
        size = d if isinstance(d, int) else getattr(getattr(d, "node", None), "hint", None)
        if not isinstance(size, int):
            return None
        sizes.append(size)
    cols = sizes[-1]
    if cols == 0 or weight.numel() % cols:
        return None
    return math.prod(sizes[:-1]), weight.numel() // cols, cols


def _large_constants(
    ep: torch.export.ExportedProgram,
    values: dict[str, torch.Tensor],
    matrices: dict[str, list[tuple[int, int, int]]],
) -> list[str]:
    """The constants other than ``matrices`` of ``_defaults.AOTI_FROZEN_MAX_BYTES`` or more
    that no convolution reads, by placeholder name, in graph order."""
    found = []
    for node in ep.graph.nodes:
        value = values.get(node.name) if node.op == "placeholder" else None
        if value is None or node.name in matrices:
            continue
        if any(r.target in CONVOLUTIONS for r in _reader_nodes(node)):
            continue
        if value.numel() * value.element_size() >= _defaults.AOTI_FROZEN_MAX_BYTES:
            found.append(node.name)
    return found


def _matmul_verdict(matrices: dict[str, list[tuple[int, int, int]]]) -> tuple[bool, str]:
    """Whether to freeze the matrix-multiply weights ``matrices`` into packages, and why.

    ``_defaults.AOTI_FREEZE_MATMUL_WEIGHTS`` decides when it is a bool. Otherwise they are
    frozen unless MKL's sgemm is measured faster on this CPU than oneDNN's packed multiplies,
    which inductor makes of frozen weights, on the same multiplies (:func:`_sgemm_faster`).
    Packed is the default a tie keeps: frozen, the package also fuses a multiply's bias and
    activation into oneDNN's call, which the lone multiplies timed do not show (HF ViT's
    shapes time as a tie, and the whole frozen model ran 0.64x eager against 0.75x).
    Frozen, a weight lives once: the driver drops TVM's copy of it from the calls of the
    subgraphs whose packages run (:func:`byoc_torch.codegen.weights_in_packages_only`)."""
    frozen_in, inputs = (
        "matrix-multiply weights frozen in",
        "matrix-multiply weights package inputs",
    )
    setting = _defaults.AOTI_FREEZE_MATMUL_WEIGHTS
    if not matrices:
        return (setting is True), ""
    if isinstance(setting, bool):
        return setting, f"{frozen_in if setting else inputs} (AOTI_FREEZE_MATMUL_WEIGHTS)"
    shapes = collections.Counter(s for found in matrices.values() for s in found)
    if _sgemm_faster(_timed_shapes(shapes)):
        return False, f"{inputs}: MKL's sgemm measured faster here than oneDNN's packed multiplies"
    return True, f"{frozen_in}: MKL's sgemm not measured faster here than oneDNN's packed ones"


def _timed_shapes(shapes: collections.Counter) -> tuple[tuple[int, int, int], ...]:
    """The multiplies :func:`_sgemm_faster` times for a model: its most frequent
    shapes, rows capped at ``_defaults.AOTI_MATMUL_PROBE_ROWS``, while their work stays within
    ``_defaults.AOTI_MATMUL_PROBE_FLOPS`` (the first always), sorted."""
    chosen, flops = [], 0
    for (rows, inner, cols), _ in sorted(shapes.items(), key=lambda kv: (-kv[1], kv[0])):
        shape = (min(rows, _defaults.AOTI_MATMUL_PROBE_ROWS), inner, cols)
        cost = 2 * math.prod(shape)
        if chosen and flops + cost > _defaults.AOTI_MATMUL_PROBE_FLOPS:
            break
        if shape not in chosen:
            chosen.append(shape)
            flops += cost
    return tuple(sorted(chosen))


@functools.cache
def _sgemm_faster(shapes: tuple[tuple[int, int, int], ...]) -> bool:
    """Whether ``aten.addmm`` on the unpacked matrix (MKL's sgemm) runs ``shapes`` (rows,
    inner, columns; with a bias) faster on this CPU than oneDNN's packed float32 multiplies
    (``mkldnn._linear_pointwise`` on a weight ``mkldnn._reorder_linear_weight`` packed, what
    inductor makes of a frozen linear weight in AOT mode), beyond
    :func:`byoc_torch.timing.choose`'s margin. Timed on one thread, interleaved; once per
    process for a set of shapes. Which wins depends on the CPU (docs/performance.md). True
    when this torch cannot pack (nothing to gain from freezing then)."""
    shapes = tuple(s for s in shapes if min(s) > 0)
    if not shapes:
        return False
    if not torch.backends.mkldnn.is_available():
        return True
    gen = torch.Generator().manual_seed(0)
    cases = []
    try:
        for rows, inner, cols in shapes:
            x = torch.randn(rows, inner, generator=gen)
            w = torch.randn(cols, inner, generator=gen)
            b = torch.randn(cols, generator=gen)
            cases.append((x, w, b, torch.ops.mkldnn._reorder_linear_weight(w, rows)))
    except (RuntimeError, AttributeError) as err:  # this build cannot pack: nothing to gain
        logger.debug("oneDNN cannot pack float32 matrices here: %s", err)
        return True

    def sgemm() -> None:
        for x, w, b, _ in cases:
            torch.addmm(b, x, w.t())

    def packed() -> None:
        for x, _, b, p in cases:
            torch.ops.mkldnn._linear_pointwise(x, p, b, "none", [], "")

    with torch.no_grad(), one_thread():
        timings = robust_times({"sgemm": sgemm, "packed": packed})
    choice = choose(timings, ["packed", "sgemm"])  # packed, inductor's own, kept on a tie
    logger.debug(
        "float32 matrix multiplies %s, one thread: MKL sgemm %s, oneDNN packed %s: %s",
        shapes,
        timings["sgemm"].describe(),
        timings["packed"].describe(),
        "weights stay package inputs" if choice.name == "sgemm" else "weights frozen",
    )
    return choice.name == "sgemm"


def _reader_nodes(node: fx.Node) -> set[fx.Node]:
    """The ops that read ``node``'s value, directly or through views."""
    readers, stack = set(), [node]
    while stack:
        for user in stack.pop().users:
            if user in readers:
                continue
            readers.add(user)
            if user.target in WEIGHT_VIEWS:
                stack.append(user)
    return readers
