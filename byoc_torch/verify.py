"""Verification: TVM's conversions checked against PyTorch at compile time.

Place in the data flow: inside ``byoc_torch.compile``, after partitioning. Two checks, each of
which moves the ops it blames to LibTorch and compiles again, until the model builds and
agrees with PyTorch:

* **Build failures** (:func:`find_build_culprits`): when ``relax.build`` fails, the TVM-side
  nodes are bisected — force a prefix of them to LibTorch, rebuild — to find the nodes whose
  move is shown to make the build succeed (about log2(N) builds per node). A failure no node
  explains (the model builds with nothing moved, or fails with everything moved) is raised as
  :class:`BuildFailure` with the original error.
* **Wrong values** (:func:`diverging_nodes`): ONE instrumented build returns, besides the
  model's outputs, the value of every tensor TVM computes for an FX node (halves of them when
  TVM cannot build one of those values on its own, :func:`_observed_values`); an FX interpreter
  computes PyTorch's value for the same nodes on the example inputs. A node whose value differs
  (the tolerance of :mod:`byoc_torch.tolerances`, grown with the size of a reduction) is blamed
  when PyTorch's op applied to *TVM's* inputs of the node still disagrees with TVM: a wrong node
  makes its consumers differ too, and they are not blamed. (An op that cannot be re-run alone
  is blamed when every input it takes from other checked nodes agrees.) The driver then shrinks
  the blamed set (:func:`minimal_blame`): the fewest nodes whose move makes the outputs agree.
"""

from __future__ import annotations

import contextlib
import logging
import operator
from collections.abc import Callable, Sequence

import torch
import tvm
from torch import fx
from tvm import relax

from . import schedules
from .bisection import minimal_subset
from .codegen import LowerTorchFunctions
from .errors import BuildFailure, first_line
from .frontend import ImportResult
from .frontend.random import random_dependent
from .names import op_key
from .partition.transform import seq_expr
from .records import FallbackRecord, Reason
from .tensors import flatten_tvm, target_device_type, to_device, to_tvm
from .tolerances import reduction_size, reduction_tolerance

logger = logging.getLogger(__name__)

_VERIFY_SEED = 0  # the seed both sides of a comparison draw with

__all__ = [
    "build_candidates",
    "diverging_nodes",
    "find_build_culprits",
    "minimal_blame",
    "outputs_agree",
    "run_on_target",
]


def reference_values(ep: torch.export.ExportedProgram, inputs: Sequence[torch.Tensor]) -> dict:
    """PyTorch's value of every node of ``ep``'s graph on ``inputs`` (eager, FX interpreter)."""
    kinds = torch.export.graph_signature.InputKind
    state = ep.state_dict
    args = []
    user = iter(inputs)
    for spec in ep.graph_signature.input_specs:
        if spec.kind == kinds.USER_INPUT:
            args.append(next(user))
        elif spec.kind in (kinds.PARAMETER, kinds.BUFFER):
            args.append(state[spec.target] if spec.target in state else ep.constants[spec.target])
        elif spec.kind == kinds.CONSTANT_TENSOR:
            args.append(ep.constants[spec.target])
        else:
            raise ValueError(f"verification cannot feed input kind {spec.kind}")
    values: dict[str, object] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node):
            out = super().run_node(n)
            values[n.name] = out
            return out

    with torch.no_grad():
        Recorder(ep.graph_module).run(*args)
    return values


def _instrument(mod: tvm.IRModule, names: list[str]) -> tuple[tvm.IRModule, list[str]]:
    """``mod`` whose main also returns the vars named ``names`` (those it can reach)."""
    flat = relax.transform.ToNonDataflow()(mod)
    main = flat["main"]
    by_name: dict[str, list[relax.Var]] = {}
    for block in main.body.blocks:
        for b in block.bindings:
            by_name.setdefault(b.var.name, []).append(b.var)
    kept = [n for n in names if len(by_name.get(n, [])) == 1]
    extra = [by_name[n][0] for n in kept]
    result = relax.Tuple([main.body.body, *extra])
    ret_ty = relax.TupleType([main.ret_ty, *(v.ty for v in extra)])
    body = seq_expr(list(main.body.blocks), result, ret_ty)
    new_main = relax.Function(main.params, body, ret_ty, main.is_pure, main.attrs)
    out = tvm.IRModule(flat.functions, attrs=flat.attrs)
    out["main"] = new_main
    return relax.transform.Normalize()(out), kept


def run_on_target(
    executable: tvm.runtime.Module, inputs: Sequence[torch.Tensor], target
) -> list[object]:
    """Run ``executable``'s main on the device of ``target`` (inputs moved there), as
    verification must: the code was built for that device. Each element of the result comes
    back as a CPU torch tensor (to compare with PyTorch's CPU reference), nested results as
    they are."""
    device_type = target_device_type(target)
    vm = relax.VirtualMachine(executable, tvm.device(device_type))
    result = vm["main"](*[to_tvm(to_device(x, device_type).contiguous()) for x in inputs])
    return [_to_host(v) for v in result]


def _to_host(value: object) -> object:
    if isinstance(value, tvm.runtime.Tensor | torch.Tensor):
        return torch.from_dlpack(value).cpu()
    return value


def _observed_values(
    partitioned: tvm.IRModule,
    names: list[str],
    inputs: Sequence[torch.Tensor],
    target,
    unobservable: list[str],
) -> dict[str, object]:
    """TVM's value of each var of ``partitioned``'s main named in ``names`` (those it can
    reach), on ``inputs`` after the verification seed; the names whose value could not be
    built are appended to ``unobservable``.

    One instrumented build returns them all. Returning a value moves the boundary of the
    fused kernels around it, and TVM may fail to compile a kernel that it compiles inside
    another (``R.multiply`` of two boolean tensors, from the decompositions of ``logaddexp``
    and ``isclose``, trips LLVM codegen's ``CreateMul`` check once it is a kernel's output).
    Then the names are split in halves and each half is built and run alone, down to single
    values, so verification sees every value TVM can return instead of none; the model's
    outputs cover the rest (:func:`diverging_nodes`)."""
    if not names:
        return {}
    mod, kept = _instrument(partitioned, names)
    try:
        ex = schedules.build(LowerTorchFunctions()(mod), target)
    except Exception as err:  # the model itself built: returning some value breaks it
        if len(names) == 1:
            logger.debug("verification: %s cannot be observed: %s", names[0], err)
            unobservable.append(names[0])
            return {}
        half = len(names) // 2
        logger.debug("verification: %d values do not build together, halved", len(names))
        return {
            **_observed_values(partitioned, names[:half], inputs, target, unobservable),
            **_observed_values(partitioned, names[half:], inputs, target, unobservable),
        }
    with _seeded():  # a failure to run is the model's, not the instrumentation's: raised
        result = run_on_target(ex, inputs, target)
    return {name: result[1 + k] for k, name in enumerate(kept)}


def diverging_nodes(
    imported: ImportResult,
    partitioned: tvm.IRModule,
    inputs: Sequence[torch.Tensor],
    target,
    expected: dict | None = None,
    executable: tvm.runtime.Module | None = None,
) -> dict[str, FallbackRecord]:
    """The TVM-converted nodes whose value first differs from PyTorch's (see module doc).
    ``expected``: :func:`seeded_references` of ``imported.ep`` on ``inputs``, if at hand;
    ``executable``: the model's own build, if at hand.

    A node whose value could not be observed (:func:`_observed_values`) is not compared, nor
    are the nodes that consume it (what they were given is unknown). When nothing is blamed,
    the outputs of the model's own build are compared too: returning a value moves the
    boundaries of TVM's fused kernels, and a fused kernel can compute what its parts do not
    (``nanmean``'s count of non-NaN values came out whole in TVM's fused kernel and right
    value by value). If they differ, the nodes not observed -- or, when all were, every TVM
    node -- are blamed, and the driver keeps the fewest whose move makes the outputs agree."""
    var_to_node = {v.name: node for node, v in imported.native_vars.items()}
    unobservable_vars: list[str] = []
    observed = _observed_values(partitioned, list(var_to_node), inputs, target, unobservable_vars)
    got = {var_to_node[name]: value for name, value in observed.items()}
    unobserved = {var_to_node[name] for name in unobservable_vars}
    if expected is None:
        expected = seeded_references(imported.ep, inputs)
    nodes = {n.name: n for n in imported.graph.nodes}
    differs: dict[str, str] = {}
    drawn = random_dependent(imported.graph)
    for name, value in got.items():
        ref = expected.get(name)
        if not isinstance(ref, torch.Tensor):
            continue
        detail = _compare(value, ref, *_reduction(nodes[name], expected))
        if detail is not None:
            differs[name] = detail
    blamed: dict[str, FallbackRecord] = {}
    undecided: list[str] = []  # differs, but takes a value that could not be observed
    for name, detail in differs.items():
        node = nodes[name]
        if name in drawn and any(
            p.name in drawn and p.name not in got for p in node.all_input_nodes
        ):
            continue  # an input drawn in LibTorch: its reference value may be another draw
        if any(p.name in unobserved for p in node.all_input_nodes):
            undecided.append(name)
            continue
        # Blame the node when PyTorch's op, given TVM's own inputs, disagrees with TVM: the op
        # itself is wrong, not what it was given. When the op cannot be re-run here, blame it
        # only if no input differs (a wrong node makes its consumers differ too) and it does
        # not depend on a draw.
        known, local = _local_detail(node, got, expected)
        if known:
            if local is None:
                continue
            detail = local
        elif name in drawn or any(p.name in differs for p in node.all_input_nodes):
            continue
        node = forcible(node)
        blamed[node.name] = FallbackRecord(node.name, op_key(node.target), Reason.DIFFERS, detail)
    if not blamed and (unobserved or executable is not None):
        if not outputs_agree(imported, partitioned, inputs, target, expected, executable):
            order = {name: k for k, name in enumerate(nodes)}
            if unobserved:
                suspects = sorted(unobserved, key=order.__getitem__) + undecided
                detail = "the model's outputs differ; TVM cannot return this value alone"
            else:
                suspects = sorted(got, key=order.__getitem__)
                detail = "the model's outputs differ in TVM's fused kernels"
            for name in suspects:
                node = forcible(nodes[name])
                blamed[node.name] = FallbackRecord(
                    node.name, op_key(node.target), Reason.DIFFERS, detail
                )
    logger.debug(
        "verification: %d differing node(s), %d not observable, %d blamed",
        len(differs),
        len(unobserved),
        len(blamed),
    )
    return blamed


def seeded_references(ep: torch.export.ExportedProgram, inputs: Sequence[torch.Tensor]) -> dict:
    """:func:`reference_values` after the seed TVM's side runs after (:func:`_seeded`): the
    same draws as TVM's run when both draw in the same order. The same on every call, so a
    compile computes it once and shares it (placement, every verification round)."""
    with _seeded():
        return reference_values(ep, inputs)


@contextlib.contextmanager
def _seeded():
    """PyTorch's generators seeded alike for one run (the caller's state restored after):
    LibTorch draws from the same generators, so the random ops of both sides draw the same
    numbers when they draw in the same order."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_VERIFY_SEED)
        yield


def _reduction(node: fx.Node, values: dict) -> tuple[int, float]:
    """(K, term magnitude) of ``node`` on ``values`` (see :mod:`byoc_torch.tolerances`)."""
    args, kwargs = _materialize(node, values)
    return reduction_size(node.target, args, kwargs)


def _materialize(node: fx.Node, values: dict) -> tuple[tuple, dict]:
    def value(a):
        return values.get(a.name) if isinstance(a, fx.Node) else a

    args = tuple(fx.node.map_aggregate(a, value) for a in node.args)
    kwargs = {k: fx.node.map_aggregate(v, value) for k, v in node.kwargs.items()}
    return args, kwargs


def _local_detail(node: fx.Node, got: dict, expected: dict) -> tuple[bool, str | None]:
    """``(True, how)`` TVM's value of ``node`` differs from PyTorch's op applied to TVM's
    inputs (the reference inputs where TVM computed none), ``how`` None when they agree;
    ``(False, None)`` when the op cannot be re-run here."""
    if node.op != "call_function" or not callable(node.target):
        return False, None
    values = {**expected, **got}
    args, kwargs = _materialize(node, values)
    try:
        with torch.no_grad():
            ref = node.target(*args, **kwargs)
    except Exception:  # an op that cannot run on these values: the input rule decides
        return False, None
    if not isinstance(ref, torch.Tensor):
        return False, None
    k, magnitude = reduction_size(node.target, args, kwargs)
    return True, _compare(got[node.name], ref, k, magnitude)


def outputs_agree(
    imported: ImportResult,
    partitioned: tvm.IRModule,
    inputs: Sequence[torch.Tensor],
    target,
    expected: dict | None = None,
    executable: tvm.runtime.Module | None = None,
) -> bool:
    """Do the model's outputs, built from ``partitioned`` (or ``executable``, its build at
    hand), agree with PyTorch's on ``inputs``? Both sides run after the same seed, so outputs
    that depend on a random draw are compared too. ``expected`` as for
    :func:`diverging_nodes`."""
    ex = executable
    if ex is None:
        ex = schedules.build(LowerTorchFunctions()(partitioned), target)
    device_type = target_device_type(target)
    vm = relax.VirtualMachine(ex, tvm.device(device_type))
    with _seeded():
        result = vm["main"](*[to_tvm(to_device(x, device_type).contiguous()) for x in inputs])
    flat = [_to_host(v) for v in flatten_tvm(result)]
    if expected is None:
        expected = seeded_references(imported.ep, inputs)
    kinds = torch.export.graph_signature.OutputKind
    specs = imported.ep.graph_signature.output_specs
    args = list(imported.graph.output_node().args[0])
    user = [a for a, s in zip(args, specs, strict=True) if s.kind == kinds.USER_OUTPUT]
    if len(user) != len(flat):
        return False
    for node, value in zip(user, flat, strict=True):
        got = value if isinstance(value, torch.Tensor) else torch.from_dlpack(value)
        if isinstance(node, fx.Node):
            if _compare(got, expected[node.name]) is not None:
                return False
    return True


def minimal_blame(
    blamed: dict[str, FallbackRecord], agrees: Callable[[list[str]], bool]
) -> dict[str, FallbackRecord]:
    """The fewest of the ``blamed`` nodes whose move to LibTorch makes the outputs agree
    (``agrees(names)`` builds with those moved and checks), found by bisection; all of them
    when moving all does not make the outputs agree yet (another round is needed)."""
    names = list(blamed)
    if len(names) <= 1 or not agrees(names):
        return blamed
    kept = minimal_subset(names, agrees)
    logger.debug("verification: %d blamed node(s) shrunk to %d", len(names), len(kept))
    return {n: blamed[n] for n in kept}


def forcible(node: fx.Node) -> fx.Node:
    """The node to move to LibTorch for ``node``: an element of a tuple (getitem) has no
    TorchScript of its own, so the op that made the tuple moves."""
    while node.target is operator.getitem and isinstance(node.args[0], fx.Node):
        node = node.args[0]
    return node


def build_candidates(imported: ImportResult) -> list[fx.Node]:
    """The TVM-side nodes a build failure may be tied to, in graph order, each forcible."""
    seen: dict[str, fx.Node] = {}
    for node in imported.graph.nodes:
        if node.name in imported.native_vars:
            target = forcible(node)
            seen.setdefault(target.name, target)
    return list(seen.values())


def shapeless(imported: ImportResult, candidates: Sequence[fx.Node]) -> list[fx.Node]:
    """The ``candidates`` (:func:`build_candidates`) whose TVM value has a tensor of unknown
    shape: TVM's legalization lowers an op through tensor expressions, which need shapes, so
    these are the usual suspects when a build fails there (T5's decode graphs: a concat of a
    cache of unknown length)."""

    def unknown(ty) -> bool:
        if isinstance(ty, tvm.ir.TupleType):
            return any(unknown(f) for f in ty.fields)
        return isinstance(ty, relax.TensorType) and ty.shape is None

    found = []
    for node in candidates:
        var = imported.native_vars.get(node.name)
        if var is not None and unknown(var.ty):
            found.append(node)
    return found


def _compare(
    got: torch.Tensor, ref: torch.Tensor, k: int = 1, magnitude: float = 1.0
) -> str | None:
    if tuple(got.shape) != tuple(ref.shape):
        return f"shape {tuple(got.shape)} instead of {tuple(ref.shape)}"
    if got.dtype != ref.dtype:
        return f"dtype {got.dtype} instead of {ref.dtype}"
    rtol, atol = reduction_tolerance(ref.dtype, k, magnitude)
    if ref.dtype.is_floating_point:
        a, b = got.double(), ref.double()
        ok = torch.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        if bool(ok.all()):
            return None
        err = (a - b).abs()
        err = torch.where(torch.isnan(err), torch.full_like(err, float("inf")), err)
        return f"max abs err {float(err.max()):.3g} (rtol={rtol}, atol={atol})"
    if torch.equal(got, ref):
        return None
    return f"{int((got != ref).sum())} of {ref.numel()} elements differ"


def find_build_culprits(
    candidates: list[fx.Node],
    builds: Callable[[list[str]], bool],
    error: BaseException,
    fails_unmoved: bool = False,
    suspects: Sequence[fx.Node] = (),
) -> list[FallbackRecord]:
    """The TVM-side nodes whose move to LibTorch is shown to make the build succeed.

    ``builds(names)`` compiles with those nodes forced to LibTorch and says whether
    ``relax.build`` succeeded. Bisection over the candidates (graph order) finds the node whose
    move, with those before it, first makes the model build; the same search repeats over the
    nodes before it, with the nodes found so far moved, until moving the found ones alone
    builds. Every node returned is needed by that search, and moving them together was built.
    When the model builds with nothing moved, or still fails with everything moved, no node is
    to blame: :class:`BuildFailure` carries the original error (chained as its cause).
    ``fails_unmoved``: the caller has just seen ``builds([])`` fail (not asked again).
    ``suspects`` (a few of the candidates, e.g. :func:`shapeless`): when moving them alone
    builds, the search runs over them only (T5's decode graphs: a handful of suspects among
    hundreds of candidates, a few probes instead of dozens).
    """
    names = [n.name for n in candidates]
    results: dict[frozenset[str], bool] = {frozenset(): False} if fails_unmoved else {}

    def try_build(moved: list[str]) -> bool:
        key = frozenset(moved)
        if key not in results:
            results[key] = builds(moved)
        return results[key]

    if try_build([]):
        raise _unexplained(
            error, "the same model builds again with no node moved, so no node is to blame"
        ) from error
    suspected = [n.name for n in suspects]
    if suspected and len(suspected) < len(names) and try_build(suspected):
        names = [name for name in names if name in set(suspected)]
    if not names or not try_build(names):
        raise _unexplained(
            error, "moving every TVM op to LibTorch does not help, so no node is to blame"
        ) from error
    blamed: list[str] = []
    hi = len(names)  # invariant: try_build(blamed + names[:hi]) succeeded
    while not try_build(blamed):
        lo = 0  # try_build(blamed + names[:lo]) failed
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            if try_build(blamed + names[:mid]):
                hi = mid
            else:
                lo = mid
        hi -= 1
        blamed.append(names[hi])
    detail = first_line(error)
    by_name = {n.name: n for n in candidates}
    return [
        FallbackRecord(name, op_key(by_name[name].target), Reason.BUILD, detail)
        for name in names
        if name in blamed
    ]


def _unexplained(error: BaseException, why: str) -> BuildFailure:
    """The original build error, as a BuildFailure with its full message (first 4,000
    characters); raise it ``from error``."""
    text = f"{type(error).__name__}: {error}".strip()
    if len(text) > 4000:
        text = text[:4000] + " ..."
    return BuildFailure(f"byoc_torch: relax.build failed ({why}):\n{text}")
