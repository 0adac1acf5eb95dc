"""What a compiled model takes and returns: its :class:`Signature`, stored inside artifacts.

Place in the data flow: the driver derives the signature from the ExportedProgram; it travels
inside the torch runtime module's metadata of the exported artifact; the compiled model reads
it to check inputs and to rebuild the output nesting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from torch.utils import _pytree as pytree

from .errors import ArtifactError
from .threads import check_num_threads

__all__ = ["InputSpec", "Signature", "count_leaves", "output_structure", "unflatten"]

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
            return cls(inputs, outputs, device, data.get("report"), num_threads)
        except (ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"byoc_torch artifact has an unreadable signature: {err}") from err


def output_structure(spec: pytree.TreeSpec) -> dict:
    """The nesting of a model's outputs as plain JSON: a leaf (one tensor), a tuple, a list or
    a dict of those. Named tuples (e.g. torch.return_types) come back as plain tuples."""
    if spec.is_leaf():
        return {"t": "leaf"}
    children = [output_structure(c) for c in spec.children_specs]
    if spec.type is dict:
        return {"t": "dict", "k": [str(k) for k in spec.context], "c": children}
    if spec.type is list:
        return {"t": "list", "c": children}
    return {"t": "tuple", "c": children}


def count_leaves(node: dict) -> int:
    kind = node["t"]
    if kind == "leaf":
        return 1
    if kind not in ("tuple", "list", "dict"):
        raise ValueError(f"unknown output kind {kind!r}")
    return sum(count_leaves(c) for c in node["c"])


def unflatten(leaves, node: dict):
    kind = node["t"]
    if kind == "leaf":
        return next(leaves)
    children = [unflatten(leaves, c) for c in node["c"]]
    if kind == "dict":
        return dict(zip(node["k"], children, strict=True))
    return children if kind == "list" else tuple(children)
