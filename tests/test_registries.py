"""No process-global registry grows across compiles: torch's op registry (the custom ops of
``torch_executed_modules``), TVM's global functions, byoc_torch's own tables and caches."""

from __future__ import annotations

import gc

import torch
import tvm_ffi
from torch import nn

import byoc_torch
from byoc_torch import artifact_file
from byoc_torch.frontend import modules
from byoc_torch.placement.measure import MeasurementCache


class Refine(nn.Module):
    def forward(self, x):
        if bool(x.sum() > 0):
            return x * 0.5
        return x + 1


class WithRefine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.refine = Refine()

    def forward(self, x):
        return self.fc(self.refine(self.fc(x)))


def registries() -> dict[str, object]:
    """The size (or contents) of every process-global registry a compile could add to."""
    namespace = getattr(torch.ops, modules.NAMESPACE)
    return {
        "torch ops": len(torch._C._dispatch_get_all_op_names()),
        "torch.ops namespace": sorted(namespace._dir),
        "torch fake registry": len(torch._library.simple_registry.singleton._data),
        "torch.library impls": len(torch.library._impls),
        "tvm global functions": len(tvm_ffi.registry.list_global_func_names()),
        "forced modules": sorted(modules._BY_OP),
        "forced-module libraries": sorted(modules._LIBRARIES),
        "program finalizers": len(modules._RELEASES),
        "loaded artifacts": len(artifact_file._LOADED),
        "placement measurements": len(MeasurementCache._memory),
    }


def test_two_hundred_compiles_grow_no_registry():
    model, x = WithRefine().eval(), torch.randn(2, 4)
    options = {"torch_executed_modules": [Refine], "placement": "tvm", "verify": False}
    byoc_torch.compile(model, (x,), **options)  # first use fills what is filled once
    gc.collect()
    before = registries()
    assert before["forced modules"] == [] and before["torch.ops namespace"] == []
    for k in range(200):
        compiled = byoc_torch.compile(model, (x,), **options)
        if k % 50 == 0:  # the compiled models work (and used the op while compiling)
            torch.testing.assert_close(compiled(x * k), model(x * k), rtol=1e-4, atol=1e-5)
    del compiled
    gc.collect()
    assert registries() == before


def test_measured_placement_compiles_grow_no_registry():
    """Measured placement keeps its measurements in memory for the process, by region: the same
    model compiled again adds none (and no other registry grows)."""
    model, x = WithRefine().eval(), torch.randn(2, 4)
    options = {"torch_executed_modules": [Refine], "verify": False}
    byoc_torch.compile(model, (x,), **options)
    gc.collect()
    before = registries()
    assert before["placement measurements"] > 0
    for _ in range(3):
        compiled = byoc_torch.compile(model, (x,), **options)
    assert compiled.report().placement.cache_misses == 0
    del compiled
    gc.collect()
    assert registries() == before


def test_ops_of_a_program_exported_alone_live_as_long_as_the_program():
    model, x = WithRefine().eval(), torch.randn(2, 4)
    ep = byoc_torch.export_program(model, (x,), torch_executed_modules=[Refine])
    (op,) = modules._BY_OP
    assert op == "m0" and hasattr(getattr(torch.ops, modules.NAMESPACE), op)
    torch.testing.assert_close(ep.module()(x), model(x))  # the program still calls its op
    del ep
    gc.collect()
    assert modules._BY_OP == {} and modules._LIBRARIES == {}
    assert not hasattr(getattr(torch.ops, modules.NAMESPACE), op)
