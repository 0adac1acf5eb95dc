"""The compile cache's whole compiled models (byoc_torch.compile_cache.artifact_key): a second
compile of the same program with the same options loads the artifact the first stored, and any
change to the weights, the options or the inputs' shapes compiles again."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import byoc_torch
from byoc_torch import driver


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.special.erfinv(torch.tanh(self.fc(x)) * 0.9) + x


@pytest.fixture
def compiles(monkeypatch):
    """The programs the driver really compiles (not taken from the cache)."""
    seen = []
    real = driver._compile_program

    def counting(program, opts):
        seen.append(program.model_name)
        return real(program, opts)

    monkeypatch.setattr(driver, "_compile_program", counting)
    return seen


def test_a_second_compile_loads_the_stored_artifact(tmp_path, compiles):
    model = Net().eval()
    x = torch.randn(4, 8)
    options = {"cache_dir": str(tmp_path), "placement": "tvm", "torch_executor": "torchscript"}
    first = byoc_torch.compile(model, (x,), **options)
    assert compiles == ["Net"]
    assert len(list((tmp_path / "compiled").glob("*.so"))) == 1
    second = byoc_torch.compile(model, (x,), **options)
    assert compiles == ["Net"]  # not compiled again
    other = torch.randn(4, 8)
    torch.testing.assert_close(second(other), model(other))
    assert second.report().to_dict() == first.report().to_dict()
    assert second.signature == first.signature

    with torch.no_grad():
        model.fc.weight[0, 0] += 1.0  # a changed weight is a different program
    changed = byoc_torch.compile(model, (x,), **options)
    torch.testing.assert_close(changed(other), model(other))
    byoc_torch.compile(model, (x,), **options, min_block_size=2)  # another option
    byoc_torch.compile(model, (torch.randn(2, 8),), **options)  # other shapes
    assert compiles == ["Net"] * 4
    assert len(list((tmp_path / "compiled").glob("*.so"))) == 4


def test_a_compile_that_tunes_is_not_stored(tmp_path):
    from byoc_torch import options as options_module

    opts = options_module.Options(cache_dir=str(tmp_path), tuning_database=str(tmp_path / "db"))
    cache, key = driver._artifact_cache(None, opts)
    assert (cache, key) == (None, "")


def test_a_package_serves_every_thread_count_so_its_key_has_none():
    """Packages are compiled with inductor's cpp.dynamic_threads: the one compiled while the
    whole-model check times on one thread is the one the model runs at its own budget, not
    compiled again (a second whole-model compile at two threads before)."""
    from byoc_torch import aot_inductor
    from byoc_torch.compile_cache import package_key

    assert aot_inductor._INDUCTOR_CONFIGS["cpp.dynamic_threads"] is True
    module = torch.fx.symbolic_trace(nn.Linear(4, 4))
    example = [torch.randn(2, 4)]
    before = torch.get_num_threads()
    try:
        keys = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            keys.append(package_key(module, example, None, aot_inductor._INDUCTOR_CONFIGS))
    finally:
        torch.set_num_threads(before)
    assert keys[0] == keys[1]


def test_a_package_compiled_with_other_inductor_settings_has_another_key():
    """A package's key covers the inductor settings it is compiled with: a package whose
    multiplies are concatenated is not served for one whose are not."""
    from byoc_torch.aot_inductor import SubgraphProgram
    from byoc_torch.compile_cache import package_key

    module = torch.fx.symbolic_trace(nn.Linear(4, 4))
    example = (torch.randn(2, 4),)
    keys = {
        package_key(
            module,
            example,
            None,
            SubgraphProgram(module, example, None, (0,), c).inductor_configs(),
        )
        for c in (False, True)
    }
    assert len(keys) == 2
