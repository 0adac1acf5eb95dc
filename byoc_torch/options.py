"""Options shared by every byoc_torch stage, in one small dataclass.

Place in the data flow: built once from the keyword arguments of ``compile``,
``from_exported_program`` or ``partition_for_torch``, and handed to each stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields

__all__ = ["Options"]


def _normalize_op(op: object) -> str:
    """``"aten.tanh"``, ``"aten.tanh.default"`` or ``torch.ops.aten.tanh[.default]`` ->
    ``"aten.tanh"`` or ``"aten.tanh.default"`` (packet or overload)."""
    if isinstance(op, str):
        name = op.strip()
        if name.startswith("torch.ops."):
            name = name[len("torch.ops.") :]
        return name.replace("::", ".")
    schema = getattr(op, "_schema", None)
    if schema is not None:  # OpOverload
        ns, _, base = schema.name.partition("::")
        return f"{ns}.{base}.{schema.overload_name or 'default'}"
    qualified = getattr(op, "_qualified_op_name", None)  # OpOverloadPacket
    if qualified is not None:
        return qualified.replace("::", ".")
    raise ValueError(f"torch_executed_ops: cannot interpret {op!r} as an ATen operator")


@dataclass(frozen=True)
class Options:
    """Options of byoc_torch.

    Attributes:
        torch_executed_ops: ATen ops forced to LibTorch even when TVM supports them. Each entry
            may be ``"aten.tanh"`` (every overload), ``"aten.tanh.default"`` (one overload) or
            the op object (``torch.ops.aten.tanh`` / ``torch.ops.aten.tanh.default``).
            Default: none.
        run_decompositions: decompose the ExportedProgram to core ATen first, as TVM's own
            importer does by default. Default: True.
        keep_params_as_input: keep parameters as function inputs instead of binding them as
            constants, as in TVM's importer. Default: False.
    """

    torch_executed_ops: tuple[str, ...] = ()
    run_decompositions: bool = True
    keep_params_as_input: bool = False
    _forced: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        ops = self.torch_executed_ops
        if isinstance(ops, str) or not isinstance(ops, Iterable):
            ops = (ops,)
        normalized = tuple(_normalize_op(o) for o in ops)
        object.__setattr__(self, "torch_executed_ops", normalized)
        object.__setattr__(self, "_forced", frozenset(normalized))

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> Options:
        """Build Options from keyword arguments; unknown names are an error that lists the
        valid ones."""
        valid = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise TypeError(
                f"unknown byoc_torch option(s) {unknown}; valid options: {sorted(valid)}"
            )
        return cls(**kwargs)

    def is_forced_op(self, target: object) -> bool:
        """True when ``torch_executed_ops`` names this op overload or its packet."""
        if not self._forced:
            return False
        try:
            full = _normalize_op(target)
        except ValueError:
            return False
        packet = full.rsplit(".", 1)[0]
        return full in self._forced or packet in self._forced
