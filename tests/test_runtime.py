"""The C++ torch runtime module: dtypes, zero-copy, conventions, serialization, errors."""

from __future__ import annotations

import pytest
import torch
import tvm_ffi

from byoc_torch.runtime import SubgraphSpec, make_runtime_module, measure
from byoc_torch.runtime import save_runtime_module as save
from byoc_torch.tensors import to_tvm
from byoc_torch.testing.artifacts import reseal

load_bytes = tvm_ffi.get_global_func("ffi.Module.load_from_bytes.torch")

IDENTITY_PLUS = (
    "def forward(self, a: Tensor, b: Tensor) -> Tuple[Tensor, Tensor]:\n    return (a + b, a * b)\n"
)
CLONE = "def forward(self, a: Tensor) -> Tensor:\n    return torch.clone(a)\n"


def module(sources: dict[str, tuple[str, int, int, bool]], metadata: str = ""):
    """A module with one subgraph per entry: symbol -> (script, inputs, outputs, tuple)."""
    specs = [SubgraphSpec(name, *sources[name]) for name in sorted(sources)]
    return make_runtime_module(specs, metadata)


DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_shared_dtype_round_trips(dtype):
    mod = module({"f": (CLONE, 1, 1, False)})
    x = (torch.arange(12).reshape(3, 4) % 5).to(dtype)
    out = torch.from_dlpack(mod["f"](to_tvm(x)))
    assert out.dtype == dtype
    torch.testing.assert_close(out, x)


def test_multiple_outputs_as_a_tuple():
    mod = module({"f": (IDENTITY_PLUS, 2, 2, True)})
    a, b = torch.rand(3), torch.rand(3)
    s, p = mod["f"](to_tvm(a), to_tvm(b))
    torch.testing.assert_close(torch.from_dlpack(s), a + b)
    torch.testing.assert_close(torch.from_dlpack(p), a * b)


def test_outputs_are_not_copied_on_the_way_out():
    """The TVM tensors returned view the very memory LibTorch produced: two outputs that are
    one result and its leading half share one address (copies would be two allocations,
    alive together)."""
    src = (
        "def forward(self, a: Tensor) -> Tuple[Tensor, Tensor]:\n"
        "    both = a * 2\n"
        "    return (both, both[0:512])\n"
    )
    mod = module({"f": (src, 1, 2, True)})
    whole, half = (torch.from_dlpack(t) for t in mod["f"](to_tvm(torch.ones(1024))))
    assert whole.data_ptr() == half.data_ptr()
    torch.testing.assert_close(whole, torch.full((1024,), 2.0))
    torch.testing.assert_close(half, torch.full((512,), 2.0))


def test_inputs_are_not_copied_on_the_way_in():
    """A script that writes into its input changes the caller's tensor: same memory."""
    src = "def forward(self, a: Tensor) -> Tensor:\n    a.add_(1.0)\n    return torch.zeros([1])\n"
    mod = module({"f": (src, 1, 1, False)})
    x = torch.zeros(64)
    mod["f"](to_tvm(x))
    torch.testing.assert_close(x, torch.ones(64))


def test_output_aliasing_an_input_is_copied():
    src = "def forward(self, a: Tensor) -> Tensor:\n    return a\n"
    mod = module({"f": (src, 1, 1, False)})
    x = torch.rand(8)
    out = torch.from_dlpack(mod["f"](to_tvm(x)))
    torch.testing.assert_close(out, x)
    assert out.data_ptr() != x.data_ptr()


def test_non_contiguous_result_is_made_compact():
    src = "def forward(self, a: Tensor) -> Tensor:\n    return torch.t(a * 1)\n"
    mod = module({"f": (src, 1, 1, False)})
    x = torch.rand(3, 5)
    out = torch.from_dlpack(mod["f"](to_tvm(x)))
    assert out.is_contiguous()
    torch.testing.assert_close(out, x.t())


def test_destination_passing_convention():
    mod = module({"f": (IDENTITY_PLUS, 2, 2, True)})
    a, b = torch.rand(4), torch.rand(4)
    s, p = torch.empty(4), torch.empty(4)
    mod["f"](to_tvm(a), to_tvm(b), to_tvm(s), to_tvm(p))
    torch.testing.assert_close(s, a + b)
    torch.testing.assert_close(p, a * b)


def test_wrong_arity_names_subgraph():
    mod = module({"sg": (IDENTITY_PLUS, 2, 2, True)})
    with pytest.raises(ValueError, match=r"subgraph 'sg' expects 2 input tensors \(or 4 with"):
        mod["sg"](to_tvm(torch.rand(2)))


def test_non_tensor_argument():
    mod = module({"sg": (CLONE, 1, 1, False)})
    with pytest.raises(TypeError, match=r"subgraph 'sg': argument 0 is .* expected a tensor"):
        mod["sg"](3)


def test_torch_error_becomes_tvm_error_naming_subgraph():
    src = "def forward(self, a: Tensor) -> Tensor:\n    return torch.linalg_cholesky(a)\n"
    mod = module({"chol": (src, 1, 1, False)})
    with pytest.raises(
        RuntimeError,
        match=r"(?s)subgraph 'chol' \(aten::linalg_cholesky\) raised inside LibTorch.*positive",
    ):
        mod["chol"](to_tvm(-torch.eye(3)))
    # The module keeps working.
    out = torch.from_dlpack(mod["chol"](to_tvm(torch.eye(3) * 4)))
    torch.testing.assert_close(out, torch.eye(3) * 2)


def test_script_that_does_not_compile_is_rejected_at_creation():
    with pytest.raises(ValueError, match=r"TorchScript of subgraph 'bad' does not compile"):
        module(
            {
                "bad": (
                    "def forward(self, a: Tensor) -> Tensor:\n    return undefined(a)\n",
                    1,
                    1,
                    False,
                )
            }
        )


def test_inconsistent_declaration_is_rejected():
    with pytest.raises(
        ValueError, match="returns 2 outputs but is not marked as returning a tuple"
    ):
        module({"f": (IDENTITY_PLUS, 2, 2, False)})


def test_serialization_round_trip():
    mod = module({"f": (IDENTITY_PLUS, 2, 2, True), "g": (CLONE, 1, 1, False)}, metadata="{}")
    data = save(mod)
    again = load_bytes(data)
    assert again.kind == "torch"
    assert str(again["__byoc_torch_metadata__"]()) == "{}"
    assert sorted(str(s) for s in again["__byoc_torch_symbols__"]()) == ["f", "g"]
    a, b = torch.rand(3), torch.rand(3)
    torch.testing.assert_close(torch.from_dlpack(again["f"](to_tvm(a), to_tvm(b))[0]), a + b)
    assert save(again) == data


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:5], "truncated while reading magic"),
        (lambda b: b"XXXXXXXX" + b[8:], "bad magic"),
        (lambda b: b[:8] + b"\x63\x00\x00\x00" + b[12:], "format version 99"),
        (lambda b: b[:-4], "checksum mismatch"),
        (lambda b: reseal(b[:-4]), "truncated while reading AOTInductor input count"),
        (lambda b: reseal(b[:-8]), "truncated while reading AOTInductor package"),
        (lambda b: reseal(b[:-14]), "truncated while reading submodule count"),
        (lambda b: reseal(b[:-20]), "TorchScript source claims"),
        (lambda b: reseal(b + b"junk"), "4 trailing bytes"),
        (lambda b: reseal(b[:20] + b"\xff" * 8 + b[28:]), "metadata claims"),
    ],
)
def test_corrupt_bytes_give_clear_errors(mutate, message):
    data = save(module({"f": (CLONE, 1, 1, False)}))
    with pytest.raises(ValueError, match=message):
        load_bytes(mutate(data))


def test_inspect_source_shows_scripts():
    mod = module({"f": (CLONE, 1, 1, False)})
    assert "torch.clone" in mod.inspect_source()


def test_single_op_fast_path_and_interpreter_agree():
    src = (
        "def forward(self, a: Tensor) -> Tuple[Tensor, Tensor]:\n"
        "    r = torch.kthvalue(a, 2, 1)\n"
        "    return (r[0], r[1])\n"
    )
    mod = module({"k": (src, 1, 2, True)})
    stats = mod["__byoc_torch_stats__"]()
    assert stats["k"][2] == 1  # one ATen op: eligible for the dispatcher fast path
    x = torch.randn(4, 6)
    fast = [torch.from_dlpack(t) for t in mod["k"](to_tvm(x))]
    assert measure.set_fast_path(mod, False) is True
    slow = [torch.from_dlpack(t) for t in mod["k"](to_tvm(x))]
    assert measure.set_fast_path(mod, True) is False
    expected = torch.kthvalue(x, 2, 1)
    torch.testing.assert_close(fast, list(expected))
    torch.testing.assert_close(slow, list(expected))
    assert mod["__byoc_torch_stats__"]()["k"][0] == 2


def test_multi_op_subgraph_uses_the_interpreter():
    src = "def forward(self, a: Tensor) -> Tensor:\n    return torch.sin(a) + 1\n"
    mod = module({"f": (src, 1, 1, False)})
    assert mod["__byoc_torch_stats__"]()["f"][2] == 0
