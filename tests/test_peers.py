"""benchmarks/peers.py runs end to end on a tiny model and writes the documented JSON; the
Hugging Face builders are deterministic and export with torch.export."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import pytest
import torch

from benchmarks import peers
from byoc_torch.testing import hf_models


@pytest.fixture(autouse=True)
def _compiler_caches_restored():
    """The peers harness turns PyTorch's compile caches off for the whole process (cold
    compiles for every contestant); tests that run later in this process must not inherit it
    (Dynamo then warns 'dynamo_pgo force disabled' inside every torch.compile)."""
    before = torch.compiler.config.force_disable_caches
    with torch.compiler.config.patch(force_disable_caches=before):
        yield


# Small variants of the benchmark configurations (sequence 16), to keep the tests quick.
SMALL: dict[str, Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]] = {
    "hf_bert": lambda: hf_models.hf_bert(seq=16, hidden=64, layers=1, heads=2, intermediate=128),
    "hf_gpt2": lambda: hf_models.hf_gpt2(seq=16, n_embd=64, layers=1, heads=2),
    "hf_vit": lambda: hf_models.hf_vit(image=32, patch=8, hidden=48, layers=1, heads=3),
    "hf_resnet": lambda: hf_models.hf_resnet(image=32, widths=(8, 16), depths=(1, 1)),
    "hf_bert_sdpa": lambda: hf_models.hf_bert(
        seq=16, hidden=64, layers=1, heads=2, intermediate=128, attention="sdpa"
    ),
}


def _is_number_or_failure(value: object) -> bool:
    if isinstance(value, float):
        return value > 0
    return isinstance(value, str) and value.startswith(peers.FAILURE_PREFIXES)


@pytest.fixture
def _restore_threads(monkeypatch):
    # --threads sets these for the process; monkeypatch puts the environment back afterwards.
    for var in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, str(torch.get_num_threads())))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_harness_writes_the_documented_json(tmp_path, _restore_threads):
    out, png = tmp_path / "peers.json", tmp_path / "peers.png"
    argv = ["--models", "demo", "--rounds", "2", "--budget-ms", "5", "--warmup", "1"]
    assert peers.main([*argv, "--threads", "1", "--json", str(out), "--plot", str(png)]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"meta", "models", "geomean_x_eager"}
    entrants = result["meta"]["contestants"]
    assert entrants[: len(peers.BASE_CONTESTANTS)] == list(peers.BASE_CONTESTANTS)
    assert result["meta"]["rounds"] == 2
    assert result["meta"]["threads"] == 1 and result["meta"]["torch_threads"] == 1
    assert list(result["models"]) == ["demo"]
    row = result["models"]["demo"]
    assert {"latency_ms", "x_eager", "setup_s", "calls_per_round", "rounds_ms"} <= set(row)
    assert row["x_eager"]["eager"] == 1.0
    for key in ("latency_ms", "x_eager"):
        assert list(row[key]) == entrants
        bad = {c: v for c, v in row[key].items() if not _is_number_or_failure(v)}
        assert not bad, f"{key}: {bad}"
    for contestant, rounds in row["rounds_ms"].items():
        assert len(rounds) == 2 and all(v > 0 for v in rounds), contestant
        assert row["calls_per_round"][contestant] >= 1
    for contestant, setup in row["setup_s"].items():
        timed = isinstance(row["latency_ms"][contestant], float)
        assert (setup > 0) if timed else (setup is None or setup > 0), contestant
    # demo uses ops TVM cannot import: TVM alone fails, byoc_torch runs it.
    assert row["latency_ms"]["tvm"].startswith("fails: ")
    assert isinstance(row["latency_ms"]["byoc"], float)
    for contestant, gm in result["geomean_x_eager"].items():
        assert gm["of"] == 1 and gm["models"] in (0, 1), contestant
        assert (gm["geomean"] is None) == (gm["models"] == 0)
    assert png.stat().st_size > 0


def test_compare_reports_wrong_values_and_shapes():
    a = torch.ones(2, 3)
    assert peers.compare([a + 1e-5], [a]) == "ok"
    assert peers.compare([a + 0.5], [a]).startswith("wrong: output 0 max abs diff 0.5")
    assert peers.compare([a.T], [a]).startswith("wrong: output 0 has shape")
    assert peers.compare([a, a], [a]).startswith("wrong: 2 outputs")


@pytest.mark.parametrize("name", list(SMALL))
def test_hf_builder_is_deterministic_and_exports(name):
    model, inputs = SMALL[name]()
    assert not model.training
    with torch.no_grad():
        first, second = model(*inputs), model(*inputs)
    assert isinstance(first, tuple) and all(isinstance(t, torch.Tensor) for t in first)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    rebuilt, rebuilt_inputs = SMALL[name]()  # seeded: same weights, same inputs
    for a, b in zip(inputs, rebuilt_inputs, strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        for a, b in zip(first, rebuilt(*rebuilt_inputs), strict=True):
            assert torch.equal(a, b)
        ep = torch.export.export(model, inputs)
        exported = ep.module()(*inputs)
    torch.testing.assert_close(tuple(exported), first)


def test_benchmark_configurations_are_the_documented_sizes():
    assert list(hf_models.HF_MODELS) == [
        "hf_bert",
        "hf_gpt2",
        "hf_vit",
        "hf_resnet",
        "hf_bert_sdpa",
        "hf_gpt2_sdpa",
        "hf_vit_sdpa",
    ]
    bert, (ids,) = hf_models.hf_bert()
    config = bert.model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        256,
        4,
        4,
    )
    assert config.intermediate_size == 1024 and tuple(ids.shape) == (1, 128)
    assert config._attn_implementation == "eager"
    sdpa, _ = hf_models.HF_MODELS["hf_bert_sdpa"]()
    assert sdpa.model.config._attn_implementation == "sdpa"


def test_sdpa_variant_exports_one_attention_node_per_layer():
    model, inputs = SMALL["hf_bert_sdpa"]()
    with torch.no_grad():
        ep = torch.export.export(model, inputs)
    ops = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert sum("scaled_dot_product_attention" in op for op in ops) == 1
    eager_model, _ = SMALL["hf_bert"]()
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), eager_model(*inputs), rtol=1e-4, atol=1e-5)


def test_optional_columns_follow_the_options_byoc_torch_has(monkeypatch):
    base = {"verify", "min_block_size"}
    monkeypatch.setattr(peers, "option_fields", lambda: base)
    assert list(peers.contestants(tune_trials=8)) == list(peers.BASE_CONTESTANTS)
    monkeypatch.setattr(peers, "option_fields", lambda: base | {"placement", "tune_trials"})
    entrants = peers.contestants(tune_trials=8)
    assert entrants["byoc_tvm"] == {"placement": "tvm"}
    assert entrants["byoc_tuned"] == {"tune_trials": 8}
    assert "byoc_tuned" not in peers.contestants(tune_trials=None)


def test_hf_builders_name_the_extra_when_transformers_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pip install byoc_torch\[bench\]"):
        hf_models.hf_bert(seq=8)
