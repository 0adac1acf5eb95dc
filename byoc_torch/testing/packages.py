"""A whole model as one AOTInductor package program, for the executor's tests and the
freezing benchmark (benchmarks/aoti_freezing.py).

Place in the data flow: beside the tests. :func:`whole_program` exports and decomposes the
model and hands all of its nodes to :func:`byoc_torch.aot_inductor.nodes_program`, the way a
placement region becomes a package, so what is frozen in and what stays an input is exactly
what byoc_torch compiles.
"""

from __future__ import annotations

import torch

from .. import aot_inductor

__all__ = ["whole_program"]


def whole_program(
    model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]
) -> tuple[aot_inductor.SubgraphProgram, list[str], tuple[torch.Tensor, ...]]:
    """``model``'s decomposed program as one package program; the names of the program's
    inputs in order (a user input's name, or a parameter's / buffer's / constant's fully
    qualified name) and the tensors to call it with."""
    ep = torch.export.export(model, inputs).run_decompositions()
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
    nodes = [n for n in ep.graph.nodes if n.op == "call_function"]
    outs = next(n for n in ep.graph.nodes if n.op == "output").args[0]
    program = aot_inductor.nodes_program(nodes, placeholders, [(o, None) for o in outs], ep)
    sig = ep.graph_signature
    user = dict(zip(sig.user_inputs, inputs, strict=True))
    state = {**ep.state_dict, **ep.constants}
    fqn = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    fqn.update(sig.inputs_to_lifted_tensor_constants)
    names, args = [], []
    for k in program.inputs:
        name = placeholders[k].name
        names.append(name if name in user else fqn[name])
        args.append(user[name] if name in user else state[fqn[name]])
    return program, names, tuple(args)
