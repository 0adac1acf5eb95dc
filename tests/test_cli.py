"""The byoc-torch command line."""

from __future__ import annotations

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


def test_demo_exports(tmp_path, capsys):
    path = tmp_path / "demo.so"
    assert cli.main(["demo", "--warmup", "0", "--repeat", "1", "--export", str(path)]) == 0
    assert path.is_file()


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
