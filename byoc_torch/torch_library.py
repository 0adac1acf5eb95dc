"""A compiled model as PyTorch's tracers and serializers see it: one op on one object.

Place in the data flow: beside the compiled model. The C++ runtime (runtime/torch_class.cc)
registers the TorchScript class ``torch.classes.byoc_torch.Executable_import_byoc_torch_to_load``
(here :data:`CLASS_NAME`; the name is what PyTorch's error shows when a model holding one is
loaded without ``import byoc_torch``), which holds an artifact's sealed bytes (pickled by
``def_pickle``; its signature is read from the artifact, its one home), and the op
``torch.ops.byoc_torch.execute``.
This module adds what only Python can give them:

* the op's fake kernel: output shapes from the stored signature, the output dims being
  expressions of the input dims (symbolic sizes stay symbolic);
* the fake class of that class, which torch.export and torch.compile trace with;
* :func:`remember`: a compiled or loaded model hands its executable to the op's C++ kernel
  (``byoc_torch.RememberExecutable``), so the op runs it without loading its artifact again.

The op's kernel itself is C++ alone (runtime/executable.h): it verifies and loads the
artifact the object holds and runs it without Python, so a LibTorch process runs it too.

:class:`~byoc_torch.compiled.CompiledModule` makes its object with :func:`executable_object`
and calls the op whenever PyTorch traces it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import linecache
import operator

import torch

from .artifact_file import sealed_digest
from .errors import ArtifactError, ScriptError
from .names import torch_dtype
from .runtime import _ffi_api
from .signature import Signature, count_leaves

__all__ = [
    "artifact_of",
    "executable_object",
    "forward_source",
    "onednn_convolution_available",
    "remember",
    "scripted",
    "signature_of",
]

CLASS_NAME = "Executable_import_byoc_torch_to_load"  # runtime/torch_class.cc


def executable_object(artifact: bytes) -> torch.ScriptObject:
    """The TorchScript object holding ``artifact`` (an exported artifact's sealed bytes, whose
    runtime module stores the signature: the object reads it from there)."""
    data = torch.frombuffer(bytearray(artifact), dtype=torch.uint8)
    return getattr(torch.classes.byoc_torch, CLASS_NAME)(data)


def artifact_of(obj: torch.ScriptObject) -> bytes:
    """The artifact bytes an Executable holds."""
    (_, data), _ = obj.__getstate__()
    return data.numpy().tobytes()


def remember(artifact: bytes, executable) -> None:
    """Let the op run ``executable`` (a VM executable, built or loaded) for objects holding
    ``artifact``, its sealed bytes (an unsealed artifact is not remembered: the op refuses
    it)."""
    digest = sealed_digest(artifact)
    if digest is not None:
        _ffi_api.RememberExecutable(digest, getattr(executable, "mod", executable))


# -- tracing --------------------------------------------------------------------------------
@torch._library.register_fake_class(f"byoc_torch::{CLASS_NAME}")
class FakeExecutable:
    """What torch.export and torch.compile trace with: the signature, no executable."""

    def __init__(self, signature: str) -> None:
        self._signature = signature

    @classmethod
    def __obj_unflatten__(cls, flat) -> FakeExecutable:
        return cls(**dict(flat))

    def signature(self) -> str:
        return self._signature


def signature_of(obj) -> Signature:
    """The signature an Executable (real or fake) stores."""
    return _parse_signature(obj.signature())


@functools.lru_cache(maxsize=64)
def _parse_signature(text: str) -> Signature:
    return Signature.from_json(text)


@torch.library.register_fake("byoc_torch::execute")
def _execute_fake(executable, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    signature = signature_of(executable)
    if signature.output_specs is None:
        raise ArtifactError(
            "byoc_torch: this artifact predates stored output shapes; compile the model again "
            "to trace it"
        )
    sizes: dict[str, object] = {}
    for spec, x in zip(signature.inputs, inputs, strict=True):
        for dim, size in zip(spec.shape, x.shape, strict=True):
            if isinstance(dim, str) and dim.isidentifier():
                sizes.setdefault(dim, size)
    outputs = []
    for spec in signature.output_specs:
        shape = [_size(dim, sizes) for dim in spec.shape]
        outputs.append(torch.empty(shape, dtype=torch_dtype(spec.dtype), device=signature.device))
    return outputs


def onednn_convolution_available() -> bool:
    """Whether the runtime was built with oneDNN, so that ``torch.ops.byoc_torch.conv2d_onednn``
    (runtime/onednn_convolution.cc) exists."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("byoc_torch::conv2d_onednn", "CPU")


def _conv2d_onednn_fake(input, weight, bias, stride, padding, dilation, groups):
    """The op's output: (N, O, H', W') in channels-last order, as the kernel makes it."""
    sizes = [input.shape[0], weight.shape[0]]
    for k in range(2):
        span = dilation[k] * (weight.shape[2 + k] - 1) + 1
        sizes.append((input.shape[2 + k] + 2 * padding[k] - span) // stride[k] + 1)
    return input.new_empty(sizes).contiguous(memory_format=torch.channels_last)


if onednn_convolution_available():
    torch.library.register_fake("byoc_torch::conv2d_onednn")(_conv2d_onednn_fake)


# The panel multiply (runtime/linear_panels.cc): panels are (ceil(out / 16), in, 16).
_PANEL = 16


@torch.library.register_fake("byoc_torch::pack_linear_panels")
def _pack_linear_panels_fake(weight):
    return weight.new_empty((-(-weight.shape[0] // _PANEL), weight.shape[1], _PANEL))


@torch.library.register_fake("byoc_torch::linear_panels")
def _linear_panels_fake(input, panels, bias, out_features):
    return input.new_empty((input.shape[0], out_features))


def _size(dim: int | str, sizes: dict[str, object]):
    """An output dim from the input sizes; a fresh unbacked size when it depends on data."""
    if isinstance(dim, int):
        return dim
    try:
        return _evaluate(ast.parse(dim, mode="eval").body, sizes)
    except (SyntaxError, KeyError, ValueError):
        return torch.library.get_ctx().new_dynamic_size()


_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CALLS = {"Max": max, "Min": min, "max": max, "min": min, "FloorDiv": operator.floordiv}


def _evaluate(node: ast.expr, sizes: dict[str, object]):
    """A size expression (as torch prints a sympy expression) over the input sizes."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        return sizes[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, sizes)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left, sizes), _evaluate(node.right, sizes))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS:
        return _CALLS[node.func.id](*(_evaluate(a, sizes) for a in node.args))
    raise ValueError(f"unsupported size expression {ast.dump(node)}")


# -- TorchScript ------------------------------------------------------------------------------
def scripted(module) -> torch.nn.Module:
    """``module`` (a CompiledModule) as a module ``torch.jit.script`` compiles: its ``forward``
    takes the same inputs (positional pytrees, keyword inputs, specialized scalars), calls
    the op on the module's object and returns the same nesting. What ``torch.jit.script``
    compiles in place of a compiled model (``CompiledModule.__prepare_scriptable__``).

    The ``forward`` is generated source; TorchScript reads a function's source with
    ``inspect``, which finds it in ``linecache`` under a name of its own.
    """
    source = forward_source(signature_of(module.torch_executable))
    filename = f"<byoc_torch forward {hashlib.sha256(source.encode()).hexdigest()[:16]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(compile(source, filename, "exec"), namespace)
    cls = type(
        "CompiledForward",
        (torch.nn.Module,),
        {"forward": namespace["forward"], "__module__": __name__},
    )
    scriptable = cls()
    scriptable.executable = module.torch_executable
    return scriptable


def forward_source(signature: Signature) -> str:
    """The TorchScript source of the ``forward`` of :func:`scripted`."""
    body: list[str] = []
    if signature.input_tree is None:
        params = [_identifier(s.name, k) for k, s in enumerate(signature.inputs)]
        leaves = params
        declared = [f"{p}: Tensor" for p in params]
    else:
        tree = signature.input_tree
        constants = dict(tree.constants)
        args_spec, kwargs_spec = tree.treespec.children()
        names = [f"arg{i}" for i in range(args_spec.num_children)]
        for key in kwargs_spec.context:
            if not str(key).isidentifier():
                raise ScriptError(
                    f"byoc_torch: TorchScript cannot take keyword input {key!r}: it is not a "
                    "Python name; call the compiled model from Python"
                )
            names.append(str(key))
        counter = iter(range(len(tree.paths)))
        declared, exprs = [], []
        for name, spec in zip(names, [*args_spec.children(), *kwargs_spec.children()], strict=True):
            declared.append(f"{name}: {_input_type(spec, counter, constants, name, exprs)}")
        leaves = []
        for k, expr in enumerate(exprs):
            if k in constants:
                body += [
                    f"    if {expr} != {constants[k]!r}:",
                    f"        raise ValueError({_scalar_message(tree.paths[k], constants[k])!r})",
                ]
            else:
                leaves.append(expr)
    outs = iter(range(count_leaves(signature.outputs)))
    result, result_type = _output_expr(signature.outputs, outs)
    body.append(f"    outs = torch.ops.byoc_torch.execute(self.executable, [{', '.join(leaves)}])")
    head = f"def forward(self, {', '.join(declared)}) -> {result_type}:"
    return "\n".join([head, *body, f"    return {result}", ""])


def _identifier(name: str, k: int) -> str:
    return name if name.isidentifier() else f"input_{k}"


def _scalar_message(path: str, value: object) -> str:
    return (
        f"byoc_torch: input {path} differs from the value the model was compiled with "
        f"({value!r}; torch.export specializes Python scalars)"
    )


def _input_type(spec, counter, constants: dict, expr: str, exprs: list[str]) -> str:
    """The TorchScript type of one input node; appends each leaf's expression to ``exprs``."""
    if spec.is_leaf():
        k = next(counter)
        exprs.append(expr)
        if k not in constants:
            return "Tensor"
        if not isinstance(constants[k], bool | int | float | str | type(None)):
            raise ScriptError(
                f"byoc_torch: TorchScript cannot take input {expr}, an enum member "
                f"({constants[k]!r}); call the compiled model from Python"
            )
        return type(constants[k]).__name__
    children = spec.children()
    if spec.type is dict:
        types = {
            _input_type(c, counter, constants, f"{expr}[{key!r}]", exprs)
            for key, c in zip(spec.context, children, strict=True)
        }
        if len(types) != 1 or not all(isinstance(key, str) for key in spec.context):
            raise ScriptError(
                f"byoc_torch: TorchScript cannot type input {expr}: a dict input needs str "
                f"keys and values of one type, got {sorted(types)}"
            )
        return f"dict[str, {types.pop()}]"
    types = [
        _input_type(c, counter, constants, f"{expr}[{i}]", exprs) for i, c in enumerate(children)
    ]
    if spec.type is list:
        if len(set(types)) != 1:
            raise ScriptError(
                f"byoc_torch: TorchScript cannot type input {expr}: a list input needs "
                f"elements of one type, got {sorted(set(types))}"
            )
        return f"list[{types[0]}]"
    if spec.type is tuple:
        return f"tuple[{', '.join(types)}]"
    if spec.type is type(None):
        return "None"
    raise ScriptError(f"byoc_torch: TorchScript cannot take a {spec.type.__name__} input")


def _output_expr(node: dict, outs) -> tuple[str, str]:
    """The TorchScript expression and type of the outputs nested as ``node``."""
    kind = node["t"]
    if kind == "leaf":
        return f"outs[{next(outs)}]", "Tensor"
    parts = [_output_expr(c, outs) for c in node["c"]]
    types = [t for _, t in parts]
    if kind == "tuple":
        return "(" + "".join(f"{e}, " for e, _ in parts) + ")", f"tuple[{', '.join(types)}]"
    if len(set(types)) > 1:
        raise ScriptError(
            f"byoc_torch: TorchScript cannot type the outputs: a {kind} output needs elements "
            f"of one type, got {sorted(set(types))}"
        )
    element = types[0] if types else "Tensor"
    if kind == "list":
        return "[" + ", ".join(e for e, _ in parts) + "]", f"list[{element}]"
    items = ", ".join(f"{k!r}: {e}" for k, (e, _) in zip(node["k"], parts, strict=True))
    return "{" + items + "}", f"dict[str, {element}]"
