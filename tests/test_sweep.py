"""byoc_torch.sweep on a representative subset: every case here is known to be correct."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import sweep
from byoc_torch.testing import Lambda

# Native and fallback ops of most kinds; known failures of the full sweep are not listed.
SUBSET = (
    # native
    "gelu",
    "gather",
    "roll",
    "conv2d_groups",
    "layer_norm",
    "avg_pool2d_no_pad_count",
    # fallback: special functions, scans, sorting, indexing, pooling, shape
    "erfinv",
    "lgamma",
    "polygamma1",
    "logcumsumexp",
    "cummax",
    "kthvalue",
    "mode",
    "searchsorted",
    "scatter_reduce_amax",
    "unfold",
    "adaptive_max_pool2d_indices",
    "embedding_bag_mean",
    "histc",
    "polar",
    "rfft_irfft",
    "nonzero",
    # integer and bool
    "int_floor_divide",
    "bitwise_shift",
    "gcd_lcm",
    "logical_ops",
    "bool_any_all",
    # other dtypes, dynamic shapes, everything forced into LibTorch
    "f64_erfinv",
    "dyn_erfinv",
    "forced:cat_stack",
    "forced:advanced_index_2d",
)


@pytest.fixture(scope="module")
def results() -> dict[str, sweep.Result]:
    return {r.name: r for r in sweep.run_sweep(sweep.select_cases(SUBSET), plain_tvm=False)}


@pytest.mark.parametrize("name", SUBSET)
def test_case_is_correct(results, name):
    r = results[name]
    assert r.status in ("native", "fallback"), f"{name}: {r.status} [{r.stage}] {r.detail}"


def test_subset_covers_fallbacks_ints_and_bools(results):
    assert sum(r.status == "fallback" for r in results.values()) >= 10
    for name in ("erfinv", "cummax", "forced:cat_stack"):
        assert results[name].fallback_ops, name
    assert results["forced:cat_stack"].category == "forced"


def test_case_names_are_unique_and_the_sweep_is_broad():
    names = [c.name for c in sweep.CASES]
    assert len(names) == len(set(names))
    assert len(names) >= 150


def test_a_failing_case_is_classified_and_does_not_stop_the_sweep():
    def broken(t: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom\nsecond line")

    bad = sweep.Case("broken", "test", lambda: Lambda(broken), lambda: (torch.randn(3),))
    out = sweep.run_sweep([bad, *sweep.select_cases(["gelu"])], plain_tvm=False)
    assert [r.status for r in out] == ["error", "native"]
    assert out[0].stage == "inputs"  # eager itself raised
    assert (out[0].error_type, out[0].detail) == ("RuntimeError", "boom")


def test_wrong_result_is_classified_as_wrong():
    # The model's eager output differs from its exported graph: it depends on a Python-side
    # counter that export froze, so the compiled model must disagree with a later eager call.
    class Drifting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return t * (2.0 if self.calls == 1 else 3.0)

    case = sweep.Case("drift", "test", Drifting, lambda: (torch.randn(4),))
    (r,) = sweep.run_sweep([case], plain_tvm=False)
    assert r.status == "wrong" and r.stage == "compare"


def test_main_writes_json_and_a_table(tmp_path, capsys):
    path = tmp_path / "sweep.json"
    assert sweep.main(["-k", "sinh", "--no-plain-tvm", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert {r["name"] for r in data["results"]} == {"sinh", "asinh"}
    assert data["totals"]["total"] == 2
    assert "correct" in capsys.readouterr().out
