"""The program a compile works on: the model exported, with flat tensor inputs, its example
inputs, and what the compiled model will take and return (its signature).

Place in the data flow: first step of ``byoc_torch.compile`` and ``byoc_torch.report``, before
the frontend. :func:`export` runs ``torch.export`` (with ``torch_executed_modules`` hidden
behind opaque ops), re-exports a program of pytree, keyword or scalar inputs as one of flat
tensors (:func:`flat_program`), and returns one :class:`Program`;
:func:`signature` describes the compiled model from it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from .errors import ExportError, FallbackError, InputTypeError, OptionError
from .frontend.modules import (
    forced_module_for_op,
    hide_forced_modules,
    release_program,
    tie_to_program,
)
from .frontend.outputs import output_leaves
from .names import dtype_name
from .options import Options
from .quiet import quietly
from .reporting import Report
from .signature import InputSpec, InputTree, Signature, output_structure
from .tensors import random_tensor

__all__ = [
    "Program",
    "derived_inputs",
    "export",
    "export_program",
    "flat_program",
    "mutated_buffers",
    "signature",
]


@dataclass(frozen=True)
class Program:
    """One model, exported: what the pipeline imports, and how calls map onto it."""

    exported: torch.export.ExportedProgram  # as torch.export made it (see :meth:`release`)
    ep: torch.export.ExportedProgram  # the same with flat tensor inputs: what TVM imports
    tree: InputTree | None  # a call's (args, kwargs) -> the flat tensors; None when flat
    names: tuple[str, ...]  # the tensor inputs' names in the model
    example: tuple[torch.Tensor, ...] | None  # the example's flat tensors, if there is one
    model_name: str
    # The buffers the model updates in place, by name, with their tensors (the model's own):
    # the program's last inputs, which the compiled model passes and updates at every call.
    state: tuple[tuple[str, torch.Tensor], ...] = ()

    def release(self) -> None:
        """Drop the forced modules' custom ops (:func:`release_program`)."""
        release_program(self.exported)

    def checked_inputs(self, verify: bool) -> tuple | None:
        """What verification runs on: the example, else (when verifying) random inputs of
        the program's signature, with a warning that says so."""
        if self.example is not None or not verify:
            return self.example
        return _derived_with_warning(self.ep)


def export(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs,
    kwargs: dict | None,
    dynamic_shapes,
    opts: Options,
) -> Program:
    """``model`` exported (:func:`export_program`) and flattened (:func:`flat_program`)."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    exported = export_program(
        model, example_inputs, dynamic_shapes, opts.torch_executed_modules, kwargs
    )
    if isinstance(model, torch.export.ExportedProgram) and exported.example_inputs is not None:
        args, kwargs = exported.example_inputs
    else:
        args, kwargs = tuple(example_inputs), dict(kwargs or {})
    ep, tree, names = flat_program(exported, args, kwargs)
    flat = tuple(tree.tensors(args, kwargs)) if tree is not None else tuple(args)
    example = _example_inputs(ep, flat)
    state = mutated_buffers(exported)
    if state:
        ep = _stateful_program(exported, ep, tree, example, state)
        names = names + tuple(name for name, _ in state)
        if example is not None:  # verification and placement run on copies of the state
            example = example + tuple(value.clone() for _, value in state)
    return Program(exported, ep, tree, names, example, type(model).__name__, state)


def mutated_buffers(ep: torch.export.ExportedProgram) -> tuple[tuple[str, torch.Tensor], ...]:
    """(name, tensor) of each buffer ``ep`` updates in place (``self.calls.add_(1)``), in
    output order: the tensors are the model's own (``ep.state_dict`` shares them, as does
    ``ep.module()``). torch.export's graph keeps in-place ops (its signature lists no buffer
    mutation before functionalization): a program whose graph writes to a buffer or a view of
    one is functionalized (no decomposition) to name them."""
    if not _writes_a_buffer(ep):
        return ()
    kinds = torch.export.graph_signature.OutputKind
    state = []
    for spec in ep.run_decompositions({}).graph_signature.output_specs:
        if spec.kind == kinds.BUFFER_MUTATION:
            name = spec.target
            value = ep.state_dict[name] if name in ep.state_dict else ep.constants[name]
            state.append((name, value))
    return tuple(state)


def _writes_a_buffer(ep: torch.export.ExportedProgram) -> bool:
    """Does a node of ``ep``'s graph write (its schema's alias annotation) to a buffer, or to
    a view of one (an output its schema says aliases an argument)?"""
    kinds = torch.export.graph_signature.InputKind
    aliases = {s.arg.name for s in ep.graph_signature.input_specs if s.kind == kinds.BUFFER}
    if not aliases:
        return False
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        schema = getattr(node.target, "_schema", None)
        if schema is None:  # e.g. operator.getitem of a view op's tuple
            if any(isinstance(a, torch.fx.Node) and a.name in aliases for a in node.args):
                aliases.add(node.name)
            continue
        given = dict(zip((a.name for a in schema.arguments), node.args, strict=False))
        given.update(node.kwargs)
        for arg in schema.arguments:
            value = given.get(arg.name)
            info = arg.alias_info
            if not isinstance(value, torch.fx.Node) or value.name not in aliases or info is None:
                continue
            if info.is_write:
                return True
            outs = [r.alias_info for r in schema.returns if r.alias_info is not None]
            if any(out.before_set & info.before_set for out in outs):
                aliases.add(node.name)
    return False


def _stateful_program(
    exported: torch.export.ExportedProgram,
    flat_ep: torch.export.ExportedProgram,
    tree: InputTree | None,
    example: tuple[torch.Tensor, ...] | None,
    state: tuple[tuple[str, torch.Tensor], ...],
) -> torch.export.ExportedProgram:
    """``exported`` as a program of flat tensor inputs followed by the buffers it updates,
    which become inputs it updates in place (what the compiled model passes and updates at
    every call); the other buffers and the parameters stay the program's own."""
    inputs = example if example is not None else derived_inputs(flat_ep)
    if inputs is None:
        raise FallbackError(
            f"byoc_torch.compile: the model updates its buffer(s) {[n for n, _ in state]} in "
            "place; compiling it needs example inputs"
        )
    dims = _dynamic_dims(flat_ep)
    if dims is not None:
        dims = [*dims, *[None] * len(state)]
    values = tuple(value.clone() for _, value in state)  # export does not run the model
    with torch.no_grad():
        return torch.export.export(
            _FlatInputs(exported.module(), tree, tuple(name for name, _ in state)),
            tuple(inputs) + values,
            dynamic_shapes=(tuple(dims),) if dims else None,
        )


@quietly
def export_program(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: Sequence[torch.Tensor],
    dynamic_shapes=None,
    torch_executed_modules: Sequence = (),
    kwargs: dict | None = None,
) -> torch.export.ExportedProgram:
    """``model`` as an ExportedProgram (exported in eval mode when it is an nn.Module, whose
    training flags are restored afterwards), with the ``torch_executed_modules`` hidden behind
    opaque ops (see :mod:`byoc_torch.frontend.modules`)."""
    if isinstance(model, torch.export.ExportedProgram):
        if torch_executed_modules:
            raise OptionError(
                "torch_executed_modules needs the nn.Module, not an ExportedProgram: the "
                "modules are replaced before export"
            )
        if dynamic_shapes is not None:
            raise OptionError("dynamic_shapes applies when exporting; pass the nn.Module")
        return model
    if not isinstance(model, torch.nn.Module):
        raise InputTypeError(
            f"byoc_torch.compile: expected an nn.Module or an ExportedProgram, got "
            f"{type(model).__name__}"
        )
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if kwargs and torch_executed_modules:
        raise OptionError(
            "torch_executed_modules records its modules' calls with positional inputs; it "
            "cannot be combined with keyword inputs (kwargs=)"
        )
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    inputs = tuple(example_inputs)
    try:
        with hide_forced_modules(model, inputs, torch_executed_modules) as forced, torch.no_grad():
            try:
                ep = torch.export.export(
                    model, inputs, kwargs=kwargs or None, dynamic_shapes=dynamic_shapes
                )
            except GuardOnDataDependentSymNode as err:
                first = str(err).strip().splitlines()[0]
                captured = getattr(model, "captured_by_dynamo", None)
                if captured is not None:  # the backend's wrapper: no advice to use the backend
                    raise ExportError(
                        f"byoc_torch: torch.export cannot capture {captured} again: a value "
                        f"it reads is data-dependent ({first})"
                    ) from err
                raise ExportError(
                    f"byoc_torch.compile: torch.export cannot capture {type(model).__name__}: "
                    f"its Python code branches on a tensor's value ({first}). Run the submodule "
                    "that branches in LibTorch with torch_executed_modules=[...] (it is "
                    "scripted whole), write the branch as torch.cond(pred, true_fn, false_fn, "
                    'operands), or compile with torch.compile(model, backend="byoc_torch") '
                    "(Dynamo runs the branch in Python and hands only branch-free graphs to "
                    "byoc_torch)"
                ) from err
        tie_to_program(ep, forced)  # its custom ops live as long as it (or until release_program)
        return ep
    finally:
        for m, training in flags:
            m.training = training


class _FlatInputs(torch.nn.Module):
    """An exported model called with the flat tensors of its ``(args, kwargs)`` (positional
    tensors when ``tree`` is None), then its buffers named ``state``: what TVM imports when the
    model takes pytrees, keyword inputs or Python scalars, or updates buffers in place."""

    def __init__(
        self, module: torch.nn.Module, tree: InputTree | None, state: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.module = module
        self.tree = tree
        self.state = state

    def forward(self, *tensors: torch.Tensor):
        n = len(tensors) - len(self.state)
        if self.tree is not None:
            args, kwargs = self.tree.unflatten(tensors[:n])
        else:
            args, kwargs = tensors[:n], {}
        if not self.state:
            return self.module(*args, **kwargs)
        buffers = dict(zip(self.state, tensors[n:], strict=True))
        return torch.func.functional_call(self.module, buffers, args, kwargs)


def flat_program(
    ep: torch.export.ExportedProgram, args: Sequence, kwargs: dict
) -> tuple[torch.export.ExportedProgram, InputTree | None, tuple[str, ...]]:
    """``ep`` as a program of flat tensor inputs, the tree that maps a call's inputs to them,
    and the tensor inputs' names in ``ep``. A program that already takes flat positional
    tensors comes back as it is, without a tree. Dynamic dims stay dynamic, with their ranges.
    """
    kinds = torch.export.graph_signature
    user_specs = [s for s in ep.graph_signature.input_specs if s.kind == kinds.InputKind.USER_INPUT]
    names = tuple(s.arg.name for s in user_specs if isinstance(s.arg, kinds.TensorArgument))
    args_spec, kwargs_spec = ep.call_spec.in_spec.children()
    flat = (
        not kwargs_spec.context
        and all(c.is_leaf() for c in args_spec.children())
        and len(names) == len(user_specs)
    )
    if flat:
        return ep, None, names
    tree = InputTree.of(tuple(args), dict(kwargs))
    if tree.treespec != ep.call_spec.in_spec:
        raise InputTypeError(
            f"byoc_torch.compile: the example inputs {tree.treespec} are not nested as the "
            f"exported program's {ep.call_spec.in_spec}"
        )
    tensors = tuple(tree.tensors(tuple(args), dict(kwargs)))
    dims = _dynamic_dims(ep)
    with torch.no_grad():
        flat_ep = torch.export.export(
            _FlatInputs(ep.module(), tree), tensors, dynamic_shapes=(tuple(dims),) if dims else None
        )
    return flat_ep, tree, names


def _user_inputs(ep: torch.export.ExportedProgram) -> Iterator[tuple[str, object]]:
    """Name and recorded value (``meta["val"]``) of each user input of ``ep``, in order."""
    user = set(ep.graph_signature.user_inputs)
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            yield node.name, node.meta.get("val")


def _dynamic_dims(ep: torch.export.ExportedProgram) -> list | None:
    """torch.export ``dynamic_shapes`` of ``ep``'s tensor inputs, flat: one Dim per symbol
    (with its range), Dim.AUTO for a dim that is an expression of symbols."""
    by_symbol: dict = {}
    specs = []
    for _, val in _user_inputs(ep):
        if not isinstance(val, torch.Tensor):  # a specialized enum input (a str is no input)
            continue
        spec = {}
        for d, size in enumerate(val.shape):
            if not isinstance(size, torch.SymInt):
                continue
            expr = size.node.expr
            if not expr.is_Symbol:
                spec[d] = torch.export.Dim.AUTO
                continue
            if expr not in by_symbol:
                bounds = ep.range_constraints.get(expr)
                low = int(bounds.lower) if bounds is not None else 0
                high = bounds.upper if bounds is not None else None
                high = int(high) if high is not None and high.is_finite else None
                by_symbol[expr] = torch.export.Dim(str(expr), min=low, max=high)
            spec[d] = by_symbol[expr]
        specs.append(spec or None)
    return specs if any(specs) else None


def signature(
    ep: torch.export.ExportedProgram,
    device: str,
    report: Report | None,
    num_threads: int | None,
    names: Sequence[str] = (),
    tree: InputTree | None = None,
    foreign_ops: tuple[str, ...] = (),
    mutations: tuple[int, ...] = (),
    cpu: dict | None = None,
    state: tuple[str, ...] = (),
) -> Signature:
    """What the compiled ``ep`` takes and returns; ``names`` name its tensor inputs (the
    original model's, when ``ep`` is its flat re-export); ``state`` the buffers it updates,
    its last inputs."""
    specs = []
    for input_name, val in _user_inputs(ep):
        if not isinstance(val, torch.Tensor):
            raise InputTypeError(
                f"byoc_torch.compile: input {input_name} is a {type(val).__name__}; only tensor "
                "inputs are supported"
            )
        name = names[len(specs)] if names else input_name
        specs.append(InputSpec(name, dtype_name(val.dtype), _dims(val)))
    return Signature(
        tuple(specs),
        output_structure(ep.call_spec.out_spec, output_leaves(ep)),
        device,
        report.to_dict() if report is not None else None,
        num_threads,
        tree,
        _output_specs(ep),
        _dim_ranges(ep, specs),
        foreign_ops,
        mutations,
        cpu,
        state,
    )


def foreign_ops(imported) -> tuple[str, ...]:
    """The operators outside aten that run in LibTorch (``mylib::scale``), sorted."""
    in_torch = {r.node for r in imported.records}
    ops = set()
    for node in imported.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.name not in in_torch or schema is None or schema.name.startswith("aten::"):
            continue
        if forced_module_for_op(node.target) is None:  # a forced module runs its own script
            ops.add(schema.name)
    return tuple(sorted(ops))


def check_dense_inputs(ep: torch.export.ExportedProgram) -> None:
    """Refuse sparse (or other non-strided) user inputs with an error naming them."""
    for input_name, val in _user_inputs(ep):
        if isinstance(val, torch.Tensor) and val.layout != torch.strided:
            raise FallbackError(
                f"byoc_torch.compile: input {input_name} is a {val.layout} tensor; tensors "
                "cross between TVM and LibTorch by DLPack, which holds dense (strided) "
                "tensors only: pass it dense (x.to_dense()), or make it sparse inside the "
                "model"
            )


def _dim_ranges(ep: torch.export.ExportedProgram, specs: list[InputSpec]) -> dict:
    """The range torch.export allows each symbol that is a whole input dim."""
    names = {d for spec in specs for d in spec.shape if isinstance(d, str)}
    ranges = {}
    for symbol, vr in ep.range_constraints.items():
        name = str(symbol)
        if name not in names:
            continue
        lower = _finite_int(vr.lower)
        ranges[name] = (max(lower, 0) if lower is not None else 0, _finite_int(vr.upper))
    return ranges


def _finite_int(bound) -> int | None:
    """A range bound as an int; None for an infinite one (sympy's ``oo`` or torch's
    ``int_oo``, which has no ``is_finite`` that can be trusted)."""
    try:
        return int(bound)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def _dims(val: torch.Tensor) -> tuple[int | str, ...]:
    return tuple(str(s.node.expr) if isinstance(s, torch.SymInt) else int(s) for s in val.shape)


def _output_specs(ep: torch.export.ExportedProgram) -> tuple[InputSpec, ...] | None:
    """dtype and dims of each user output (None when one is not a tensor)."""
    user_outputs = ep.graph_signature.user_outputs
    values = {}
    for node in ep.graph.output_node().args[0]:
        if isinstance(node, torch.fx.Node):
            values[node.name] = node.meta.get("val")
    specs = []
    for k, name in enumerate(user_outputs):
        val = values.get(name) if isinstance(name, str) else None
        if not isinstance(val, torch.Tensor):
            return None
        specs.append(InputSpec(f"output {k}", dtype_name(val.dtype), _dims(val)))
    return tuple(specs)


def _example_inputs(ep, example_inputs) -> tuple | None:
    """The tensors verification and placement run on: the example inputs, or the program's
    own."""
    if example_inputs:
        inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
        return tuple(inputs)
    stored = getattr(ep, "example_inputs", None)
    if stored and not stored[1] and all(isinstance(x, torch.Tensor) for x in stored[0]):
        return tuple(stored[0])
    return None


def _derived_with_warning(ep) -> tuple | None:
    """Inputs for verification when there are no example inputs (:func:`derived_inputs`),
    with a warning that says so."""
    derived = derived_inputs(ep)
    what = "random inputs derived from the program's signature"
    if derived is None:
        what = "nothing: inputs cannot be derived (an input is not a tensor), so it is skipped"
    warnings.warn(
        f"byoc_torch.compile: no example inputs; verification runs on {what}", stacklevel=6
    )
    return derived


def derived_inputs(ep: torch.export.ExportedProgram, seed: int = 0) -> tuple | None:
    """Random tensors with the shapes and dtypes torch.export recorded for the user inputs
    (a dynamic dim takes its example size), made with a generator of their own (PyTorch's
    global generator is left alone) by :func:`byoc_torch.tensors.random_tensor`; None when an
    input is not a tensor."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _, val in _user_inputs(ep):
        if not isinstance(val, torch.Tensor):
            return None
        shape = [int(d.node.hint) if isinstance(d, torch.SymInt) else int(d) for d in val.shape]
        x = random_tensor(shape, val.dtype, gen)
        out.append(x)
    return tuple(out)
