"""Shrinking a set that makes something work down to a small one (delta debugging).

Place in the data flow: used where a stage knows a set of suspects that together fix a
failure and wants the few that matter: verification (the nodes that must move to LibTorch for
the outputs to agree, :func:`byoc_torch.verify.minimal_blame`) and the decomposition (the ops
to keep whole when torch's ``run_decompositions`` fails, :mod:`byoc_torch.frontend.decompose`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["minimal_subset"]

T = TypeVar("T")


def minimal_subset(items: Sequence[T], works: Callable[[list[T]], bool]) -> list[T]:
    """A subset of ``items`` (in their order) with which ``works`` holds, given that it holds
    with all of them: halves not needed are dropped, recursively, so one culprit among N costs
    about 2*log2(N) calls of ``works``, and no single item of the result can be dropped alone
    when the culprits do not interact."""
    needed = list(items)

    def shrink(group: list[T]) -> None:
        nonlocal needed
        if not group:
            return
        rest = [x for x in needed if x not in group]
        if works(rest):
            needed = rest
            return
        if len(group) == 1:
            return
        mid = len(group) // 2
        shrink(group[:mid])
        shrink([x for x in group[mid:] if x in needed])

    shrink(list(items))
    return needed
