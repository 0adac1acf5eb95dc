"""The deny-list: TVM conversions known to be wrong or unbuildable, shipped with the package.

Place in the data flow: consulted by the frontend (``byoc_torch.frontend``) for every node TVM
could convert, when verification is on. A match goes to LibTorch at once (reason "known TVM
defect (deny-list)"), so compiles skip the verification rounds for known cases; verification
still runs for everything else. The list is ``deny_list.json`` beside this file, versioned
and tied to the TVM release it was found with.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from torch import fx

from ..names import op_key

__all__ = ["DENY_LIST_VERSION", "deny_list_match", "load_deny_list"]

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
    by_op: dict[str, list[dict]] = {}
    for entry in data["entries"]:
        by_op.setdefault(entry["op"], []).append(entry)
    return by_op


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
