"""Default CPU schedules for TVM's untuned kernels, and the build that applies them.

Place in the data flow: the last stage before machine code, called wherever an untuned model
or region is built (the driver's builds, verification, placement's region timings)::

    frontend -> partition -> codegen/lowering -> [tuning.tune] -> schedules.build

``relax.build(mod, target="llvm")`` neither fuses nor schedules on CPU: every op becomes its
own naive loop nest (one scalar, single-threaded loop per element), so a six-op elementwise
chain ran 3x slower than eager PyTorch. :func:`build` rewrites exp, tanh and sigmoid into
vectorizable arithmetic (:mod:`byoc_torch.fast_math`), boolean multiply / add and float ``!=``
into what LLVM codegen gets right (:mod:`byoc_torch.bool_arith`), lowers the way TVM's CPU
pipeline does (legalize, fuse, ``FuseTIR``: ``tuning.lower_for_tuning``), then applies the
rules below, in the style of TVM's dlight (``tvm.s_tir.dlight``), through dlight's own
``ApplyDefaultSchedule`` pass, which leaves alone every PrimFunc already marked scheduled --
tuned kernels keep their MetaSchedule schedules:

* :class:`Injective` (byoc_torch's): every block of an elementwise / broadcast / layout kernel
  inlined into its consumer (within a size budget: fast_math's Let-bound polynomials nested
  three deep made LLVM codegen take minutes), the innermost loop split to the vector width
  and vectorized, the loops above it fused into one loop that runs in parallel when the
  kernel is large enough (a parallel launch costs a thread-pool wake-up, more than a small
  kernel's whole work);
* ``dlight.cpu.Reduction`` (TVM's): softmax, layer / RMS norm and other kernels that mix
  reductions with elementwise blocks over shared leading spatial axes;
* :class:`SpatialReduction` (byoc_torch's): any other kernel whose blocks start with spatial
  axes (a lone sum or max, a matmul): the leading spatial loops fused and run in parallel, an
  injective last block vectorized.

A module left with no kernel at all (every op in LibTorch: the usual all-aot-inductor or
all-libtorch placement) is given an empty one (:func:`with_host_kernel`), so that its
executable carries an LLVM module rather than TVM's empty C source module, which the C
compiler had to compile and link at every VM creation and export (0.8-1.0 s each, five
times in a compile of HF GPT-2).

The vector width comes from the target's CPU features (``mcpu``: AVX-512 512 bits, AVX 256,
else 128); :mod:`byoc_torch.cpu` makes the host CPU the default target.
"""

from __future__ import annotations

import logging
import math

import tvm
from tvm import relax, s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from . import _defaults
from .bool_arith import BoolArithmetic
from .cpu import resolve_target
from .fast_math import FastMath

logger = logging.getLogger(__name__)

__all__ = [
    "NO_KERNEL",
    "Injective",
    "SpatialReduction",
    "build",
    "default_rules",
    "schedule_module",
    "vector_lanes",
    "with_host_kernel",
]


def vector_bits(target: Target) -> int:
    """The SIMD register width ``target``'s CPU features give (bits)."""
    features = tvm.target.codegen.llvm_get_cpu_features(target)
    if "avx512f" in features:
        return 512
    if "avx" in features:
        return 256
    return 128


def vector_lanes(target: Target, dtype: str) -> int:
    """Elements of ``dtype`` in one SIMD register of ``target`` (at least 2)."""
    bits = tvm.DataType(dtype).bits
    return max(2, vector_bits(target) // max(8, bits))


def _extent(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _output_dtype(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> str:
    writes = sch.get(block).writes
    return str(writes[0].source.dtype) if writes else "float32"


def _work(sch: s_tir.Schedule, loops: list) -> int | None:
    """The iterations ``loops`` make in total; None when one is symbolic."""
    total = 1
    for loop in loops:
        extent = _extent(sch, loop)
        if extent is None:
            return None
        total *= extent
    return total


def _worth_parallel(elements: int | None) -> bool:
    """Large enough that splitting the work over threads beats waking them (a symbolic size
    counts as large: it is usually a batch or sequence dim)."""
    return elements is None or elements >= _defaults.SCHEDULE_PARALLEL_MIN_ELEMENTS


def _vectorize_innermost(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int
) -> list[s_tir.schedule.LoopRV]:
    """Split ``block``'s innermost loop by the widest power of two (<= ``lanes``) that divides
    it and vectorize that part; return the loops above the vector loop."""
    loops = sch.get_loops(block)
    inner = loops[-1]
    extent = _extent(sch, inner)
    width = lanes
    if extent is not None:
        width = math.gcd(extent, lanes)  # lanes is a power of two
    if width < 2:
        return list(loops)
    if extent == width:
        sch.vectorize(inner)
        return list(loops[:-1])
    outer, vec = sch.split(inner, factors=[None, width])
    sch.vectorize(vec)
    return [*loops[:-1], outer]


def _parallel_outer(
    sch: s_tir.Schedule, loops: list[s_tir.schedule.LoopRV], elements: int | None
) -> None:
    """Fuse ``loops`` into one and run it in parallel when the kernel is worth it."""
    if not loops or not _worth_parallel(elements):
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    sch.parallel(fused)


class Injective(CPUScheduleRule):
    """Elementwise, broadcast and layout kernels: inline, vectorize inside, parallel outside.

    Applies when every block of the PrimFunc is spatial (no reduction axis). Blocks are
    inlined into their consumers within a size budget (:func:`_inline_within_budget`); each
    block left is vectorized and run in parallel on its own loop nest.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos or not all(info.is_injective() for info in infos):
            return None
        infos = _inline_within_budget(sch, infos)
        if not any(sch.get_loops(info.block_rv) for info in infos):
            return None
        for info in infos:
            block = info.block_rv
            if not sch.get_loops(block):
                continue
            elements = _work(sch, sch.get_loops(block))
            lanes = vector_lanes(target, _output_dtype(sch, block))
            _parallel_outer(sch, _vectorize_innermost(sch, block, lanes), elements)
        return sch


def _operands(expr: tirx.PrimExpr) -> list[tirx.PrimExpr]:
    out: list[tirx.PrimExpr] = []
    for field in ("a", "b", "value", "condition", "true_value", "false_value", "args", "indices"):
        child = getattr(expr, field, None)
        if isinstance(child, tvm.ir.expr.Expr):
            out.append(child)
        elif child is not None and not isinstance(child, str) and hasattr(child, "__len__"):
            out.extend(c for c in child if isinstance(c, tvm.ir.expr.Expr))
    return out


def _expanded_size(expr: tirx.PrimExpr, loads: dict[tirx.Var, int]) -> float:
    """The size of ``expr`` as TVM's arithmetic analyzer sees it: a tree in which every
    Let-bound variable stands for its whole value (LLVM codegen binds each Let in the
    analyzer, which substitutes it and then walks the result as a tree), and every load of a
    buffer of ``loads`` counts as the size given."""
    bound: dict[tirx.Var, int] = {}

    def size(e: tirx.PrimExpr) -> int:
        if isinstance(e, tirx.Var):
            return bound.get(e, 1)
        if isinstance(e, tirx.Let):
            bound[e.var] = size(e.value)
            return bound[e.var] + size(e.body)
        if isinstance(e, tvm.ir.expr.TensorLoad) and e.source in loads:  # a buffer load
            return loads[e.source]
        return 1 + sum(size(c) for c in _operands(e))

    try:
        return size(expr)
    except RecursionError:
        return math.inf


def _stored(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> tirx.BufferStore | None:
    body = sch.get(block).body
    return body if isinstance(body, tirx.BufferStore) else None


def _inline_within_budget(sch: s_tir.Schedule, infos: list[SBlockInfo]) -> list[SBlockInfo]:
    """Inline blocks into their consumers (or a consumer into its producer) as dlight's
    ``try_inline`` does, except where the merged expression would exceed
    ``_defaults.SCHEDULE_INLINE_MAX_SIZE`` (:func:`_expanded_size`). The vectorizable
    exp / tanh / sigmoid of :mod:`byoc_torch.fast_math` bind their intermediates with Let;
    three of them in a row (tanh(silu(tanh(x))), or logaddexp -> selu -> tanh) grow past 1e8
    that way and LLVM codegen took minutes on a 24-element kernel; a block kept apart costs
    one more pass over memory. Returns the blocks left."""
    limit = _defaults.SCHEDULE_INLINE_MAX_SIZE

    def merged(producer: s_tir.schedule.SBlockRV, consumer: s_tir.schedule.SBlockRV) -> float:
        made, used = _stored(sch, producer), _stored(sch, consumer)
        if made is None or used is None:
            return 0  # not a plain store: let the schedule primitive decide
        return _expanded_size(used.value, {made.buffer: _expanded_size(made.value, {})})

    def forward(block: s_tir.schedule.SBlockRV) -> None:
        if any(merged(block, c) > limit for c in sch.get_consumers(block)):
            raise ValueError("over the inline budget")
        sch.compute_inline(block)

    def backward(block: s_tir.schedule.SBlockRV) -> None:
        if any(merged(p, block) > limit for p in sch.get_producers(block)):
            raise ValueError("over the inline budget")
        sch.reverse_compute_inline(block)

    left = list(infos)
    progress = True
    while progress:
        progress = False
        for step in (forward, backward):
            for k, info in enumerate(left):
                try:
                    step(info.block_rv)
                except Exception:  # over budget, or the primitive refuses (as dlight's)
                    continue
                left.pop(k)
                progress = True
                break
            if progress:
                break
    return left


class SpatialReduction(CPUScheduleRule):
    """Kernels whose blocks all start with spatial axes (reductions, matmuls, and mixes the
    dlight rule declines): elementwise blocks inlined, then the leading spatial loops of the
    last block fused and parallel and the other blocks computed inside them, each injective
    block vectorized on its innermost loop."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos or all(info.is_injective() for info in infos):
            return None
        infos = _inline_spatial(sch, infos)
        leading = min(_leading_spatial(info) for info in infos)
        if leading == 0:
            return None
        last = infos[-1]
        loops = sch.get_loops(last.block_rv)
        elements = _work(sch, loops)  # the work, reduction included
        if not _worth_parallel(elements) and len(infos) > 1:
            return sch  # inlining alone, nothing to gain from moving blocks
        fused = sch.fuse(*loops[:leading]) if leading > 1 else loops[0]
        for info in reversed(infos[:-1]):
            try:
                sch.compute_at(info.block_rv, fused, preserve_unit_loops=True)
            except tvm.TVMError:
                return None  # blocks that do not share the spatial axes: not this rule's
        if _worth_parallel(elements):
            sch.parallel(fused)
        for info in infos:
            if info.is_injective() and len(sch.get_loops(info.block_rv)) > 1:
                _vectorize_innermost(
                    sch, info.block_rv, vector_lanes(target, _output_dtype(sch, info.block_rv))
                )
        return sch


def _leading_spatial(info: SBlockInfo) -> int:
    kinds = info.dom_kind()
    return len(kinds) - len(kinds.lstrip("S"))


def _inline_spatial(sch: s_tir.Schedule, infos: list[SBlockInfo]) -> list[SBlockInfo]:
    """Inline the injective blocks that can be, keep the rest in order."""
    injective = [info for info in infos if info.is_injective()]
    left = set(id(i) for i in _inline_within_budget(sch, list(injective)))
    return [info for info in infos if not info.is_injective() or id(info) in left]


def default_rules() -> list[dlight.ScheduleRule]:
    """The rules :func:`schedule_module` applies, first match wins."""
    return [Injective(), dlight.cpu.Reduction(), SpatialReduction()]


def schedule_module(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """``mod`` with every unscheduled PrimFunc given its default schedule (PrimFuncs marked
    ``tirx.is_scheduled``, such as tuned ones, are left as they are)."""
    with target:
        return dlight.ApplyDefaultSchedule(*default_rules())(mod)


def build(mod: tvm.IRModule, target: Target | str | dict) -> tvm.runtime.Executable:
    """``relax.build`` of ``mod`` with its kernels fused and scheduled (see module doc).

    ``mod``: a lowered Relax module (LibTorch calls as ``call_pure_packed``), untuned or as
    :func:`byoc_torch.tuning.tune` returns it.
    """
    target = resolve_target(target)
    if target.kind.name != "llvm":
        return relax.build(mod, target=target)
    scheduled = schedule_module(lower(mod, target), target)
    return relax.build(with_host_kernel(scheduled), target=target)


# The name of the kernel given to a module that has none (with_host_kernel).
NO_KERNEL = "byoc_torch_no_kernel"


def with_host_kernel(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod``, given an empty kernel when it has none, so that its executable's kernels are
    an LLVM module. Without any, TVM links an empty C source module, which must be compiled
    and linked by the C compiler every time the executable is run (``Executable.jit``) or
    exported: about 0.9 s each on HF GPT-2 placed all-aot-inductor, five times a compile,
    against 0.05 s with an LLVM module."""
    if any(isinstance(f, tirx.PrimFunc) for f in mod.functions.values()):
        return mod
    empty = tirx.PrimFunc([], tirx.Evaluate(tirx.const(0, "int32")))
    out = mod.clone()
    out[NO_KERNEL] = empty.with_attr("global_symbol", NO_KERNEL)
    return out


def lower(mod: tvm.IRModule, target: Target | str | dict) -> tvm.IRModule:
    """The first half of :func:`build` on the CPU: ``mod`` legalized and fused as TVM's CPU
    pipeline does (with the fast float32 math), not yet scheduled or compiled: where an op
    TVM cannot lower fails, in about half a build's time (the culprit search's probe,
    :meth:`byoc_torch.pipeline.Pipeline.lowers`). A module that has PrimFuncs is lowered
    already (tuned, or hand-built), and a module for another target is left to
    ``relax.build``: both are returned as they are."""
    from .tuning import lower_for_tuning  # the default CPU pipeline's legalize and fuse

    target = resolve_target(target)
    if target.kind.name != "llvm":
        return mod
    if any(isinstance(f, tirx.PrimFunc) for f in mod.functions.values()):
        return mod
    return lower_for_tuning(FastMath()(BoolArithmetic()(mod)), target)
