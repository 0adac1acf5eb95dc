"""Quiet by default (byoc_torch.quiet): TVM's C++ log lines, foreign Python warnings and prints
inside byoc_torch's own work go to logging at DEBUG; nothing else is lost."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from byoc_torch import quiet

TVM_LINE = "[12:00:00] /project/src/runtime/vm/executable.cc:276: Warning: Scope Saving:\n"
REPO = Path(__file__).resolve().parent.parent


def test_tvm_lines_written_to_fd_2_are_logged_and_other_lines_pass_through(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="byoc_torch")
    with quiet.captured():
        os.write(2, TVM_LINE.encode())
        os.write(2, b"a line that is not TVM's\n")
    err = capfd.readouterr().err
    assert err == "a line that is not TVM's\n"
    logged = [r.getMessage() for r in caplog.records if r.name == "byoc_torch.tvm"]
    assert logged == [TVM_LINE.rstrip("\n")]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "byoc_torch.tvm")


def test_capture_is_reentrant_and_restores_fd_2(capfd):
    with quiet.captured():
        with quiet.captured():
            os.write(2, TVM_LINE.encode())
        os.write(2, TVM_LINE.encode())  # still captured: the outer section is open
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_foreign_warnings_are_logged_and_byoc_torchs_own_are_shown(caplog):
    caplog.set_level(logging.DEBUG, logger="byoc_torch")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with quiet.captured():
            warnings.warn(
                "isinstance(treespec, LeafSpec) is deprecated", FutureWarning, stacklevel=1
            )
            warnings.warn("byoc_torch.compile: meant for the user", UserWarning, stacklevel=1)
        warnings.warn("outside byoc_torch's work", UserWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == [
        "byoc_torch.compile: meant for the user",
        "outside byoc_torch's work",
    ]
    logged = [r.getMessage() for r in caplog.records if r.name == "byoc_torch.warnings"]
    assert len(logged) == 1 and "FutureWarning: isinstance(treespec, LeafSpec)" in logged[0]


def test_another_threads_warnings_and_prints_are_not_captured(capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="byoc_torch")
    inside, done = threading.Event(), threading.Event()
    seen: list[str] = []

    def other() -> None:
        inside.wait()
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            warnings.warn("from another thread", UserWarning, stacklevel=1)
        seen.extend(str(w.message) for w in got)
        print("printed by another thread", file=sys.stderr)
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with quiet.captured():
        print("printed inside", file=sys.stderr)
        inside.set()
        done.wait(10)
    t.join()
    assert seen == ["from another thread"]
    assert "printed by another thread" in capsys.readouterr().err
    stderr_logged = [r.getMessage() for r in caplog.records if r.name == "byoc_torch.stderr"]
    assert stderr_logged == ["printed inside"]


def test_torch_log_records_of_a_capturing_thread_go_to_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="byoc_torch")
    torch_log = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # like the handlers PyTorch attaches
    torch_log.addHandler(handler)
    try:
        with quiet.captured():
            torch_log.warning("Unable to find user code corresponding to {u0}")
        torch_log.warning("outside: shown")
    finally:
        torch_log.removeHandler(handler)
    assert stream.getvalue() == "outside: shown\n"
    routed = [r.getMessage() for r in caplog.records if r.name == "byoc_torch.torch"]
    assert routed == [
        "torch.fx.experimental.symbolic_shapes: Unable to find user code corresponding to {u0}"
    ]


def test_byoc_torch_log_env_sets_the_level():
    root = logging.getLogger("byoc_torch")
    level, handlers = root.level, list(root.handlers)
    try:
        quiet.configure_from_env("debug")
        assert root.level == logging.DEBUG and root.handlers
        with pytest.warns(UserWarning, match="BYOC_TORCH_LOG='loud' is not one of"):
            quiet.configure_from_env("loud")
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


SCRIPT = """
import sys, torch, byoc_torch

class M(torch.nn.Module):
    def forward(self, x):
        return torch.special.erfinv(torch.tanh(x)) + torch.relu(x) ** 3  # pow: TVM warns

if sys.argv[1] == "build":
    m, x = M(), torch.randn(4, 8)
    compiled = byoc_torch.compile(m, (x,))
    compiled.export(sys.argv[2])
    print("exported")
else:
    loaded = byoc_torch.load(sys.argv[2])
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(7))  # not the example
    torch.testing.assert_close(loaded(x), M()(x))
    print("loaded")
"""


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def test_compile_export_and_load_print_nothing_but_the_log_asked_for(tmp_path):
    """The build runs with BYOC_TORCH_LOG=debug: every stderr line is a log record (TVM's pow
    warning among them, through logging), none raw; the load, in a fresh process, with the
    default: stderr stays empty. (The demo's own run is in tests/test_cli.py.)"""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    artifact = tmp_path / "m.so"
    built = _run(str(script), "build", str(artifact), env={"BYOC_TORCH_LOG": "debug"})
    assert built.returncode == 0, built.stderr
    assert built.stdout == "exported\n"
    lines = built.stderr.splitlines()
    raw = [line for line in lines if not line.startswith(("DEBUG byoc_torch", "INFO byoc_torch"))]
    assert raw == []
    assert any(
        line.startswith("DEBUG byoc_torch.tvm: [") and "Detected pow(x, y)" in line
        for line in lines
    )
    assert any(line.startswith("DEBUG byoc_torch.warnings: ") for line in lines)
    loaded = _run(str(script), "load", str(artifact), env={"BYOC_TORCH_LOG": ""})
    assert loaded.returncode == 0, loaded.stderr
    assert (loaded.stdout, loaded.stderr) == ("loaded\n", "")


def test_a_failed_import_leaves_no_block_open_to_warn_later(capfd):
    """TVM's converter raises on this index_put: the importer of that attempt (which a
    traceback or a reference cycle can keep alive past the captured section) has its block
    builder closed, so destroying it later writes nothing to stderr. Without
    ``ir.close_blocks`` TVM writes "BlockBuilder destroyed with remaining blocks!"."""
    import torch

    from byoc_torch.frontend.importer import _ConverterRaised, _FallbackImporter, _import_once
    from byoc_torch.options import Options
    from byoc_torch.testing import Lambda

    model = Lambda(lambda x: x.index_put((torch.tensor([0]),), torch.tensor(1.0)) * 2)
    ep = torch.export.export(model, (torch.randn(2, 9),))
    importer = _FallbackImporter(Options(), {})
    with pytest.raises(_ConverterRaised):
        _import_once(ep, importer)
    capfd.readouterr()
    del importer
    import gc

    gc.collect()
    assert "remaining blocks" not in capfd.readouterr().err
