"""The overhead-study tool (byoc_torch.tools.overhead, byoc-torch bench)."""

from __future__ import annotations

import csv
import itertools
import json

import pytest
import torch
from torch import nn

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


def test_cli_bench_writes_csv_json_png(tmp_path, capsys):
    factory = tmp_path / "f.py"
    factory.write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.lgamma(torch.tanh(x).abs() + 1) + x\n"
        "def make():\n"
        "    return M(), (torch.randn(3, 5),)\n"
    )
    out = tmp_path / "res" / "study"
    argv = [
        "bench",
        f"{factory}:make",
        "--max-k",
        "2",
        "--repeat",
        "3",
        "--warmup",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [int(r["k"]) for r in rows] == [0, 1, 2]
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data) == 3 and all("samples" in d for d in data)
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    printed = capsys.readouterr().out
    assert "wrote" in printed
    assert "eager PyTorch: " in printed and "byoc_torch default (measured placement): " in printed


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
