"""One typed spec per LibTorch subgraph, and the one way to build a torch runtime module.

Place in the data flow: the codegen (``byoc_torch/codegen.py``), the tests and the benchmarks
describe each subgraph as a :class:`SubgraphSpec` (the C++ object ``byoc_torch.SubgraphSpec``,
validated when constructed) and call :func:`make_runtime_module`, which hands the specs and the
metadata to the C++ runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tvm_ffi

from . import _ffi_api

__all__ = ["SubgraphSpec", "make_runtime_module", "save_runtime_module"]


@tvm_ffi.register_object("byoc_torch.SubgraphSpec")
class SubgraphSpec(tvm_ffi.Object):
    """One subgraph: its symbol, TorchScript source, arity, scripted submodules, and
    optionally an AOTInductor package of the same subgraph.

    ``modules`` maps the attribute names ``forward`` calls as ``self.<name>(...)`` to the
    ``torch.jit.save`` bytes of each submodule. ``aoti_package`` is the bytes of a ``.pt2``
    AOTInductor package (empty: the TorchScript runs) taking the inputs ``aoti_inputs``
    (indices of the subgraph's inputs; its parameters are frozen inside). ``package_only``:
    the constants the package froze are kept nowhere else, so the call passes the package's
    inputs alone (all of them, in order) and the TorchScript cannot run. Raises
    ``ValueError`` on an inconsistent description (empty symbol, negative or implausible arity,
    no outputs, several outputs without ``returns_tuple``, package inputs out of range,
    ``package_only`` without a package taking every input in order).
    """

    # Read-only fields, provided by the C++ reflection registration.
    symbol: str
    script: str
    num_inputs: int
    num_outputs: int
    returns_tuple: bool
    module_names: Sequence[str]
    module_payloads: Sequence[bytes]
    aoti_package: bytes
    aoti_inputs: Sequence[int]
    package_only: bool

    def __init__(
        self,
        symbol: str,
        script: str,
        num_inputs: int,
        num_outputs: int = 1,
        returns_tuple: bool = False,
        modules: Mapping[str, bytes] | None = None,
        aoti_package: bytes = b"",
        aoti_inputs: Sequence[int] = (),
        package_only: bool = False,
    ) -> None:
        names = sorted(modules or {})
        payloads = [bytes(modules[n]) for n in names] if modules else []
        self.__ffi_init__(
            symbol,
            script,
            num_inputs,
            num_outputs,
            returns_tuple,
            names,
            payloads,
            bytes(aoti_package),
            [int(i) for i in aoti_inputs],
            bool(package_only),
        )

    def package_only_copy(self) -> SubgraphSpec:
        """This subgraph called with its package's inputs alone (all of them, in order), the
        package its only executor. Raises ``ValueError`` if it has no package."""
        return _ffi_api.SubgraphSpecPackageOnly(self)


def make_runtime_module(specs: Sequence[SubgraphSpec], metadata: str = "") -> tvm_ffi.Module:
    """A ``torch`` runtime module running ``specs`` (possibly none), carrying ``metadata``.

    Every TorchScript is compiled here; raises ``ValueError`` naming the subgraph if one does
    not compile, or if two specs share a symbol.
    """
    return _ffi_api.CreateTorchRuntimeModule(list(specs), metadata)


def save_runtime_module(module: tvm_ffi.Module) -> bytes:
    """The serialized form of a torch runtime module (what ``export_library`` embeds)."""
    return bytes(_ffi_api.SaveTorchRuntimeModule(module))
