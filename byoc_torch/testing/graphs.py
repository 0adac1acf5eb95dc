"""Hand-built Relax graphs mixing torchop ("t") and native ("n") nodes, with an eager reference.

A graph is a list of ``(kind, inputs)``; ``inputs`` index earlier nodes, ``-1`` is the function
input ``x`` (float32, shape (4,)). A torch node computes ``sin(sum of inputs)`` in LibTorch; a
native node computes ``cos(sum of inputs)`` in TVM. Every node that no other node uses is an
output.
"""

from __future__ import annotations

import torch
import tvm
from tvm import relax

import byoc_torch
import relay_ext
from byoc_torch import _defaults
from byoc_torch.cpu import resolve_target
from byoc_torch.tensors import to_tvm

Graph = list[tuple[str, list[int]]]
T = relax.TensorType([4], "float32")


def _sum_script(n_inputs: int) -> str:
    params = "".join(f", a{i}: Tensor" for i in range(n_inputs))
    expr = " + ".join(f"a{i}" for i in range(n_inputs))
    return f"def forward(self{params}) -> Tensor:\n    return torch.sin({expr})\n"


def sinks(graph: Graph) -> list[int]:
    used = {i for _, ins in graph for i in ins}
    return [k for k in range(len(graph)) if k not in used]


def build(graph: Graph) -> tvm.IRModule:
    x = relax.Var("x", T)
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            vals = []
            for k, (kind, ins) in enumerate(graph):
                args = [x if i < 0 else vals[i] for i in ins]
                if kind == "t":
                    call = relay_ext.torchop(
                        args,
                        script=_sum_script(len(args)),
                        in_types=[T] * len(args),
                        out_type=T,
                        op_name="aten.sin",
                        nodes=[f"n{k}"],
                    )
                    vals.append(bb.emit(call))
                else:
                    acc = args[0]
                    for a in args[1:]:
                        acc = bb.emit(relax.op.add(acc, a))
                    vals.append(bb.emit(relax.op.cos(acc)))
            outs = [vals[k] for k in sinks(graph)]
            out = bb.emit_output(relax.Tuple(outs) if len(outs) > 1 else outs[0])
        bb.emit_func_output(out)
    return bb.get()


def reference(graph: Graph, x: torch.Tensor) -> list[torch.Tensor]:
    vals: list[torch.Tensor] = []
    for kind, ins in graph:
        acc = sum((x if i < 0 else vals[i]) for i in ins)
        vals.append(torch.sin(acc) if kind == "t" else torch.cos(acc))
    return [vals[k] for k in sinks(graph)]


def run(mod: tvm.IRModule, x: torch.Tensor) -> list[torch.Tensor]:
    """Lower the torch functions, build with TVM, run on ``x``."""
    lowered = byoc_torch.LowerTorchFunctions()(mod)
    ex = relax.build(lowered, target=resolve_target(_defaults.TARGET))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](to_tvm(x))
    if isinstance(out, tvm.runtime.Tensor):
        return [torch.from_dlpack(out)]
    return [torch.from_dlpack(o) for o in out]


def num_torch_functions(mod: tvm.IRModule) -> int:
    return len(byoc_torch.torch_functions(mod))


def groups_of(mod: tvm.IRModule) -> list[int]:
    """Sizes (number of torchop calls) of the torch functions, sorted."""
    sizes = []
    for f in byoc_torch.torch_functions(mod).values():
        sizes.append(len(list(f.attrs["torch_ops"])))
    return sorted(sizes)


def random_input() -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, 4)
