"""``torch.compile(model, backend="byoc_torch")``: every graph TorchDynamo captures is compiled
by :func:`byoc_torch.compile`.

Place in the data flow: in front of the driver. TorchDynamo traces the user's Python, breaks
the graph where Python needs a value (``if x.sum() > 0``), and hands each FX graph with its
example inputs to the backend. The backend takes the graph as Dynamo gives it:

* tensor inputs stay tensor inputs (their symbolic dims stay dynamic);
* a SymInt input equal to a tensor input's size is read from that tensor's shape;
* any other SymInt input (``logits_to_keep``, a cache's ``cumulative_length``) crosses as the
  size of an empty "carrier" tensor, so that it stays a runtime value of the compiled program;
* a value Dynamo passes as a 0-d tensor only to read it back with ``.item()`` (an
  unspecialized float attribute such as ``variance_epsilon`` or ``dropout.p``), a SymFloat, a
  SymBool, a negative SymInt and any plain Python value are *specialized*: the graph is
  compiled for the value it has, the value is checked at every call, and another value
  compiles another variant (at most ``DYNAMO_MAX_VARIANTS``);
* SymInt/SymFloat outputs come back as Python numbers.

torch.export may assume more about the sizes than Dynamo guards: tracing on the example values
it records a relation they happen to satisfy (Mistral's decode step: a slice of the last
``sliding_window - 1`` cache entries covers the whole cache at one cache length, and the
slice's contiguity, computed for the node's metadata, becomes the guard ``sliding_window ==
cache length + 2``), or fixes a dim to its example size. Each variant keeps the sizes it was
compiled for (:class:`_Fits`); a call whose sizes do not fit them compiles another variant
(Dynamo does not recompile: its guards still hold).

The graph is exported (non-strict, straight-line FX code), compiled like any model (same
verification) and run in the graph's place. A graph the backend cannot compile runs in
PyTorch instead (the graph Dynamo captured, eagerly), with a one-line warning: the user's
program never fails because of the backend (unless ``require_full_compilation=True``, which
raises). Dynamo's guards decide when the backend is called again.

The backend is registered under the ``torch_dynamo_backends`` entry point (pyproject.toml), so
``backend="byoc_torch"`` works without importing byoc_torch first; its options come as
PyTorch's own backends take them, ``torch.compile(m, backend="byoc_torch", options={...})``
(one :class:`byoc_torch.Options`, handed whole to the driver), and :func:`dynamo_backend`
makes a backend with :class:`byoc_torch.Options` fields.
"""

from __future__ import annotations

import copy
import keyword
import logging
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import fx
from torch._subclasses.fake_tensor import is_fake
from torch.fx.experimental.symbolic_shapes import optimization_hint
from torch.utils._python_dispatch import _disable_current_modes

from . import _defaults
from .errors import FallbackError, InputError, OptionError, first_line
from .options import Options
from .quiet import quietly
from .tensors import random_tensor

logger = logging.getLogger(__name__)

__all__ = ["backend", "compile_graph", "dynamo_backend"]

_PYTHON_TYPE = {torch.SymInt: int, torch.SymFloat: float, torch.SymBool: bool}
_SYMBOLIC = tuple(_PYTHON_TYPE)
_warned: set[str] = set()  # the eager-fallback warnings given (each once per process)


def dynamo_backend(**options) -> Callable:
    """A ``torch.compile`` backend compiling with these :class:`byoc_torch.Options` fields,
    e.g. ``torch.compile(model, backend=byoc_torch.dynamo_backend(placement="tvm"))``; the
    same as ``torch.compile(model, backend="byoc_torch", options={"placement": "tvm"})``."""
    opts = Options.from_kwargs(options)  # a wrong option fails here, not at the first call

    def byoc_torch_backend(gm: fx.GraphModule, example_inputs: Sequence) -> Callable:
        return compile_graph(gm, example_inputs, opts)

    return byoc_torch_backend


def backend(
    gm: fx.GraphModule,
    example_inputs: Sequence,
    *,
    options: Mapping | None = None,
    mode: str | None = None,
) -> Callable:
    """The backend ``"byoc_torch"``. ``torch.compile(..., options={...})`` hands its
    ``options`` dict here, as to PyTorch's own backends: fields of :class:`byoc_torch.Options`.
    ``mode`` (``torch.compile``'s presets) has no meaning for byoc_torch: any mode but
    ``"default"`` is an :class:`~byoc_torch.errors.OptionError`."""
    if mode not in (None, "default"):
        raise OptionError(
            f"byoc_torch backend: torch.compile mode={mode!r} has no byoc_torch meaning; pass "
            "byoc_torch options instead, e.g. options={'placement': 'tvm', 'tune_trials': 64}"
        )
    return compile_graph(gm, example_inputs, Options.from_kwargs(options or {}))


# How one graph input reaches the compiled program (see the module doc).
TENSOR, SIZE, CARRIER, FIXED = "tensor", "size", "carrier", "fixed"


@dataclass(frozen=True)
class _Input:
    kind: str  # TENSOR, SIZE, CARRIER or FIXED
    name: str  # the input as the user's code names it (Dynamo's source), for messages
    source: tuple[int, int] | None = None  # SIZE: (graph input of the tensor, dim)
    item: bool = False  # FIXED: a 0-d tensor whose .item() the graph reads
    # SIZE of an expression of sizes: (function of the sizes, their (graph input, dim)s)
    expression: tuple[Callable, tuple[tuple[int, int], ...]] | None = None


class _GraphInputs(torch.nn.Module):
    """A Dynamo graph called with the compiled program's inputs: the graph's tensors, then one
    carrier tensor per CARRIER scalar (its value is the carrier's dim 0). Sizes are read from
    the tensors' shapes; FIXED values are the ones the graph was specialized for."""

    # How errors name this module (the user never wrote it): see driver.export_program.
    captured_by_dynamo = "the graph torch.compile captured"

    def __init__(self, gm: fx.GraphModule, plan: list[_Input], fixed: dict[int, object]) -> None:
        super().__init__()
        self.gm = gm
        self.plan = plan
        self.fixed = fixed
        self.tensor_at = [k for k, p in enumerate(plan) if p.kind == TENSOR]
        self.carrier_at = [k for k, p in enumerate(plan) if p.kind == CARRIER]

    def forward(self, *tensors: torch.Tensor):
        given = dict(zip(self.tensor_at, tensors, strict=False))
        carriers = tensors[len(self.tensor_at) :]
        for k, carrier in zip(self.carrier_at, carriers, strict=True):
            given[k] = carrier.shape[0]
        args = []
        for k, p in enumerate(self.plan):
            if p.kind == SIZE and p.expression is not None:
                fn, where = p.expression
                args.append(fn(*[given[t].shape[d] for t, d in where]))
            elif p.kind == SIZE:
                args.append(given[p.source[0]].shape[p.source[1]])
            elif p.kind == FIXED:
                args.append(self.fixed[k])
            else:
                args.append(given[k])
        return self.gm(*args)


@quietly
def compile_graph(
    gm: fx.GraphModule, example_inputs: Sequence, opts: Options | None = None, **options
) -> Callable:
    """Compile one Dynamo graph with ``opts`` (or the Options fields ``options``); returns
    what Dynamo calls with the graph's inputs. A graph that cannot be compiled runs in PyTorch
    (see the module doc)."""
    if opts is None:
        opts = Options.from_kwargs(options)
    elif options:
        opts = opts.replace(**options)
    if opts.num_threads is None:
        # The process's threads as the user set them: Dynamo asserts that torch's global
        # thread count is unchanged by a compile ("Global num_threads state changed while
        # dynamo tracing"), and the torch.compile user keeps the settings of the process.
        opts = opts.replace(num_threads=torch.get_num_threads())
    try:
        graph = _Graph(gm, example_inputs, opts)
        graph.variant(list(example_inputs))  # the first variant, compiled now
    except Exception as err:
        if opts.require_full_compilation:
            raise
        return _eager(gm, err)
    return graph


def _eager(gm: fx.GraphModule, err: BaseException) -> Callable:
    """The graph as Dynamo captured it, run by PyTorch, after a one-line warning (once per
    reason and process)."""
    first = first_line(err)
    message = f"byoc_torch: a graph torch.compile captured runs in PyTorch instead ({first})"
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=2)
    logger.debug("dynamo graph falls back to eager", exc_info=err)

    def run(*args):
        return gm(*args)

    run.compiled = None  # nothing was compiled (for inspection, like _Graph.compiled)
    return run


class _Graph:
    """One Dynamo graph and its compiled variants (one per set of specialized values)."""

    def __init__(self, gm: fx.GraphModule, example_inputs: Sequence, opts: Options) -> None:
        self.gm = gm
        self.opts = opts
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        values = [
            n.meta.get("example_value", x)
            for n, x in zip(placeholders, example_inputs, strict=True)
        ]
        self.values = values  # Dynamo's example values (symbolic dims)
        self.plan = _plan(placeholders, values)
        self.tensor_at = [k for k, p in enumerate(self.plan) if p.kind == TENSOR]
        self.carrier_at = [k for k, p in enumerate(self.plan) if p.kind == CARRIER]
        self.fixed_at = [k for k, p in enumerate(self.plan) if p.kind == FIXED]
        self.variants: list[tuple[dict[int, object], Callable, _Fits]] = []
        self.eager: Callable | None = None  # set when a variant fails to compile

    @property
    def compiled(self):
        """The first variant's CompiledModule (for inspection: report, torch_ops)."""
        return self.variants[0][1] if self.variants else None

    @property
    def all_compiled(self) -> list:
        return [c for _, c, _ in self.variants]

    def __call__(self, *args):
        if self.eager is not None:
            return self.eager(*args)
        tensors = [args[k] for k in self.tensor_at]
        tensors += [_carrier(args[k]) for k in self.carrier_at]
        compiled = None
        for fixed, candidate, fits in self.variants:
            if all(_same(_value(args[k], self.plan[k]), v) for k, v in fixed.items()) and fits(
                tensors
            ):
                compiled = candidate
                break
        if compiled is None:
            if len(self.variants) >= _defaults.DYNAMO_MAX_VARIANTS:
                self.eager = _eager(
                    self.gm,
                    FallbackError(
                        f"more than {_defaults.DYNAMO_MAX_VARIANTS} values of "
                        f"{self._fixed_names()} seen"
                    ),
                )
                return self.eager(*args)
            try:
                compiled = self.variant(list(args))
            except Exception as err:
                self.eager = _eager(self.gm, err)
                return self.eager(*args)
        try:
            return compiled(*tensors)
        except InputError:  # the caller's input (one requiring grad, say), named as the user
            raise  # names it: the same input would be refused again, so no fallback hides it
        except Exception as err:  # e.g. a relation torch.export assumed that Dynamo does not
            # guard: the graph runs in PyTorch from now on (compiled graphs update no input
            # before they fail: mutations are copied back after the run)
            self.eager = _eager(self.gm, err)
            return self.eager(*args)

    def _fixed_names(self) -> str:
        return ", ".join(self.plan[k].name for k in self.fixed_at) or "its static inputs"

    def variant(self, args: list) -> Callable:
        """Compile the variant for the FIXED values (and static carriers) of ``args``."""
        from .driver import compile_with_options

        fixed = {k: _value(args[k], self.plan[k]) for k in self.fixed_at}
        gm = _specialized(self.gm, self.plan, fixed)
        dims = [_dynamic_dims(self.values[k]) for k in self.tensor_at]
        dims += [{0: torch.export.Dim.AUTO} for _ in self.carrier_at]
        # Outside Dynamo's tracing context and fake mode: torch.export below traces on its
        # own, and its guards must not become the calling frame's.
        with _disable_current_modes(), torch._guards.tracing(None):
            real = [_real(args[k]) for k in self.tensor_at]
            real += [_carrier(args[k]) for k in self.carrier_at]
            names = _identifiers([self.plan[k].name for k in self.tensor_at + self.carrier_at])
            compiled = compile_with_options(
                _named(_GraphInputs(gm, self.plan, fixed), names),
                tuple(real),
                self.opts,
                dynamic_shapes=tuple(dims) if any(dims) else None,  # one per named input
            )
        # A carrier torch.export specialized (a size of 0 or 1) is a fixed value too.
        specs = compiled.signature.inputs[len(self.tensor_at) :]
        for k, spec in zip(self.carrier_at, specs, strict=True):
            if isinstance(spec.shape[0], int):
                fixed[k] = spec.shape[0]
        logger.debug("compiled a dynamo graph (fixed %s): %s", fixed, compiled)
        self.variants.append((fixed, compiled, _Fits(compiled.signature, self._dynamic)))
        return compiled

    @property
    def _dynamic(self) -> list[tuple[int, int]]:
        """(compiled input, dim) of every size Dynamo left symbolic: the carriers' and the
        tensors' symbolic dims (Dynamo's guards fix the others)."""
        dims = [
            (i, d)
            for i, k in enumerate(self.tensor_at)
            for d, size in enumerate(self.values[k].shape)
            if isinstance(size, torch.SymInt)
        ]
        return dims + [(len(self.tensor_at) + i, 0) for i in range(len(self.carrier_at))]


class _Fits:
    """Do a call's sizes fit one compiled variant? The compiled program's input dims are
    torch.export's: a symbol (bound by its first dim, inside its range), an expression of
    symbols (``s30 + 2``) or a number; only the dims Dynamo left symbolic are checked."""

    def __init__(self, signature, dynamic: list[tuple[int, int]]) -> None:
        import sympy

        specs = signature.inputs
        self.binds: list[tuple[int, int, str, int, int | None]] = []
        self.checks: list[tuple[int, int, Callable, tuple[str, ...]]] = []
        bound: set[str] = set()
        for i, spec in enumerate(specs):  # every symbol's first dim binds it
            for d, want in enumerate(spec.shape):
                if isinstance(want, str) and want.isidentifier() and want not in bound:
                    bound.add(want)
                    self.binds.append((i, d, want, *signature.ranges.get(want, (0, None))))
        first = {(i, d) for i, d, *_ in self.binds}
        for i, d in dynamic:
            want = specs[i].shape[d]
            if (i, d) in first:
                continue
            try:
                expr = sympy.sympify(want)
                names = tuple(sorted(str(s) for s in expr.free_symbols))
                fn = sympy.lambdify(names, expr, modules="math")
            except (sympy.SympifyError, TypeError, SyntaxError) as err:  # not Python arithmetic:
                logger.debug("input dim %s is not checked before the call: %s", want, err)
                continue  # the program's own shape check raises, and the graph runs eagerly
            if set(names) <= bound:  # (every symbol is some input's dim)
                self.checks.append((i, d, fn, names))

    def __call__(self, tensors: Sequence[torch.Tensor]) -> bool:
        sizes = {}
        for i, d, name, lower, upper in self.binds:
            n = tensors[i].shape[d]
            if n < lower or (upper is not None and n > upper):
                return False
            sizes[name] = n
        for i, d, fn, names in self.checks:
            if tensors[i].shape[d] != fn(*[sizes[n] for n in names]):
                return False
        return True


def _plan(placeholders: list[fx.Node], values: list) -> list[_Input]:
    """How each graph input reaches the compiled program (see the module doc)."""
    tensor_at = [k for k, v in enumerate(values) if isinstance(v, torch.Tensor)]
    plan = []
    for node, value in zip(placeholders, values, strict=True):
        name = _source_name(node)
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided:
                raise FallbackError(
                    f"input {name} is a {value.layout} tensor; byoc_torch compiles dense "
                    "(strided) tensors"
                )
            users = list(node.users)
            reads_item = users and all(u.op == "call_method" and u.target == "item" for u in users)
            if value.numel() == 1 and value.dim() == 0 and reads_item:
                plan.append(_Input(FIXED, name, item=True))
            else:
                plan.append(_Input(TENSOR, name))
            continue
        if isinstance(value, torch.SymInt):
            source = _size_source(value, values, tensor_at)
            if source is not None:
                plan.append(_Input(SIZE, name, source))
                continue
            sizes = _expression_of_sizes(value, values, tensor_at)
            if sizes is not None:  # Dynamo guards the relation (e.g. a cache length + 1)
                plan.append(_Input(SIZE, name, expression=sizes))
                continue
            if optimization_hint(value) >= 0:
                plan.append(_Input(CARRIER, name))
                continue
        plan.append(_Input(FIXED, name))
    return plan


def _source_name(node: fx.Node) -> str:
    """The input as the user's code names it (``L['kwargs']['logits_to_keep']``)."""
    arg = node.meta.get("grapharg")
    source = getattr(arg, "source", None)
    try:
        name = source.name if source is not None else node.name
        return name() if callable(name) else str(name)  # a property in torch 2.13
    except Exception:  # a source kind without a name
        return node.name


# Steps of a Dynamo source that say nothing to the user.
_SOURCE_NOISE = frozenset({"L", "self", "_modules", "_parameters", "_buffers"})


def _identifiers(sources: list[str]) -> list[str]:
    """The user's names of the compiled program's inputs, as unique Python identifiers:
    ``x`` for ``L['x']``, ``fn_0_weight`` for ``L['fn']._modules['0']._parameters['weight']``
    (a compiled module's parameter, which Dynamo passes as an input), ``args_0`` for
    ``L['args'][0]``."""
    names: list[str] = []
    for text in sources:
        parts = re.findall(r"\[['\"]?([^'\"\]]+)['\"]?\]|\.(\w+)|^(\w+)$", text)
        words = [w for p in parts for w in p if w and w not in _SOURCE_NOISE]
        name = re.sub(r"\W+", "_", "_".join(words)).strip("_")
        if not name.isidentifier() or keyword.iskeyword(name) or name == "self":
            name = f"input_{len(names)}"
        while name in names:
            name += "_"
        names.append(name)
    return names


def _named(inputs: _GraphInputs, names: list[str]) -> _GraphInputs:
    """``inputs`` as an instance of a subclass whose ``forward`` takes parameters called
    ``names``: torch.export names the program's inputs after them, and so do the compiled
    model's signature and its errors (not ``tensors_0``)."""
    params = ", ".join(names)
    namespace: dict = {}
    exec(  # the names are checked identifiers (_identifiers)
        f"def forward(self, {params}):\n    return _GraphInputs.forward(self, {params})\n",
        {"_GraphInputs": _GraphInputs},
        namespace,
    )
    inputs.__class__ = type("_GraphInputs", (_GraphInputs,), {"forward": namespace["forward"]})
    return inputs


def _size_source(value: torch.SymInt, values: list, tensor_at: list[int]):
    """(graph input, dim) of a tensor input whose size is ``value``, or None."""
    expr = value.node.expr
    for t in tensor_at:
        for d, size in enumerate(values[t].shape):
            if isinstance(size, torch.SymInt) and size.node.expr == expr:
                return (t, d)
    return None


def _expression_of_sizes(value: torch.SymInt, values: list, tensor_at: list[int]):
    """``value`` as (a function, the (graph input, dim) of its arguments) when it is an
    expression of tensor inputs' sizes (``s53 + 1``) that Python arithmetic computes; else
    None."""
    import sympy

    expr = value.node.expr
    where = []
    symbols = sorted(expr.free_symbols, key=str)
    for symbol in symbols:
        found = None
        for t in tensor_at:
            for d, size in enumerate(values[t].shape):
                if isinstance(size, torch.SymInt) and size.node.expr == symbol:
                    found = (t, d)
                    break
            if found:
                break
        if found is None:
            return None
        where.append(found)
    if not symbols or not all(
        isinstance(a, sympy.Add | sympy.Mul | sympy.Symbol | sympy.Integer)
        for a in sympy.preorder_traversal(expr)
    ):
        return None
    fn = sympy.lambdify(symbols, expr, modules=[])
    return fn, tuple(where)


def _value(arg, spec: _Input):
    """The Python value a FIXED (or carrier) input has in a call."""
    if spec.item:
        return arg.item()
    if isinstance(arg, _SYMBOLIC):  # the example value Dynamo traced with
        return _PYTHON_TYPE[type(arg)](optimization_hint(arg))
    return arg


def _same(a, b) -> bool:
    """Equal values of one type (1 and True, 1 and 1.0 are different specializations)."""
    return type(a) is type(b) and (a == b or (a != a and b != b))  # NaN equals NaN here


def _carrier(value) -> torch.Tensor:
    """An empty tensor whose dim 0 is ``value``: a scalar crossing as a size."""
    n = optimization_hint(value) if isinstance(value, torch.SymInt) else int(value)
    return torch.empty((n, 0), dtype=torch.uint8)


def _specialized(gm: fx.GraphModule, plan: list[_Input], fixed: dict[int, object]):
    """A copy of ``gm`` in which every FIXED input is its value: ``x.item()`` of a 0-d input
    becomes the number, a specialized scalar its constant."""
    graph = copy.deepcopy(gm.graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for k, value in fixed.items():
        node = placeholders[k]
        uses = [u for u in node.users if plan[k].item] or [node]
        for use in uses:
            for consumer in list(use.users):

                def swap(a, use=use, value=value):
                    return value if a is use else a

                consumer.args = fx.node.map_aggregate(consumer.args, swap)
                consumer.kwargs = fx.node.map_aggregate(consumer.kwargs, swap)
            if use is not node:
                graph.erase_node(use)
    graph.lint()
    return fx.GraphModule(gm, graph)


def _dynamic_dims(value: torch.Tensor) -> dict | None:
    """torch.export dims of one input: the dims Dynamo made symbolic."""
    dims = {
        d: torch.export.Dim.AUTO for d, s in enumerate(value.shape) if isinstance(s, torch.SymInt)
    }
    return dims or None


def _real(x: torch.Tensor) -> torch.Tensor:
    """A real tensor like ``x`` for export and verification: a new view of a real one (export
    marks and unmarks dynamic dims on the tensors it gets, and Dynamo guards on the marks of
    the user's), or random values of a fake one's (hinted) shape
    (:func:`byoc_torch.tensors.random_tensor`)."""
    if not is_fake(x):
        return x.detach()
    shape = [optimization_hint(s) for s in x.shape]
    return random_tensor(shape, x.dtype, device=x.device)
