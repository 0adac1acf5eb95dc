"""Why a node runs in LibTorch: the :class:`Reason` enum and :class:`FallbackRecord`.

Place in the data flow: the frontend, verification and the driver create records; the report,
the compiled model and errors read them. Kept apart from the compiler so that loading an
artifact (which carries its records) does not import it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["FallbackRecord", "Reason"]


class Reason(enum.StrEnum):
    """Every reason a node runs in LibTorch. The values are the texts reports show."""

    UNSUPPORTED = "unsupported by TVM's importer"
    CONVERTER = "TVM's converter raised"
    WRONG_TYPE = "TVM's conversion has the wrong type"
    FORCED_OP = "forced op (torch_executed_ops)"
    FORCED_NODE = "forced node (torch_executed_nodes)"
    FORCED_MODULE = "forced module (torch_executed_modules)"
    COMPLEX = "uses a complex value, which TVM cannot hold"
    RANDOM = "random op: draws from PyTorch's generator"
    MIN_BLOCK = "absorbed by min_block_size"
    DENY_LIST = "known TVM defect (deny-list)"
    DIFFERS = "TVM result differs from PyTorch"
    BUILD = "TVM build failed"
    IN_MODULE = "torchop in module"
    PLACEMENT = "placed in LibTorch by measured placement"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> Reason | str:
        """The member whose text is ``text`` (reports loaded from JSON), else the text."""
        try:
            return cls(text)
        except ValueError:
            return text


@dataclass(frozen=True)
class FallbackRecord:
    """Why one FX node runs in LibTorch."""

    node: str
    op: str
    reason: Reason
    detail: str = ""
