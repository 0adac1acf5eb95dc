"""Compiled parts run from C++ without Python (docs/deployment.md): tests/cpp/ is built with
CMake against the installed LibTorch, and its programs run TorchScript archives saved here
(as a LibTorch application or Triton's PyTorch backend does: the runtime libraries and a
custom-op library preloaded with LD_PRELOAD), on inputs other than the example's, their
outputs compared with eager PyTorch. Without the runtime libraries the program gets a clear
error (a caught exception, exit status 1), never an abort. An AOTInductor package of a parent
holding a compiled part (the op with its TorchScript object inside the package) runs from C++
with torch::inductor::AOTIModelPackageLoader."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.export import Dim

import byoc_torch
from byoc_torch.runtime import preload_libraries
from byoc_torch.tools import cli

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # cmake and ninja come with requirements-build.txt


def _tool(name: str) -> str:
    return shutil.which(name) or str(BIN / name)


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> Path:
    """tests/cpp built: run_torchscript, run_aoti and the custom-op library deploy_ops."""
    build = tmp_path_factory.mktemp("cpp_build")
    configure = [_tool("cmake"), "-S", str(ROOT / "tests" / "cpp"), "-B", str(build)]
    configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}"]
    configure.append(f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}")
    for command in (configure, [_tool("cmake"), "--build", str(build)]):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return build


def _preload(*extra: Path) -> str:
    """``$(byoc-torch lib-path --ld-preload)``, then ``extra`` (what docs/deployment.md runs)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["lib-path", "--ld-preload"]) == 0
    return ":".join([printed.getvalue().strip(), *(str(p) for p in extra)])


def run_program(program: Path, model: Path, inputs: list[torch.Tensor], out: Path, preload: str):
    """Run a tests/cpp program without Python on its path; its outputs, or its result."""
    torch.save(inputs, out.with_suffix(".inputs.pt"))
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONPATH")}
    if preload:
        env["LD_PRELOAD"] = preload
    proc = subprocess.run(
        [str(program), str(model), str(out.with_suffix(".inputs.pt")), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    print(proc.stdout, proc.stderr)
    return proc


class Erfinv(nn.Module):
    def forward(self, x):
        return torch.special.erfinv(torch.tanh(x)) + torch.relu(x)  # erfinv: LibTorch


@pytest.fixture(scope="module")
def scripted_parent(tmp_path_factory):
    """A parent holding a compiled part (dynamic batch), scripted and saved; eager reference."""
    batch = Dim("batch", min=2, max=64)
    compiled = byoc_torch.compile(
        Erfinv(), (torch.randn(4, 8),), dynamic_shapes={"x": {0: batch}}, placement="tvm"
    )
    parent = nn.Sequential(nn.Linear(8, 8), compiled, nn.ReLU()).eval()
    path = tmp_path_factory.mktemp("scripted") / "model.pt"
    torch.jit.save(torch.jit.script(parent), path)

    def eager(x):
        with torch.no_grad():
            return parent[2](Erfinv()(parent[0](x)))

    return path, eager


def test_cpp_program_runs_a_scripted_parent(programs, scripted_parent, tmp_path):
    path, eager = scripted_parent
    x = torch.randn(6, 8)  # the example had batch 4
    out = tmp_path / "out.pt"
    proc = run_program(programs / "run_torchscript", path, [x], out, _preload())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "output: tensor Float [6, 8]" in proc.stdout
    assert "libpython mapped: no" in proc.stdout
    (got,) = torch.load(out)
    torch.testing.assert_close(got, eager(x))


def test_cpp_program_without_the_runtime_library_gets_a_clear_error(
    programs, scripted_parent, tmp_path
):
    path, _ = scripted_parent
    proc = run_program(programs / "run_torchscript", path, [torch.randn(6, 8)], tmp_path / "o", "")
    assert proc.returncode == 1, proc.stderr[-3000:]  # a caught error, not a signal
    assert "Unknown type name '__torch__.torch.classes.byoc_torch." in proc.stderr
    assert "Executable_import_byoc_torch_to_load" in proc.stderr


def test_cpp_program_without_tvm_runtime_gets_a_clear_error(programs, scripted_parent, tmp_path):
    path, _ = scripted_parent
    ffi, _, runtime = preload_libraries()
    proc = run_program(
        programs / "run_torchscript", path, [torch.randn(6, 8)], tmp_path / "o", f"{ffi}:{runtime}"
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "TVM's runtime (libtvm_runtime.so) is not loaded in this process" in proc.stderr
    assert "byoc-torch lib-path" in proc.stderr


class CustomOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.ops.byoc_deploy_test.scaled_gelu(self.fc(x), 0.5).sin()


def test_cpp_program_runs_a_custom_op_model_with_its_library_preloaded(programs, tmp_path):
    ops = programs / "libdeploy_ops.so"
    torch.ops.load_library(str(ops))
    model = CustomOp().eval()
    compiled = byoc_torch.compile(model, (torch.randn(4, 8),), placement="tvm")
    assert "byoc_deploy_test::scaled_gelu" in compiled.signature.foreign_ops
    path = tmp_path / "custom.pt"
    torch.jit.save(torch.jit.trace(compiled, (torch.randn(4, 8),)), path)
    x = torch.randn(4, 8)
    out = tmp_path / "out.pt"
    proc = run_program(programs / "run_torchscript", path, [x], out, _preload(ops))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch.no_grad():
        torch.testing.assert_close(torch.load(out)[0], model(x))
    # Without the op library: a clear error naming the op, no abort.
    proc = run_program(programs / "run_torchscript", path, [x], tmp_path / "o", _preload())
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "byoc_deploy_test::scaled_gelu" in proc.stderr


def test_aoti_package_of_a_parent_runs_from_cpp(programs, tmp_path):
    batch = Dim("batch", min=2, max=64)
    compiled = byoc_torch.compile(
        Erfinv(), (torch.randn(4, 8),), dynamic_shapes={"x": {0: batch}}, placement="tvm"
    )
    parent = nn.Sequential(nn.Linear(8, 8), compiled, nn.ReLU()).eval()
    with torch.no_grad():
        ep = torch.export.export(parent, (torch.randn(4, 8),), dynamic_shapes=({0: batch},))
        package = torch._inductor.aoti_compile_and_package(
            ep, package_path=str(tmp_path / "parent.pt2")
        )
    x = torch.randn(6, 8)
    out = tmp_path / "out.pt"
    proc = run_program(programs / "run_aoti", Path(package), [x], out, _preload())
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch.no_grad():
        expected = parent[2](Erfinv()(parent[0](x)))
    assert "libpython mapped: no" in proc.stdout
    (got,) = torch.load(out)
    torch.testing.assert_close(got, expected)
