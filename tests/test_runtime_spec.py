"""The runtime's Python room: library loading, the typed SubgraphSpec, the tensor bridge."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import pytest
import torch
import tvm
import tvm_ffi

from byoc_torch.runtime import (
    SubgraphSpec,
    _ffi_api,
    library_path,
    make_runtime_module,
    save_runtime_module,
)
from byoc_torch.tensors import to_tvm

CLONE = "def forward(self, a: Tensor) -> Tensor:\n    return torch.clone(a)\n"
load_bytes = tvm_ffi.get_global_func("ffi.Module.load_from_bytes.torch")


def scripted_buffer_module() -> bytes:
    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("table", torch.arange(256.0))

        def forward(self, a: torch.Tensor) -> torch.Tensor:
            return self.table

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Holder()), buf)
    return buf.getvalue()


def test_spec_is_a_typed_reflected_object():
    payload = b"\x00\x01binary"
    spec = SubgraphSpec("f", CLONE, 1, modules={"z": payload, "a": b"A"})
    assert isinstance(spec, tvm_ffi.Object)
    assert spec.__tvm_ffi_type_info__.type_key == "byoc_torch.SubgraphSpec"
    assert (spec.symbol, spec.script, spec.num_inputs, spec.num_outputs) == ("f", CLONE, 1, 1)
    assert spec.returns_tuple is False
    assert list(spec.module_names) == ["a", "z"]  # sorted: a stable artifact
    assert [bytes(p) for p in spec.module_payloads] == [b"A", payload]


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("", CLONE, 1), {}, r"byoc_torch: empty subgraph symbol"),
        (("f", CLONE, -1), {}, r"byoc_torch: negative arity for subgraph 'f'"),
        (("f", CLONE, 1, 0), {}, r"byoc_torch: subgraph 'f' has no outputs"),
        (
            ("f", CLONE, 1, 2),
            {},
            r"byoc_torch: subgraph 'f' returns 2 outputs but is not marked as returning a tuple",
        ),
        (
            ("f", CLONE, 1 << 20),
            {},
            r"byoc_torch: subgraph 'f' has an implausible arity \(1048576 inputs, 1 outputs\)",
        ),
    ],
)
def test_bad_spec_is_refused_at_construction(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SubgraphSpec(*args, **kwargs)


def test_names_and_payloads_must_pair_up():
    with pytest.raises(ValueError, match=r"subgraph 'f' has 2 submodule names but 1 payloads"):
        SubgraphSpec.__new__(SubgraphSpec).__ffi_init__(
            "f", CLONE, 1, 1, False, ["a", "b"], [b""], b"", [], False
        )


def test_aoti_inputs_must_name_inputs_of_a_package():
    with pytest.raises(ValueError, match=r"subgraph 'f' gives its AOTInductor package input 3, "):
        SubgraphSpec("f", CLONE, 1, aoti_package=b"pt2", aoti_inputs=[3])
    with pytest.raises(ValueError, match=r"subgraph 'f' names AOTInductor inputs but has no pa"):
        SubgraphSpec("f", CLONE, 1, aoti_inputs=[0])


def test_a_package_only_spec_needs_a_package_taking_every_input_in_order():
    with pytest.raises(ValueError, match=r"subgraph 'f' runs only as its AOTInductor package, an"):
        SubgraphSpec("f", CLONE, 1, package_only=True)
    with pytest.raises(ValueError, match=r"so the package must take its 2 inputs in order"):
        SubgraphSpec("f", CLONE, 2, aoti_package=b"pt2", aoti_inputs=[1, 0], package_only=True)
    with pytest.raises(ValueError, match=r"so the package must take its 2 inputs in order"):
        SubgraphSpec("f", CLONE, 2, aoti_package=b"pt2", aoti_inputs=[0], package_only=True)
    spec = SubgraphSpec("f", CLONE, 1, aoti_package=b"pt2", aoti_inputs=[0], package_only=True)
    assert spec.package_only and not SubgraphSpec("f", CLONE, 1).package_only


def test_package_only_copy_takes_the_package_inputs_alone():
    spec = SubgraphSpec(
        "f",
        CLONE,
        3,
        num_outputs=2,
        returns_tuple=True,
        modules={"m": b"jit"},
        aoti_package=b"pt2",
        aoti_inputs=[2, 0],
    )
    only = spec.package_only_copy()
    assert only.package_only and not spec.package_only
    assert (str(only.symbol), str(only.script), int(only.num_inputs)) == ("f", CLONE, 2)
    assert list(only.aoti_inputs) == [0, 1]
    assert (int(only.num_outputs), bool(only.returns_tuple)) == (2, True)
    assert bytes(only.aoti_package) == b"pt2"
    assert list(only.module_names) == ["m"] and bytes(only.module_payloads[0]) == b"jit"
    with pytest.raises(ValueError, match=r"subgraph 'g' has no AOTInductor package, so it can"):
        SubgraphSpec("g", CLONE, 1).package_only_copy()


def test_a_package_that_does_not_load_is_a_value_error():
    with pytest.raises(ValueError, match=r"subgraph 'f': its AOTInductor package does not load"):
        make_runtime_module([SubgraphSpec("f", CLONE, 1, aoti_package=b"not a zip")])


def test_a_package_naming_a_file_outside_its_folder_is_refused(tmp_path, monkeypatch):
    """A package's files are extracted to load it; a name that would land outside the private
    directory (a crafted archive) is refused before anything is written."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkg/.data/version", "3\n")
        z.writestr("pkg/../escaped", "x")
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    with pytest.raises(
        ValueError,
        match=r"^byoc_torch subgraph 'f': its AOTInductor package does not load: it names a "
        r"file outside its own folder: \.\./escaped$",
    ):
        make_runtime_module([SubgraphSpec("f", CLONE, 1, aoti_package=archive.getvalue())])
    assert list(private_tmp.iterdir()) == []  # the private directory removed again
    assert not (tmp_path / "escaped").exists()


def test_duplicate_symbols_are_refused():
    spec = SubgraphSpec("f", CLONE, 1)
    with pytest.raises(ValueError, match=r"byoc_torch: duplicate subgraph symbol 'f'"):
        make_runtime_module([spec, spec])


def test_create_takes_specs_only():
    with pytest.raises(TypeError):
        _ffi_api.CreateTorchRuntimeModule(["f"], "")


def test_functions_are_attributes_and_the_process_globals_are_gone():
    assert callable(_ffi_api.CreateTorchRuntimeModule)
    assert callable(_ffi_api.SaveTorchRuntimeModule)
    for gone in ("byoc_torch.SetReplayMode", "byoc_torch.SetSingleOpFastPath"):
        assert tvm_ffi.get_global_func(gone, allow_missing=True) is None


def test_specs_survive_serialization_unchanged():
    payload = scripted_buffer_module()
    mod = make_runtime_module([SubgraphSpec("t", CLONE, 1, modules={"holder": payload})], "{}")
    data = save_runtime_module(mod)
    again = load_bytes(data)
    assert save_runtime_module(again) == data
    assert payload in data


def test_results_that_are_not_fresh_tensors_still_cross_without_a_copy():
    """A submodule's buffer comes back as the same memory on every call: no copy on the way out
    (two live outputs of a copying bridge would have different addresses)."""
    script = "def forward(self, a: Tensor) -> Tensor:\n    return self.holder.forward(a)\n"
    spec = SubgraphSpec("t", script, 1, modules={"holder": scripted_buffer_module()})
    mod = make_runtime_module([spec])
    first = torch.from_dlpack(mod["t"](to_tvm(torch.zeros(1))))
    second = torch.from_dlpack(mod["t"](to_tvm(torch.zeros(1))))
    assert first.data_ptr() == second.data_ptr()
    assert first.data_ptr() % 64 == 0
    torch.testing.assert_close(second, torch.arange(256.0))


def test_outputs_have_canonical_compact_strides():
    """A contiguous ATen result may carry odd strides on size-1 dimensions (here (1, 1) for
    shape (1, 3)); TVM gets the canonical row-major strides, without a copy."""
    script = "def forward(self, a: Tensor) -> Tensor:\n    return torch.t(a * 1)\n"
    mod = make_runtime_module([SubgraphSpec("r", script, 1)])
    out = mod["r"](to_tvm(torch.arange(3.0).reshape(3, 1)))
    assert tuple(out.shape) == (1, 3)
    assert tuple(out.strides) == (3, 1)
    torch.testing.assert_close(torch.from_dlpack(out), torch.arange(3.0).reshape(1, 3))


def test_misaligned_result_is_copied_to_an_aligned_one():
    script = "def forward(self, a: Tensor) -> Tensor:\n    return torch.narrow(a * 1, 0, 1, 7)\n"
    mod = make_runtime_module([SubgraphSpec("n", script, 1)])
    out = torch.from_dlpack(mod["n"](to_tvm(torch.arange(8.0))))
    assert out.data_ptr() % 64 == 0
    torch.testing.assert_close(out, torch.arange(1.0, 8.0))


@pytest.mark.parametrize("dtype", ["int4", "float16x2"])
def test_dtype_libtorch_lacks_is_a_type_error(dtype):
    mod = make_runtime_module([SubgraphSpec("i", CLONE, 1)])
    with pytest.raises(
        TypeError,
        match=rf"subgraph 'i': argument 0 has dtype {dtype}, which LibTorch does not support",
    ):
        mod["i"](tvm.runtime.empty((4,), dtype))


def test_library_path_follows_the_environment(monkeypatch, tmp_path):
    target = tmp_path / "elsewhere.so"
    monkeypatch.setenv("BYOC_TORCH_RUNTIME_LIB", str(target))
    assert library_path() == target


def test_missing_library_is_a_clear_import_error(tmp_path):
    env = {**os.environ, "BYOC_TORCH_RUNTIME_LIB": str(tmp_path / "missing.so")}
    proc = subprocess.run(
        [sys.executable, "-c", "import byoc_torch"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "ImportError: byoc_torch: the C++ runtime" in proc.stderr
    assert "missing.so is missing" in proc.stderr


@pytest.mark.parametrize(
    "dtype", [torch.uint16, torch.uint32, torch.uint64, torch.complex64], ids=str
)
def test_dtypes_from_atens_dlpack_table_round_trip(dtype):
    """Beyond the 10 dtypes of tests/test_runtime.py: what ATen's own conversion adds."""
    mod = make_runtime_module([SubgraphSpec("i", CLONE, 1)])
    x = torch.randn(6, dtype=dtype) if dtype.is_complex else torch.arange(6).to(dtype)
    out = torch.from_dlpack(mod["i"](to_tvm(x)))
    assert out.dtype == dtype
    assert torch.equal(out, x)
