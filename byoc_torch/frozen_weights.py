"""Which constants an AOTInductor package freezes in, and which it takes as inputs.

Place in the data flow: :mod:`byoc_torch.aot_inductor` builds each subgraph's program over the
exported program's nodes; every parameter, buffer and constant the subgraph reads is frozen into
its package (:func:`frozen_values`) except those this module keeps as package inputs, which the
runtime passes at each call from the one copy the model holds. The decision is per model and per
class of constant:

* convolution weights are always frozen (oneDNN prepacks them and batch norms fold into them);
* float32 matrices of matrix multiplies are frozen in one of three forms, whichever is
  measured fastest on this CPU (:func:`matmul_weights`, ``_defaults.AOTI_MATMUL_WEIGHTS``):
  for inductor to pack for oneDNN; stored transposed for MKL's sgemm (:func:`transposed`
  rewrites a program for it); or in 16-column panels for the runtime's own multiply,
  ``torch.ops.byoc_torch.linear_panels`` (runtime/linear_panels.cc; :func:`panels` rewrites
  a program for it), which reads them without copying them on every call as sgemm does.
  Forced, they may be left package inputs. Frozen, TVM keeps no copy of them
  (:func:`byoc_torch.codegen.weights_in_packages_only`);
* other constants of ``_defaults.AOTI_FROZEN_MAX_BYTES`` or more (embedding tables) stay
  inputs: freezing gains a gather nothing.

It also decides one thing about how frozen matrices are multiplied: whether multiplies that
read the same input (an attention's query, key and value projections) become one multiply by
their concatenated matrices (:func:`concat_multiplies`, inductor's ``cpp.enable_concat_linear``,
``_defaults.AOTI_CONCAT_MULTIPLIES``): one call instead of three saves ATen's setup of each
oneDNN call, but a wider multiply is not faster on every CPU and shape, so it is measured.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
from collections.abc import Callable

import torch
from torch import fx

from . import _defaults
from .threads import one_thread
from .timing import choose, robust_times

logger = logging.getLogger(__name__)

__all__ = [
    "CONVOLUTIONS",
    "INPUTS",
    "MATMULS",
    "PACKED",
    "PANELS",
    "TRANSPOSED",
    "WEIGHT_VIEWS",
    "concat_multiplies",
    "example_sizes",
    "faster_beyond_margin",
    "fastest",
    "frequent_within_budget",
    "frozen_values",
    "matmul_weights",
    "panels",
    "transposed",
]

# What packages make of matrix-multiply weights (_defaults.AOTI_MATMUL_WEIGHTS).
PACKED, TRANSPOSED, PANELS, INPUTS = "packed", "transposed", "panels", "inputs"
_MATMUL_MODES = (PACKED, TRANSPOSED, PANELS, INPUTS)


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
_RESHAPES = frozenset({_aten.view.default, _aten.reshape.default, _aten._unsafe_view.default})
CONVOLUTIONS = frozenset({_aten.convolution.default})


def _package_inputs(ep: torch.export.ExportedProgram, values: dict[str, torch.Tensor]) -> list[str]:
    """The constants of ``values`` (by placeholder name) that packages take as inputs rather
    than frozen in: the runtime passes them at each call from the one copy the model holds.

    * Float32 matrices a matrix multiply reads (directly or through views), where
      :func:`matmul_weights` says ``INPUTS`` (forced only: frozen, they are packed for oneDNN
      or transposed for MKL's sgemm).
    * Any other constant of ``_defaults.AOTI_FROZEN_MAX_BYTES`` or more (an embedding table):
      freezing does nothing for a gather, and an input may be shared with the rest of the
      model (a tied embedding) where a frozen copy would live twice.

    Convolution weights stay frozen whatever their size: oneDNN's prepacking of them, and
    the batch norms folded into them, are what make convolutions fast."""
    matrices = _matmul_matrices(ep, values)
    large = _large_constants(ep, values, matrices)
    if _matmul_verdict(matrices)[0] != INPUTS:
        return large
    return sorted(set(large) | set(matrices), key=list(values).index)


def matmul_weights(ep: torch.export.ExportedProgram) -> tuple[str, str]:
    """What packages of ``ep``'s subgraphs make of the float32 matrices its matrix multiplies
    read: ``PACKED``, ``TRANSPOSED``, ``PANELS`` or ``INPUTS``
    (``_defaults.AOTI_MATMUL_WEIGHTS``; by default measured on this CPU, see
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
        readers = reader_nodes(node)
        if any(r.target in CONVOLUTIONS for r in readers):
            continue
        matmuls = [r for r in readers if r.target in MATMULS]
        if matmuls:
            found[node.name] = [s for r in matmuls if (s := _gemm_shape(r, value)) is not None]
    return found


def example_sizes(value: torch.Tensor) -> tuple[int, ...] | None:
    """The sizes of a traced ``value``, a symbolic size by its example value (its hint);
    None when one is unknown."""
    sizes = []
    for d in value.shape:
        size = d if isinstance(d, int) else getattr(getattr(d, "node", None), "hint", None)
        if not isinstance(size, int):
            return None
        sizes.append(size)
    return tuple(sizes)


def _gemm_shape(matmul: fx.Node, weight: torch.Tensor) -> tuple[int, int, int] | None:
    """(rows, inner, columns) of ``matmul`` multiplying by ``weight``, from its output's sizes
    (a symbolic size by its example value); None when they are unknown."""
    out = matmul.meta.get("val")
    if not isinstance(out, torch.Tensor) or out.dim() < 1:
        return None
    sizes = example_sizes(out)
    if sizes is None:
        return None
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
        if any(r.target in CONVOLUTIONS for r in reader_nodes(node)):
            continue
        if value.numel() * value.element_size() >= _defaults.AOTI_FROZEN_MAX_BYTES:
            found.append(node.name)
    return found


def _matmul_verdict(matrices: dict[str, list[tuple[int, int, int]]]) -> tuple[str, str]:
    """What to make of the matrix-multiply weights ``matrices`` in packages, and why.

    ``_defaults.AOTI_MATMUL_WEIGHTS`` decides when it is set. Otherwise they are frozen, in
    the form whose multiplies are measured fastest on this CPU on the model's own shapes
    (:func:`_fastest_form`): packed for oneDNN (what inductor makes of frozen weights), stored
    transposed for MKL's sgemm, or in panels for the runtime's own multiply. Packed is the
    default a tie keeps: the package also fuses a multiply's bias and activation into oneDNN's
    call, which the lone multiplies timed do not show (HF ViT's shapes time as a tie, and the
    whole frozen model ran 0.64x eager against 0.75x). Frozen, a weight lives once: the driver
    drops TVM's copy of it from the calls of the subgraphs whose packages run
    (:func:`byoc_torch.codegen.weights_in_packages_only`)."""
    said = {
        PACKED: "matrix-multiply weights frozen in, packed for oneDNN",
        TRANSPOSED: "matrix-multiply weights frozen in, transposed for MKL's sgemm",
        PANELS: "matrix-multiply weights frozen in, panels for byoc_torch's multiply",
        INPUTS: "matrix-multiply weights package inputs",
    }
    setting = _defaults.AOTI_MATMUL_WEIGHTS
    if setting is not None and setting not in _MATMUL_MODES:
        raise ValueError(
            f"AOTI_MATMUL_WEIGHTS must be one of {', '.join(map(repr, _MATMUL_MODES))} or "
            f"None (measured), got {setting!r}"
        )
    if not matrices:
        return (setting or PACKED), ""
    if setting is not None:
        return setting, f"{said[setting]} (AOTI_MATMUL_WEIGHTS)"
    shapes = collections.Counter(s for found in matrices.values() for s in found)
    form = _fastest_form(_timed_shapes(shapes))
    if form == PACKED:
        return PACKED, f"{said[PACKED]}: no other form measured faster here"
    return form, f"{said[form]}: measured fastest here"


def _timed_shapes(shapes: collections.Counter) -> tuple[tuple[int, int, int], ...]:
    """The multiplies :func:`_fastest_form` times for a model: its most frequent
    shapes, rows capped at ``_defaults.AOTI_MATMUL_PROBE_ROWS``, while their work stays within
    ``_defaults.AOTI_MATMUL_PROBE_FLOPS`` (the first always), sorted."""
    capped = collections.Counter()
    for shape, count in shapes.items():
        capped[_capped(shape)] += count
    return frequent_within_budget(capped)


def _capped(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    rows, inner, cols = shape
    return min(rows, _defaults.AOTI_MATMUL_PROBE_ROWS), inner, cols


def _flops(item) -> float:
    """Floating-point operations of a multiply (rows, inner, columns) or of a group of them."""
    if isinstance(item[0], int):
        return 2.0 * math.prod(item)
    return sum(_flops(shape) for shape in item)


def frequent_within_budget(
    counts: collections.Counter,
    flops_of: Callable[[object], float] | None = None,
    budget: float | None = None,
) -> tuple:
    """The items of ``counts`` (multiplies or groups of them by default; any shapes whose
    work ``flops_of`` gives), most frequent first (ties in sorted order), while their work
    stays within ``budget`` (default ``_defaults.AOTI_MATMUL_PROBE_FLOPS``; the first always),
    sorted: what a probe times."""
    flops_of = flops_of or _flops
    budget = _defaults.AOTI_MATMUL_PROBE_FLOPS if budget is None else budget
    chosen, flops = [], 0.0
    for item, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        cost = flops_of(item)
        if chosen and flops + cost > budget:
            break
        chosen.append(item)
        flops += cost
    return tuple(sorted(chosen))


@functools.cache
def _fastest_form(shapes: tuple[tuple[int, int, int], ...]) -> str:
    """Which form of frozen matrices multiplies ``shapes`` (rows, inner, columns; with a bias)
    fastest on this CPU: ``PACKED`` (oneDNN's ``mkldnn._linear_pointwise`` on a weight
    ``mkldnn._reorder_linear_weight`` packed, what inductor makes of a frozen linear weight in
    AOT mode), ``TRANSPOSED`` (``aten.addmm`` by the matrix stored transposed: MKL's sgemm
    reading it as it lies) or ``PANELS`` (``byoc_torch.linear_panels``), by
    :func:`byoc_torch.timing.choose` (packed, then transposed, then panels: a form replaces
    the ones before it only when faster beyond the margin). Timed on one thread,
    interleaved; once per process for a set of shapes. Which wins depends on the CPU
    (docs/performance.md). Without oneDNN packing in this torch, packed is not a contestant."""
    shapes = tuple(s for s in shapes if min(s) > 0)
    if not shapes:
        return PACKED
    gen = torch.Generator().manual_seed(0)
    cases = []
    for rows, inner, cols in shapes:
        x = torch.randn(rows, inner, generator=gen)
        w = torch.randn(cols, inner, generator=gen)
        b = torch.randn(cols, generator=gen)
        cases.append((x, w, b, w.t().contiguous(), torch.ops.byoc_torch.pack_linear_panels(w)))
    packed_weights = []
    if torch.backends.mkldnn.is_available():
        try:
            packed_weights = [
                torch.ops.mkldnn._reorder_linear_weight(w, x.shape[0]) for x, w, *_ in cases
            ]
        except (RuntimeError, AttributeError) as err:  # this build cannot pack
            logger.debug("oneDNN cannot pack float32 matrices here: %s", err)

    def packed() -> None:
        for (x, _, b, _, _), p in zip(cases, packed_weights, strict=True):
            torch.ops.mkldnn._linear_pointwise(x, p, b, "none", [], "")

    def transposed() -> None:
        for x, _, b, w_t, _ in cases:
            torch.addmm(b, x, w_t)

    def panels() -> None:
        for x, w, b, _, p in cases:
            torch.ops.byoc_torch.linear_panels(x, p, b, w.shape[0])

    forms = {PACKED: packed, TRANSPOSED: transposed, PANELS: panels}
    if not packed_weights:
        del forms[PACKED]
    return fastest(f"float32 matrix multiplies {shapes}", forms)


def concat_multiplies(ep: torch.export.ExportedProgram) -> tuple[bool, str]:
    """Whether packages of ``ep``'s subgraphs concatenate the frozen matrices of multiplies that
    read the same input into one multiply (inductor's ``cpp.enable_concat_linear``), and why,
    for the report ("" when no frozen multiplies share an input).

    ``_defaults.AOTI_CONCAT_MULTIPLIES`` decides when it is a bool. Otherwise they are
    concatenated when one multiply by the concatenated matrix is measured faster on this CPU
    than the separate ones, on the model's own groups (:func:`_concat_faster`); apart is what a
    tie keeps (inductor's default). Only matrices packed for oneDNN concatenate (inductor's
    concatenation packs them): transposed ones and package inputs (:func:`matmul_weights`) are
    multiplied where they are."""
    values = _constant_values(ep)
    matrices = _matmul_matrices(ep, values)
    groups = _sibling_multiplies(ep, values, matrices)
    if not groups or _matmul_verdict(matrices)[0] != PACKED:
        return False, ""
    joined, apart = (
        "multiplies sharing an input concatenated",
        "multiplies sharing an input kept apart",
    )
    setting = _defaults.AOTI_CONCAT_MULTIPLIES
    if isinstance(setting, bool):
        return setting, f"{joined if setting else apart} (AOTI_CONCAT_MULTIPLIES)"
    capped = collections.Counter()
    for group in groups:
        capped[tuple(_capped(shape) for shape in group)] += 1
    if _concat_faster(frequent_within_budget(capped)):
        return True, f"{joined}: one wider multiply measured faster here"
    return False, f"{apart}: one wider multiply not measured faster here"


def _sibling_multiplies(
    ep: torch.export.ExportedProgram,
    values: dict[str, torch.Tensor],
    matrices: dict[str, list[tuple[int, int, int]]],
) -> list[tuple[tuple[int, int, int], ...]]:
    """The groups of two or three multiplies of ``ep`` that read the same input, each by a
    matrix of ``matrices`` (the frozen-matrix candidates; ``values`` holds them) from the
    right, all with the same inner size: what inductor's concatenation matches. Each group as
    its multiplies' (rows, inner, columns), in graph order."""
    weight_of: dict[fx.Node, torch.Tensor] = {}
    for node in ep.graph.nodes:
        if node.op != "placeholder" or node.name not in matrices:
            continue
        path = reader_nodes(node) | {node}
        for reader in path:
            if reader.target in MATMULS and _weight_operand(reader) in path:
                weight_of[reader] = values[node.name]
    by_input: dict[fx.Node, list[tuple[int, int, int]]] = {}
    for node in ep.graph.nodes:
        if node not in weight_of:
            continue
        operand = node.args[1] if node.target is _aten.addmm.default else node.args[0]
        # A linear of a 3-d input multiplies its own 2-d view of it (inductor merges the views)
        while isinstance(operand, fx.Node) and operand.target in _RESHAPES:
            operand = operand.args[0]
        shape = _gemm_shape(node, weight_of[node])
        if isinstance(operand, fx.Node) and shape is not None:
            by_input.setdefault(operand, []).append(shape)
    groups = []
    for shapes in by_input.values():
        if 2 <= len(shapes) <= 3 and len({(rows, inner) for rows, inner, _ in shapes}) == 1:
            groups.append(tuple(shapes))
    return groups


def _weight_operand(matmul: fx.Node):
    """The operand of ``matmul`` (mm, addmm or linear) that multiplies from the right."""
    return matmul.args[2] if matmul.target is _aten.addmm.default else matmul.args[1]


@functools.cache
def _concat_faster(groups: tuple[tuple[tuple[int, int, int], ...], ...]) -> bool:
    """Whether each of ``groups`` (multiplies of one input: rows, inner, columns; with
    biases) runs faster on this CPU as one oneDNN packed multiply by the concatenated matrix,
    its output split, than as separate packed multiplies, beyond
    :func:`byoc_torch.timing.choose`'s margin. Timed on one thread, interleaved; once per
    process for a set of groups. False when this torch cannot pack."""
    if not groups or not torch.backends.mkldnn.is_available():
        return False
    gen = torch.Generator().manual_seed(0)
    cases = []
    try:
        for group in groups:
            rows, inner, _ = group[0]
            x = torch.randn(rows, inner, generator=gen)
            weights = [torch.randn(cols, inner, generator=gen) for _, _, cols in group]
            biases = [torch.randn(cols, generator=gen) for _, _, cols in group]
            pack = torch.ops.mkldnn._reorder_linear_weight
            separate = [(pack(w, rows), b) for w, b in zip(weights, biases, strict=True)]
            whole = (pack(torch.cat(weights), rows), torch.cat(biases))
            cases.append((x, separate, whole, [cols for _, _, cols in group]))
    except (RuntimeError, AttributeError) as err:  # this build cannot pack
        logger.debug("oneDNN cannot pack float32 matrices here: %s", err)
        return False

    def apart() -> None:
        for x, separate, _, _ in cases:
            for p, b in separate:
                torch.ops.mkldnn._linear_pointwise(x, p, b, "none", [], "")

    def joined() -> None:
        for x, _, (p, b), cols in cases:
            torch.ops.mkldnn._linear_pointwise(x, p, b, "none", [], "").split(cols, dim=-1)

    # apart, inductor's default, is what a tie keeps
    return faster_beyond_margin(f"multiplies sharing an input {groups}", apart, joined)


def faster_beyond_margin(subject: str, default: Callable[[], None], challenger) -> bool:
    """Whether ``challenger`` runs faster than ``default`` beyond
    :func:`byoc_torch.timing.choose`'s margin (the default kept on a tie), both timed on one
    thread, interleaved, by their function names; said at debug level with ``subject``."""
    contestants = {default.__name__: default, challenger.__name__: challenger}
    return fastest(subject, contestants) == challenger.__name__


def fastest(subject: str, contestants: dict[str, Callable[[], None]]) -> str:
    """The name of ``contestants`` (simplest first) :func:`byoc_torch.timing.choose` keeps,
    all timed on one thread, interleaved; said at debug level with ``subject``."""
    with torch.no_grad(), one_thread():
        timings = robust_times(contestants)
    choice = choose(timings, list(contestants))
    said = ", ".join(f"{name} {t.describe()}" for name, t in timings.items())
    logger.debug("%s, one thread: %s: %s kept", subject, said, choice.name)
    return choice.name


def _is_transpose(node: fx.Node) -> bool:
    """Whether ``node`` transposes a 2-d value: ``t``, ``permute(.., [1, 0])`` or
    ``transpose(.., 0, 1)``."""
    if node.op != "call_function":
        return False
    if node.target is _aten.t.default:
        return True
    if node.target is _aten.permute.default:
        return list(node.args[1]) in ([1, 0], [-1, -2], [1, -2], [-1, 0])
    if node.target is _aten.transpose.int:
        return {d % 2 for d in node.args[1:3]} == {0, 1}
    return False


def _multiplied_from_the_right_only(weight: fx.Node) -> bool:
    """Whether every use of ``weight`` is a transpose of it that only ``mm`` / ``addmm``
    read, as the matrix they multiply by (a linear layer's weight in a decomposed program)."""
    if not weight.users:
        return False
    for view in weight.users:
        if not _is_transpose(view) or not view.users:
            return False
        for user in view.users:
            if user.target not in (_aten.mm.default, _aten.addmm.default):
                return False
            if _weight_operand(user) is not view or list(user.args).count(view) != 1:
                return False
    return True


def transposed(module: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``module`` whose frozen float32 matrices that only matrix multiplies read,
    through a transpose (``mm(x, w.t())``, ``addmm(b, x, w.t())``), are stored transposed
    instead, contiguous, and passed to the multiply as they lie, in the layout it multiplies
    by: MKL's sgemm's per-call copy of the weight into its panels is cheaper from there (the
    ``TRANSPOSED`` of :func:`matmul_weights`). The copy holds the transposed matrices, not
    the originals; every other constant is shared with ``module``. A matrix anything else
    reads (a tied embedding table) is left as it is."""
    graph, attrs, found = _float_matrices(module)
    for node, weight in found:
        if not _multiplied_from_the_right_only(node):
            continue
        name = unused_name(attrs, f"{node.target.replace('.', '_')}_t")
        attrs[name] = weight.detach().t().contiguous()
        for view in list(node.users):
            with graph.inserting_before(view):
                lying = graph.get_attr(name)
            lying.meta.update(view.meta)
            view.replace_all_uses_with(lying)
            graph.erase_node(view)
        graph.erase_node(node)
    return fx.GraphModule(attrs, graph)  # holds only what its get_attr nodes name


def panels(module: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``module`` whose frozen float32 matrices that only matrix multiplies read, as
    the matrix they multiply by (``mm(x, w)``, ``addmm(b, x, w)`` with a bias of one value per
    column), either all through a transpose (a linear layer's (out, in) weight) or all as
    they lie (an (in, out) weight, HF GPT-2's ``Conv1D``), are stored in 16-column panels
    (``torch.ops.byoc_torch.pack_linear_panels``), and whose multiplies by them call
    ``torch.ops.byoc_torch.linear_panels``, which reads the panels as they lie (the
    ``PANELS`` of :func:`matmul_weights`). The copy holds the panels, not the originals;
    every other constant is shared with ``module``. A matrix anything else reads, or one an
    ``addmm`` with another bias or scale multiplies by, is left as it is."""
    graph, attrs, found = _float_matrices(module)
    op = torch.ops.byoc_torch.linear_panels.default
    for node, weight in found:
        if _multiplied_from_the_right_only(node):
            out_in, multiplies = weight, [m for view in node.users for m in view.users]
        elif node.users and all(_multiplies_by(user, node) for user in node.users):
            out_in, multiplies = weight.t(), list(node.users)
        else:
            continue
        columns = out_in.shape[0]
        if not all(_column_bias_or_none(m, columns, attrs) for m in multiplies):
            continue
        name = unused_name(attrs, f"{node.target.replace('.', '_')}_panels")
        attrs[name] = torch.ops.byoc_torch.pack_linear_panels(out_in.detach().contiguous())
        for multiply in multiplies:
            x = multiply.args[0] if multiply.target is _aten.mm.default else multiply.args[1]
            bias = multiply.args[0] if multiply.target is _aten.addmm.default else None
            with graph.inserting_before(multiply):
                held = graph.get_attr(name)
                call = graph.call_function(op, (x, held, bias, columns))
            call.meta.update(multiply.meta)
            multiply.replace_all_uses_with(call)
            graph.erase_node(multiply)
        for view in list(node.users):
            graph.erase_node(view)
        graph.erase_node(node)
    return fx.GraphModule(attrs, graph)  # holds only what its get_attr nodes name


def _multiplies_by(user: fx.Node, weight: fx.Node) -> bool:
    """Whether ``user`` is an ``mm`` / ``addmm`` multiplying by ``weight`` as it lies (the
    matrix on the right, read once)."""
    if user.target not in (_aten.mm.default, _aten.addmm.default):
        return False
    return _weight_operand(user) is weight and list(user.args).count(weight) == 1


def _float_matrices(
    module: fx.GraphModule,
) -> tuple[fx.Graph, dict[str, object], list[tuple[fx.Node, torch.Tensor]]]:
    """A copy of ``module``'s graph, its attributes by ``get_attr`` target, and the
    ``get_attr`` nodes of the copy whose values are float32 CPU matrices (with the values),
    in graph order."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(module.graph, {}))
    attrs = {n.target: attribute(module, n.target) for n in graph.nodes if n.op == "get_attr"}
    found = []
    for node in graph.nodes:
        weight = attrs.get(node.target) if node.op == "get_attr" else None
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            continue
        if weight.dtype == torch.float32 and weight.device.type == "cpu":
            found.append((node, weight))
    return graph, attrs, found


def unused_name(attrs: dict[str, object], name: str) -> str:
    while name in attrs:
        name += "_"
    return name


def _column_bias_or_none(multiply: fx.Node, columns: int, attrs: dict[str, object]) -> bool:
    """Whether ``multiply`` is an ``mm``, or an ``addmm`` adding a float32 bias of one value
    per column (``columns``) at unit scale: what ``linear_panels`` computes (``attrs``: the
    module's attributes, for a bias without a traced value)."""
    if multiply.target is _aten.mm.default:
        return True
    if len(multiply.args) != 3 or multiply.kwargs or not isinstance(multiply.args[0], fx.Node):
        return False
    given = multiply.args[0]
    bias = given.meta.get("val", attrs.get(given.target) if given.op == "get_attr" else None)
    return (
        isinstance(bias, torch.Tensor)
        and bias.dtype == torch.float32
        and tuple(bias.shape) == (columns,)
    )


def attribute(module: torch.nn.Module, target: str):
    """The attribute of ``module`` a ``get_attr`` node names (a dotted path)."""
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def reader_nodes(node: fx.Node) -> set[fx.Node]:
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
