"""torch.export's core-ATen decomposition, as TVM's importer runs it, with linear algebra kept
whole.

Place in the data flow: the first thing the importer does with an ExportedProgram
(``run_decompositions=True``, the default).
"""

from __future__ import annotations

import torch
from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

from ..errors import FallbackError

__all__ = ["decompose"]

_KEEP_WHOLE_PREFIXES = ("aten::linalg_", "aten::cholesky", "aten::inverse", "aten::slogdet")


def decompose(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """torch.export's core-ATen decomposition, as TVM's importer runs it, except for
    linear-algebra ops TVM cannot convert anyway: their decompositions thread effect tokens
    (``with_effects(_linalg_check_errors)``) that TVM's importer rejects, so they stay whole
    and run in LibTorch with PyTorch's own error checks."""
    supported = ExportedProgramImporter().convert_map
    table = torch.export.default_decompositions()
    for node in ep.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if (
            node.op == "call_function"
            and schema is not None
            and schema.name.startswith(_KEEP_WHOLE_PREFIXES)
            and node.target.__name__ not in supported
            and node.target in table
        ):
            table.pop(node.target)
    out = ep.run_decompositions(table)
    if any(n.target is torch.ops.higher_order.with_effects for n in out.graph.nodes):
        raise FallbackError(
            "the decomposed program threads effect tokens (with_effects), which TVM's importer "
            "cannot take; export with run_decompositions=False or keep the op whole"
        )
    return out
