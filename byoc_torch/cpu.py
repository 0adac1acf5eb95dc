"""The host CPU as the default compile target, and the CPU an artifact needs.

Place in the data flow: at both ends. ``compile`` resolves its target with
:func:`resolve_target` (the default, ``"host"``, becomes ``{"kind": "llvm", "mcpu": <this
CPU>}``, so TVM's kernels use the vector width and instructions of the machine they are
compiled on) and records :func:`requirements` of that target in the model's
:class:`~byoc_torch.signature.Signature`; ``load`` calls :func:`check_host` with them before
anything runs, so an artifact compiled for AVX-512 refuses, with a :class:`CPUFeatureError`
naming the missing features, to run on a CPU without them (instead of dying of SIGILL).

Host detection is LLVM's, through TVM: the CPU's name (``GetHostCPUName``) and its features as
CPUID reports them (``GetHostCPUFeatures``). A virtual machine may hide features its CPU model
has; the host target then turns those off (``mattr``), so it never asks for more than CPUID
grants.
"""

from __future__ import annotations

import functools
import logging

import tvm
import tvm_ffi

from .errors import CPUFeatureError

logger = logging.getLogger(__name__)

__all__ = ["HOST", "check_host", "host_features", "host_target", "requirements", "resolve_target"]

# The target name that means "this machine's CPU" (byoc_torch._defaults.TARGET).
HOST = "host"


@functools.cache
def _host_feature_map() -> dict[str, bool]:
    features = tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()
    return {str(k): bool(v) for k, v in features.items()}


def host_features() -> frozenset[str]:
    """The instruction-set features this CPU has (CPUID, as LLVM reads it)."""
    return frozenset(k for k, on in _host_feature_map().items() if on)


@functools.cache
def host_target() -> dict:
    """This CPU as a TVM target dict: its LLVM name as ``mcpu``, and ``mattr`` turning off the
    features of that CPU model that CPUID does not grant here."""
    name = str(tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUName")())
    target: dict = {"kind": "llvm", "mcpu": name}
    model = tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target(target))
    detectable = _host_feature_map()
    off = sorted(f for f in model if f in detectable and not detectable[f])
    if off:
        target["mattr"] = [f"-{f}" for f in off]
    return target


def resolve_target(target: object) -> tvm.target.Target:
    """``target`` as a TVM Target: ``"host"`` is :func:`host_target`; a string, dict or Target
    is TVM's own."""
    if isinstance(target, tvm.target.Target):
        return target
    if target == HOST:
        return tvm.target.Target(host_target())
    return tvm.target.Target(target)


def requirements(target: tvm.target.Target) -> dict | None:
    """What the code built for ``target`` needs of a CPU: ``{"mcpu": name, "features": [...]}``
    (the instruction-set features the target enables that CPUID can report), or None for a
    target that is not an LLVM CPU target."""
    if target.kind.name != "llvm":
        return None
    enabled = tvm.target.codegen.llvm_get_cpu_features(target)
    detectable = _host_feature_map()
    mcpu = target.attrs.get("mcpu")
    return {
        "mcpu": str(mcpu) if mcpu else "generic",
        "features": sorted(f for f in enabled if f in detectable),
    }


def check_host(required: dict | None, what: str = "this artifact") -> None:
    """Raise :class:`CPUFeatureError` when this CPU lacks a feature ``required`` lists."""
    if not required:
        return
    missing = sorted(set(required.get("features", ())) - host_features())
    if missing:
        raise CPUFeatureError(
            f"byoc_torch: {what} was compiled for CPU {required.get('mcpu')!r} and uses "
            f"instruction-set features this CPU lacks: {', '.join(missing)}. Compile it on "
            "this machine, or with a target for a CPU it has (e.g. target={'kind': 'llvm'} "
            "for any x86-64)."
        )
