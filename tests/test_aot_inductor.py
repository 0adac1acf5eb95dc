"""The AOTInductor executor of LibTorch subgraphs: numerics against eager, the fallback to
TorchScript with a reason, an artifact loaded in a fresh process, and the compile cache.

Each AOTInductor compile costs 10-40 s on a loaded machine: the module compiles one package
(the fixture) and reuses it through the compile cache.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch
import tvm
from torch import fx
from tvm import relax

import byoc_torch
from byoc_torch import _defaults, aot_inductor, compile_cache, executor_choice, frozen_weights
from byoc_torch.compiled import running_torch_modules
from byoc_torch.testing.fx_graphs import graph_of
from byoc_torch.testing.packages import whole_program
from byoc_torch.testing.processes import fresh_python

BATCH = torch.export.Dim("batch", min=1, max=64)


class Net(torch.nn.Module):
    """A linear layer in TVM around a block TVM cannot import (erfinv, lgamma) that reads a
    parameter of its own, so the LibTorch subgraph has a frozen constant and a dynamic dim."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 32)
        self.scale = torch.nn.Parameter(torch.rand(32) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(x)) * 0.9
        h = torch.special.erfinv(h) * self.scale + torch.lgamma(h.abs() + 1.0)
        return torch.relu(h)


def _executors(compiled) -> dict[str, str]:
    found = {}
    for m in running_torch_modules(compiled.executable):
        found.update({str(k): str(v) for k, v in m["__byoc_torch_executors__"]().items()})
    return found


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    model = Net().eval()
    return model, _compile_net(model, cache), cache


def _compile_net(model: Net, cache, **options):
    """``model`` with a dynamic batch, every subgraph an AOTInductor package, ``cache`` the
    compile cache."""
    return byoc_torch.compile(
        model,
        (torch.randn(8, 16),),
        dynamic_shapes=({0: BATCH},),
        torch_executor="aot_inductor",
        placement="tvm",
        cache_dir=str(cache),
        **options,
    )


def test_aot_inductor_subgraph_agrees_with_eager_on_other_sizes(net):
    model, compiled, _ = net
    report = compiled.report()
    assert [s.executor for s in report.subgraphs] == ["aot_inductor"]
    assert list(_executors(compiled).values()) == ["aot_inductor"]
    assert report.subgraphs[0].aot_inductor_ms is not None
    # The reason, then what became of the subgraph's matrix (frozen in or a package input).
    assert "runs:    aot_inductor (torch_executor='aot_inductor'; matrix-multiply weights" in (
        report.to_text()
    )
    for batch in (3, 8, 33):
        x = torch.randn(batch, 16)
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)


def test_torchscript_subgraph_agrees_with_eager():
    model = Net().eval()
    x = torch.randn(8, 16)
    compiled = byoc_torch.compile(model, (x,), torch_executor="torchscript", placement="tvm")
    (entry,) = compiled.report().subgraphs
    assert (entry.executor, entry.executor_reason) == (
        "torchscript",
        "torch_executor='torchscript'",
    )
    x2 = torch.randn(8, 16)
    with torch.no_grad():
        expected = model(x2)
    torch.testing.assert_close(compiled(x2), expected, rtol=1e-4, atol=1e-4)


def test_artifact_with_aot_inductor_subgraph_loads_in_a_fresh_process(net, tmp_path):
    """... and leaves no files behind: the package's files, extracted to load it, are removed
    at once, although the loaded module (remembered by byoc_torch.load) lives until the
    process ends."""
    model, compiled, _ = net
    path = compiled.export(tmp_path / "net.so")
    x = torch.randn(21, 16)  # not the example input, and another batch size
    with torch.no_grad():
        expected = model(x)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(
        f"""
        import torch, byoc_torch
        from byoc_torch.compiled import _torch_modules
        m = byoc_torch.load({str(path)!r})
        out = m(torch.load({str(tmp_path / "x.pt")!r}))
        torch.save(out, {str(tmp_path / "got.pt")!r})
        for mod in _torch_modules(m.executable):
            print(dict(mod["__byoc_torch_executors__"]()))
        """
    )
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(private_tmp)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "{'torch_main_0': 'aot_inductor'}" in proc.stdout
    torch.testing.assert_close(torch.load(tmp_path / "got.pt"), expected, rtol=1e-4, atol=1e-4)
    assert sorted(p.name for p in private_tmp.iterdir()) == []


def test_second_compile_takes_the_package_from_the_cache(net, monkeypatch):
    model, _, cache = net
    assert len(list((cache / "aoti").glob("*.pt2"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("compiled again instead of using the cache")

    compile_cache.MEMORY.clear()  # only the disk cache can serve it now
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", refuse)
    # Another option, so the whole compiled model is not in the cache (compile_cache's
    # "compiled" entries) but the subgraph, and so its package, is the same.
    again = _compile_net(model, cache, verify=False)
    assert [s.executor for s in again.report().subgraphs] == ["aot_inductor"]
    x = torch.randn(8, 16)
    with torch.no_grad():
        expected = model(x * 2)
    torch.testing.assert_close(again(x * 2), expected, rtol=1e-4, atol=1e-4)


class Scripted(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return torch.special.erfinv(torch.tanh(x) * 0.5)
        return x


class WithScripted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Scripted()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * 2.0) + 1.0


def test_a_subgraph_aot_inductor_cannot_compile_keeps_its_torchscript_with_a_reason():
    model = WithScripted().eval()
    x = torch.rand(4, 8)
    compiled = byoc_torch.compile(
        model, (x,), torch_executor="aot_inductor", torch_executed_modules=[Scripted]
    )
    (entry,) = compiled.report().subgraphs
    assert entry.executor == "torchscript"
    assert entry.executor_reason.startswith("AOTInductor cannot run it: ")
    assert "scripted submodule (torch_executed_modules)" in entry.executor_reason
    assert "runs:    torchscript (AOTInductor cannot run it:" in compiled.report().to_text()
    x2 = torch.rand(4, 8)
    torch.testing.assert_close(compiled(x2), model(x2), rtol=1e-4, atol=1e-4)


def test_auto_does_not_compile_small_subgraphs(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a subgraph under the threshold was compiled")

    monkeypatch.setattr(_defaults, "AOTI_MIN_SUBGRAPH_MS", 1e9)
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", refuse)
    model = Net().eval()
    compiled = byoc_torch.compile(model, (torch.randn(8, 16),), placement="tvm")
    (entry,) = compiled.report().subgraphs
    assert entry.executor == "torchscript"
    assert "an AOTInductor compile is worth" in entry.executor_reason
    assert entry.torchscript_ms is not None and entry.torchscript_ms > 0


def _fake_executor_times(monkeypatch, torchscript: list[float], package: list[float]):
    """Make "auto" read the given per-round times (ms; cycled) of every subgraph: the
    TorchScript's while the packages are suspended (and in the size threshold's rounds), the
    package's otherwise. The model still runs each round."""
    from byoc_torch.runtime import TorchRuntime

    real = executor_choice._per_call_ms
    turns = {"torchscript": 0, "aot_inductor": 0}

    def fake(modules, run, rounds):
        measured = real(modules, run, rounds)
        runtime = TorchRuntime(modules[0])
        suspended = runtime.suspend_aoti(True)
        runtime.suspend_aoti(suspended)
        side = "torchscript" if rounds != 1 or suspended else "aot_inductor"
        times = torchscript if side == "torchscript" else package
        ms = times[turns[side] % len(times)]
        turns[side] += 1
        return dict.fromkeys(measured, ms)

    monkeypatch.setattr(executor_choice, "_per_call_ms", fake)
    monkeypatch.setattr(_defaults, "AOTI_MIN_SUBGRAPH_MS", 0.0)


@pytest.mark.parametrize(
    "package, executor, said",
    [
        # 20 % faster in every round: beyond the 5 % margin in both halves of the rounds
        (
            [0.8],
            "aot_inductor",
            "measured faster: aot_inductor faster than torchscript by 20% in its best samples, "
            "beyond the 5% margin in both halves of the rounds",
        ),
        # 3 % faster: inside the margin, the TorchScript kept
        (
            [0.97],
            "torchscript",
            "measured faster by 3%, not beyond the 5% margin and the noise: the TorchScript kept",
        ),
        # 10 % faster in every other round, 50 % slower in the rest: noise, not a win
        (
            [0.9, 1.5],
            "torchscript",
            "measured faster by 10%, not beyond the 5% margin and the noise: the TorchScript kept",
        ),
        ([1.2], "torchscript", "measured slower"),
    ],
)
def test_auto_keeps_the_torchscript_unless_the_package_wins_beyond_the_margin(
    monkeypatch, package, executor, said
):
    """The executor choice of "auto" is the timing module's: a difference inside the margin or
    the noise keeps the TorchScript (so the executor does not flip between compiles), and the
    report says how much faster the package measured."""
    _fake_executor_times(monkeypatch, [1.0], package)
    model = Net().eval()
    compiled = byoc_torch.compile(model, (torch.randn(8, 16),), placement="tvm")
    (entry,) = compiled.report().subgraphs
    # (a package's reason goes on with how its weights were frozen, which this CPU decides)
    assert (entry.executor, entry.executor_reason.split("; ")[0]) == (executor, said)
    assert set(_executors(compiled).values()) == {executor}
    assert entry.torchscript_ms == pytest.approx(1.0)
    x2 = torch.randn(8, 16)
    torch.testing.assert_close(compiled(x2), model(x2), rtol=1e-4, atol=1e-4)


def test_a_whole_model_check_that_kept_all_libtorch_over_the_package_stands(monkeypatch):
    """When the whole-model check timed the model as one AOTInductor package and kept
    all-LibTorch, the subgraph runs its TorchScript, even where timing the two one by one
    would favour the package (the check already compared the same program, with its
    margin)."""
    from byoc_torch.placement import end_to_end, measure

    _fake_executor_times(monkeypatch, [1.0], [0.5])
    monkeypatch.setattr(_defaults, "AOTI_MIN_MODEL_MS", 0.0)
    times = {"searched": 3.0, "all-libtorch": 1.0, "all-aot-inductor": 1.2, "all-tvm": 5.0}
    monkeypatch.setattr(
        end_to_end, "time_candidates", lambda runs, options, rounds: {k: times[k] for k in runs}
    )
    measure.MeasurementCache.forget()
    model = Net().eval()
    compiled = byoc_torch.compile(model, (torch.randn(8, 16),))
    placement = compiled.report().placement
    assert (placement.chosen, placement.checked_ms["all-aot-inductor"]) == ("all-libtorch", 1.2)
    (entry,) = compiled.report().subgraphs
    assert (entry.executor, entry.executor_reason) == (
        "torchscript",
        "the whole-model check kept all-libtorch over all-aot-inductor",
    )
    assert set(_executors(compiled).values()) == {"torchscript"}


def test_unknown_executor_is_an_option_error():
    with pytest.raises(byoc_torch.errors.OptionError, match=r"torch_executor must be one of"):
        byoc_torch.Options(torch_executor="inductor")


def test_whole_model_check_offers_the_whole_model_as_one_aot_inductor_package(monkeypatch):
    from byoc_torch.placement import end_to_end
    from byoc_torch.records import FallbackRecord, Reason
    from byoc_torch.reporting import PlacementResult, RegionDecision

    result = PlacementResult(
        [
            RegionDecision(0, ["mm"], ["aten.mm.default"], 1.0, 0.5, "torch"),
            RegionDecision(1, ["tanh"], ["aten.tanh.default"], 0.1, 0.2, "tvm"),
        ],
        0.001,
        0.6,
        1.1,
        0.7,
    )
    searched = {"mm": FallbackRecord("mm", "aten.mm.default", Reason.PLACEMENT)}
    found = end_to_end.candidates(searched, result, aot_inductor=True)
    assert [(c.name, sorted(c.records), c.executor) for c in found] == [
        ("searched", ["mm"], "torchscript"),
        ("all-libtorch", ["mm", "tanh"], "torchscript"),
        ("all-aot-inductor", ["mm", "tanh"], "aot_inductor"),
        ("all-tvm", [], "torchscript"),
    ]
    assert "all-aot-inductor" not in [c.name for c in end_to_end.candidates(searched, result)]

    built = []

    def build(records, executor="torchscript"):
        built.append((len(records), executor))
        return lambda: None

    times = {"searched": 3.0, "all-libtorch": 4.0, "all-aot-inductor": 2.0, "all-tvm": 5.0}
    monkeypatch.setattr(
        end_to_end, "time_candidates", lambda runs, options, rounds: {k: times[k] for k in runs}
    )
    chosen, measured, _ = end_to_end.choose(found, build)
    assert built == [
        (1, "torchscript"),
        (2, "torchscript"),
        (2, "aot_inductor"),
        (0, "torchscript"),
    ]
    assert (chosen.name, measured["all-aot-inductor"]) == ("all-aot-inductor", 2.0)


def test_cache_dir_also_holds_placement_timings_and_tuning_records(tmp_path):
    opts = byoc_torch.Options(cache_dir=tmp_path)
    assert (opts.cache_dir, opts.placement_cache) == (
        str(tmp_path),
        str(tmp_path / "placement.json"),
    )
    assert opts.tuning_database is None  # no tuning, no database to apply
    tuned = byoc_torch.Options(cache_dir=tmp_path, tune_trials=4)
    assert tuned.tuning_database == str(tmp_path / "tuning")
    own = byoc_torch.Options(cache_dir=tmp_path, placement_cache="elsewhere.json")
    assert own.placement_cache == "elsewhere.json"


def test_placement_times_regions_as_aot_inductor_packages_too(monkeypatch):
    """Measured placement's third executor: the slowest region(s) in LibTorch are compiled into
    AOTInductor packages and timed; the report shows every region's three times (or why a
    region has no AOTInductor time), and the search costs the LibTorch side at the faster."""
    from byoc_torch import placement
    from byoc_torch.placement import measure

    monkeypatch.setattr(_defaults, "AOTI_MIN_SUBGRAPH_MS", 0.0)
    monkeypatch.setattr(_defaults, "AOTI_MAX_REGIONS", 1)
    measure.MeasurementCache.forget()
    # TVM faster on every region, so the search without packages is not all-LibTorch (which
    # would leave no package able to change it, and none compiled).
    monkeypatch.setattr(
        placement, "_time_tvm_regions", lambda imported, todo, *args: {r.index: 1e-4 for r in todo}
    )
    model = Net().eval()
    x = torch.randn(8, 16)
    compiled = byoc_torch.compile(model, (x,), torch_executor="auto")
    regions = compiled.report().placement.regions
    timed = [r for r in regions if r.aot_inductor_ms is not None]
    assert len(timed) == 1 and timed[0].aot_inductor_ms > 0
    slowest = max((r for r in regions if r.torch_ms is not None), key=lambda r: r.torch_ms)
    assert timed[0].index == slowest.index
    notes = {r.aot_inductor_note for r in regions if r is not timed[0]}
    assert "not compiled: 1 slower regions were" in notes
    assert notes <= {"not compiled: 1 slower regions were", "not compiled: only views and copies"}
    text = compiled.report().to_text()
    assert "AOTInductor ms" in text
    assert f"{timed[0].aot_inductor_ms:.4f}" in text
    x2 = torch.randn(8, 16)
    torch.testing.assert_close(compiled(x2), model(x2), rtol=1e-4, atol=1e-4)

    plain = byoc_torch.compile(model, (x,), torch_executor="torchscript")
    assert all(
        r.aot_inductor_ms is None and r.aot_inductor_note == ""
        for r in plain.report().placement.regions
    )


def test_the_search_costs_libtorch_at_the_executor_it_may_use():
    from byoc_torch.placement import _libtorch_side

    assert _libtorch_side(2.0, 0.5, "auto") == 0.5
    assert _libtorch_side(0.4, 0.5, "auto") == 0.4
    assert _libtorch_side(0.4, 0.5, "aot_inductor") == 0.5
    assert _libtorch_side(2.0, 0.5, "torchscript") == 2.0
    assert _libtorch_side(2.0, None, "auto") == 2.0


class Bag(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(10, 4, mode="sum")

    def forward(self, ids):
        return self.bag(ids) * 2


def test_suspended_packages_run_the_torchscript_and_auto_times_both_in_turns(monkeypatch):
    """The runtime's measurement switch: while suspended, a subgraph holding a package runs its
    TorchScript (LibTorch's own error text shows which ran); "auto" times the two executors in
    alternating rounds."""
    from byoc_torch.runtime import TorchRuntime

    turns = []
    real = executor_choice._per_call_ms

    def spy(modules, run, rounds):
        turns.append(TorchRuntime(modules[0]).suspend_aoti(True))  # reads, then restores
        TorchRuntime(modules[0]).suspend_aoti(turns[-1])
        return real(modules, run, rounds)

    monkeypatch.setattr(executor_choice, "_per_call_ms", spy)
    monkeypatch.setattr(_defaults, "AOTI_MIN_SUBGRAPH_MS", 0.0)
    model = Bag().eval()
    compiled = byoc_torch.compile(model, (torch.randint(0, 10, (2, 3)),), placement="tvm")
    rounds = _defaults.AOTI_MEASURE_ROUNDS
    # First the TorchScript alone (the size threshold), then TorchScript / package in turns.
    assert turns == [False] + [True, False] * rounds
    (entry,) = compiled.report().subgraphs
    assert entry.torchscript_ms is not None and entry.aot_inductor_ms is not None

    # The table an input, so the package freezes nothing and the TorchScript can still run.
    table = model.bag.weight.detach().clone()
    bag = BagOf().eval()
    ids = torch.randint(0, 10, (2, 3))
    forced = byoc_torch.compile(bag, (ids, table), placement="tvm", torch_executor="aot_inductor")
    runtimes = [TorchRuntime(m) for m in running_torch_modules(forced.executable)]
    bad = torch.tensor([[1, 2, 30], [0, 1, 2]])
    with pytest.raises(RuntimeError, match="raised inside its AOTInductor package"):
        forced(bad, table)
    assert [m.suspend_aoti(True) for m in runtimes] == [False] * len(runtimes)
    with pytest.raises(RuntimeError, match="raised inside LibTorch"):
        forced(bad, table)
    for m in runtimes:
        m.suspend_aoti(False)
    with pytest.raises(RuntimeError, match="raised inside its AOTInductor package"):
        forced(bad, table)
    ok = torch.tensor([[1, 2, 3], [0, 1, 2]])
    torch.testing.assert_close(forced(ok, table), model(ok))


class BagOf(torch.nn.Module):
    """Bag with its table passed in."""

    def forward(self, ids, table):
        return torch.nn.functional.embedding_bag(ids, table, mode="sum") * 2


def test_a_package_only_subgraph_refuses_to_run_its_torchscript():
    """Bag's package froze the table, so the subgraph is called with the ids alone; with its
    package suspended it cannot fall back to its TorchScript, and says so."""
    from byoc_torch.runtime import TorchRuntime

    model = Bag().eval()
    ids = torch.randint(0, 10, (2, 3))
    compiled = byoc_torch.compile(model, (ids,), placement="tvm", torch_executor="aot_inductor")
    runtimes = [TorchRuntime(m) for m in running_torch_modules(compiled.executable)]
    (spec,) = runtimes[0].specs()
    assert spec.package_only and list(spec.aoti_inputs) == list(range(spec.num_inputs))
    for m in runtimes:
        m.suspend_aoti(True)
    try:
        with pytest.raises(RuntimeError, match="'torch_main_0' runs only as its AOTInductor"):
            compiled(ids)
    finally:
        for m in runtimes:
            m.suspend_aoti(False)
    torch.testing.assert_close(compiled(ids), model(ids))


class ConvThenLinear(torch.nn.Module):
    """A convolution, a linear layer on its flattened output, a matrix product with a
    parameter of a 3-d value, and a 2-d parameter used elementwise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.fc = torch.nn.Linear(3 * 4 * 4, 6)
        self.proj = torch.nn.Parameter(torch.randn(6, 5))
        self.scale = torch.nn.Parameter(torch.rand(4, 5) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.special.erfinv(torch.tanh(self.conv(x))).flatten(1))
        return (h.unsqueeze(1).expand(-1, 4, -1) @ self.proj) * self.scale


def _one_aot_inductor_subgraph(model: ConvThenLinear):
    """``model`` compiled with all its ops in one LibTorch subgraph run by AOTInductor."""
    forced = ["aten.convolution", "aten.tanh", "aten.permute", "aten.addmm", "aten.view"]
    forced += ["aten.unsqueeze", "aten.expand", "aten.clone", "aten.mm", "aten.mul"]
    return byoc_torch.compile(
        model,
        (torch.randn(2, 2, 4, 4),),
        torch_executed_ops=forced,
        torch_executor="aot_inductor",
        placement="tvm",
    )


def test_matmul_weights_stay_package_inputs_and_other_parameters_are_frozen(monkeypatch):
    """Where matrix-multiply weights are not frozen (_defaults.AOTI_MATMUL_WEIGHTS
    "inputs"; forced only), the linear weight and the matrix of ``@`` stay inputs of the
    package; the convolution's weight, the biases and the matrix used elementwise are frozen
    in. The program still computes the model."""
    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_WEIGHTS", "inputs")
    model = ConvThenLinear().eval()
    x = torch.randn(2, 2, 4, 4)
    program, taken, _ = whole_program(model, (x,))
    assert sorted(taken) == ["fc.weight", "proj", "x"]
    frozen = {b.shape for b in program.module.buffers()}
    assert frozen == {(3, 2, 3, 3), (3,), (6,), (4, 5)}
    params = dict(model.named_parameters())
    args = [x if name == "x" else params[name].detach() for name in taken]
    with torch.no_grad():
        torch.testing.assert_close(program.module(*args)[0], model(x))

    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_WEIGHTS", "packed")
    program, taken, _ = whole_program(model, (x,))
    assert taken == ["x"]
    assert len(list(program.module.buffers())) == 6


def test_subgraph_with_matmul_weight_inputs_runs_as_aot_inductor_after_load(tmp_path):
    """The linear layer and the matrix product run inside the LibTorch subgraph's package,
    their weights passed by the runtime at each call; in a fresh process, on another input."""
    model = ConvThenLinear().eval()
    compiled = _one_aot_inductor_subgraph(model)
    assert [s.executor for s in compiled.report().subgraphs] == ["aot_inductor"]
    path = compiled.export(tmp_path / "conv_linear.so")
    x = torch.linspace(-2, 2, 64).reshape(2, 2, 4, 4)
    with torch.no_grad():
        expected = model(x)
    script = f"""
        import json, torch, byoc_torch
        model = byoc_torch.load({str(path)!r})
        x = torch.linspace(-2, 2, 64).reshape(2, 2, 4, 4)
        print(json.dumps(model(x).tolist()))
    """
    proc = fresh_python("-c", textwrap.dedent(script))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_large_constants_stay_package_inputs_unless_a_convolution_reads_them(monkeypatch):
    """Past _defaults.AOTI_FROZEN_MAX_BYTES a constant is an input of the package (it lives
    once, in the model's constants), except a convolution's weight, which freezing prepacks.
    Here the bound is 64 bytes: the 4x5 elementwise matrix (80 bytes) becomes an input, the
    216-byte convolution weight stays frozen, as do the biases (12 and 24 bytes)."""
    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_WEIGHTS", "inputs")
    monkeypatch.setattr("byoc_torch._defaults.AOTI_FROZEN_MAX_BYTES", 64)
    model = ConvThenLinear().eval()
    x = torch.randn(2, 2, 4, 4)
    program, taken, _ = whole_program(model, (x,))
    assert sorted(taken) == ["fc.weight", "proj", "scale", "x"]
    assert {b.shape for b in program.module.buffers()} == {(3, 2, 3, 3), (3,), (6,)}
    params = dict(model.named_parameters())
    args = [x if name == "x" else params[name].detach() for name in taken]
    with torch.no_grad():
        torch.testing.assert_close(program.module(*args)[0], model(x))


class ConvBatchNorm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="prepacking needs oneDNN")
def test_packages_are_frozen_even_when_grad_is_enabled(monkeypatch):
    """Inductor freezes only with grad disabled; compile_package must not depend on the
    caller's grad mode. Frozen, the convolution is prepacked for oneDNN (its batch norm folded
    in): the package's wrapper calls oneDNN's convolution, not ATen's (convolutions left to
    ATen's oneDNN ops, which freezing is what prepacks)."""
    monkeypatch.setattr("byoc_torch._defaults.AOTI_ONEDNN_CONVOLUTIONS", False)
    model = ConvBatchNorm().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 8, 8)
    program, _, _ = whole_program(model, (x,))
    assert torch.is_grad_enabled()
    data = aot_inductor.compile_package(program)
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        (wrapper,) = [n for n in package.namelist() if n.endswith("wrapper.cpp")]
        source = package.read(wrapper).decode()
    assert "mkldnn__convolution_pointwise" in source
    assert "aoti_torch_cpu_convolution(" not in source


class TanhGelu(torch.nn.Module):
    """GPT-2's tanh-approximated GELU, and a bare tanh."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inner = 0.7978845608 * (x + 0.044715 * x.pow(3))
        return 0.5 * x * (1.0 + torch.tanh(inner)), torch.tanh(x)


def test_packages_compute_tanh_from_exp_and_still_agree_with_eager(tmp_path):
    """Packages are compiled with inductor's cpp.use_decompose_tanh (Sleef's tanh took 8 % of
    HF GPT-2's package): their kernels call exp, not tanh, and still agree with eager within
    the float32 tolerance from -30 to 30 and near 0, on an input other than the example."""
    from byoc_torch.tolerances import tolerance

    model = TanhGelu()
    program, _, _ = whole_program(model, (torch.randn(6000),))
    data = aot_inductor.compile_package(program)
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        cpp = [n for n in package.namelist() if n.endswith(".cpp")]
        source = "".join(package.read(n).decode() for n in cpp)
    assert ".tanh()" not in source and ".exp()" in source
    path = tmp_path / "tanh.pt2"
    path.write_bytes(data)
    runner = torch._inductor.aoti_load_package(str(path))
    tiny = torch.logspace(-8, 0, 1000)
    x = torch.cat([torch.linspace(-30, 30, 4000), tiny, -tiny])
    rtol, atol = tolerance(torch.float32)
    with torch.no_grad():
        got, want = runner(x), model(x)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol)


def _kernel_source(package: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        cpp = [n for n in archive.namelist() if n.endswith(".cpp")]
        return "".join(archive.read(n).decode(errors="replace") for n in cpp)


def test_serial_packages_have_no_parallel_region_and_agree_with_eager():
    """``serial``: the package's kernels are compiled for one thread, with no OpenMP parallel
    region (a dynamic-threads kernel opens one at every call, even on one thread); without it
    Net's kernel has one. Both agree with eager on another input."""
    model = Net().eval()
    program, names, args = whole_program(model, (torch.randn(8, 16),))
    x = torch.randn(8, 16)  # not the example
    args = [x if name == "x" else a for name, a in zip(names, args, strict=True)]
    with torch.no_grad():
        expected = model(x)
    for serial, regions in ((False, 1), (True, 0)):
        package = aot_inductor.compile_package(program, serial=serial)
        assert _kernel_source(package).count("#pragma omp parallel") == regions
        with torch.no_grad():
            got = aot_inductor_runner(package)(*args)
        torch.testing.assert_close(got[0], expected, rtol=1e-4, atol=1e-4)


def test_a_one_thread_budget_compiles_serial_packages(tmp_path, monkeypatch):
    """A model compiled with ``num_threads=1`` gets packages with serial kernels (placement's
    region packages too: every package in the cache), the report says so, and it agrees with
    eager on other batch sizes."""
    monkeypatch.setenv("TVM_NUM_THREADS", os.environ.get("TVM_NUM_THREADS", "1"))
    before = torch.get_num_threads()
    model = Net().eval()
    try:
        compiled = _compile_net(model, tmp_path, num_threads=1)
    finally:
        torch.set_num_threads(before)
    (entry,) = compiled.report().subgraphs
    assert entry.executor == "aot_inductor"
    assert entry.executor_reason.endswith(aot_inductor.SERIAL_KERNELS)
    packages = sorted((tmp_path / "aoti").glob("*.pt2"))
    assert packages
    for path in packages:
        assert "#pragma omp parallel" not in _kernel_source(path.read_bytes())
    for batch in (3, 33):
        x = torch.randn(batch, 16)
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)


def test_a_budget_of_more_threads_keeps_the_kernels_parallel(net):
    """The fixture's budget is the process's threads: its package's kernels take their thread
    count at run time, and its report says nothing of serial kernels."""
    _, compiled, cache = net
    (entry,) = compiled.report().subgraphs
    serial = compiled.thread_budget.torch_threads == 1
    assert entry.executor_reason.endswith(aot_inductor.SERIAL_KERNELS) == serial
    (path,) = (cache / "aoti").glob("*.pt2")
    assert ("#pragma omp parallel" in _kernel_source(path.read_bytes())) != serial


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (lambda m, x: m.fc(x).view(4, 2, 32), "one matrix multiply (aten.addmm.default)"),
        (lambda m, x: torch.bmm(x.view(1, 8, 16), x.view(1, 16, 8)), "one matrix multiply"),
        (lambda m, x: x.view(2, 64).t().contiguous(), "only views and copies"),
        (lambda m, x: torch.tanh(m.fc(x)), "one matrix multiply (aten.addmm.default)"),
        (lambda m, x: torch.softmax(x, -1), "one op (aten._softmax.default)"),
        (lambda m, x: torch.tanh(m.fc(x)) * 2.0, None),  # an epilogue chain to fuse
        (lambda m, x: torch.tanh(x) * 2.0, None),
        (lambda m, x: torch.nn.functional.conv1d(x.view(1, 8, 16), x.view(16, 8, 1)), None),
    ],
)
def test_a_package_is_not_compiled_where_it_has_nothing_to_gain(body, expected):
    """A region whose only arithmetic is one op, or one matrix multiply and one op after it,
    runs the same kernels as a package or as TorchScript; placement does not spend a compile
    on it. A chain to fuse, or a convolution (its weight prepacked), is worth one."""

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(16, 32)

        def forward(self, x):
            return body(self, x)

    ep = torch.export.export(M(), (torch.randn(8, 16),)).run_decompositions()
    nodes = [n for n in ep.graph.nodes if n.op == "call_function"]
    why = aot_inductor.nothing_to_gain(nodes)
    if expected is None:
        assert why is None
    else:
        assert why is not None and why.startswith(expected)


class Mlp(torch.nn.Module):
    """Two linear layers after an embedding table."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 64)
        self.up = torch.nn.Linear(64, 256)
        self.down = torch.nn.Linear(256, 64)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(self.emb(ids))))


def _probe(monkeypatch, verdict: bool) -> list:
    """Replaces the timed comparison of the forms of frozen matrices by ``verdict`` (True:
    oneDNN's packed multiplies fastest, False: MKL's sgemm on transposed matrices); the list
    records the shapes it was asked about."""
    asked: list = []

    def fake(shapes):
        asked.append(shapes)
        return "packed" if verdict else "transposed"

    monkeypatch.setattr(frozen_weights, "_fastest_form", fake)
    return asked


@pytest.mark.parametrize("packed_faster", [True, False])
def test_matmul_weights_are_packed_or_transposed_as_measured_faster(monkeypatch, packed_faster):
    """By default (AOTI_MATMUL_WEIGHTS None) the matrices are frozen either way and the
    measurement decides how: packed for oneDNN when its packed multiplies win on this CPU,
    stored transposed for MKL's sgemm when that does. It is asked about the model's own
    multiplies (rows, inner, columns: 2x8 tokens, 64 -> 256 and 256 -> 64). The embedding
    table (4000x64, past AOTI_FROZEN_MAX_BYTES) stays an input either way. The package's
    module holds the matrices transposed, and not also as they were, and computes the model
    on another input."""
    asked = _probe(monkeypatch, packed_faster)
    model = Mlp(vocab=4000).eval()
    ids = torch.randint(0, 4000, (2, 8))
    program, taken, _ = whole_program(model, (ids,))
    assert set(asked) == {((16, 64, 256), (16, 256, 64))}  # the real probe runs once
    assert sorted(taken) == ["emb.weight", "ids"]
    assert program.matrices == ("packed" if packed_faster else "transposed")
    compiled = program.compiled_module()
    held = {tuple(b.shape): b for b in compiled.buffers() if b.dim() == 2}
    up, down = model.up.weight.detach(), model.down.weight.detach()  # (out, in)
    expected = (
        {(256, 64): up, (64, 256): down}
        if packed_faster
        else {(64, 256): up.t(), (256, 64): down.t()}
    )
    assert held.keys() == expected.keys()
    for shape, value in expected.items():
        torch.testing.assert_close(held[shape], value, rtol=0, atol=0)
        assert held[shape].is_contiguous()
    other = torch.randint(0, 4000, (2, 8))
    args = [other if name == "ids" else model.emb.weight.detach() for name in taken]
    with torch.no_grad():
        torch.testing.assert_close(compiled(*args)[0], model(other))


aten = torch.ops.aten


def _linears_before() -> fx.GraphModule:
    """x (3, 4) -> addmm(b, x, permute(w1)) -> mm(., t(w2)) -> mm(., permute(w3)) * w3[0, 0]:
    w1 and w2 only multiplied by, w3 also read elementwise."""
    gen = torch.Generator().manual_seed(0)
    attrs = {
        "w1": torch.randn(6, 4, generator=gen),
        "b": torch.randn(6, generator=gen),
        "w2": torch.randn(5, 6, generator=gen),
        "w3": torch.randn(5, 5, generator=gen),
    }
    g = fx.Graph()
    x = g.placeholder("x")
    w1, b, w2, w3 = (g.get_attr(k) for k in attrs)
    h = g.call_function(
        aten.addmm.default, (b, x, g.call_function(aten.permute.default, (w1, [1, 0])))
    )
    h = g.call_function(aten.mm.default, (h, g.call_function(aten.t.default, (w2,))))
    h = g.call_function(aten.mm.default, (h, g.call_function(aten.permute.default, (w3, [1, 0]))))
    corner = g.call_function(aten.select.int, (g.call_function(aten.select.int, (w3, 0, 0)), 0, 0))
    g.output(g.call_function(aten.mul.Tensor, (h, corner)))
    return fx.GraphModule(attrs, g)


# The end of _linears_before's graph after either rewrite: w3, which an elementwise op also
# reads, multiplied by as it was (node 6 is the rewritten second multiply).
_W3_AS_IT_WAS = [
    ("call_function", "aten.permute.default", (2, [1, 0])),
    ("call_function", "aten.mm.default", (6, 7)),  # 8
    ("call_function", "aten.select.int", (2, 0, 0)),
    ("call_function", "aten.select.int", (9, 0, 0)),
    ("call_function", "aten.mul.Tensor", (8, 10)),  # 11
    ("output", "output", (11,)),
]


def test_transposed_stores_what_only_multiplies_read_transposed_and_read_as_it_lies():
    """Before: w1 and w2 reach their multiplies through a transpose. Expected: those
    transposes are the stored transposed matrices (w1_t, w2_t: contiguous, (in, out)), the
    originals are gone from the module, and w3, which an elementwise op also reads, stays
    as it was. The rewritten module computes what the original does."""
    before = _linears_before()
    after = frozen_weights.transposed(before)
    expected = [
        ("placeholder", "x", ()),  # 0
        ("get_attr", "b", ()),
        ("get_attr", "w3", ()),
        ("get_attr", "w1_t", ()),
        ("call_function", "aten.addmm.default", (1, 0, 3)),  # 4
        ("get_attr", "w2_t", ()),
        ("call_function", "aten.mm.default", (4, 5)),  # 6
        *_W3_AS_IT_WAS,
    ]
    assert graph_of(after) == expected
    for name in ("w1", "w2"):
        assert not hasattr(after, name)
        lying = getattr(after, f"{name}_t")
        assert lying.is_contiguous()
        torch.testing.assert_close(lying, getattr(before, name).t(), rtol=0, atol=0)
    assert after.w3 is before.w3 and after.b is before.b
    x = torch.randn(3, 4)
    torch.testing.assert_close(after(x), before(x))


def test_panels_store_what_only_multiplies_read_and_the_multiplies_read_them():
    """Before: w1 (addmm with a bias per column) and w2 (mm) reach their multiplies through a
    transpose. Expected: those multiplies are ``byoc_torch.linear_panels`` calls on the
    stored panels of w1 and w2 (with the bias, and without), the originals and their
    transposes are gone, and w3, which an elementwise op also reads, stays as it was. The
    rewritten module computes what the original does."""
    before = _linears_before()
    after = frozen_weights.panels(before)
    expected = [
        ("placeholder", "x", ()),  # 0
        ("get_attr", "b", ()),
        ("get_attr", "w3", ()),
        ("get_attr", "w1_panels", ()),
        ("call_function", "byoc_torch.linear_panels.default", (0, 3, 1, 6)),  # 4
        ("get_attr", "w2_panels", ()),
        ("call_function", "byoc_torch.linear_panels.default", (4, 5, None, 5)),  # 6
        *_W3_AS_IT_WAS,
    ]
    assert graph_of(after) == expected
    for name in ("w1", "w2"):
        assert not hasattr(after, name)
        held = getattr(after, f"{name}_panels")
        packed = torch.ops.byoc_torch.pack_linear_panels(getattr(before, name))
        torch.testing.assert_close(held, packed, rtol=0, atol=0)
    assert after.w3 is before.w3 and after.b is before.b
    x = torch.randn(3, 4)
    torch.testing.assert_close(after(x), before(x))


def test_panels_also_store_matrices_multiplied_by_as_they_lie():
    """Before: w (in, out), as HF GPT-2's Conv1D holds it, multiplied by directly by addmm
    and mm; v read both directly and through a transpose. Expected: w's multiplies are
    ``linear_panels`` calls on the panels of w's transpose, and v stays as it was."""
    gen = torch.Generator().manual_seed(0)
    attrs = {
        "w": torch.randn(4, 6, generator=gen),
        "b": torch.randn(6, generator=gen),
        "v": torch.randn(6, 6, generator=gen),
    }
    g = fx.Graph()
    x = g.placeholder("x")
    w, b, v = (g.get_attr(k) for k in attrs)
    h = g.call_function(aten.addmm.default, (b, x, w))
    h2 = g.call_function(aten.mm.default, (x, w))
    h = g.call_function(aten.mm.default, (h, v))
    h = g.call_function(aten.mm.default, (h, g.call_function(aten.t.default, (v,))))
    g.output(g.call_function(aten.add.Tensor, (h, h2)))
    before = fx.GraphModule(attrs, g)
    after = frozen_weights.panels(before)
    assert graph_of(after) == [
        ("placeholder", "x", ()),  # 0
        ("get_attr", "b", ()),
        ("get_attr", "v", ()),
        ("get_attr", "w_panels", ()),
        ("call_function", "byoc_torch.linear_panels.default", (0, 3, 1, 6)),  # 4
        ("get_attr", "w_panels", ()),
        ("call_function", "byoc_torch.linear_panels.default", (0, 5, None, 6)),  # 6
        ("call_function", "aten.mm.default", (4, 2)),
        ("call_function", "aten.t.default", (2,)),
        ("call_function", "aten.mm.default", (7, 8)),
        ("call_function", "aten.add.Tensor", (9, 6)),
        ("output", "output", (10,)),
    ]
    packed = torch.ops.byoc_torch.pack_linear_panels(attrs["w"].t().contiguous())
    torch.testing.assert_close(after.w_panels, packed, rtol=0, atol=0)
    assert not hasattr(after, "w") and after.v is before.v
    x = torch.randn(3, 4)
    torch.testing.assert_close(after(x), before(x))


def test_panels_leave_a_matrix_an_addmm_scales_or_adds_a_matrix_to():
    """``linear_panels`` adds one bias value per column at unit scale; a matrix one of whose
    multiplies adds a whole matrix, or scales, keeps its original form."""
    gen = torch.Generator().manual_seed(0)
    attrs = {"w": torch.randn(6, 4, generator=gen), "c": torch.randn(3, 6, generator=gen)}
    for kwargs in ({}, {"beta": 0.5}):
        g = fx.Graph()
        x = g.placeholder("x")
        w, c = g.get_attr("w"), g.get_attr("c")
        bias = c if not kwargs else g.call_function(aten.select.int, (c, 0, 0))
        view = g.call_function(aten.t.default, (w,))
        g.output(g.call_function(aten.addmm.default, (bias, x, view), kwargs))
        before = fx.GraphModule(attrs, g)
        after = frozen_weights.panels(before)
        assert graph_of(after) == graph_of(before)
        x = torch.randn(3, 4)
        torch.testing.assert_close(after(x), before(x))


def _mlp_package(monkeypatch, form: str) -> tuple[bytes, dict[str, str]]:
    """Mlp's whole program compiled with its matrices in ``form`` (AOTI_MATMUL_WEIGHTS), not
    frozen, checked to agree with eager on another input; the package and its C++ and JSON
    files' text by name."""
    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_WEIGHTS", form)
    model = Mlp(vocab=4000).eval()
    program, taken, _ = whole_program(model, (torch.randint(0, 4000, (2, 8)),))
    assert program.matrices == form
    assert program.inductor_configs()["freezing"] is False
    package = aot_inductor.compile_package(program)
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        files = {
            n: archive.read(n).decode(errors="replace")
            for n in archive.namelist()
            if n.endswith((".cpp", ".json"))
        }
    runner = aot_inductor_runner(package)
    ids = torch.randint(0, 4000, (2, 8))  # not the example's
    args = [ids if name == "ids" else model.emb.weight.detach() for name in taken]
    with torch.no_grad():
        torch.testing.assert_close(runner(*args)[0], model(ids), rtol=1e-5, atol=1e-5)
    return package, files


def test_panel_packages_call_the_runtime_multiply(monkeypatch):
    """Mlp with its matrices in panels: the package is not frozen, calls the runtime's
    ``linear_panels`` for both multiplies (through AOTInductor's proxy executor) and no ATen
    or oneDNN multiply, and agrees with eager on another input."""
    package, files = _mlp_package(monkeypatch, "panels")
    (wrapper,) = [text for name, text in files.items() if name.endswith("wrapper.cpp")]
    specs = "".join(text for name, text in files.items() if name.endswith(".json"))
    assert specs.count("byoc_torch::linear_panels") == 2
    assert "aoti_torch_cpu_addmm_out" not in wrapper and "aoti_torch_cpu_mm_out" not in wrapper
    assert _linear_calls(package) == 0


def test_transposed_packages_call_mkls_sgemm_on_the_stored_matrices(monkeypatch):
    """Mlp with its matrices transposed: the package is not frozen (freezing would pack
    them for oneDNN again), its two multiplies call ATen's addmm on the stored (in, out)
    constants as they lie, none oneDNN's, and it agrees with eager on another input. With
    an ATen convolution left in it (ConvThenLinear, convolutions not given to the runtime's
    oneDNN op), the package stays frozen for the convolution's sake."""
    package, files = _mlp_package(monkeypatch, "transposed")
    (wrapper,) = [text for name, text in files.items() if name.endswith("wrapper.cpp")]
    assert len(re.findall(r"aoti_torch_cpu_addmm_out\([^;]*, c\d+_t, 1L, 1L\)", wrapper)) == 2
    assert _linear_calls(package) == 0

    monkeypatch.setattr("byoc_torch._defaults.AOTI_ONEDNN_CONVOLUTIONS", False)
    program, _, _ = whole_program(ConvThenLinear().eval(), (torch.randn(2, 2, 4, 4),))
    assert program.matrices == "transposed"
    assert program.inductor_configs()["freezing"] is True


def test_a_bad_matmul_weights_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_WEIGHTS", "frozen")
    ep = torch.export.export(Mlp(vocab=10).eval(), (torch.randint(0, 10, (2, 3)),))
    with pytest.raises(ValueError) as err:
        frozen_weights.matmul_weights(ep)
    assert str(err.value) == (
        "AOTI_MATMUL_WEIGHTS must be one of 'packed', 'transposed', 'panels', 'inputs' or None "
        "(measured), got 'frozen'"
    )


class Wide(torch.nn.Module):
    """Four 512x512 linear layers: 4 MB of weights, more than the code of their package."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layers(x))


def _constants(mod) -> list:
    """The Relax constants of every function of ``mod``."""
    from tvm import relax

    found = []

    @relax.expr_functor.visitor
    class _Visit(relax.PyExprVisitor):
        def visit_constant_(self, const) -> None:
            found.append(const)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            _Visit().visit_expr(func)
    return found


@pytest.mark.parametrize("how", ["packed", "transposed", "panels"])
def test_a_weight_frozen_into_a_package_lives_only_there(monkeypatch, tmp_path, how):
    """The package froze the four matrices (packed for oneDNN, transposed for MKL's sgemm,
    or in panels for the runtime's multiply) and biases, so TVM keeps none of them: the
    lowered module has no constants left, the artifact holds the weights once (1.5x would be
    a second copy), the report says so, and the artifact runs in a fresh process on another
    input."""
    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_WEIGHTS", how)
    model = Wide().eval()
    compiled = byoc_torch.compile(
        model,
        (torch.randn(8, 512),),
        placement="tvm",
        torch_executor="aot_inductor",
        torch_executed_ops=["aten.addmm", "aten.tanh"],
    )
    (entry,) = compiled.report().subgraphs
    assert entry.executor == "aot_inductor"
    assert f"matrix-multiply weights frozen in, {how} for" in entry.executor_reason
    assert entry.executor_reason.endswith("the weights it froze live only in the package")
    assert _constants(compiled.ir_module) == []
    path = compiled.export(tmp_path / "wide.so")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert path.stat().st_size < 1.5 * weights
    x = torch.linspace(-1, 1, 8 * 512).reshape(8, 512)  # not the example input
    with torch.no_grad():
        expected = model(x)
    script = f"""
        import json, torch, byoc_torch
        model = byoc_torch.load({str(path)!r})
        x = torch.linspace(-1, 1, 8 * 512).reshape(8, 512)
        print(json.dumps(model(x).tolist()))
    """
    proc = fresh_python("-c", textwrap.dedent(script))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_the_measured_shapes_are_the_frequent_ones_within_a_budget(monkeypatch):
    """Rows are capped at AOTI_MATMUL_PROBE_ROWS; shapes are taken most frequent first while
    their work fits AOTI_MATMUL_PROBE_FLOPS (the first always), and come back sorted."""
    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_PROBE_ROWS", 128)
    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_PROBE_FLOPS", 2 * 128 * 64 * 64 * 2.5)
    import collections

    shapes = collections.Counter({(4096, 64, 64): 3, (100, 64, 64): 2, (8, 4096, 4096): 1})
    assert frozen_weights._timed_shapes(shapes) == ((100, 64, 64), (128, 64, 64))
    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_PROBE_FLOPS", 1.0)
    assert frozen_weights._timed_shapes(shapes) == ((128, 64, 64),)


def _fake_probe_times(monkeypatch, **ms: float) -> None:
    """The probes' timings replaced by ``ms`` (name -> ms); each timed callable, real, still
    runs once."""
    from byoc_torch.timing import Timing

    def fake_times(fns):
        for fn in fns.values():
            fn()
        return {name: Timing(value, 0.02) for name, value in ms.items()}

    monkeypatch.setattr(frozen_weights, "robust_times", fake_times)


@pytest.mark.parametrize(
    ("packed_ms", "transposed_ms", "panels_ms", "form"),
    [
        (1.0, 1.3, 1.3, "packed"),
        (1.0, 0.98, 0.97, "packed"),  # within the 5 % margin: a tie keeps packed
        (1.0, 0.8, 0.97, "transposed"),
        (1.0, 0.8, 0.6, "panels"),
        (1.0, 1.03, 0.8, "panels"),
        (1.0, 0.8, 0.78, "panels"),  # both beyond the margin: the fastest
    ],
)
def test_the_fastest_form_must_win_beyond_the_margin(
    monkeypatch, packed_ms, transposed_ms, panels_ms, form
):
    """The verdict is timing.choose's over the three timings, oneDNN's packed multiplies (what
    inductor does with frozen weights) the default: another form is chosen only when it is
    faster than packed beyond the 5 % margin. All three callables are real: each runs its
    multiplies once before its timing is faked."""
    _fake_probe_times(monkeypatch, packed=packed_ms, transposed=transposed_ms, panels=panels_ms)
    frozen_weights._fastest_form.cache_clear()
    try:
        assert frozen_weights._fastest_form(((16, 64, 256),)) == form
    finally:
        frozen_weights._fastest_form.cache_clear()


@pytest.mark.parametrize(
    ("packed_faster", "said"),
    [
        (
            True,
            "matrix-multiply weights frozen in, packed for oneDNN: no other form measured "
            "faster here",
        ),
        (
            False,
            "matrix-multiply weights frozen in, transposed for MKL's sgemm: measured fastest here",
        ),
    ],
)
def test_the_report_says_how_matrix_weights_were_frozen_and_why(monkeypatch, packed_faster, said):
    """The measurement decides how ConvThenLinear's matrices are frozen; the subgraph's
    executor reason in the report says which, and that what the package froze lives only
    there. Transposed, the package keeps the convolution's weight packing (an ATen
    convolution is left in it)."""
    asked = _probe(monkeypatch, packed_faster)
    model = ConvThenLinear().eval()
    compiled = _one_aot_inductor_subgraph(model)
    (entry,) = compiled.report().subgraphs
    assert entry.executor == "aot_inductor"
    assert said in entry.executor_reason
    assert "the weights it froze live only in the package" in entry.executor_reason
    assert asked
    x = torch.linspace(-2, 2, 64).reshape(2, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


class Scale(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(1, 2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def _calling(*args_of) -> tvm.IRModule:
    """``main(x)`` returning ``call_pure_packed("torch_s", *args)``, args made from x."""
    x = relax.Var("x", relax.TensorType((4,), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        ty = relax.TensorType((4,), "float32")
        out = bb.emit(relax.op.call_pure_packed("torch_s", *[a(x) for a in args_of], ty_args=ty))
        bb.emit_func_output(out)
    return bb.get()


def test_weights_in_packages_only_drops_the_frozen_constants_from_the_call():
    """Before: the call passes the weight (a constant) and x; the package froze the weight and
    takes x alone. Expected: the call passes x alone, and the new runtime module's spec is
    package-only. A weight that reaches the call as a variable is left as it is."""
    from byoc_torch.codegen import weights_in_packages_only
    from byoc_torch.runtime import SubgraphSpec, TorchRuntime, make_runtime_module

    model = Scale().eval()
    program, taken, _ = whole_program(model, (torch.ones(4),))
    assert taken == ["x"] and program.inputs == (1,)
    package = aot_inductor.compile_package(program)
    script = "def forward(self, a0: Tensor, a1: Tensor) -> Tensor:\n    return a1 * a0\n"
    spec = SubgraphSpec("torch_s", script, 2, aoti_package=package, aoti_inputs=[1])
    runtime = make_runtime_module([spec], "meta")
    weight = relax.const(model.w.detach().numpy())
    before = _calling(lambda x: weight, lambda x: x).with_attr("external_mods", [runtime])

    after, symbols = weights_in_packages_only(before, [spec], "meta")
    assert symbols == ["torch_s"]
    tvm.ir.assert_structural_equal(after["main"], _calling(lambda x: x)["main"])
    (new,) = after.attrs["external_mods"]
    (made,) = TorchRuntime(new).specs()
    assert (made.package_only, made.num_inputs, list(made.aoti_inputs)) == (True, 1, [0])
    assert TorchRuntime(new).metadata() == "meta"
    x = torch.linspace(-1, 1, 4)
    got = torch.from_dlpack(new["torch_s"](tvm.runtime.from_dlpack(x)))
    torch.testing.assert_close(got, model(x).detach())

    unchanged = _calling(lambda x: relax.op.add(x, x), lambda x: x)
    same, none = weights_in_packages_only(unchanged, [spec], "meta")
    assert none == [] and same is unchanged


class Rotary(torch.nn.Module):
    """A linear layer, then a rotary embedding with complex numbers (a cluster torchop: the
    complex-valued nodes and the view_as_real that turns them real, one LibTorch call)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = torch.arange(16, dtype=torch.float32).reshape(4, 4) * 0.1
        rope = torch.polar(torch.ones(4, 4), angles)
        xc = torch.view_as_complex(self.lin(x).reshape(2, 4, 4, 2))
        return torch.view_as_real(xc * rope).flatten(2) + 1


def test_a_complex_cluster_runs_as_an_aot_inductor_package(tmp_path):
    """The torchop of a complex cluster runs several FX nodes; its package rebuilds them all
    and returns the sink's value as the torchop's tuple, so the subgraph runs AOTInductor and
    agrees with eager, also in a fresh process on another input."""
    model = Rotary().eval()
    x = torch.randn(2, 4, 8)
    compiled = byoc_torch.compile(
        model,
        (x,),
        placement="tvm",
        torch_executor="aot_inductor",
        torch_executed_ops=["aten.addmm"],
    )
    (entry,) = [s for s in compiled.report().subgraphs if "view_as_real" in " ".join(s.ops)]
    assert entry.executor == "aot_inductor", entry.executor_reason
    path = compiled.export(tmp_path / "rotary.so")
    x2 = torch.linspace(-1, 1, 64).reshape(2, 4, 8)
    with torch.no_grad():
        expected = model(x2)
    script = f"""
        import json, torch, byoc_torch
        model = byoc_torch.load({str(path)!r})
        print(json.dumps(model(torch.linspace(-1, 1, 64).reshape(2, 4, 8)).tolist()))
    """
    proc = fresh_python("-c", textwrap.dedent(script))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


class QKV(torch.nn.Module):
    """An attention's three projections of one (3-d) input, and a fourth linear of another
    value: the three form one group of multiplies sharing an input, the fourth none."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(32, 32) for _ in range(3))
        self.out = torch.nn.Linear(32, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        return self.out(attn @ v)


def _linear_calls(package: bytes) -> int:
    """How many oneDNN multiplies the package's wrapper calls."""
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        (wrapper,) = [n for n in archive.namelist() if n.endswith("wrapper.cpp")]
        source = archive.read(wrapper).decode()
    return source.count("aoti_torch_cpu__linear_pointwise(")


def test_the_multiplies_sharing_an_input_are_found_through_the_views_of_it():
    """QKV's q, k and v read one input, each through its own 2-d view of x (rows 2 x 5 = 10,
    inner 32, 32 columns each): one group; out reads another value and makes none."""
    x = torch.randn(2, 5, 32)
    ep = torch.export.export(QKV().eval(), (x,)).run_decompositions()
    values = frozen_weights._constant_values(ep)
    matrices = frozen_weights._matmul_matrices(ep, values)
    assert len(matrices) == 4
    groups = frozen_weights._sibling_multiplies(ep, values, matrices)
    assert groups == [((10, 32, 32), (10, 32, 32), (10, 32, 32))]


@pytest.mark.parametrize("joined", [True, False])
def test_packages_concatenate_multiplies_sharing_an_input_where_measured_faster(
    monkeypatch, joined
):
    """With matrices frozen, the measurement decides (AOTI_CONCAT_MULTIPLIES None): faster
    joined, the package multiplies q, k and v in one oneDNN call (two calls in all, with
    out's), else in three (four in all); the probe is asked about QKV's one group; the
    package agrees with eager on another input either way."""
    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_WEIGHTS", "packed")
    asked: list = []

    def fake(groups):
        asked.append(groups)
        return joined

    monkeypatch.setattr(frozen_weights, "_concat_faster", fake)
    model = QKV().eval()
    program, _, _ = whole_program(model, (torch.randn(2, 5, 32),))
    assert program.concat_multiplies is joined
    assert asked == [(((10, 32, 32), (10, 32, 32), (10, 32, 32)),)]
    package = aot_inductor.compile_package(program)
    assert _linear_calls(package) == (2 if joined else 4)
    runner = aot_inductor_runner(package)
    x = torch.linspace(-3, 3, 2 * 5 * 32).reshape(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(runner(x)[0], model(x), rtol=1e-4, atol=1e-4)


def aot_inductor_runner(package: bytes):
    """The package loaded by torch's own loader, from a temporary file."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.pt2"
        path.write_bytes(package)
        return torch._inductor.aoti_load_package(str(path))


@pytest.mark.parametrize(
    ("setting", "matrices", "expected"),
    [
        (
            None,
            "packed",
            (
                True,
                "multiplies sharing an input concatenated: one wider multiply measured faster here",
            ),
        ),
        (
            False,
            "packed",
            (False, "multiplies sharing an input kept apart (AOTI_CONCAT_MULTIPLIES)"),
        ),
        (True, "inputs", (False, "")),
        (True, "transposed", (False, "")),
    ],
)
def test_only_packed_matrices_concatenate_and_the_setting_forces_it(
    monkeypatch, setting, matrices, expected
):
    """The verdict and the report's words: measured (the probe faked faster), forced apart by
    the setting, and none at all when the matrices are package inputs or transposed for MKL's
    sgemm (inductor's concatenation packs them for oneDNN)."""
    monkeypatch.setattr("byoc_torch._defaults.AOTI_CONCAT_MULTIPLIES", setting)
    monkeypatch.setattr("byoc_torch._defaults.AOTI_MATMUL_WEIGHTS", matrices)
    monkeypatch.setattr(frozen_weights, "_concat_faster", lambda groups: True)
    ep = torch.export.export(QKV().eval(), (torch.randn(2, 5, 32),)).run_decompositions()
    assert frozen_weights.concat_multiplies(ep) == expected


@pytest.mark.parametrize(
    ("apart_ms", "joined_ms", "joined"),
    [(1.0, 0.8, True), (1.0, 0.97, False), (1.0, 1.2, False)],
)
def test_a_concatenated_multiply_must_win_beyond_the_margin(
    monkeypatch, apart_ms, joined_ms, joined
):
    """timing.choose decides, apart (inductor's default) kept on a tie: joined only when
    faster beyond the 5 % margin. Both callables are real: each runs once before its timing
    is faked."""
    _fake_probe_times(monkeypatch, apart=apart_ms, joined=joined_ms)
    frozen_weights._concat_faster.cache_clear()
    try:
        assert frozen_weights._concat_faster((((16, 64, 64), (16, 64, 64)),)) is joined
    finally:
        frozen_weights._concat_faster.cache_clear()


def _qkv_with_a_dynamic_batch(monkeypatch, **settings) -> tuple[object, bytes]:
    """QKV compiled with a dynamic batch into one AOTInductor subgraph, ``settings`` (names of
    ``_defaults``) in force; checked against eager at batches other than the example's 2.
    Returns its report entry and its package."""
    for name, value in settings.items():
        monkeypatch.setattr(f"byoc_torch._defaults.{name}", value)
    model = QKV().eval()
    forced = ["aten.addmm", "aten.view", "aten.permute", "aten.bmm", "aten.expand"]
    forced += ["aten.clone", "aten._softmax", "aten._unsafe_view", "aten.transpose", "aten.t"]
    compiled = byoc_torch.compile(
        model,
        (torch.randn(2, 5, 32),),
        dynamic_shapes=({0: BATCH},),
        torch_executed_ops=forced,
        torch_executor="aot_inductor",
        placement="tvm",
    )
    for batch in (1, 3, 7):
        x = torch.linspace(-2, 2, batch * 5 * 32).reshape(batch, 5, 32)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    from byoc_torch.runtime import TorchRuntime

    (entry,) = compiled.report().subgraphs
    assert entry.executor == "aot_inductor"
    (spec,) = TorchRuntime(running_torch_modules(compiled.executable)[0]).specs()
    return entry, bytes(spec.aoti_package)


def test_a_concatenated_package_keeps_its_batch_dynamic(monkeypatch):
    """QKV with a dynamic batch, its multiplies concatenated (forced), in one AOTInductor
    subgraph: the report says they were, and the model agrees with eager at batches other than
    the example's 2."""
    entry, package = _qkv_with_a_dynamic_batch(
        monkeypatch, AOTI_MATMUL_WEIGHTS="packed", AOTI_CONCAT_MULTIPLIES=True
    )
    assert "multiplies sharing an input concatenated (AOTI_CONCAT_MULTIPLIES)" in (
        entry.executor_reason
    )
    assert _linear_calls(package) == 2  # q, k, v as one; out


def test_a_package_of_panels_keeps_its_batch_dynamic(monkeypatch):
    """QKV with a dynamic batch and its matrices in panels, in one AOTInductor subgraph: the
    report says so, its four multiplies are the runtime's, and the model agrees with eager at
    batches other than the example's 2 (the op's row count follows the symbolic batch)."""
    entry, package = _qkv_with_a_dynamic_batch(monkeypatch, AOTI_MATMUL_WEIGHTS="panels")
    assert "panels for byoc_torch's multiply (AOTI_MATMUL_WEIGHTS)" in entry.executor_reason
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        specs = [archive.read(n).decode() for n in archive.namelist() if n.endswith(".json")]
    assert "".join(specs).count("byoc_torch::linear_panels") == 4
