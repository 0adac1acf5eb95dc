"""benchmarks/compute_floor.py counts a model's multiply work exactly (CPU attention
included), derives the floor from it, and runs end to end on a built-in model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from benchmarks import compute_floor


class _Mixed(nn.Module):
    """One of each counted family: a linear, a convolution, a batched multiply, an attention."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 8)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x, image, q, k, v):
        attn = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.fc(x), self.conv(image), torch.bmm(q[0], k[0].transpose(1, 2)), attn


def _mixed_inputs():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=gen) for _ in range(3))
    return torch.randn(4, 16, generator=gen), torch.randn(1, 3, 6, 6, generator=gen), q, k, v


def test_counts_each_family_exactly():
    flops = compute_floor.multiply_flops(_Mixed().eval(), _mixed_inputs())
    assert flops == {
        "matmul": 2 * 4 * 16 * 8,  # rows x inner x columns
        "convolution": 2 * (5 * 6 * 6) * (3 * 3 * 3),  # outputs x (inputs per output)
        "batched": 2 * 2 * 4 * 8 * 4,  # batch x rows x inner x columns
        "attention": 2 * (2 * 2 * 4 * 8 * 4),  # its two batched multiplies
    }


def test_floor_is_work_over_peak():
    row = compute_floor.floor_row({"matmul": 3 * 10**9, "convolution": 10**9}, 100.0, 80.0, 50.0)
    assert row["gflop"] == pytest.approx(4.0)
    assert row["floor_ms"] == pytest.approx(40.0)  # 4 GFLOP at 100 GFLOP/s
    assert row["floor_x_eager"] == pytest.approx(0.5)
    assert row["byoc_x_eager"] == pytest.approx(50.0 / 80.0)
    assert row["byoc_above_floor_ms"] == pytest.approx(10.0)


def test_runs_end_to_end_and_writes_json(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "floor.json"
    try:
        assert compute_floor.main(["--models", "cnn", "--rounds", "2", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    peak = result["peak_gflops"]
    assert peak["peak"] == max(v for k, v in peak.items() if k != "peak") > 0
    row = result["models"]["cnn"]
    # TinyCNN's two convolutions and its head, counted from the model itself
    assert row["gflop_by_kind"] == pytest.approx(
        {
            "convolution": 2 * 2 * 16 * 16 * 16 * 27 / 1e9 + 2 * 2 * 8 * 8 * 32 * 144 / 1e9,
            "matmul": 2 * 2 * 144 * 10 / 1e9,
        }
    )
    assert row["floor_ms"] == pytest.approx(row["gflop"] / peak["peak"] * 1e3)
    assert row["floor_x_eager"] == pytest.approx(row["floor_ms"] / row["eager_ms"])
    assert result["geomean"]["byoc_x_eager"] == pytest.approx(row["byoc_x_eager"])
    assert "| cnn |" in capsys.readouterr().out


def test_unknown_model_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as err:
        compute_floor.main(["--models", "resnet9000"])
    assert err.value.code == 2
    assert "unknown model(s) resnet9000; known: bert," in capsys.readouterr().err
