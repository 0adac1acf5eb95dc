"""The AOTInductor executor of LibTorch subgraphs, compile side.

Place in the data flow: after the driver has built the model (and verification has settled),
each ``Codegen="torch"`` function of the partitioned module can run as an AOTInductor package
instead of its TorchScript. For every such subgraph this module

1. rebuilds the subgraph as an FX graph from the FX nodes its torchops were made from
   (:func:`subgraph_program`): the subgraph's tensor inputs become placeholders, in the order
   the runtime receives them; parameters, buffers and constants of the model that it reads are
   frozen in as constants (so the runtime's input of that constant is not passed to the
   package); symbolic dims stay dynamic within the ranges torch.export recorded;
2. exports it and compiles it with ``torch._inductor.aoti_compile_and_package`` with
   ``freezing=True`` (:func:`compile_package`), through the content-addressed cache
   (:mod:`byoc_torch.compile_cache`) when ``Options.cache_dir`` is set;
3. hands the package bytes to the module's C++ runtime (``TorchRuntime.set_aoti``,
   runtime/aoti_executor.h), which from then on runs the package, and serializes it with the
   module (so it travels inside the artifact, sealed with the rest).

Which subgraphs then run their package, and the measuring that decides it, is
:mod:`byoc_torch.executor_choice`.
"""

from __future__ import annotations

import logging
import operator
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx
from tvm import relax

import relay_ext

from .compile_cache import MEMORY, CompileCache, package_key
from .constant_folding import folded
from .frontend.higher_order import HIGHER_ORDER_SCRIPTS
from .frontend.modules import forced_module_for_op
from .frontend.torchscript import is_scalar_node, output_metas, script_for_node, script_for_nodes
from .frozen_weights import (
    CONVOLUTIONS,
    MATMULS,
    PACKED,
    PANELS,
    TRANSPOSED,
    WEIGHT_VIEWS,
    concat_multiplies,
    frozen_values,
    matmul_weights,
    panels,
    transposed,
)
from .names import op_key
from .onednn_convolutions import onednn_verdict, rewritten
from .tolerances import tolerance

logger = logging.getLogger(__name__)

__all__ = [
    "AOT_INDUCTOR",
    "AUTO",
    "SERIAL_KERNELS",
    "TORCHSCRIPT",
    "SubgraphProgram",
    "Unavailable",
    "agree",
    "compile_package",
    "compiler_missing",
    "matmul_weights",
    "nodes_program",
    "nothing_to_gain",
    "subgraph_program",
]

# The settings of ``Options.torch_executor`` (_defaults.TORCH_EXECUTORS).
AUTO, AOT_INDUCTOR, TORCHSCRIPT = "auto", "aot_inductor", "torchscript"


class Unavailable(Exception):
    """AOTInductor cannot run this subgraph; the message says why (shown in the report)."""


@dataclass(frozen=True)
class SubgraphProgram:
    """A subgraph as a program AOTInductor compiles: the graph module (constants frozen in as
    buffers), example inputs, torch.export's ``dynamic_shapes`` for them, which of the
    subgraph's runtime inputs they are (indices), whether multiplies of one input by
    frozen matrices are concatenated (:func:`byoc_torch.frozen_weights.concat_multiplies`),
    whether its convolutions run through the runtime's oneDNN op
    (:func:`byoc_torch.onednn_convolutions.onednn_verdict`), and the form of its frozen
    matrices (:func:`byoc_torch.frozen_weights.matmul_weights`: ``"packed"`` for oneDNN by
    inductor, ``"transposed"`` for MKL's sgemm, ``"panels"`` for the runtime's multiply)."""

    module: fx.GraphModule
    example: tuple[torch.Tensor, ...]
    dynamic_shapes: tuple | None
    inputs: tuple[int, ...]
    concat_multiplies: bool = False
    onednn_convolutions: bool = False
    matrices: str = PACKED

    def compiled_module(self) -> fx.GraphModule:
        """The module its package is compiled from: :attr:`module`, the values it computes
        from no input computed (:func:`byoc_torch.constant_folding.folded`), its convolutions
        rewritten to the runtime's oneDNN op when :attr:`onednn_convolutions`, its matrices
        stored transposed or in panels as :attr:`matrices` says."""
        module = folded(self.module)
        module = rewritten(module) if self.onednn_convolutions else module
        rewrite = {TRANSPOSED: transposed, PANELS: panels}.get(self.matrices)
        return rewrite(module) if rewrite is not None else module

    def inductor_configs(
        self, compiled: fx.GraphModule | None = None, serial: bool = False
    ) -> dict[str, object]:
        """The inductor settings its package is compiled with (``compiled``: its
        :meth:`compiled_module` when the caller holds it already, so the program is not
        rewritten twice; ``serial``: kernels without OpenMP parallel regions, for a model
        whose thread budget is one thread, :data:`_SERIAL_CONFIGS`). With its matrices
        transposed for MKL's sgemm or in panels, inductor does not freeze the package (its
        constants stay in it as they are): freezing would pack the multiplies left to ATen
        for oneDNN, and inductor's ``cpp.weight_prepack`` cannot say otherwise once a package
        in the process was packed (its patterns are registered once). Unless an ATen
        convolution is left in it: its weight packing and batch-norm folding matter more."""
        configs = {**_INDUCTOR_CONFIGS, "cpp.enable_concat_linear": self.concat_multiplies}
        if serial:
            configs.update(_SERIAL_CONFIGS)
        if self.matrices not in (TRANSPOSED, PANELS):
            return configs
        compiled = self.compiled_module() if compiled is None else compiled
        if not any(n.target in CONVOLUTIONS for n in compiled.graph.nodes):
            configs["freezing"] = False
        return configs


_aten = torch.ops.aten


# Ops that only reshape, slice or copy a value: no arithmetic for AOTInductor to fuse.
_LAYOUT_OPS = WEIGHT_VIEWS | {
    operator.getitem,
    _aten.slice.Tensor,
    _aten.select.int,
    _aten.split.Tensor,
    _aten.split_with_sizes.default,
    _aten.unsqueeze.default,
    _aten.squeeze.dim,
    _aten.squeeze.dims,
    _aten.clone.default,
    _aten.alias.default,
    _aten.detach.default,
}


def nothing_to_gain(nodes: Sequence[fx.Node]) -> str | None:
    """Why an AOTInductor package of ``nodes`` is not worth compiling while placement times its
    regions, or None when it may be. A package wins by fusing chains of arithmetic into one
    kernel and by prepacking frozen weights. It gains nothing on views and copies or on one op
    alone; on one matrix multiply with at most one op after it, it gains at most the packing of
    a frozen weight (:func:`matmul_weights`; 10-20 % of the multiply where oneDNN's
    packed multiplies win), which does not pay for a compile of seconds per region (HF BERT's
    cold compile took 43-44 s instead of 36 s compiling two such regions), while the whole-model
    candidate and the final subgraphs' packages get it anyway. Unfrozen, such a region runs
    MKL's sgemm either way (HF BERT's addmm + gelu regions: 0.80-0.90 ms as packages, 0.79 ms
    as TorchScript; GPT-2's addmm regions 0.87 against 0.71)."""
    computing = [n for n in nodes if n.op == "call_function" and n.target not in _LAYOUT_OPS]
    if not computing:
        return "only views and copies"
    if any(n.target in CONVOLUTIONS for n in computing):
        return None
    matmuls = [n for n in computing if n.target in MATMULS | {_aten.bmm.default}]
    rest = [n for n in computing if n not in matmuls]
    if len(matmuls) == 1 and len(rest) <= 1:
        return f"one matrix multiply ({op_key(matmuls[0].target)}), nothing to fuse into it"
    if len(computing) == 1:
        return f"one op ({op_key(computing[0].target)}), nothing to fuse"
    return None


def subgraph_program(func: relax.Function, ep: torch.export.ExportedProgram) -> SubgraphProgram:
    """The subgraph ``func`` (a ``Codegen="torch"`` function) as an FX program over the nodes
    of ``ep`` (the decomposed program the frontend imported). Raises :class:`Unavailable`
    when a member was not made from one FX node of ``ep``."""
    by_name = {n.name: n for n in ep.graph.nodes}
    params = [p for p in func.params if isinstance(p.ty, relax.TensorType)]
    param_index = {p: k for k, p in enumerate(params)}
    param_fx: dict[int, fx.Node] = {}
    members: list[tuple[relax.Var, fx.Node, list[fx.Node]]] = []
    items: dict[relax.Var, tuple[relax.Var, int]] = {}
    arg_var: dict[fx.Node, relax.Var] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.TupleGetItem):
                items[binding.var] = (value.tuple_value, int(value.index))
                continue
            if not relay_ext.is_torchop(value):
                raise Unavailable(f"{binding.var.name} is not a torchop")
            nodes = _member_nodes(value, by_name)
            inputs = _member_inputs(nodes)
            if len(inputs) != len(value.args):
                raise Unavailable(f"{nodes[-1].name}'s inputs do not match its torchop's arguments")
            for fx_input, arg in zip(inputs, value.args, strict=True):
                if arg in param_index:
                    k = param_index[arg]
                    if param_fx.setdefault(k, fx_input) is not fx_input:
                        raise Unavailable(f"input {k} stands for two FX values")
                else:
                    arg_var[fx_input] = arg
            members.append((binding.var, nodes))

    for k in range(len(params)):
        if k not in param_fx:
            raise Unavailable(f"input {k} is used by no member")
    graph = fx.Graph()
    root = torch.nn.Module()
    new: dict[fx.Node, fx.Node] = {}
    ordered = [param_fx[k] for k in range(len(params))]
    bound = _bind_inputs(ordered, ep, graph, root, new)
    var_node: dict[relax.Var, fx.Node] = {}

    def value_of_var(var: relax.Var) -> fx.Node:
        if var in var_node:
            return var_node[var]
        if var not in items:
            raise Unavailable(f"{var.name} is neither a member nor an element of one")
        src, index = items[var]
        var_node[var] = graph.call_function(_getitem, (value_of_var(src), index))
        return var_node[var]

    def value_of(n: fx.Node) -> fx.Node:
        if n in new:
            return new[n]
        if n in arg_var:
            return value_of_var(arg_var[n])
        if is_scalar_node(n):  # a size the member recomputes from its tensor inputs
            new[n] = graph.node_copy(n, value_of)
            return new[n]
        raise Unavailable(f"{n.name} is not among the subgraph's inputs")

    for var, nodes in members:
        for node in nodes:
            new[node] = graph.node_copy(node, value_of)
        if len(nodes) == 1:
            var_node[var] = new[nodes[0]]
            continue
        # A cluster's torchop returns a tuple of its sink's outputs (frontend.importer).
        outs = [
            new[n] if k is None else graph.call_function(_getitem, (new[n], k))
            for n, k in _cluster_outputs(nodes[-1])
        ]
        var_node[var] = graph.call_function(_tuple, tuple(outs))
    ret = func.body.body
    outs = list(ret.fields) if isinstance(ret, relax.Tuple) else [ret]
    graph.output(tuple(value_of_var(o) for o in outs))
    return _program(root, graph, bound, ep)


def _program(root: torch.nn.Module, graph: fx.Graph, bound, ep) -> SubgraphProgram:
    """The program of ``graph`` over ``root``'s frozen buffers, its inputs as
    :func:`_bind_inputs` bound them (``bound``), compiled as ``ep``'s multiplies call for."""
    taken, example, dynamic = bound
    module = fx.GraphModule(root, graph)
    own_convolutions = onednn_verdict(ep.graph)[0]
    return SubgraphProgram(
        module,
        example,
        dynamic,
        taken,
        concat_multiplies(ep)[0],
        own_convolutions,
        matmul_weights(ep)[0],
    )


def _bind_inputs(
    inputs: Sequence[fx.Node],
    ep: torch.export.ExportedProgram,
    graph: fx.Graph,
    root: torch.nn.Module,
    new: dict[fx.Node, fx.Node],
) -> tuple[tuple[int, ...], tuple[torch.Tensor, ...], tuple | None]:
    """Make each of ``inputs`` (values of ``ep``'s graph) a value of ``graph`` (recorded in
    ``new``): a parameter, buffer or constant of ``ep`` becomes a buffer of ``root`` (frozen
    in), any other a placeholder. Returns which inputs are placeholders (indices), example
    tensors for them and their torch.export ``dynamic_shapes`` (None: all static)."""
    frozen = frozen_values(ep)
    taken: list[int] = []
    example: list[torch.Tensor] = []
    shapes: list[dict | None] = []
    dims: dict = {}
    for k, node in enumerate(inputs):
        if node.op == "placeholder" and node.name in frozen:
            attr = f"c{k}"
            root.register_buffer(attr, frozen[node.name].detach())
            new[node] = graph.get_attr(attr)
            continue
        new[node] = graph.placeholder(f"in{k}")
        taken.append(k)
        x, spec = _example_and_dims(node, ep, dims)
        example.append(x)
        shapes.append(spec)
    dynamic = tuple(shapes) if any(s for s in shapes) else None
    return tuple(taken), tuple(example), dynamic


def nodes_program(
    nodes: Sequence[fx.Node],
    inputs: Sequence[fx.Node],
    outputs: Sequence[tuple[fx.Node, int | None]],
    ep: torch.export.ExportedProgram,
) -> SubgraphProgram:
    """The FX ``nodes`` of ``ep`` (a placement region, in graph order) as a program over the
    values of ``inputs`` returning ``outputs`` (a node's value, or element ``k`` of it), with
    parameters, buffers and constants frozen in, as :func:`subgraph_program` makes them."""
    graph = fx.Graph()
    root = torch.nn.Module()
    new: dict[fx.Node, fx.Node] = {}
    bound = _bind_inputs(inputs, ep, graph, root, new)

    def value_of(n: fx.Node) -> fx.Node:
        if n in new:
            return new[n]
        if is_scalar_node(n):  # a size the region recomputes from its tensor inputs
            new[n] = graph.node_copy(n, value_of)
            return new[n]
        raise Unavailable(f"{n.name} is not among the region's inputs")

    for node in nodes:
        new[node] = graph.node_copy(node, value_of)
    graph.output(
        tuple(
            new[n] if k is None else graph.call_function(_getitem, (new[n], k)) for n, k in outputs
        )
    )
    return _program(root, graph, bound, ep)


def _getitem(value, index: int):
    return value[index]


def _tuple(*values):
    return values


def _member_nodes(call: relax.Call, by_name: dict[str, fx.Node]) -> list[fx.Node]:
    """The FX nodes of ``ep`` a torchop runs: one, or a cluster of complex-valued nodes and
    the sink that turns them real (:mod:`byoc_torch.frontend.complex`), in graph order."""
    names = [str(n) for n in (call.attrs.get("nodes") or [])]
    op = str(call.attrs["op_name"])
    if not names:
        raise Unavailable(f"its torchop {op} runs no FX node (it was built in Relax)")
    nodes = [by_name.get(name) for name in names]
    if any(node is None or node.op != "call_function" for node in nodes):
        raise Unavailable(f"its torchop {op} names no FX node of the imported program")
    for node in nodes:
        if forced_module_for_op(node.target) is not None:
            raise Unavailable(f"{node.name} is a scripted submodule (torch_executed_modules)")
        if node.target in HIGHER_ORDER_SCRIPTS:
            raise Unavailable(f"{node.name} is a {op} loop, kept as a TorchScript loop")
    return nodes


def _cluster_outputs(sink: fx.Node) -> list[tuple[fx.Node, int | None]]:
    """What a cluster's torchop returns, as the importer made it: the sink's value, or each
    element of it."""
    if isinstance(sink.meta.get("val"), torch.Tensor):
        return [(sink, None)]
    return [(sink, k) for k in range(len(output_metas(sink) or []))]


def _member_inputs(nodes: list[fx.Node]) -> list[fx.Node]:
    """The FX values a torchop running ``nodes`` takes, in its arguments' order (its
    TorchScript's inputs)."""
    if len(nodes) == 1:
        return script_for_node(nodes[0]).inputs
    return script_for_nodes(nodes, _cluster_outputs(nodes[-1])).inputs


def _example_and_dims(node: fx.Node, ep: torch.export.ExportedProgram, dims: dict):
    """A tensor shaped like ``node``'s value (dynamic dims at their example size), and its
    torch.export dynamic-shapes entry (one Dim per symbol, with its range)."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        raise Unavailable(f"input {node.name} is not a tensor")
    sizes, spec = [], {}
    for d, size in enumerate(val.shape):
        if not isinstance(size, torch.SymInt):
            sizes.append(int(size))
            continue
        hint = size.node.hint
        if hint is None:
            raise Unavailable(f"input {node.name} has a data-dependent size")
        sizes.append(int(hint))
        expr = size.node.expr
        if not expr.is_Symbol:
            spec[d] = torch.export.Dim.AUTO
            continue
        if expr not in dims:
            bounds = ep.range_constraints.get(expr)
            low, high = 0, None
            if bounds is not None:
                low = max(_finite(bounds.lower) or 0, 0)
                high = _finite(bounds.upper)
            dims[expr] = torch.export.Dim(str(expr), min=low, max=high)
        spec[d] = dims[expr]
    return torch.zeros(sizes, dtype=val.dtype), (spec or None)


def _finite(bound) -> int | None:
    try:
        return int(bound)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def compiler_missing() -> str | None:
    """Why AOTInductor cannot compile here (no C++ compiler), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        compiler = get_cpp_compiler()
    except Exception as err:  # inductor raises when it finds no compiler
        return f"no C++ compiler for AOTInductor ({type(err).__name__}: {err})"
    if shutil.which(compiler) is None and not Path(compiler).is_file():
        return f"no C++ compiler for AOTInductor ({compiler} is not on PATH)"
    return None


# freezing: parameters folded in as constants (batch norms into convolutions, oneDNN weight
# prepacking). cpp.dynamic_threads: kernels take the OpenMP thread count at run time instead of
# the one in effect at compile time, so one package serves the whole-model check (timed on one
# thread) and the model (its own budget); measured against thread-specialized packages, in turns
# at one and two threads: HF BERT 1.000 / 0.988, HF ResNet 0.995 / 1.014, cnn 1.048 / 0.981.
# cpp.use_decompose_tanh: vectorized tanh as 2 / (1 + exp(-2x)) - 1 instead of Sleef's tanh,
# which took 8 % of HF GPT-2's package time (its tanh-approximated GELU; perf, one thread):
# HF GPT-2 0.719 / 0.690x eager before, 0.675 / 0.648x after (two runs, one thread). Largest
# error against float64 over [-20, 20]: 1.8e-7 (Sleef's 3.1e-8), relative error above 1e-4
# only where |x| < 1e-3 (pytorch#148241: amplified by a following atan2); the GELU's largest
# error 5.2e-7, eager's own 4.3e-7. Every package is checked against its TorchScript (agree).
_INDUCTOR_CONFIGS = {
    "freezing": True,
    "cpp.dynamic_threads": True,
    "cpp.use_decompose_tanh": True,
}

# A package for a model whose thread budget is one thread (byoc_torch.threads.budget_threads):
# kernels compiled for one thread have no OpenMP parallel region. A dynamic-threads kernel
# opens one at every call even on one thread, and libgomp's barrier at its end makes a futex
# system call each time (strace: about three a call of the built-in demo). byoc_torch at one
# thread, compiled both ways and timed in turns: demo 0.232 -> 0.193x eager, cnn 0.141 ->
# 0.119x, HF ResNet 0.223 -> 0.218x, vit 0.629 -> 0.621x, transformers within the noise
# (benchmarks/serial_kernels.py, docs/performance.md). Such a package runs on one thread
# wherever the model is loaded.
_SERIAL_CONFIGS = {"cpp.dynamic_threads": False, "cpp.threads": 1}
# What the report says of such a package (its subgraph's executor reason).
SERIAL_KERNELS = "its kernels compiled for one thread, the model's thread budget"


def compile_package(
    program: SubgraphProgram, cache: CompileCache | None = None, serial: bool = False
) -> bytes:
    """``program`` as AOTInductor package bytes (parameters frozen), from the process's memory
    or ``cache`` when they hold them; ``serial``: its kernels compiled for one thread
    (:meth:`SubgraphProgram.inductor_configs`). Raises what export or AOTInductor raise."""
    module = program.compiled_module()
    configs = program.inductor_configs(module, serial)
    key = package_key(module, program.example, program.dynamic_shapes, configs)
    for store in (MEMORY, cache):
        cached = store.get_bytes("aoti", key) if store is not None else None
        if cached is not None:
            logger.debug("AOTInductor package %s from the compile cache", key[:12])
            if store is not MEMORY:
                MEMORY.put_bytes("aoti", key, cached)
            return cached
    # Under no_grad, export and compile both: inductor freezes only when grad is disabled
    # (compile_fx); with grad enabled, freezing=True is silently ignored and the package runs
    # unfolded batch norms and unpacked convolutions (HF ResNet 0.44x eager instead of 0.33x).
    with torch.no_grad(), tempfile.TemporaryDirectory(prefix="byoc_torch_aoti_") as tmp:
        exported = torch.export.export(
            module, program.example, dynamic_shapes=program.dynamic_shapes, strict=False
        )
        path = Path(tmp) / "subgraph.pt2"
        torch._inductor.aoti_compile_and_package(
            exported, package_path=str(path), inductor_configs=configs
        )
        data = path.read_bytes()
    MEMORY.put_bytes("aoti", key, data)
    if cache is not None:
        cache.put_bytes("aoti", key, data)
    return data


def agree(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> bool:
    """Whether two executors' outputs agree (within the dtype's tolerance, exactly for
    integers and booleans)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.is_floating_point() or x.is_complex():
            rtol, atol = tolerance(x.dtype)
            if not torch.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
                return False
        elif not torch.equal(x, y):
            return False
    return True
