"""Python side of the C++ torch runtime (runtime/, built by CMakeLists.txt).

Place in the data flow: imported by ``byoc_torch/__init__.py`` before anything else. Importing it
loads the runtime library with tvm-ffi's own module loading, which registers the runtime's
global functions (``byoc_torch.CreateTorchRuntimeModule``, ``byoc_torch.SaveTorchRuntimeModule``,
the artifact loader ``ffi.Module.load_from_bytes.torch``) and the ``byoc_torch.SubgraphSpec``
object type, before a module is built or loaded. Then

* :mod:`._ffi_api` holds the runtime's global functions as attributes;
* :mod:`.spec` is :class:`SubgraphSpec` and :func:`make_runtime_module` (what the codegen uses);
* :mod:`.module` is :class:`TorchRuntime`, one runtime module instance as a typed object (its
  metadata, symbols, measurement modes and counters): the one place that names the module's
  own functions;
* :mod:`.measure` switches one module instance's measurement mode and fast path, and reads its
  counters (benchmarks and tests only).

:func:`library_path` and :func:`preload_libraries` say what a process without Python (a
LibTorch application, Triton's PyTorch backend) loads to run TorchScript archives holding
compiled parts (``byoc-torch lib-path``; docs/deployment.md).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch  # noqa: F401  (loads LibTorch before the runtime that links it)
import tvm_ffi
from tvm_ffi.libinfo import _find_library_by_basename

__all__ = [
    "SubgraphSpec",
    "TorchRuntime",
    "library_path",
    "make_runtime_module",
    "preload_libraries",
    "save_runtime_module",
]

logger = logging.getLogger(__name__)

_PACKAGE = "byoc_torch"  # the distribution whose files tvm-ffi's lookup reads
_TARGET = "byoc_torch_runtime"  # the CMake target (CMakeLists.txt)
_LIB_NAME = f"lib{_TARGET}.so"
_ENV = "BYOC_TORCH_RUNTIME_LIB"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # byoc_torch/


def library_path() -> Path:
    """Where the runtime library is: ``$BYOC_TORCH_RUNTIME_LIB``, else where tvm-ffi's own
    lookup finds the CMake target ``byoc_torch_runtime`` of the package ``byoc_torch`` (the
    installed distribution's files, then ``byoc_torch/lib/`` of this package: an editable
    install or a source checkout on ``sys.path`` keeps the sources apart from the built
    library), else ``byoc_torch/lib/`` (which the error then names)."""
    env = os.environ.get(_ENV)
    if env:
        return Path(env)
    try:
        return _find_library_by_basename(_PACKAGE, _TARGET, [_PACKAGE_DIR / "lib"])
    except RuntimeError:  # not found anywhere: name the place a build puts it
        return _PACKAGE_DIR / "lib" / _LIB_NAME


def preload_libraries() -> tuple[Path, ...]:
    """What a C++ process loads, in this order, before it loads a TorchScript archive holding
    compiled parts (e.g. ``LD_PRELOAD``, colon-separated): tvm-ffi, TVM's runtime (the Relax
    VM the op runs; it finds tvm-ffi only when that is loaded already) and this runtime (the
    class and op, the torch runtime module). LibTorch is the application's own."""
    import tvm_ffi.libinfo

    spec = importlib.util.find_spec("tvm")  # not imported: only its location is needed
    if spec is None or spec.origin is None:
        raise ImportError("byoc_torch: apache-tvm is not installed")
    tvm_runtime = Path(spec.origin).resolve().parent / "lib" / "libtvm_runtime.so"
    return (Path(tvm_ffi.libinfo.find_libtvm_ffi()).resolve(), tvm_runtime, library_path())


def _load() -> tvm_ffi.Module:
    path = library_path()
    if not path.is_file():
        raise ImportError(
            f"byoc_torch: the C++ runtime {path} is missing. Install the package with "
            "'pip install --no-build-isolation .' (see README.md), or point "
            f"{_ENV} at a built {_LIB_NAME}."
        )
    logger.debug("loading the byoc_torch runtime from %s", path)
    # keep_module_alive: the library (and the functions it registered) stays for the process.
    return tvm_ffi.load_module(path, keep_module_alive=True)


_LIB = _load()

from .module import TorchRuntime  # noqa: E402
from .spec import SubgraphSpec, make_runtime_module, save_runtime_module  # noqa: E402
