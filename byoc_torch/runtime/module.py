"""The torch runtime module as a typed Python object.

Place in the data flow: runtime bindings. The C++ runtime module (``runtime/`` ,
``TorchRuntimeModule``, tvm-ffi module kind ``"torch"``) answers a few functions besides its
subgraph symbols; :class:`TorchRuntime` is the one place that names them, so the compiled model
(:mod:`byoc_torch.compiled`: the signature metadata), the measurement switches
(:mod:`.measure`) and the tests call methods, never strings.
"""

from __future__ import annotations

from collections.abc import Iterator

import tvm_ffi

from . import _ffi_api

__all__ = ["KIND", "TorchRuntime", "make_checked_call"]

KIND = "torch"  # the tvm-ffi module kind of the C++ TorchRuntimeModule

# The module's own functions (runtime/torch_runtime_module.cc), one home for their names.
_METADATA = "__byoc_torch_metadata__"
_SET_METADATA = "__byoc_torch_set_metadata__"
_SYMBOLS = "__byoc_torch_symbols__"
_SET_MODE = "__byoc_torch_set_mode__"
_SET_FAST_PATH = "__byoc_torch_set_fast_path__"
_STATS = "__byoc_torch_stats__"
_RESET_STATS = "__byoc_torch_reset_stats__"
_SET_AOTI = "__byoc_torch_set_aoti__"
_SUSPEND_AOTI = "__byoc_torch_suspend_aoti__"
_SPECS = "__byoc_torch_specs__"


def make_checked_call(*args) -> tvm_ffi.Function:
    """The C++ accept check in front of a VM function (``byoc_torch.MakeCheckedCall``)."""
    return _ffi_api.MakeCheckedCall(*args)


class TorchRuntime:
    """One instance of the C++ torch runtime module."""

    def __init__(self, module: tvm_ffi.Module) -> None:
        if module.kind != KIND:
            raise TypeError(f"byoc_torch: a {module.kind!r} module is not a torch runtime module")
        self.module = module

    @staticmethod
    def find(executable: object) -> list[TorchRuntime]:
        """The torch runtime modules an executable (a VMExecutable or a loaded module)
        imports, depth first."""
        return [TorchRuntime(m) for m in _walk(getattr(executable, "mod", executable))]

    def metadata(self) -> str:
        """The metadata the module carries (a compiled model's signature, JSON)."""
        return str(self.module[_METADATA]())

    def set_metadata(self, text: str) -> None:
        self.module[_SET_METADATA](text)

    def symbols(self) -> list[str]:
        """The subgraph symbols the module serves."""
        return [str(s) for s in self.module[_SYMBOLS]()]

    def set_mode(self, mode: str) -> str:
        """Set the measurement mode; returns the previous one (see :mod:`.measure`)."""
        return str(self.module[_SET_MODE](mode))

    def set_fast_path(self, enabled: bool) -> bool:
        """Turn the single-op dispatcher fast path on or off; returns the previous setting."""
        return bool(self.module[_SET_FAST_PATH](enabled))

    def stats(self) -> dict[str, tuple[int, int, bool]]:
        """Per symbol: (calls, nanoseconds in LibTorch, fast-path eligible)."""
        raw = self.module[_STATS]()
        return {str(sym): (int(v[0]), int(v[1]), bool(v[2])) for sym, v in raw.items()}

    def reset_stats(self) -> None:
        """Zero the counters and drop the recorded outputs."""
        self.module[_RESET_STATS]()

    def set_aoti(self, symbol: str, package: bytes, inputs: list) -> None:
        """Run subgraph ``symbol`` from this AOTInductor package (its input order ``inputs``);
        an empty package goes back to the TorchScript (:mod:`byoc_torch.aot_inductor`)."""
        self.module[_SET_AOTI](symbol, package, inputs)

    def specs(self) -> list:
        """The subgraph specs as the module would save them (installed packages included),
        :class:`~byoc_torch.runtime.spec.SubgraphSpec` objects in symbol order of creation."""
        return list(self.module[_SPECS]())

    def suspend_aoti(self, suspended: bool) -> bool:
        """Measurement only: while suspended, every subgraph runs its TorchScript, the
        installed packages staying loaded (so both executors can be timed in turns). Returns
        the previous setting."""
        return bool(self.module[_SUSPEND_AOTI](suspended))


def _walk(module: tvm_ffi.Module) -> Iterator[tvm_ffi.Module]:
    if module.kind == KIND:
        yield module
    for sub in module.imports:
        yield from _walk(sub)
