"""``torch.compile(model, backend="byoc_torch")``: every graph TorchDynamo captures is compiled
by :func:`byoc_torch.compile`.

Place in the data flow: in front of the driver. TorchDynamo traces the user's Python, breaks
the graph where Python needs a value (``if x.sum() > 0``), and hands each FX graph with its
example inputs to the backend; the backend exports the graph with ``torch.export`` (its dynamic
dims stay dynamic), compiles it like any model (same verification) and returns the compiled
model to run in the graph's place. Dynamo's guards decide when to call the backend again.

The backend is registered under the ``torch_dynamo_backends`` entry point (pyproject.toml), so
``backend="byoc_torch"`` works without importing byoc_torch first;
:func:`dynamo_backend` makes one with :class:`byoc_torch.Options` fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import fx
from torch._subclasses.fake_tensor import is_fake
from torch.fx.experimental.symbolic_shapes import optimization_hint
from torch.utils._python_dispatch import _disable_current_modes

from .errors import InputTypeError
from .options import Options
from .quiet import quietly

logger = logging.getLogger(__name__)

__all__ = ["backend", "compile_graph", "dynamo_backend"]


def dynamo_backend(**options) -> Callable:
    """A ``torch.compile`` backend compiling with these :class:`byoc_torch.Options` fields,
    e.g. ``torch.compile(model, backend=byoc_torch.dynamo_backend(placement="tvm"))``."""
    Options.from_kwargs(options)  # a wrong option fails here, not at the first call

    def byoc_torch_backend(gm: fx.GraphModule, example_inputs: Sequence) -> Callable:
        return compile_graph(gm, example_inputs, **options)

    return byoc_torch_backend


def backend(gm: fx.GraphModule, example_inputs: Sequence) -> Callable:
    """The backend ``"byoc_torch"`` (default options)."""
    return compile_graph(gm, example_inputs)


class _TensorInputs(torch.nn.Module):
    """A Dynamo graph called with its tensor inputs only: the SymInt inputs Dynamo adds for
    dynamic sizes are read from the tensors' shapes."""

    def __init__(self, gm: fx.GraphModule, sources: list[tuple[int, int] | None]) -> None:
        super().__init__()
        self.gm = gm
        self.sources = sources  # per graph input: None (a tensor) or (tensor position, dim)

    def forward(self, *tensors: torch.Tensor):
        args, k = [], 0
        for source in self.sources:
            if source is None:
                args.append(tensors[k])
                k += 1
            else:
                args.append(tensors[source[0]].shape[source[1]])
        return self.gm(*args)


@quietly
def compile_graph(gm: fx.GraphModule, example_inputs: Sequence, **options) -> Callable:
    """Compile one Dynamo graph; returns what Dynamo calls with the graph's inputs."""
    from .driver import compile

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    values = [
        n.meta.get("example_value", x) for n, x in zip(placeholders, example_inputs, strict=True)
    ]
    tensor_at = [k for k, v in enumerate(values) if isinstance(v, torch.Tensor)]
    sources = _size_sources(values, tensor_at, placeholders)
    dims = [_dynamic_dims(values[k]) for k in tensor_at]
    # Outside Dynamo's tracing context and fake mode: torch.export below traces on its own,
    # and its guards must not become the calling frame's.
    with _disable_current_modes(), torch._guards.tracing(None):
        real = tuple(_real(example_inputs[k]) for k in tensor_at)
        compiled = compile(
            _TensorInputs(gm, sources),
            real,
            dynamic_shapes=(tuple(dims),) if any(dims) else None,
            **options,
        )
    logger.debug("compiled a dynamo graph of %d inputs: %s", len(values), compiled)

    def run(*args):
        return compiled(*[args[k] for k in tensor_at])

    run.compiled = compiled  # for inspection (report, torch_ops)
    return run


def _size_sources(values: list, tensor_at: list[int], placeholders) -> list:
    """For each graph input: None for a tensor, (tensor position, dim) for a size input."""
    sources = []
    for k, value in enumerate(values):
        if isinstance(value, torch.Tensor):
            sources.append(None)
            continue
        expr = value.node.expr if isinstance(value, torch.SymInt) else None
        found = None
        for pos, t in enumerate(tensor_at):
            for d, size in enumerate(values[t].shape):
                if expr is not None and isinstance(size, torch.SymInt) and size.node.expr == expr:
                    found = (pos, d)
                    break
            if found:
                break
        if found is None:
            raise InputTypeError(
                f"byoc_torch backend: graph input {placeholders[k].name} is a "
                f"{type(value).__name__} that is not a tensor's size; byoc_torch compiles tensor "
                "inputs (pass the value as a tensor, or let torch.compile specialize it, e.g. "
                "torch._dynamo.config.specialize_int = True)"
            )
        sources.append(found)
    return sources


def _dynamic_dims(value: torch.Tensor) -> dict | None:
    """torch.export dims of one input: the dims Dynamo made symbolic."""
    dims = {
        d: torch.export.Dim.AUTO for d, s in enumerate(value.shape) if isinstance(s, torch.SymInt)
    }
    return dims or None


def _real(x: torch.Tensor) -> torch.Tensor:
    """A real tensor like ``x`` for export and verification: a new view of a real one (export
    marks and unmarks dynamic dims on the tensors it gets, and Dynamo guards on the marks of
    the user's), or random values of a fake one's (hinted) shape."""
    if not is_fake(x):
        return x.detach()
    shape = [optimization_hint(s) for s in x.shape]
    if x.dtype.is_floating_point or x.dtype.is_complex:
        return torch.randn(shape, dtype=x.dtype, device=x.device)
    if x.dtype == torch.bool:
        return torch.randint(0, 2, shape, device=x.device).bool()
    return torch.randint(0, 8, shape, dtype=x.dtype, device=x.device)
