"""torch.export's core-ATen decomposition, as TVM's importer runs it, with linear algebra and
random ops kept whole.

Place in the data flow: the first thing the importer does with an ExportedProgram
(``run_decompositions=True``, the default).
"""

from __future__ import annotations

import logging

import torch
from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

from ..bisection import minimal_subset
from ..errors import FallbackError, first_line
from .random import draws

logger = logging.getLogger(__name__)

__all__ = ["decompose"]

_KEEP_WHOLE_PREFIXES = ("aten::linalg_", "aten::cholesky", "aten::inverse", "aten::slogdet")


def decompose(ep: torch.export.ExportedProgram) -> tuple[torch.export.ExportedProgram, list[str]]:
    """torch.export's core-ATen decomposition, as TVM's importer runs it, except for
    linear-algebra ops TVM cannot convert anyway: their decompositions thread effect tokens
    (``with_effects(_linalg_check_errors)``) that TVM's importer rejects, so they stay whole
    and run in LibTorch with PyTorch's own error checks. Random ops stay whole too, so LibTorch
    draws from PyTorch's generator exactly as eager does (:mod:`.random`).

    torch's own ``run_decompositions`` can fail on a program ``torch.export`` accepted (e.g.
    scaled_dot_product_attention followed by ``.view(-1, C)``: the decomposition's strides
    forbid the view). Then the ops whose decomposition is to blame are found (bisection over
    the graph's op kinds) and kept whole; if that does not help, the program is imported
    undecomposed. Returns the program and notes saying what was kept whole and why."""
    supported = ExportedProgramImporter().convert_map
    table = torch.export.default_decompositions()
    kept: set = set()
    for node in ep.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op != "call_function" or schema is None or node.target not in table:
            continue
        linalg = schema.name.startswith(_KEEP_WHOLE_PREFIXES)
        if (linalg and node.target.__name__ not in supported) or draws(node):
            kept.add(node.target)
    try:
        out = _run(ep, table, kept)
        notes: list[str] = []
    except Exception as err:  # torch's decomposition failed: keep its culprits whole
        out, notes = _decompose_around_failure(ep, table, kept, err)
    if any(n.target is torch.ops.higher_order.with_effects for n in out.graph.nodes):
        raise FallbackError(
            "the decomposed program threads effect tokens (with_effects), which TVM's importer "
            "cannot take; export with run_decompositions=False or keep the op whole"
        )
    return out, notes


def _run(ep, table: dict, kept: set) -> torch.export.ExportedProgram:
    """``run_decompositions`` with torch's own table (it also decomposes composite ops it
    does not list) minus the ``kept`` ops."""
    table = table.copy()
    for op in kept:
        table.pop(op, None)
    return ep.run_decompositions(table)


def _decompose_around_failure(ep, table: dict, kept: set, err: BaseException):
    first = first_line(err)
    candidates = sorted(
        {
            n.target
            for n in ep.graph.nodes
            if n.op == "call_function" and n.target in table and n.target not in kept
        },
        key=str,
    )

    def works(extra: set) -> torch.export.ExportedProgram | None:
        try:
            return _run(ep, table, kept | extra)
        except Exception:
            return None

    if works(set(candidates)) is None:
        logger.debug("run_decompositions fails even with every op kept whole: %s", first)
        return ep, [f"not decomposed: torch's run_decompositions failed ({first})"]
    blamed = set(minimal_subset(candidates, lambda ops: works(set(ops)) is not None))
    out = works(blamed)
    names = ", ".join(sorted(str(op) for op in blamed))
    logger.debug("run_decompositions failed (%s); keeping whole: %s", first, names)
    note = f"kept whole: {names}, because torch's run_decompositions failed ({first})"
    return out, [note]
