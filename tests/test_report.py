"""Reports: content, JSON, persistence in artifacts, and the CLI."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

import byoc_torch
from byoc_torch.models import get_example
from byoc_torch.tools import cli


class Mixed(nn.Module):
    def forward(self, x):
        y = x.index_put((torch.tensor([0]),), torch.tensor(1.0))  # TVM's converter raises
        a = torch.special.erfinv(torch.tanh(y) * 0.9)  # unsupported
        b = torch.exp(a) * 2.0  # one TVM op between LibTorch ops: absorbed
        c = torch.lgamma(b)  # unsupported
        return torch.sigmoid(x) + torch.tanh(c)  # forced: tanh


@pytest.fixture(scope="module")
def mixed_report():
    return byoc_torch.report(
        Mixed(), (torch.randn(3, 4),), torch_executed_ops=["aten.sigmoid"], min_block_size=3
    )


def test_every_reason_appears(mixed_report):
    reasons = {n.node: n.reason for n in mixed_report.nodes if n.runs_in == "torch"}
    assert reasons["erfinv"] == "unsupported by TVM's importer"
    assert reasons["sigmoid"] == "forced op (torch_executed_ops)"
    absorbed = sorted(n for n, r in reasons.items() if r == "absorbed by min_block_size")
    # tanh*0.9 sits between index_put and erfinv; exp*2 between erfinv and lgamma.
    assert absorbed == ["exp", "mul", "mul_1", "tanh"]
    converter = [n for n in mixed_report.nodes if n.reason == "TVM's converter raised"]
    assert len(converter) == 1 and "IndexPut requires" in converter[0].detail


def test_every_node_is_listed_once(mixed_report):
    ep = torch.export.export(Mixed(), (torch.randn(3, 4),)).run_decompositions()
    calls = [n.name for n in ep.graph.nodes if n.op == "call_function"]
    assert sorted(n.node for n in mixed_report.nodes) == sorted(calls)


def test_torch_nodes_name_their_subgraph(mixed_report):
    symbols = {s.symbol for s in mixed_report.subgraphs}
    for n in mixed_report.torch_nodes():
        assert n.subgraph in symbols


def test_totals_are_consistent(mixed_report):
    t = mixed_report.totals
    assert t["ops"] == t["ops_tvm"] + t["ops_torch"]
    assert t["subgraphs"] == len(mixed_report.subgraphs)
    assert t["crossings"] == sum(len(s.inputs) + len(s.outputs) for s in mixed_report.subgraphs)
    assert 0 < t["coverage_percent"] < 100


def test_subgraph_inputs_and_outputs_are_typed(mixed_report):
    for s in mixed_report.subgraphs:
        assert s.ops and s.outputs
        assert all("R.Tensor" in t for t in s.inputs + s.outputs)


def test_json_round_trip(mixed_report):
    data = json.loads(mixed_report.to_json())
    assert data["totals"] == mixed_report.totals
    again = byoc_torch.Report.from_dict(data)
    assert again.nodes == mixed_report.nodes and again.subgraphs == mixed_report.subgraphs


def test_text_names_ops_reasons_and_totals(mixed_report):
    text = mixed_report.to_text()
    assert "coverage" in text and "LibTorch subgraphs:" in text
    assert "aten.erfinv.default" in text and "unsupported by TVM's importer" in text
    assert "Ops compiled by TVM" in text


def test_compiled_model_and_artifact_carry_the_report(tmp_path):
    model, inputs = get_example("demo")
    compiled = byoc_torch.compile(model, inputs, placement="tvm")
    report = compiled.report()
    assert report.totals["ops_torch"] == 6 and report.totals["subgraphs"] == 3
    loaded = byoc_torch.load(compiled.export(tmp_path / "demo.so"))
    assert loaded.report().to_dict() == report.to_dict()


def test_report_from_ir_module():
    ep = torch.export.export(Mixed(), (torch.randn(3, 4),))
    mod = byoc_torch.from_exported_program(ep)
    report = byoc_torch.report(mod)
    assert report.subgraphs and all(n.runs_in == "torch" for n in report.nodes)


def test_nothing_logged_above_debug(caplog):
    model, inputs = get_example("cnn")
    with caplog.at_level(logging.DEBUG, logger="byoc_torch"):
        compiled = byoc_torch.compile(model, inputs)
        compiled(*inputs)
    ours = [r for r in caplog.records if r.name.startswith("byoc_torch")]
    assert ours, "expected debug logs from byoc_torch"
    assert all(r.levelno == logging.DEBUG for r in ours)


FACTORY_FILE = """
import torch

class M(torch.nn.Module):
    def forward(self, x):
        return torch.special.erfinv(torch.tanh(x)) + 1

def make():
    return M(), (torch.randn(2, 3),)
"""


@pytest.mark.parametrize("dry_run", [True, False])
def test_cli_report_json(tmp_path, capsys, dry_run):
    path = tmp_path / "factory.py"
    path.write_text(FACTORY_FILE)
    argv = ["report", f"{path}:make", "--json", "--placement", "tvm"]
    argv += ["--dry-run"] if dry_run else []
    assert cli.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["ops_torch"] == 1
    assert [n["op"] for n in data["nodes"] if n["runs_in"] == "torch"] == ["aten.erfinv.default"]


def test_cli_report_text_builtin(capsys):
    assert cli.main(["report", "builtin:cnn", "--dry-run"]) == 0
    assert "byoc_torch report for TinyCNN" in capsys.readouterr().out


def test_cli_report_bad_factory(tmp_path, capsys):
    # A bad factory is a usage error: one line on stderr, exit status 2, no traceback.
    assert cli.main(["report", f"{tmp_path}/missing.py:make"]) == 2
    err = capsys.readouterr().err
    assert err == f"byoc-torch report: error: no such file: {tmp_path}/missing.py\n"
    path = tmp_path / "f.py"
    path.write_text("x = 1\n")
    assert cli.main(["report", f"{path}:make"]) == 2
    assert capsys.readouterr().err == f"byoc-torch report: error: {path} has no function 'make'\n"
