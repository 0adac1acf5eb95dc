"""The runtime's global functions ``byoc_torch.*`` as attributes of this module.

Place in the data flow: filled from tvm-ffi's global registry once the runtime library is
loaded (``byoc_torch.runtime`` imports this module after loading it), so callers write
``_ffi_api.CreateTorchRuntimeModule(...)`` instead of looking functions up by string.
"""

from __future__ import annotations

import tvm_ffi

tvm_ffi.init_ffi_api("byoc_torch", __name__)
