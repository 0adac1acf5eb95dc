"""What a compiled model takes and returns: its :class:`Signature`, stored inside artifacts.

Place in the data flow: the driver derives the signature from the ExportedProgram; it travels
inside the torch runtime module's metadata of the exported artifact; the compiled model reads
it to check inputs and to rebuild the output nesting.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import enum
import functools
import io
import json
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch.utils import _pytree as pytree

from .errors import ArtifactError, InputError, InputTypeError
from .threads import check_num_threads

__all__ = [
    "EnumMember",
    "InputSpec",
    "InputTree",
    "Signature",
    "affine_dim",
    "count_leaves",
    "is_plain_leaf",
    "output_structure",
    "unflatten",
]

# The Python scalars torch.export specializes that an artifact can store (JSON values), and
# enum members (stored as their class's qualified name and the member's name).
CONSTANT_TYPES = (bool, int, float, str, type(None))


class EnumMember(NamedTuple):
    """An enum member input as an artifact stores it: its class (``module.QualName``) and its
    name. A call's member is the same when both match (the class is not imported on load)."""

    cls: str
    name: str

    @classmethod
    def of(cls, value: enum.Enum) -> EnumMember:
        kind = type(value)
        return cls(f"{kind.__module__}.{kind.__qualname__}", value.name)

    def __repr__(self) -> str:
        return f"{self.cls.rpartition('.')[2]}.{self.name}"


def _constant_key(value: object) -> tuple:
    """What makes two specialized inputs the same value: the type and the value (1, 1.0 and
    True differ), an enum member's class and name."""
    if isinstance(value, enum.Enum):
        value = EnumMember.of(value)
    if isinstance(value, EnumMember):
        return (EnumMember, value.cls, value.name)
    return (type(value), value)


def constant_repr(value: object) -> str:
    """A specialized input's value as messages show it (``'cos'``, ``Mode.COS``)."""
    if isinstance(value, enum.Enum):
        return repr(EnumMember.of(value))
    return repr(value)


SIGNATURE_VERSION = 1


@dataclass(frozen=True)
class InputSpec:
    """One user input: its name, dtype and dims (an int, or a symbol name for a dynamic dim)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class InputTree:
    """How a call's ``(args, kwargs)`` map to the executable's tensor inputs.

    ``spec`` is torch's pytree spec of ``(args, kwargs)`` as the model was exported
    (``treespec_dumps``); its leaves are, in order, the tensor inputs and the Python scalars
    torch.export specialized, the latter kept in ``constants`` as (leaf index, value).
    """

    spec: str
    paths: tuple[str, ...]  # each leaf's place, e.g. "args[0]['a']", "kwargs['y']"
    constants: tuple[tuple[int, object], ...] = ()

    @classmethod
    def of(cls, args: tuple, kwargs: dict) -> InputTree:
        """The tree of example inputs ``args``/``kwargs`` (tensors and Python scalars)."""
        import torch

        with_paths, spec = pytree.tree_flatten_with_path((tuple(args), dict(kwargs)))
        constants = []
        for k, (path, leaf) in enumerate(with_paths):
            if isinstance(leaf, torch.Tensor):
                continue
            if not isinstance(leaf, (*CONSTANT_TYPES, enum.Enum)):
                raise InputTypeError(
                    f"byoc_torch.compile: input {_leaf_name(path)} is a {type(leaf).__name__}; "
                    "inputs are tensors, containers of them (tuple, list, dict), Python "
                    "scalars (bool, int, float, str, None) and enum members"
                )
            constants.append((k, leaf))
        try:
            dumped = pytree.treespec_dumps(spec)
        except Exception as err:  # a container type torch's pytree cannot serialize
            raise InputTypeError(
                f"byoc_torch.compile: the inputs' structure {spec} cannot be stored: {err}"
            ) from err
        paths = tuple(_leaf_name(path) for path, _ in with_paths)
        return cls(dumped, paths, tuple(constants))

    @functools.cached_property
    def treespec(self) -> pytree.TreeSpec:
        return pytree.treespec_loads(self.spec)

    @functools.cached_property
    def _constant_at(self) -> dict[int, object]:
        return dict(self.constants)

    def tensors(self, args: tuple, kwargs: dict) -> list:
        """The tensor leaves of a call's inputs, in the executable's order; InputTypeError for
        another structure, InputError for a specialized scalar with another value."""
        want = self.treespec
        kwarg_spec = want.child(1)
        keys = list(kwarg_spec.context)
        if kwargs.keys() != set(keys):
            raise InputTypeError(
                f"byoc_torch: the compiled model takes keyword input(s) {keys or 'none'}, got "
                f"{sorted(kwargs) or 'none'}"
            )
        kwargs = {k: kwargs[k] for k in keys}  # torch's spec keeps the example's key order
        leaves, got = pytree.tree_flatten((tuple(args), kwargs))
        if got != want:
            flat = pytree.tree_flatten_with_path((tuple(args), kwargs))[0]
            paths = tuple(_leaf_name(path) for path, _ in flat)
            detail = f"{', '.join(paths) or 'no inputs'}"
            if paths == self.paths:  # same places, other container types
                detail += f" (nested as {_nesting(got)}, expected {_nesting(want)})"
            raise InputTypeError(
                "byoc_torch: the inputs are nested differently from the example inputs the "
                f"model was compiled with: expected {', '.join(self.paths)}; got {detail}"
            )
        constant_at = self._constant_at
        if not constant_at:
            return leaves
        tensors = []
        for k, leaf in enumerate(leaves):
            if k not in constant_at:
                tensors.append(leaf)
                continue
            value = constant_at[k]
            if _constant_key(leaf) != _constant_key(value):
                kind = "enum members" if _constant_key(value)[0] is EnumMember else "Python scalars"
                raise InputError(
                    f"byoc_torch: input {self.paths[k]} is {constant_repr(leaf)}, but the model "
                    f"was compiled with {self.paths[k]}={constant_repr(value)} (torch.export "
                    f"specializes {kind}); compile again with this value, or pass it as a tensor"
                )
        return tensors

    def unflatten(self, tensors) -> tuple[tuple, dict]:
        """The ``(args, kwargs)`` whose tensor leaves are ``tensors`` (``tensors``' inverse)."""
        constant_at = self._constant_at
        it = iter(tensors)
        leaves = [constant_at[k] if k in constant_at else next(it) for k in range(len(self.paths))]
        return pytree.tree_unflatten(leaves, self.treespec)

    def to_dict(self) -> dict:
        constants = [
            [k, {"enum": list(EnumMember.of(v))} if isinstance(v, enum.Enum) else v]
            for k, v in self.constants
        ]
        return {"spec": self.spec, "paths": list(self.paths), "constants": constants}

    @classmethod
    def from_dict(cls, data: dict) -> InputTree:
        tree = cls(
            str(data["spec"]),
            tuple(str(p) for p in data["paths"]),
            tuple((int(k), _stored_constant(v)) for k, v in data["constants"]),
        )
        try:
            spec = tree.treespec
        except Exception as err:  # torch's own reader raises several types
            raise ValueError(f"stored input structure is unreadable: {err}") from err
        args_and_kwargs = spec.type is tuple and spec.num_children == 2
        if not args_and_kwargs or spec.child(1).type is not dict:
            raise ValueError("stored input structure is not (args, kwargs)")
        if spec.num_leaves != len(tree.paths):
            raise ValueError(
                f"stored input structure has {spec.num_leaves} leaves, {len(tree.paths)} paths"
            )
        for k, v in tree.constants:
            if not 0 <= k < len(tree.paths) or not isinstance(v, (*CONSTANT_TYPES, EnumMember)):
                raise ValueError(f"stored input constant {k}={v!r} is not a leaf's scalar")
        return tree


def _stored_constant(value: object) -> object:
    """A constant as :meth:`InputTree.to_dict` stored it (an enum member as ``{"enum": [class,
    name]}``)."""
    if isinstance(value, dict):
        cls, name = value["enum"]
        return EnumMember(str(cls), str(name))
    return value


def _nesting(spec: pytree.TreeSpec) -> str:
    """A pytree spec in Python's notation, ``*`` for a leaf: ``(([*, *], {'a': *}), {})``."""
    if spec.is_leaf():
        return "*"
    children = [_nesting(c) for c in spec.children()]
    if spec.type is dict:
        return (
            "{"
            + ", ".join(f"{k!r}: {c}" for k, c in zip(spec.context, children, strict=True))
            + "}"
        )
    if spec.type is list:
        return "[" + ", ".join(children) + "]"
    if spec.type is tuple:
        return (
            "("
            + "".join(f"{c}, " for c in children).removesuffix(", ")
            + ("," if len(children) == 1 else "")
            + ")"
        )
    return f"{spec.type.__name__}({', '.join(children)})"


def _leaf_name(path) -> str:
    """``args[0]['a']`` / ``kwargs['y']`` for a leaf's pytree path in ``(args, kwargs)``."""
    head, *rest = path
    root = "args" if getattr(head, "idx", 0) == 0 else "kwargs"
    return root + pytree.keystr(tuple(rest))


@dataclass(frozen=True)
class Signature:
    """What a compiled model takes and returns; stored inside the exported artifact."""

    inputs: tuple[InputSpec, ...]
    outputs: dict  # nesting of the outputs, see output_structure()
    device: str = "cpu"
    report: dict | None = None  # Report.to_dict() of the compile that made the artifact
    # Options.num_threads, applied again on load; None (also for artifacts written before
    # the field existed) = the default budget (byoc_torch.threads.default_threads).
    num_threads: int | None = None
    # None: the inputs are the flat positional tensors ``inputs`` (no pytrees, no kwargs).
    input_tree: InputTree | None = None
    # dtype and shape of each output leaf; a dim is an int or an expression of the input
    # symbols (e.g. "2*s0"). None for artifacts written before the field existed.
    output_specs: tuple[InputSpec, ...] | None = None
    # The range torch.export allows each dynamic dim's symbol: name -> (min, max), max None
    # when unbounded. A call outside it raises InputError (the compiled code assumes it).
    ranges: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    # Operators outside aten the LibTorch subgraphs call (``mylib::scale``): loading needs
    # them registered (the runtime names a missing one).
    foreign_ops: tuple[str, ...] = ()
    # The tensor inputs the model updates in place (``x.mul_(2)``), by position: the compiled
    # program returns their new values after its outputs, and the call copies them into the
    # caller's tensors, as ``ep.module()`` does.
    mutations: tuple[int, ...] = ()
    # What the TVM kernels need of a CPU: {"mcpu": name, "features": [...]}
    # (byoc_torch.cpu.requirements); None for other targets and older artifacts.
    cpu: dict | None = None
    # The buffers the model updates in place (``self.calls.add_(1)``), by name: the last
    # inputs, which the compiled model holds and passes itself (``mutations`` lists them).
    state: tuple[str, ...] = ()
    # Their values when the artifact was written (torch.save, base64), one per ``state``;
    # empty in the signature of a compile (the model's own tensors are the state then).
    state_values: tuple[str, ...] = ()

    def with_state(self, tensors) -> Signature:
        """This signature carrying ``tensors`` as the state's values (what an artifact
        stores)."""
        return dataclasses.replace(self, state_values=tuple(encode_tensor(t) for t in tensors))

    def stored_state(self) -> list[torch.Tensor]:
        """The state's values the artifact stores (ArtifactError when it stores none)."""
        if len(self.state_values) != len(self.state):
            raise ArtifactError(
                f"byoc_torch artifact holds the state of buffer(s) {list(self.state)} without "
                "their values"
            )
        pairs = zip(self.state, self.state_values, strict=True)
        return [decode_tensor(text, name) for name, text in pairs]

    @functools.cached_property
    def derived(self) -> dict[str, tuple[str, int, int]]:
        """The input dims that are affine in another input symbol (torch.export's derived
        dims, ``Dim("n") + 2`` printed ``"s77 + 2"``): dim text -> (that symbol, a, b), the
        dim being a * symbol + b. Checked at call, so that inconsistent sizes are an
        InputError, not TVM's shape assertion. Written into the JSON for the C++ checks."""
        plain = {d for spec in self.inputs for d in spec.shape if isinstance(d, str)}
        found = {}
        for dim in sorted(plain):
            form = affine_dim(dim)
            if form is not None and form[0] != dim and form[0] in plain:
                found[dim] = form
        return found

    @property
    def op_namespaces(self) -> tuple[str, ...]:
        """The operator namespaces (other than aten) the artifact needs, sorted."""
        return tuple(sorted({op.partition("::")[0] for op in self.foreign_ops}))

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": SIGNATURE_VERSION,
                "inputs": [_spec_dict(i) for i in self.inputs],
                "outputs": self.outputs,
                "device": self.device,
                "report": self.report,
                "num_threads": self.num_threads,
                "input_tree": self.input_tree.to_dict() if self.input_tree else None,
                "output_specs": None
                if self.output_specs is None
                else [_spec_dict(o) for o in self.output_specs],
                "ranges": {k: list(v) for k, v in sorted(self.ranges.items())},
                "derived": {k: list(v) for k, v in self.derived.items()},
                "foreign_ops": list(self.foreign_ops),
                "mutations": list(self.mutations),
                "cpu": self.cpu,
                "state": list(self.state),
                "state_values": list(self.state_values),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Signature:
        try:
            data = json.loads(text)
            if data.get("version") != SIGNATURE_VERSION:
                raise ValueError(f"signature version {data.get('version')}")
            inputs = tuple(_spec_of(i) for i in data["inputs"])
            tree = data.get("input_tree")
            input_tree = InputTree.from_dict(tree) if tree is not None else None
            stored = data.get("output_specs")
            output_specs = tuple(_spec_of(o) for o in stored) if stored is not None else None
            outputs = data["outputs"]
            count_leaves(outputs)  # validates the nesting
            num_threads = check_num_threads(data.get("num_threads"), "the stored num_threads")
            device = str(data.get("device", "cpu"))
            ranges = {
                str(k): (int(lo), None if hi is None else int(hi))
                for k, (lo, hi) in data.get("ranges", {}).items()
            }
            foreign = tuple(str(op) for op in data.get("foreign_ops", []))
            mutations = tuple(int(k) for k in data.get("mutations", []))
            if any(not 0 <= k < len(inputs) for k in mutations):
                raise ValueError(f"mutated inputs {list(mutations)} out of range")
            cpu = data.get("cpu")
            if cpu is not None:
                cpu = {"mcpu": str(cpu["mcpu"]), "features": [str(f) for f in cpu["features"]]}
            state = tuple(str(name) for name in data.get("state", []))
            values = tuple(str(v) for v in data.get("state_values", []))
            if len(state) > len(inputs) or (values and len(values) != len(state)):
                raise ValueError(f"state {list(state)} does not match its inputs and values")
            stateful = range(len(inputs) - len(state), len(inputs))
            if any(k not in mutations for k in stateful):
                raise ValueError(f"state {list(state)} is not among the updated inputs")
            return cls(
                inputs,
                outputs,
                device,
                data.get("report"),
                num_threads,
                input_tree,
                output_specs,
                ranges,
                foreign,
                mutations,
                cpu,
                state,
                values,
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"byoc_torch artifact has an unreadable signature: {err}") from err


def affine_dim(text: str) -> tuple[str, int, int] | None:
    """``(symbol, a, b)`` when the dim ``text`` is ``a * symbol + b`` (integers a != 0 and b,
    one symbol: ``"s0"``, ``"s0 + 2"``, ``"2*s0 - 1"``), else None."""
    try:
        terms = _linear(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError):
        return None
    names = [k for k, v in terms.items() if k and v]
    if len(names) != 1:
        return None
    return names[0], terms[names[0]], terms.get("", 0)


def _linear(node: ast.AST) -> dict[str, int]:
    """An integer-linear expression as {symbol: coefficient, "": constant}."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return {"": node.value}
    if isinstance(node, ast.Name):
        return {node.id: 1}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return {k: -v for k, v in _linear(node.operand).items()}
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        left, right = _linear(node.left), _linear(node.right)
        sign = 1 if isinstance(node.op, ast.Add) else -1
        return {k: left.get(k, 0) + sign * right.get(k, 0) for k in {*left, *right}}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _linear(node.left), _linear(node.right)
        for scale, other in ((left, right), (right, left)):
            if set(scale) == {""}:
                return {k: scale[""] * v for k, v in other.items()}
    raise ValueError("not integer-linear")


def encode_tensor(tensor: torch.Tensor) -> str:
    """``tensor`` (detached, on the CPU) as torch.save bytes in base64."""
    buffer = io.BytesIO()
    torch.save(tensor.detach().cpu().clone(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_tensor(text: str, name: str) -> torch.Tensor:
    """:func:`encode_tensor`'s inverse (tensors only: ``weights_only``)."""
    try:
        value = torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)
    except Exception as err:
        raise ArtifactError(
            f"byoc_torch artifact: the stored value of {name} is unreadable"
        ) from err
    if not isinstance(value, torch.Tensor):
        raise ArtifactError(f"byoc_torch artifact: the stored value of {name} is no tensor")
    return value


def _spec_dict(spec: InputSpec) -> dict:
    return {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape)}


def _spec_of(data: dict) -> InputSpec:
    shape = tuple(d if isinstance(d, int) else str(d) for d in data["shape"])
    return InputSpec(str(data["name"]), str(data["dtype"]), shape)


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
