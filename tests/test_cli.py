"""The byoc-torch command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from byoc_torch.tools import cli


def test_demo_prints_the_required_facts(capsys):
    assert cli.main(["demo", "--warmup", "1", "--repeat", "3"]) == 0
    out = capsys.readouterr().out
    assert "result matches eager PyTorch" in out
    for op in ("aten.erfinv.default", "aten.logcumsumexp.default", "aten.kthvalue.default"):
        assert op in out
    assert re.search(r"^torch subgraphs: [1-9]\d*$", out, re.MULTILINE)
    assert "eager PyTorch :" in out and "byoc_torch    :" in out


REPO = Path(__file__).resolve().parent.parent
LOAD_DEMO = """
import sys, torch, byoc_torch
from byoc_torch.models import get_example
model, (x,) = get_example("demo")
loaded = byoc_torch.load(sys.argv[1])
other = torch.randn(x.shape, generator=torch.Generator().manual_seed(11))  # not the example
torch.testing.assert_close(loaded(other), model(other), rtol=1e-4, atol=1e-4)
print("loaded")
"""


def _python(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO), "BYOC_TORCH_LOG": "", **env},
    )


def test_demo_and_its_export_and_load_print_nothing_unasked(tmp_path):
    """The demo in a fresh process (compile, verification, placement, export): its stdout is
    its report and stderr is empty (TVM printed 'Scope Saving:' lines here); loading the
    artifact in another fresh process prints nothing either, and BYOC_TORCH_LOG=debug shows
    byoc_torch's debug lines through logging."""
    path = tmp_path / "demo.so"
    demo = _python("-m", "byoc_torch.tools.cli", "demo", "--warmup", "0", "--repeat", "1",
                   "--export", str(path))  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert demo.stderr == ""
    assert "result matches eager PyTorch" in demo.stdout and path.is_file()
    script = tmp_path / "load.py"
    script.write_text(LOAD_DEMO)
    quiet_load = _python(str(script), str(path))
    assert (quiet_load.returncode, quiet_load.stdout, quiet_load.stderr) == (0, "loaded\n", "")
    shown = _python(str(script), str(path), BYOC_TORCH_LOG="debug")
    assert shown.returncode == 0, shown.stderr
    # What loading logs depends on the demo's placement (a TorchScript subgraph makes TVM log
    # 'Scope Loaded:', an AOTInductor package does not); the thread budget is always logged.
    # TVM's own lines reaching logging: tests/test_quiet.py.
    assert re.search(r"^DEBUG byoc_torch\.threads: thread budget applied", shown.stderr, re.M)
    assert not [line for line in shown.stderr.splitlines() if not line.startswith("DEBUG ")]


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "byoc-torch"
    assert script.is_file(), f"console script missing: {script}"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "demo" in proc.stdout


def test_unknown_model_is_rejected(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--model", "nope"])
    assert info.value.code == 2  # argparse's usage error, not a successful exit
    assert "'nope'" in capsys.readouterr().err


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "byoc_torch.tools.cli", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "demo" in proc.stdout


FACTORIES = """
import torch


class Gate(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # Python control flow on a tensor's value: torch.export cannot capture
            return x * 2
        return x - 1


class Branchy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.gate = Gate()

    def forward(self, x):
        return torch.tanh(torch.relu(self.gate(self.lin(x))) + 1)


def branchy():
    torch.manual_seed(0)
    return Branchy(), (torch.randn(2, 8),)
"""


@pytest.fixture
def factories(tmp_path) -> Path:
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    return path


def _main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as stop:  # argparse's usage errors
        return stop.code


@pytest.mark.parametrize(
    ("argv", "status", "line"),
    [
        (["bench", "F:branchy", "--max-k", "-1"], 2,
         r"byoc-torch bench: error: argument --max-k: must be >= 0, got -1 "
         r"\(see byoc-torch bench --help\)"),
        (["bench", "F:branchy", "--step", "0"], 2,
         r"byoc-torch bench: error: argument --step: must be >= 1, got 0 \(see .*\)"),
        (["bench", "F:branchy", "--num-threads", "x"], 2,
         r"byoc-torch bench: error: argument --num-threads: must be an integer, got 'x' .*"),
        (["demo", "--target", "nope"], 2,
         r"byoc-torch demo: error: argument --target: TVM does not know 'nope': .*"),
        (["report", "F:missing"], 2,
         r"byoc-torch report: error: .*factories\.py has no function 'missing'"),
        (["report", "/no/such/file.py:f"], 2,
         r"byoc-torch report: error: no such file: /no/such/file\.py"),
        (["report", "F:branchy", "--dry-run", "--torch-executed-modules", "Nope"], 2,
         r"byoc-torch report: error: OptionError: torch_executed_modules: no submodule named "
         r"\['Nope'\]; .* \(an option names something .*; --verbose for the traceback\)"),
        (["report", "F:branchy", "--dry-run"], 1,
         r"byoc-torch report: error: ExportError: byoc_torch\.compile: torch\.export cannot "
         r"capture Branchy: .* \(torch\.export cannot capture the model; "
         r"--torch-executed-modules NAME runs .*; --verbose for the traceback\)"),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_type_hint_and_status(argv, status, line, factories, capsys):
    argv = [a.replace("F:", f"{factories}:") for a in argv]
    assert _main(argv) == status
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert re.fullmatch(line + "\n", captured.err), captured.err


def test_verbose_adds_the_traceback(factories, capsys):
    assert _main(["report", f"{factories}:branchy", "--dry-run", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in export_program" in err  # where byoc_torch raised it
    assert err.splitlines()[-1].startswith("byoc-torch report: error: ExportError: ")


def test_report_dry_run_says_it_skips_placement_and_takes_a_class_name(factories, capsys):
    argv = ["report", f"{factories}:branchy", "--dry-run", "--torch-executed-modules", "Gate"]
    assert _main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == cli.DRY_RUN_NOTE
    assert "measured placement" in out[0] and "skipped" in out[0]
    assert any("module gate (Gate)" in line for line in out)


def test_fallback_lines_group_ops_of_one_kind():
    from byoc_torch.records import FallbackRecord, Reason

    records = [FallbackRecord(f"erfinv_{k}", "aten.erfinv.default", Reason.UNSUPPORTED)
               for k in range(5)]  # fmt: skip
    records.append(FallbackRecord("m0", "module gate (Gate)", Reason.FORCED_MODULE))
    placed = Reason.PLACEMENT
    records += [FallbackRecord("add_1", "aten.add.Tensor", placed, "region 7: 0.1 ms"),
                FallbackRecord("add_2", "aten.add.Tensor", placed, "region 11: 0.2 ms"),
                FallbackRecord("mul", "aten.mul.Tensor", placed, "region 5: 0.3 ms")]  # fmt: skip
    lines = cli.fallback_lines(records)
    assert lines == [
        f"  {'aten.erfinv.default':<34}   5 x  unsupported by TVM's importer  "
        "(erfinv_0, erfinv_1, erfinv_2, ...)",
        f"  {'module gate (Gate)':<34}   1 x  forced module (torch_executed_modules)  (m0)",
        f"  {'aten.add.Tensor':<34}   2 x  {placed}  (add_1, add_2)",  # details differ
        f"  {'aten.mul.Tensor':<34}   1 x  {placed} — region 5: 0.3 ms  (mul)",
    ]


def test_lib_path_prints_what_a_cpp_process_preloads(capsys):
    from byoc_torch.runtime import library_path

    assert cli.main(["lib-path"]) == 0
    (path,) = capsys.readouterr().out.split()
    assert Path(path) == library_path() and Path(path).is_file()
    assert cli.main(["lib-path", "--ld-preload"]) == 0
    paths = [Path(p) for p in capsys.readouterr().out.strip().split(":")]
    names = ["libtvm_ffi.so", "libtvm_runtime.so", library_path().name]
    assert [p.name for p in paths] == names and all(p.is_file() for p in paths)
