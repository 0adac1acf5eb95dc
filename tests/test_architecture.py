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


def test_the_top_level_is_the_user_api_and_relax_pieces_live_in_byoc_torch_relax():
    """A narrow top level; the Relax-facing pieces under byoc_torch.relax, their former
    top-level names kept as aliases of the very same objects (not listed)."""
    import tvm

    import byoc_torch.relax as bt_relax
    from byoc_torch import errors

    user_api = "CompiledModule FallbackRecord Options Reason Report call_torch compile"
    user_api += " dynamo_backend export_executable export_program load load_bytes relax report"
    assert set(byoc_torch.__all__) == set(errors.__all__) | set(user_api.split())
    relax_api = "LowerTorchFunctions PartitionForTorch from_exported_program"
    relax_api += " partition_for_torch torch_codegen torch_functions"
    assert sorted(bt_relax.__all__) == sorted(relax_api.split())
    for name in bt_relax.__all__:
        assert getattr(byoc_torch, name) is getattr(bt_relax, name)  # the alias still works
        assert name not in byoc_torch.__all__ and name not in dir(byoc_torch)
    assert byoc_torch.relax is bt_relax
    model = Lambda(lambda x: torch.special.erfinv(torch.tanh(x)) + 1)
    ep = torch.export.export(model, (torch.rand(3),))
    new = bt_relax.partition_for_torch(bt_relax.from_exported_program(ep))
    old = byoc_torch.partition_for_torch(byoc_torch.from_exported_program(ep))
    tvm.ir.assert_structural_equal(new, old)
    assert list(bt_relax.torch_functions(new)) == ["torch_main_0"]


def test_the_cpp_runtime_is_reached_through_its_typed_facade():
    """The torch runtime module's own functions and the runtime's global functions are named
    in byoc_torch/runtime/ only; everything else calls TorchRuntime's methods."""
    import re

    from byoc_torch.runtime import TorchRuntime
    from byoc_torch.signature import Signature

    cpp_name = re.compile(r"__byoc_torch_\w+__|get_global_func\(\s*[\"']byoc_torch\.")
    package = ROOT / "byoc_torch"
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in sorted(package.rglob("*.py"))
        if path.parent != package / "runtime"
        for match in cpp_name.finditer(path.read_text())
    ]
    assert offenders == []
    model = Lambda(lambda x: torch.special.erfinv(torch.tanh(x)) * 2)
    compiled = byoc_torch.compile(model, (torch.randn(3, 5),), placement="tvm")
    (runtime,) = TorchRuntime.find(compiled.executable)
    assert runtime.symbols() == ["torch_main_0"]
    assert Signature.from_json(runtime.metadata()) == compiled.signature
    with pytest.raises(TypeError, match="is not a torch runtime module"):
        TorchRuntime(compiled.executable.mod)
