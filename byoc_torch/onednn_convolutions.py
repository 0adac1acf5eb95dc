"""Which convolutions AOTInductor packages run through byoc_torch's own oneDNN op.

Place in the data flow: :mod:`byoc_torch.aot_inductor` builds each subgraph's program; when
:func:`onednn_verdict` says so, :func:`rewritten` replaces the program's float32 2-d
convolutions of frozen weights by ``torch.ops.byoc_torch.conv2d_onednn``
(runtime/onednn_convolution.cc) before the package is compiled. The package then calls that op
(AOTInductor's proxy executor) where it called ATen's ``mkldnn._convolution_pointwise``.

Why: ATen's op pays oneDNN's setup on every call, about 25 us on the Zen 4 host whatever the
convolution's size; the runtime's op builds its primitive and packs its weight once and keeps
them. What the package loses: inductor folds batch norms into ATen's convolutions and fuses
a following activation or addition into oneDNN's call; after the rewrite it computes them in its
own fused loop over the convolution's output instead. Which wins depends on the CPU and the
shapes, so by default it is measured (``_defaults.AOTI_ONEDNN_CONVOLUTIONS``: None measured,
True / False force), on the model's own convolutions: :func:`_onednn_faster`.

Only where the runtime was built with oneDNN (the ``onednn-cpu-gomp`` wheel; CMakeLists.txt):
elsewhere packages keep ATen's convolutions and the report says why.
"""

from __future__ import annotations

import collections
import functools
import logging
import math

import torch
from torch import fx

from . import _defaults
from .frozen_weights import example_sizes, faster_beyond_margin, frequent_within_budget
from .torch_library import onednn_convolution_available

logger = logging.getLogger(__name__)

__all__ = ["ConvShape", "convolution_shapes", "onednn_verdict", "rewritten"]

_aten = torch.ops.aten
# (input sizes, weight sizes, stride, padding, dilation, has bias)
ConvShape = tuple[
    tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], bool
]


def _value(node) -> torch.Tensor | None:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    return value if isinstance(value, torch.Tensor) else None


def _convolution(node: fx.Node) -> ConvShape | None:
    """``node``'s shape if it is a convolution the op runs: ``aten.convolution`` of a float32
    4-d input by a 4-d weight on the CPU, not transposed, one group; else None."""
    if node.op != "call_function" or node.target is not _aten.convolution.default:
        return None
    x, w, b, stride, padding, dilation, transposed, _, groups = node.args
    xv, wv = _value(x), _value(w)
    if xv is None or wv is None or transposed or groups != 1:
        return None
    if xv.dim() != 4 or wv.dim() != 4 or xv.dtype != torch.float32 or wv.dtype != torch.float32:
        return None
    if xv.device.type != "cpu" or wv.device.type != "cpu":  # the op has a CPU kernel only
        return None
    if len(stride) != 2 or len(padding) != 2 or len(dilation) != 2:
        return None
    xs, ws = example_sizes(xv), example_sizes(wv)
    if xs is None or ws is None:
        return None
    return xs, ws, tuple(stride), tuple(padding), tuple(dilation), b is not None


def convolution_shapes(graph: fx.Graph) -> list[ConvShape]:
    """The convolutions of ``graph`` the op can run, in graph order."""
    return [s for n in graph.nodes if (s := _convolution(n)) is not None]


def onednn_verdict(graph: fx.Graph) -> tuple[bool, str]:
    """Whether packages of a program with ``graph`` run its convolutions through the
    runtime's oneDNN op, and why, for the report ("" when it has none the op runs)."""
    shapes = convolution_shapes(graph)
    if not shapes:
        return False, ""
    own, aten = "convolutions by oneDNN directly", "convolutions by ATen's oneDNN ops"
    if not onednn_convolution_available():
        return False, f"{aten} (this runtime was built without oneDNN)"
    setting = _defaults.AOTI_ONEDNN_CONVOLUTIONS
    if isinstance(setting, bool):
        return setting, f"{own if setting else aten} (AOTI_ONEDNN_CONVOLUTIONS)"
    if _onednn_faster(_timed_shapes(shapes)):
        return True, f"{own}: measured faster here"
    return False, f"{aten}: oneDNN directly not measured faster here"


def _flops(shape: ConvShape) -> float:
    x, w, stride, padding, dilation, _ = shape
    out = 1
    for k in range(2):
        out *= (x[2 + k] + 2 * padding[k] - dilation[k] * (w[2 + k] - 1) - 1) // stride[k] + 1
    return 2.0 * x[0] * out * math.prod(w)


def _timed_shapes(shapes: list[ConvShape]) -> tuple[ConvShape, ...]:
    """The convolutions :func:`_onednn_faster` times for a model: its most frequent shapes
    while their work stays within ``_defaults.AOTI_CONV_PROBE_FLOPS`` (the first always)."""
    counts = collections.Counter(shapes)
    return frequent_within_budget(counts, _flops, _defaults.AOTI_CONV_PROBE_FLOPS)


@functools.cache
def _onednn_faster(shapes: tuple[ConvShape, ...]) -> bool:
    """Whether the runtime's oneDNN op runs ``shapes`` faster on this CPU than ATen's
    ``mkldnn._convolution_pointwise`` on weights ``mkldnn._reorder_convolution_weight`` packed
    (what inductor makes of a frozen convolution), beyond
    :func:`byoc_torch.timing.choose`'s margin. Channels-last inputs, as packages pass them;
    one thread, interleaved; once per process for a set of shapes."""
    if not shapes or not torch.backends.mkldnn.is_available():
        return bool(shapes)
    gen = torch.Generator().manual_seed(0)
    cases = []
    for x_sizes, w_sizes, stride, padding, dilation, has_bias in shapes:
        x = torch.randn(x_sizes, generator=gen).contiguous(memory_format=torch.channels_last)
        w = torch.randn(w_sizes, generator=gen)
        b = torch.randn(w_sizes[0], generator=gen) if has_bias else None
        args = (list(padding), list(stride), list(dilation), 1)
        packed = torch.ops.mkldnn._reorder_convolution_weight(w, *args, list(x_sizes))
        cases.append((x, w, b, list(stride), list(padding), list(dilation), packed))

    def aten() -> None:
        for x, _, b, stride, padding, dilation, packed in cases:
            torch.ops.mkldnn._convolution_pointwise(
                x, packed, b, padding, stride, dilation, 1, "none", [], ""
            )

    def onednn() -> None:
        for x, w, b, stride, padding, dilation, _ in cases:
            torch.ops.byoc_torch.conv2d_onednn(x, w, b, stride, padding, dilation, 1)

    # ATen's, inductor's own, is what a tie keeps
    return faster_beyond_margin(f"convolutions {shapes}", aten, onednn)


def _rewritable(node: fx.Node, module: fx.GraphModule) -> bool:
    """Whether ``node`` is a convolution the op runs whose weight is a frozen constant of
    ``module`` (a float32 4-d attribute; the op keeps its packed copy for the weight's life)."""
    if node.op != "call_function" or node.target is not _aten.convolution.default:
        return False
    x, w, _, stride, padding, dilation, transposed, _, groups = node.args
    if transposed or groups != 1 or not (len(stride) == len(padding) == len(dilation) == 2):
        return False
    if not isinstance(w, fx.Node) or w.op != "get_attr":
        return False
    weight = getattr(module, w.target, None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.dtype != torch.float32:
        return False
    if weight.device.type != "cpu":  # the op has a CPU kernel only
        return False
    xv = _value(x)  # the program's own nodes carry their example values; inputs may not
    return xv is None or (xv.dim() == 4 and xv.dtype == torch.float32 and xv.device.type == "cpu")


def _layout_of(node: fx.Node) -> torch.memory_format:
    """The memory format ``node``'s value was traced with (contiguous when unknown)."""
    value = _value(node)
    if (
        value is not None
        and not value.is_contiguous()
        and value.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def rewritten(module: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``module`` (sharing its constants) whose convolutions of frozen weights that
    the op runs call ``torch.ops.byoc_torch.conv2d_onednn`` instead."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(module.graph, {}))
    for node in list(graph.nodes):
        if not _rewritable(node, module):
            continue
        x, w, b, stride, padding, dilation, _, _, _ = node.args
        # The op takes and returns channels-last tensors; the rest of the program keeps the
        # layouts it was traced with (a view of the convolution's output expects them), so
        # the conversions are explicit, where inductor fuses them into neighbouring loops.
        with graph.inserting_after(node):
            taken = graph.call_function(
                _aten.clone.default, (x,), {"memory_format": torch.channels_last}
            )
        with graph.inserting_after(taken):
            call = graph.call_function(
                torch.ops.byoc_torch.conv2d_onednn.default,
                (taken, w, b, list(stride), list(padding), list(dilation), 1),
            )
        with graph.inserting_after(call):
            given = graph.call_function(
                _aten.clone.default, (call,), {"memory_format": _layout_of(node)}
            )
        node.replace_all_uses_with(given)
        graph.erase_node(node)
    return fx.GraphModule(module, graph)
