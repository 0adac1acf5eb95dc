"""The overhead-study tool (byoc_torch.tools.overhead, byoc-torch bench)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from byoc_torch.errors import OptionError
from byoc_torch.tools import cli, overhead


class Small(nn.Module):
    def forward(self, x):
        h = torch.tanh(x) * 2.0 + 1.0
        return torch.special.erfinv(torch.sigmoid(h) * 0.9) + torch.relu(h)


def test_by_type_forces_more_ops_each_step():
    points = overhead.study(
        Small(), (torch.randn(4, 8),), max_k=3, warmup=1, repeat=3, progress=False
    )
    assert [p.k for p in points] == [0, 1, 2, 3]
    assert points[0].offloaded_ops == 1  # erfinv only
    offloaded = [p.offloaded_ops for p in points]
    assert offloaded == sorted(offloaded) and offloaded[-1] > offloaded[0]
    for p in points:
        assert len(p.samples) == 3 and p.min_ms <= p.median_ms <= p.max_ms
        assert p.subgraphs >= 1 and p.crossings >= 2


def test_bad_study_arguments_are_option_errors(tmp_path):
    x = (torch.randn(4, 8),)
    with pytest.raises(OptionError, match=r"^step must be >= 1, got 0$"):
        overhead.study(Small(), x, step=0, progress=False)
    with pytest.raises(OptionError, match=r"^max_k must be >= 0, got -1$"):
        overhead.study(Small(), x, max_k=-1, progress=False)
    with pytest.raises(OptionError, match=r"^mode must be 'by_type' or 'random', got 'zigzag'$"):
        overhead.study(Small(), x, mode="zigzag", max_k=1, warmup=0, repeat=1, progress=False)
    with pytest.raises(OptionError, match=r"write_results: use a \.csv or \.json path"):
        overhead.write_results([], tmp_path / "results.txt")


def test_random_mode_is_seeded_and_nested():
    def run():
        return overhead.study(
            Small(),
            (torch.randn(4, 8),),
            mode="random",
            max_k=3,
            seed=7,
            warmup=0,
            repeat=1,
            progress=False,
        )

    a, b = run(), run()
    assert [p.forced for p in a] == [p.forced for p in b]
    for prev, nxt in itertools.pairwise(a):
        assert nxt.forced[: len(prev.forced)] == prev.forced


def test_bad_mode():
    with pytest.raises(ValueError, match="mode must be"):
        overhead.study(Small(), (torch.randn(2, 8),), mode="all", progress=False)


def test_cli_bench_writes_csv_json_png_with_metadata_and_baselines(tmp_path, capsys):
    """A model with a branch (torch.export cannot capture it) studied with its branching
    submodule forced to LibTorch in every variant, one thread, a log y axis."""
    factory = tmp_path / "f.py"
    factory.write_text(
        "import torch\n"
        "class Gate(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * 2 if x.sum() > 0 else x - 1\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.gate = Gate()\n"
        "    def forward(self, x):\n"
        "        return torch.lgamma(torch.tanh(self.gate(x)).abs() + 1) + torch.relu(x)\n"
        "def make():\n"
        "    return M(), (torch.randn(3, 5),)\n"
    )
    out = tmp_path / "res" / "study"
    argv = ["bench", f"{factory}:make", "--max-k", "2", "--repeat", "3", "--warmup", "1",
            "--no-progress", "--out", str(out), "--torch-executed-modules", "Gate",
            "--num-threads", "1", "--log-y"]  # fmt: skip
    assert cli.main(argv) == 0
    meta, rows = overhead.read_csv(out.with_suffix(".csv"))
    for key in ("model", "mode", "seed", "num_threads", "placement", "torch", "tvm", "cpu"):
        assert key in meta, key
    assert meta["num_threads"] == "1" and meta["torch"] == torch.__version__
    assert meta["torch_executed_modules"] == '["Gate"]'
    assert [r["variant"] for r in rows] == [overhead.EAGER, overhead.DEFAULT] + ["forced"] * 3
    assert [r["k"] for r in rows] == ["", "", "0", "1", "2"]
    assert rows[2]["forced"] == "" and len(rows[4]["forced"].split()) == 2
    assert all(float(r["median_ms"]) > 0 for r in rows)
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["metadata"]["mode"] == "by_type" and data["metadata"]["seed"] == 0
    assert data["metadata"]["tvm_ffi"] and data["metadata"]["placement"] == "tvm"
    assert [b["name"] for b in data["baselines"]] == [overhead.EAGER, overhead.DEFAULT]
    assert [p["k"] for p in data["points"]] == [0, 1, 2]
    assert all(len(p["samples"]) == 3 for p in data["points"])
    assert data["points"][1]["forced"] == rows[3]["forced"].split()
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    printed = capsys.readouterr().out
    assert "wrote" in printed
    assert "eager PyTorch: " in printed and "byoc_torch default (measured placement): " in printed


def _point(k: int, median: float, p10: float | None = None, p90: float | None = None):
    p10 = median if p10 is None else p10
    p90 = median if p90 is None else p90
    return overhead.StudyPoint(k=k, forced=[], offloaded_ops=k, subgraphs=k, crossings=2 * k,
                               median_ms=median, p10_ms=p10, p90_ms=p90, min_ms=p10, max_ms=p90,
                               compile_s=0.0)  # fmt: skip


def test_the_y_axis_is_log_when_the_latencies_span_more_than_10x_and_the_legend_is_outside():
    narrow = [_point(0, 1.0), _point(1, 2.0)]
    wide = [_point(0, 0.2), _point(1, 0.3, 0.2, 16.0)]  # one outlier's p90
    assert build_scale(narrow, None) == "linear" and build_scale(wide, None) == "log"
    assert build_scale(narrow, True) == "log" and build_scale(wide, False) == "linear"
    fig = overhead.build_figure(wide, "t", {overhead.EAGER: 0.25})
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the data, not over it


def build_scale(points, log_y) -> str:
    return overhead.build_figure(points, "t", {}, log_y=log_y).axes[0].get_yscale()


def test_busy_machine_is_named_from_the_spread():
    calm, busy = _point(0, 1.0, 0.9, 1.2), _point(1, 1.0, 0.5, 9.0)
    baseline = overhead.Baseline(overhead.EAGER, 2.0, 1.0, 4.0, 1.0, 4.0)
    assert overhead.busy_timings([calm]) == []
    assert overhead.busy_timings([baseline, calm, busy]) == [overhead.EAGER, "k=1"]


def test_the_plot_draws_eager_and_default_placement_and_explains_its_labels():
    points = overhead.study(
        Small(), (torch.randn(4, 8),), max_k=1, warmup=1, repeat=3, progress=False
    )
    references = {overhead.EAGER: 0.25, overhead.DEFAULT: 0.125}
    fig = overhead.build_figure(points, "t", references)
    ax = fig.axes[0]
    horizontal = sorted(line.get_ydata()[0] for line in ax.lines if len(set(line.get_ydata())) == 1)
    assert horizontal == [0.125, 0.25]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "eager PyTorch: 0.250 ms" in labels
    assert "byoc_torch default (measured placement): 0.125 ms" in labels
    assert any(
        text.startswith("label n/m: LibTorch subgraphs / tensors crossing") for text in labels
    )
    marks = [t.get_text() for t in ax.texts]
    assert marks == [f"{p.subgraphs}/{p.crossings}" for p in points]


def test_reference_latencies_time_eager_and_the_default_compile():
    refs = overhead.reference_latencies(Small(), (torch.randn(4, 8),), warmup=1, repeat=3)
    assert list(refs) == [overhead.EAGER, overhead.DEFAULT]
    assert all(ms > 0 for ms in refs.values())
