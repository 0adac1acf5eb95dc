"""Names of ops and dtypes, one home for each.

Place in the data flow: used by every stage that names an op (the frontend's records, options,
the deny-list, reports) or converts a dtype name between PyTorch and TVM.
"""

from __future__ import annotations

import torch

__all__ = [
    "RELAX_OFFLOAD_OPS",
    "dtype_name",
    "is_relax_op_name",
    "normalize_op_name",
    "op_key",
    "torch_dtype",
    "torch_op_exists",
]

# The Relax operators byoc_torch moves to LibTorch by name (``torch_executed_ops=
# ["relax.matmul"]``): Options checks names against this list, and
# byoc_torch.partition.relax_ops has one TorchScript converter for each (checked on import).
RELAX_OFFLOAD_OPS = (
    "relax.matmul",
    "relax.nn.conv1d",
    "relax.nn.conv2d",
    "relax.nn.conv3d",
    "relax.nn.softmax",
    "relax.nn.log_softmax",
    "relax.nn.layer_norm",
    "relax.nn.group_norm",
    "relax.nn.relu",
    "relax.nn.gelu",
    "relax.nn.gelu_tanh",
    "relax.nn.silu",
    "relax.permute_dims",
    "relax.add",
    "relax.subtract",
    "relax.multiply",
    "relax.divide",
    "relax.power",
    "relax.maximum",
    "relax.minimum",
    "relax.exp",
    "relax.log",
    "relax.sqrt",
    "relax.rsqrt",
    "relax.tanh",
    "relax.sigmoid",
    "relax.sin",
    "relax.cos",
    "relax.abs",
    "relax.negative",
    "relax.erf",
    "relax.floor",
    "relax.ceil",
)


def is_relax_op_name(name: str) -> bool:
    """True when ``name`` names a Relax operator (rather than an ATen one)."""
    return name.startswith("relax.")


def op_key(target: object) -> str:
    """The name reports and options use for an FX node's target.

    ``aten.erfinv.default`` for ``torch.ops.aten.erfinv.default`` (namespace, op, overload),
    ``aten.erfinv`` for the packet ``torch.ops.aten.erfinv``, ``higher_order.cond`` for
    ``torch.ops.higher_order.cond``, and the function's name for a Python callable
    (``getitem`` for ``operator.getitem``).
    """
    schema = getattr(target, "_schema", None)
    if schema is not None:  # OpOverload
        ns, _, base = schema.name.partition("::")
        return f"{ns}.{base}.{schema.overload_name or 'default'}"
    qualified = getattr(target, "_qualified_op_name", None)  # OpOverloadPacket
    if isinstance(qualified, str):
        return qualified.replace("::", ".")
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target))


def normalize_op_name(op: object) -> str:
    """An op as an option names it: ``"aten.tanh"``, ``"aten.tanh.default"``,
    ``"aten::tanh"``, ``"torch.ops.aten.tanh"`` or the op object, as ``"aten.tanh"`` (every
    overload) or ``"aten.tanh.default"`` (one); a Relax ``tvm.ir.Op`` as its name
    (``"relax.matmul"``)."""
    if isinstance(op, str):
        name = op.strip()
        if name.startswith("torch.ops."):
            name = name[len("torch.ops.") :]
        return name.replace("::", ".")
    if type(op).__name__ == "Op" and type(op).__module__.startswith("tvm."):  # tvm.ir.Op
        return str(op.name)  # "relax.matmul"
    if getattr(op, "_schema", None) is None and getattr(op, "_qualified_op_name", None) is None:
        raise ValueError(
            f"torch_executed_ops: cannot interpret a {type(op).__name__} as an operator; give "
            "a name ('aten.tanh', 'relax.matmul'), a torch.ops op or a tvm.ir.Op"
        )
    return op_key(op)


def torch_op_exists(name: str) -> bool:
    """True when ``name`` (``"aten.tanh"``, ``"aten.tanh.default"``, ``"mylib.op"``,
    ``"higher_order.cond"``) names an operator this process has registered with PyTorch."""
    parts = name.split(".")
    if len(parts) not in (2, 3) or not all(parts):
        return False
    try:
        packet = getattr(getattr(torch.ops, parts[0]), parts[1])
    except (AttributeError, RuntimeError):
        return False
    if len(parts) == 2:
        return True
    overloads = getattr(packet, "overloads", None)
    return overloads is not None and parts[2] in overloads()


def dtype_name(dtype: torch.dtype) -> str:
    """TVM's name for a torch dtype (``float32`` for ``torch.float32``)."""
    return str(dtype).removeprefix("torch.")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype TVM names ``name``."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"no torch dtype is called {name!r}")
    return dtype
