"""Verification: TVM's conversions checked against PyTorch at compile time.

Place in the data flow: inside ``byoc_torch.compile``, after partitioning. Two checks, each of
which moves the ops it blames to LibTorch and compiles again, until the model builds and
agrees with PyTorch:

* **Build failures** (:func:`find_build_culprit`): when ``relax.build`` fails, the TVM-side
  nodes are bisected — force a prefix of them to LibTorch, rebuild — to find the node whose
  move makes the build succeed (about log2(N) builds). A failure no node explains is raised.
* **Wrong values** (:func:`diverging_nodes`): ONE instrumented build returns, besides the
  model's outputs, the value of every tensor TVM computes for an FX node; an FX interpreter
  computes PyTorch's value for the same nodes on the example inputs. A node is blamed when its
  value differs (tolerance per dtype) while every input it takes from other checked nodes
  agrees: a wrong node makes its consumers differ too, and they are not blamed.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Sequence

import torch
import tvm
from torch import fx
from tvm import relax

from .codegen import LowerTorchFunctions
from .errors import BuildFailure
from .frontend import ImportResult
from .frontend.random import random_dependent
from .names import op_key
from .partition.transform import seq_expr
from .records import FallbackRecord, Reason
from .tensors import to_tvm
from .tolerances import tolerance

logger = logging.getLogger(__name__)

__all__ = [
    "build_candidates",
    "diverging_nodes",
    "find_build_culprit",
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


def diverging_nodes(
    imported: ImportResult,
    partitioned: tvm.IRModule,
    inputs: Sequence[torch.Tensor],
    target,
) -> dict[str, FallbackRecord]:
    """The TVM-converted nodes whose value first differs from PyTorch's (see module doc)."""
    var_to_node = {v.name: node for node, v in imported.native_vars.items()}
    mod, kept = _instrument(partitioned, list(var_to_node))
    ex = relax.build(LowerTorchFunctions()(mod), target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    result = vm["main"](*[to_tvm(x.contiguous()) for x in inputs])
    got = {var_to_node[name]: torch.from_dlpack(result[1 + k]) for k, name in enumerate(kept)}
    expected = reference_values(imported.ep, inputs)
    nodes = {n.name: n for n in imported.graph.nodes}
    differs: dict[str, str] = {}
    drawn = random_dependent(imported.graph)  # the reference run draws other numbers
    for name, value in got.items():
        ref = expected.get(name)
        if name in drawn:
            continue
        if not isinstance(ref, torch.Tensor):
            continue
        detail = _compare(value, ref)
        if detail is not None:
            differs[name] = detail
    blamed: dict[str, FallbackRecord] = {}
    for name, detail in differs.items():
        node = nodes[name]
        if any(p.name in differs for p in node.all_input_nodes):
            continue  # an input already differs: blame the producer, not this consumer
        node = forcible(node)
        blamed[node.name] = FallbackRecord(node.name, op_key(node.target), Reason.DIFFERS, detail)
    logger.debug("verification: %d differing node(s), %d blamed", len(differs), len(blamed))
    return blamed


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


def _compare(got: torch.Tensor, ref: torch.Tensor) -> str | None:
    if tuple(got.shape) != tuple(ref.shape):
        return f"shape {tuple(got.shape)} instead of {tuple(ref.shape)}"
    if got.dtype != ref.dtype:
        return f"dtype {got.dtype} instead of {ref.dtype}"
    rtol, atol = tolerance(ref.dtype)
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


def find_build_culprit(
    candidates: list[fx.Node], builds: Callable[[list[str]], bool], error: BaseException
) -> FallbackRecord:
    """The first candidate (in graph order) whose move to LibTorch makes the build succeed,
    given that moving ``candidates[:k]`` fails for k below it. ``builds(names)`` compiles with
    those nodes forced to LibTorch and says whether ``relax.build`` succeeded."""
    first_line = f"{type(error).__name__}: {error}".strip().splitlines()[0][:300]
    names = [n.name for n in candidates]
    if not names or not builds(names):
        raise BuildFailure(
            f"byoc_torch: relax.build failed and moving every TVM op to LibTorch does not help, "
            f"so the failure cannot be tied to an op: {first_line}"
        )
    lo, hi = 0, len(names)  # builds(names[:hi]) is True; find the smallest such hi
    while lo < hi:
        mid = (lo + hi) // 2
        if builds(names[:mid]):
            hi = mid
        else:
            lo = mid + 1
    culprit = candidates[max(hi, 1) - 1]
    return FallbackRecord(culprit.name, op_key(culprit.target), Reason.BUILD, first_line)
