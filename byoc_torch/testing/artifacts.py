"""A valid serialized torch runtime module, and re-sealing mutated copies of it: shared by the
artifact fuzz tests (tests/test_fuzz_artifact.py, tests/test_runtime.py) and the fuzz
benchmark (benchmarks/fuzz_artifact.py)."""

from __future__ import annotations

import io
import struct

import torch

from byoc_torch.runtime import SubgraphSpec, make_runtime_module, save_runtime_module

__all__ = ["reseal", "valid_artifact"]


def valid_artifact() -> bytes:
    sub = torch.jit.script(torch.nn.Linear(2, 2))
    buf = io.BytesIO()
    torch.jit.save(sub, buf)
    specs = [
        SubgraphSpec(
            "f",
            "def forward(self, a: Tensor, b: Tensor) -> Tuple[Tensor, Tensor]:\n"
            "    return (a + b, a * b)\n",
            num_inputs=2,
            num_outputs=2,
            returns_tuple=True,
        ),
        SubgraphSpec(
            "g",
            "def forward(self, a: Tensor) -> Tensor:\n    return self.lin.forward(a)\n",
            num_inputs=1,
            modules={"lin": buf.getvalue()},
        ),
    ]
    return save_runtime_module(make_runtime_module(specs, '{"meta": 1}'))


def reseal(data: bytes) -> bytes:
    """Recompute the checksum (FNV-1a 64 of everything after the 20-byte header), so that a
    mutation reaches the parser instead of being caught by the checksum."""
    if len(data) < 20:
        return data
    h = 1469598103934665603
    for c in data[20:]:
        h = ((h ^ c) * 1099511628211) % (1 << 64)
    out = bytearray(data)
    struct.pack_into("<Q", out, 12, h)
    return bytes(out)
