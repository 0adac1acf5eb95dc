"""The deny-list: TVM conversions known to be wrong or unbuildable, shipped with the package.

Place in the data flow: consulted by the frontend (``byoc_torch.frontend``) for every node TVM
could convert, with or without verification (``verify=False`` must not mean known-wrong
answers). A match goes to LibTorch at once (reason "known TVM defect (deny-list)"), so
compiles skip the verification rounds for known cases; verification still runs for everything
else. The list is ``deny_list.json`` beside this file, versioned and tied to the TVM release it
was found with (its ``"tvm"`` field): under another TVM release the entries still apply
(LibTorch is right either way) and a warning asks to re-check them with the sweep.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import tvm
from torch import fx

from ..names import op_key

__all__ = ["DENY_LIST_VERSION", "check_tvm_version", "deny_list_match", "load_deny_list"]

DENY_LIST_VERSION = 1
_PATH = Path(__file__).with_name("deny_list.json")


@functools.cache
def load_deny_list() -> dict[str, list[dict]]:
    """Entries by op key (``aten.sub.Tensor``); raises ValueError on an unknown version."""
    data = json.loads(_PATH.read_text())
    if data.get("version") != DENY_LIST_VERSION:
        raise ValueError(
            f"{_PATH}: deny-list version {data.get('version')}, expected {DENY_LIST_VERSION}"
        )
    check_tvm_version(data.get("tvm"))
    by_op: dict[str, list[dict]] = {}
    for entry in data["entries"]:
        by_op.setdefault(entry["op"], []).append(entry)
    return by_op


def check_tvm_version(found_with: object, running: str | None = None) -> bool:
    """Is the deny-list's TVM release the one running? Raises ValueError when the field is
    missing; warns (once per process, as :func:`load_deny_list` is cached) when it differs."""
    if not isinstance(found_with, str) or not found_with:
        raise ValueError(f"{_PATH}: the deny-list names no TVM release (field 'tvm')")
    running = tvm.__version__ if running is None else running
    if found_with == running:
        return True
    warnings.warn(
        f"byoc_torch deny-list was made with TVM {found_with}, this is TVM {running}: its "
        "entries still send those ops to LibTorch; re-check them (python -m benchmarks.sweep)",
        stacklevel=2,
    )
    return False


def _arguments(node: fx.Node) -> dict[str, object]:
    """The node's arguments by schema name, with schema defaults for the missing ones."""
    schema = node.target._schema
    values: dict[str, object] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args) and not arg.kwarg_only:
            values[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            values[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            values[arg.name] = arg.default_value
    return values


def _holds(value: object, condition: dict) -> bool:
    if "not" in condition:
        return value != condition["not"]
    if "is_not_none" in condition:
        return (value is not None) == bool(condition["is_not_none"])
    raise ValueError(f"deny-list: unknown condition {condition}")


def deny_list_match(node: fx.Node) -> str | None:
    """The reason a node's TVM conversion is known to be wrong, or None."""
    if getattr(node.target, "_schema", None) is None:
        return None
    entries = load_deny_list().get(op_key(node.target))
    if not entries:
        return None
    args = _arguments(node)
    for entry in entries:
        if all(_holds(args.get(name), cond) for name, cond in entry["when"].items()):
            return f"{entry['reason']} (deny-list v{DENY_LIST_VERSION})"
    return None
