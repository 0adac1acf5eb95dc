"""The shape of the package: loading needs no compiler, the frontend runs TVM's own loop,
every fallback reason is a :class:`byoc_torch.Reason`, and ``torch.cond`` branches fall back
like the main graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

import byoc_torch
from byoc_torch.frontend.importer import _FallbackImporter
from byoc_torch.testing import Lambda

ROOT = Path(__file__).resolve().parent.parent

_COMPILER_MODULES = (
    "byoc_torch.driver",
    "byoc_torch.frontend",
    "byoc_torch.partition",
    "byoc_torch.verify",
    "byoc_torch.codegen",
    "tvm.relax.frontend.torch",
)


def test_loading_an_artifact_does_not_import_the_compiler(tmp_path):
    model = Lambda(lambda x: torch.special.erfinv(torch.tanh(x)) * 2)
    path = byoc_torch.compile(model, (torch.randn(3, 5),)).export(tmp_path / "m.so")
    x = torch.randn(3, 5)  # not the example input
    torch.save(x, tmp_path / "x.pt")
    script = f"""
import json, sys, torch, byoc_torch
m = byoc_torch.load({str(path)!r})
y = m(torch.load({str(tmp_path / "x.pt")!r}))
torch.save(y, {str(tmp_path / "y.pt")!r})
print(json.dumps(sorted(n for n in sys.modules if n.startswith({_COMPILER_MODULES!r}))))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), model(x))


def test_the_frontend_runs_tvms_translation_loop_unchanged():
    # byoc_torch hooks the convert map; TVM's loop and its unsupported-op check are TVM's own.
    for name in ("_translate_fx_graph", "_check_unsupported_func_type", "from_exported_program"):
        assert getattr(_FallbackImporter, name) is getattr(ExportedProgramImporter, name)


def test_every_fallback_reason_is_a_reason_member():
    model = Lambda(lambda x: torch.special.erfinv(torch.tanh(x)) + torch.relu(x))
    compiled = byoc_torch.compile(
        model, (torch.rand(4, 8) - 0.5,), torch_executed_ops=["aten.relu"], placement="tvm"
    )
    reasons = {r.node: r.reason for r in compiled.fallbacks}
    assert all(isinstance(r, byoc_torch.Reason) for r in reasons.values())
    assert set(reasons.values()) == {byoc_torch.Reason.UNSUPPORTED, byoc_torch.Reason.FORCED_OP}
    assert str(byoc_torch.Reason.UNSUPPORTED) == "unsupported by TVM's importer"


class _Cond(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def true_fn(x: torch.Tensor) -> torch.Tensor:
            return torch.special.erfinv(torch.tanh(x)) + 1  # erfinv: not in TVM

        def false_fn(x: torch.Tensor) -> torch.Tensor:
            return torch.special.i0(x) - 1  # i0: not in TVM either

        return torch.cond(x.sum() > 0, true_fn, false_fn, (x,))


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["true_branch", "false_branch"])
def test_torch_cond_branches_fall_back_like_the_main_graph(sign):
    model = _Cond()
    compiled = byoc_torch.compile(model, (torch.rand(4, 8) + 0.1,), placement="tvm")
    assert sorted(compiled.torch_ops) == ["aten.erfinv.default", "aten.i0.default"]
    x = sign * (torch.rand(4, 8) + 0.1)  # both branches, neither the example input
    torch.testing.assert_close(compiled(x), model(x))
