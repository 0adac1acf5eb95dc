"""Structure of partitioned modules on hand-built graphs, and their numerics."""

from __future__ import annotations

import pytest
import torch
import tvm
import tvm_ffi

import byoc_torch
import relay_ext
from byoc_torch.tensors import to_tvm
from byoc_torch.testing.graphs import (
    Graph,
    build,
    groups_of,
    num_torch_functions,
    random_input,
    reference,
    run,
)

CASES: dict[str, tuple[Graph, int]] = {
    # name: (graph, expected number of torch functions)
    "single": ([("t", [-1])], 1),
    "chain_torch_only": ([("t", [-1]), ("t", [0]), ("t", [1])], 1),
    "alternating_chain": ([("t", [-1]), ("n", [0]), ("t", [1]), ("n", [2]), ("t", [3])], 3),
    # t0 -> n1 -> t2 and t0 -> t2 directly: merging t0 and t2 would make a cycle via n1.
    "no_merge_across_native_path": ([("t", [-1]), ("n", [0]), ("t", [0, 1])], 2),
    # Diamond of torch ops around a native root: all four torch ops merge.
    "torch_diamond": ([("n", [-1]), ("t", [0]), ("t", [0]), ("t", [1, 2])], 1),
    # Diamond with one native side: t0 -> {t1, n2} -> t3. t0,t1 merge; t3 cannot join them.
    "mixed_diamond": ([("t", [-1]), ("t", [0]), ("n", [0]), ("t", [1, 2])], 2),
    # Independent branches of different depth: x -> t0 ; x -> n1 -> t2. t0 and t2 merge.
    "independent_branches": ([("t", [-1]), ("n", [-1]), ("t", [1])], 1),
    # Three independent torch ops behind native ops of different depths: one group.
    "three_branches": (
        [("n", [-1]), ("n", [0]), ("t", [1]), ("t", [-1]), ("n", [-1]), ("t", [4])],
        1,
    ),
    # Native nodes only: nothing to lift.
    "native_only": ([("n", [-1]), ("n", [0])], 0),
    # Torch after a native consumer of another torch op on a separate branch.
    "cross_branches": (
        [("t", [-1]), ("n", [0]), ("t", [-1]), ("n", [2]), ("t", [1, 3])],
        2,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_number_of_torch_functions(name):
    graph, expected = CASES[name]
    mod = byoc_torch.partition_for_torch(build(graph))
    assert num_torch_functions(mod) == expected
    assert tvm.relax.analysis.check_well_formed(mod)


@pytest.mark.parametrize("name", sorted(CASES))
def test_partitioned_module_matches_eager(name):
    graph, _ = CASES[name]
    x = random_input()
    got = run(byoc_torch.partition_for_torch(build(graph)), x)
    torch.testing.assert_close(got, reference(graph, x))


def test_external_function_attributes():
    mod = byoc_torch.partition_for_torch(build([("t", [-1]), ("n", [0]), ("t", [1])]))
    funcs = byoc_torch.torch_functions(mod)
    assert sorted(funcs) == ["torch_main_0", "torch_main_1"]
    for symbol, f in funcs.items():
        assert f.attrs["Codegen"] == "torch"
        assert f.attrs["global_symbol"] == symbol
        script = relay_ext.script_text(f.attrs["torch_script"])
        assert "def forward(" in script and "torch.sin" in script
        assert list(f.attrs["torch_ops"]) == ["aten.sin"]


def test_one_script_for_a_whole_group():
    mod = byoc_torch.partition_for_torch(build([("t", [-1]), ("t", [0]), ("t", [1])]))
    (f,) = byoc_torch.torch_functions(mod).values()
    script = relay_ext.script_text(f.attrs["torch_script"])
    # One forward that calls the three members in order.
    assert script.count("def forward(") == 1
    assert all(f"def op{j}(" in script for j in range(3))
    assert len(f.params) == 1


def test_group_sizes_independent_branches():
    graph = [("t", [-1]), ("n", [-1]), ("t", [1]), ("t", [2])]
    assert groups_of(byoc_torch.partition_for_torch(build(graph))) == [3]


def test_pass_composes_in_sequential():
    graph = [("t", [-1]), ("n", [0]), ("t", [1])]
    seq = tvm.transform.Sequential(
        [
            tvm.relax.transform.Normalize(),
            byoc_torch.PartitionForTorch(),
            byoc_torch.LowerTorchFunctions(),
        ]
    )
    lowered = seq(build(graph))
    assert num_torch_functions(lowered) == 0  # lowered to calls of the runtime module
    assert len(lowered.attrs["external_mods"]) == 1
    x = random_input()
    ex = tvm.relax.build(lowered, target="llvm")
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    torch.testing.assert_close(torch.from_dlpack(vm["main"](to_tvm(x))), reference(graph, x)[0])


def test_deterministic():
    graph = [("t", [-1]), ("n", [0]), ("t", [-1]), ("n", [2]), ("t", [1, 3]), ("t", [0])]
    a = byoc_torch.partition_for_torch(build(graph))
    b = byoc_torch.partition_for_torch(build(graph))
    assert tvm_ffi.structural_equal(a, b)


def test_idempotent():
    mod = byoc_torch.partition_for_torch(build([("t", [-1]), ("n", [0]), ("t", [1])]))
    again = byoc_torch.partition_for_torch(mod)
    assert num_torch_functions(again) == 2


def test_stock_run_codegen_uses_destination_passing():
    """TVM's own RunCodegen also drives relax.ext.torch (outputs copied into TVM buffers)."""
    graph = [("t", [-1]), ("n", [0]), ("t", [1])]
    mod = tvm.relax.transform.RunCodegen()(byoc_torch.partition_for_torch(build(graph)))
    x = random_input()
    ex = tvm.relax.build(mod, target="llvm")
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    torch.testing.assert_close(torch.from_dlpack(vm["main"](to_tvm(x))), reference(graph, x)[0])


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="unknown byoc_torch option"):
        byoc_torch.partition_for_torch(build([("t", [-1])]), min_blok_size=3)
