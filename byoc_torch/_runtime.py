"""Loads the C++ torch runtime (runtime/, built by CMakeLists.txt) into the process.

Place in the data flow: imported by ``byoc_torch/__init__.py`` before anything else, so that the
runtime's global functions (``byoc_torch.CreateTorchRuntimeModule`` and the artifact loader
``ffi.Module.load_from_bytes.torch``) exist before a module is built or loaded.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import torch  # noqa: F401  (loads LibTorch before the runtime that links it)
import tvm_ffi

__all__ = ["library_path", "runtime_function"]

_LIB_NAME = "libbyoc_torch_runtime.so"
_ENV = "BYOC_TORCH_RUNTIME_LIB"


def library_path() -> Path:
    """Where the runtime library is: ``$BYOC_TORCH_RUNTIME_LIB``, else ``byoc_torch/lib/`` of
    this package or of an installed copy on ``sys.path`` (an editable install keeps the
    Python sources in the checkout and the built library in site-packages)."""
    env = os.environ.get(_ENV)
    if env:
        return Path(env)
    own = Path(__file__).resolve().parent / "lib" / _LIB_NAME
    if own.is_file():
        return own
    for entry in sys.path:
        candidate = Path(entry or ".") / "byoc_torch" / "lib" / _LIB_NAME
        if candidate.is_file():
            return candidate
    return own


def _load() -> ctypes.CDLL:
    path = library_path()
    if not path.is_file():
        raise ImportError(
            f"byoc_torch: the C++ runtime {path} is missing. Install the package with "
            "'pip install --no-build-isolation .' (see README.md), or point "
            f"{_ENV} at a built {_LIB_NAME}."
        )
    return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


_LIB = _load()


def runtime_function(name: str) -> tvm_ffi.Function:
    """A global function the runtime registered."""
    func = tvm_ffi.get_global_func(name, allow_missing=True)
    if func is None:
        raise RuntimeError(f"byoc_torch runtime {library_path()} did not register {name}")
    return func
