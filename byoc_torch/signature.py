"""What a compiled model takes and returns: its :class:`Signature`, stored inside artifacts.

Place in the data flow: the driver derives the signature from the ExportedProgram; it travels
inside the torch runtime module's metadata of the exported artifact; the compiled model reads
it to check inputs and to rebuild the output nesting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from torch.utils import _pytree as pytree

from .errors import ArtifactError
from .threads import check_num_threads

__all__ = [
    "InputSpec",
    "Signature",
    "count_leaves",
    "is_plain_leaf",
    "output_structure",
    "unflatten",
]

SIGNATURE_VERSION = 1


@dataclass(frozen=True)
class InputSpec:
    """One user input: its name, dtype and dims (an int, or a symbol name for a dynamic dim)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class Signature:
    """What a compiled model takes and returns; stored inside the exported artifact."""

    inputs: tuple[InputSpec, ...]
    outputs: dict  # nesting of the outputs, see output_structure()
    device: str = "cpu"
    report: dict | None = None  # Report.to_dict() of the compile that made the artifact
    # Options.num_threads, applied again on load; None (also for artifacts written before
    # the field existed) = the cores available (byoc_torch.threads).
    num_threads: int | None = None
    # The range torch.export allows each dynamic dim's symbol: name -> (min, max), max None
    # when unbounded. A call outside it raises InputError (the compiled code assumes it).
    ranges: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    # Operators outside aten the LibTorch subgraphs call (``mylib::scale``): loading needs
    # them registered (the runtime names a missing one).
    foreign_ops: tuple[str, ...] = ()

    @property
    def op_namespaces(self) -> tuple[str, ...]:
        """The operator namespaces (other than aten) the artifact needs, sorted."""
        return tuple(sorted({op.partition("::")[0] for op in self.foreign_ops}))

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": SIGNATURE_VERSION,
                "inputs": [
                    {"name": i.name, "dtype": i.dtype, "shape": list(i.shape)} for i in self.inputs
                ],
                "outputs": self.outputs,
                "device": self.device,
                "report": self.report,
                "num_threads": self.num_threads,
                "ranges": {k: list(v) for k, v in sorted(self.ranges.items())},
                "foreign_ops": list(self.foreign_ops),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Signature:
        try:
            data = json.loads(text)
            if data.get("version") != SIGNATURE_VERSION:
                raise ValueError(f"signature version {data.get('version')}")
            inputs = tuple(
                InputSpec(str(i["name"]), str(i["dtype"]), tuple(i["shape"]))
                for i in data["inputs"]
            )
            outputs = data["outputs"]
            count_leaves(outputs)  # validates the nesting
            num_threads = check_num_threads(data.get("num_threads"), "the stored num_threads")
            device = str(data.get("device", "cpu"))
            ranges = {
                str(k): (int(lo), None if hi is None else int(hi))
                for k, (lo, hi) in data.get("ranges", {}).items()
            }
            foreign = tuple(str(op) for op in data.get("foreign_ops", []))
            return cls(inputs, outputs, device, data.get("report"), num_threads, ranges, foreign)
        except (ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"byoc_torch artifact has an unreadable signature: {err}") from err


def output_structure(spec: pytree.TreeSpec, leaves: list[dict] | None = None) -> dict:
    """The nesting of a model's outputs as plain JSON: a leaf (one tensor; ``"complex"`` names
    the dtype of a complex one, which crosses as its real view; ``"item"`` marks a Python
    number read from a tensor, which crosses as that tensor), a constant (``{"t": "const",
    "v": value}``, e.g. ``None`` or a shape's int), a tuple, a list or a dict of those. Named
    tuples (e.g. torch.return_types) come back as plain tuples. ``leaves`` gives the leaf
    descriptions in order (default: every leaf a real tensor)."""
    it = iter(leaves) if leaves is not None else None

    def visit(s: pytree.TreeSpec) -> dict:
        if s.is_leaf():
            return dict(next(it)) if it is not None else {"t": "leaf"}
        children = [visit(c) for c in s.children()]
        if s.type is dict:
            return {"t": "dict", "k": [str(k) for k in s.context], "c": children}
        if s.type is list:
            return {"t": "list", "c": children}
        return {"t": "tuple", "c": children}

    return visit(spec)


def is_plain_leaf(node: dict) -> bool:
    """Is ``node`` one real tensor returned as it comes out of the VM?"""
    return node == {"t": "leaf"}


def count_leaves(node: dict) -> int:
    """How many tensors the VM returns for ``node`` (constants are stored, not returned)."""
    kind = node["t"]
    if kind == "leaf":
        return 1
    if kind == "const":
        return 0
    if kind not in ("tuple", "list", "dict"):
        raise ValueError(f"unknown output kind {kind!r}")
    return sum(count_leaves(c) for c in node["c"])


def unflatten(leaves, node: dict):
    kind = node["t"]
    if kind == "leaf":
        value = next(leaves)
        if "complex" in node:
            return torch.view_as_complex(value)
        return value.item() if "item" in node else value
    if kind == "const":
        return node["v"]
    children = [unflatten(leaves, c) for c in node["c"]]
    if kind == "dict":
        return dict(zip(node["k"], children, strict=True))
    return children if kind == "list" else tuple(children)
