"""Default CPU schedules (byoc_torch.schedules), fast math (byoc_torch.fast_math) and the host
target (byoc_torch.cpu): the kernels' loop structure, numerics against eager, and the CPU
check on load."""

from __future__ import annotations

import pytest
import torch
import tvm
import tvm_ffi
from tvm import relax, te, tirx
from tvm.relax.frontend.torch import from_exported_program

import byoc_torch
from byoc_torch import _defaults, bool_arith, cpu, fast_math, schedules, tuning
from byoc_torch.testing import Lambda

HOST = cpu.resolve_target(cpu.HOST)


def _kernels(fn, *inputs) -> dict[str, tirx.PrimFunc]:
    """The scheduled PrimFuncs schedules.build would compile for ``fn`` on ``inputs``."""
    mod = from_exported_program(torch.export.export(Lambda(fn), inputs))
    lowered = schedules.schedule_module(schedules.lower(mod, HOST), HOST)
    return {g.name_hint: f for g, f in lowered.functions.items() if isinstance(f, tirx.PrimFunc)}


_KIND = {
    tirx.ForKind.SERIAL: "serial",
    tirx.ForKind.PARALLEL: "parallel",
    tirx.ForKind.VECTORIZED: "vectorized",
    tirx.ForKind.UNROLLED: "unrolled",
}


def _kinds(func: tirx.PrimFunc) -> list[tuple[str, int | None]]:
    """(kind, extent) of every loop of ``func``, outermost first along each nest."""
    loops: list[tirx.For] = []
    tvm_ffi.structural_walk(func.body, [(tirx.For, loops.append)], order="pre")
    out = []
    for loop in loops:
        extent = loop.extent
        out.append((_KIND[loop.kind], int(extent) if isinstance(extent, tirx.IntImm) else None))
    return out


def test_elementwise_chain_is_one_kernel_parallel_outside_vectorized_inside():
    x = torch.randn(256, 1024)
    kernels = _kernels(lambda t: torch.sigmoid(torch.relu(t * 2.0 + 1.0) - 0.5) * t, x)
    assert len(kernels) == 1  # the six ops fused into one kernel
    (func,) = kernels.values()
    lanes = schedules.vector_lanes(HOST, "float32")
    assert _kinds(func) == [("parallel", 256 * 1024 // lanes), ("vectorized", lanes)]
    assert func.attrs["tirx.is_scheduled"]


def test_small_kernel_is_vectorized_but_not_parallel():
    x = torch.randn(4, 64)
    (func,) = _kernels(lambda t: torch.relu(t) * 3.0, x).values()
    lanes = schedules.vector_lanes(HOST, "float32")
    assert 4 * 64 < _defaults.SCHEDULE_PARALLEL_MIN_ELEMENTS
    assert _kinds(func) == [("serial", 4), ("serial", 64 // lanes), ("vectorized", lanes)]


def test_row_reduction_runs_rows_in_parallel():
    x = torch.randn(512, 256)
    (func,) = _kernels(lambda t: t.sum(dim=1), x).values()
    kinds = _kinds(func)
    assert kinds[0] == ("parallel", 512)
    assert ("serial", 256) in kinds  # the reduction stays a plain loop


def test_softmax_uses_dlight_reduction_rule():
    x = torch.randn(256, 512)
    (func,) = _kernels(lambda t: torch.softmax(t, dim=-1), x).values()
    kinds = [k for k, _ in _kinds(func)]
    assert kinds[0] == "parallel"
    assert "vectorized" in kinds


def test_tuned_kernels_are_left_alone():
    x = torch.randn(64, 64)
    mod = from_exported_program(torch.export.export(Lambda(lambda t: t * 2.0), (x,)))
    lowered = tuning.lower_for_tuning(mod, HOST)
    marked = {
        g: f.with_attr("tirx.is_scheduled", True)
        for g, f in lowered.functions.items()
        if isinstance(f, tirx.PrimFunc)
    }
    for g, f in marked.items():
        lowered[g] = f
    out = schedules.schedule_module(lowered, HOST)
    for g, f in marked.items():
        tvm.ir.assert_structural_equal(out[g], f)


@pytest.mark.parametrize(
    "fn",
    [
        lambda t: torch.sigmoid(torch.relu(t * 2.0 + 1.0) - 0.5) * t,
        lambda t: torch.tanh(t) * torch.exp(t * 0.1) + torch.nn.functional.silu(t),
        lambda t: torch.softmax(t, dim=-1) + t.sum(dim=0),
        lambda t: torch.nn.functional.layer_norm(t, (t.shape[-1],)),
    ],
    ids=["chain", "transcendental", "reductions", "layer_norm"],
)
def test_scheduled_build_agrees_with_eager(fn):
    x = torch.randn(96, 200)
    compiled = byoc_torch.compile(Lambda(fn), (x,), placement="tvm", verify=False)
    other = torch.randn(96, 200) * 4
    # sums of 96 or 200 terms: another summation order than ATen's (tolerances.py's rule)
    torch.testing.assert_close(compiled(other), fn(other), rtol=1e-5, atol=1e-4)


def _elementwise(fast, a):
    return lambda i: fast(a[i])


def test_fast_math_matches_torch_over_the_float_range_and_keeps_specials():
    x = torch.cat(
        [
            torch.linspace(-100, 100, 40001),
            torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, 88.7, -87.3, 1e-30]),
        ]
    )
    for fast, ref in [
        (fast_math.fast_exp, torch.exp),
        (fast_math.fast_tanh, torch.tanh),
        (fast_math.fast_sigmoid, torch.sigmoid),
    ]:
        a = te.placeholder((x.numel(),), "float32")
        b = te.compute(a.shape, _elementwise(fast, a))
        lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, b])}), target=HOST)
        out = tvm.runtime.empty((x.numel(),), "float32")
        lib["main"](tvm.runtime.from_dlpack(x), out)
        torch.testing.assert_close(torch.from_dlpack(out), ref(x), equal_nan=True)


def test_default_target_is_the_host_cpu_and_is_recorded():
    x = torch.randn(8, 16)
    compiled = byoc_torch.compile(Lambda(lambda t: t + 1), (x,), placement="tvm")
    required = compiled.signature.cpu
    assert required["mcpu"] == cpu.host_target()["mcpu"]
    assert set(required["features"]) <= cpu.host_features()
    assert "sse2" in required["features"]
    generic = byoc_torch.compile(Lambda(lambda t: t + 1), (x,), "llvm", placement="tvm")
    assert generic.signature.cpu["mcpu"] == "generic"
    assert set(generic.signature.cpu["features"]) < set(required["features"])


def test_loading_on_a_cpu_without_the_features_is_a_clear_error(tmp_path, monkeypatch):
    x = torch.randn(8, 16)
    model = Lambda(lambda t: t * 2 + 1)
    path = tmp_path / "m.so"
    byoc_torch.compile(model, (x,), placement="tvm").export(path)
    other = torch.randn(8, 16)
    torch.testing.assert_close(byoc_torch.load(path)(other), model(other))
    lacking = cpu.host_features() - {"avx2", "fma"}
    monkeypatch.setattr(cpu, "host_features", lambda: lacking)
    with pytest.raises(byoc_torch.CPUFeatureError) as err:
        byoc_torch.load(path)
    message = str(err.value)
    assert f"compiled for CPU {cpu.host_target()['mcpu']!r}" in message
    assert "lacks: avx2, fma." in message


def test_the_c_plus_plus_cpu_check_sees_what_llvm_sees():
    """The runtime's CPUID table (runtime/cpu_features.cc) agrees with LLVM's host detection,
    which compile and byoc_torch.load use, on every feature it knows."""
    import byoc_torch.runtime  # noqa: F401  (loads the runtime library)

    table = tvm_ffi.get_global_func("byoc_torch.HostCpuFeatures")()
    known = {str(k): bool(v) for k, v in table.items()}
    assert {"sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "amx-tile"} <= set(known)
    assert set(known) <= set(cpu._host_feature_map())  # LLVM's names
    assert {name for name, has in known.items() if has} == set(known) & cpu.host_features()


LOAD_AND_CALL = """
import sys, torch, byoc_torch
model = torch.jit.load(sys.argv[1])
try:
    model(torch.randn(8, 16))
    print("ran")
except Exception as err:
    print(type(err).__name__)
    print(err)
"""


def test_the_op_refuses_kernels_for_features_this_cpu_lacks_without_running_them(tmp_path):
    """A compiled part inside a TorchScript archive, run by the C++ kernel in a fresh process,
    refuses with the CPUFeatureError text of byoc_torch.load when its TVM kernels were built
    for a CPU with features this one lacks (instead of dying of SIGILL)."""
    from byoc_torch.testing.processes import fresh_python

    candidates = ["sapphirerapids", "znver4", "graniterapids"]
    lacking = {
        name: sorted(
            set(cpu.requirements(tvm.target.Target({"kind": "llvm", "mcpu": name}))["features"])
            - cpu.host_features()
        )
        for name in candidates
    }
    mcpu = next(name for name in candidates if lacking[name])
    model = Lambda(lambda t: t * 2 + 1)
    compiled = byoc_torch.compile(
        model,
        (torch.randn(8, 16),),
        {"kind": "llvm", "mcpu": mcpu},
        placement="tvm",
        verify=False,
        torch_executor="torchscript",
    )
    parent = torch.nn.Sequential(torch.nn.Identity(), compiled)
    torch.jit.save(torch.jit.script(parent), tmp_path / "scripted.pt")  # scripting runs nothing
    script = tmp_path / "run.py"
    script.write_text(LOAD_AND_CALL)
    proc = fresh_python(str(script), str(tmp_path / "scripted.pt"))
    assert proc.returncode == 0, proc.stderr
    kind, *message = [line for line in proc.stdout.splitlines() if line.strip()]
    assert kind == "RuntimeError"  # TorchScript's interpreter puts its trace before the text
    known = set(tvm_ffi.get_global_func("byoc_torch.HostCpuFeatures")())
    assert message[-1] == (  # the interpreter's last line: the op's error
        "RuntimeError: CPUFeatureError: byoc_torch: this artifact was compiled for CPU "
        f"'{mcpu}' and uses instruction-set features this CPU lacks: "
        f"{', '.join(f for f in lacking[mcpu] if f in known)}. Compile it on this machine, or "
        "with a target for a CPU it has (e.g. target={'kind': 'llvm'} for any x86-64)."
    )


def test_an_unknown_target_string_is_tvms_error():
    with pytest.raises(Exception, match="nosuchkind"):
        cpu.resolve_target("nosuchkind")


def test_untuned_build_of_a_non_cpu_target_is_relax_build(monkeypatch):
    seen = []
    monkeypatch.setattr(relax, "build", lambda mod, target: seen.append(target.kind.name))
    schedules.build(tvm.IRModule(), {"kind": "c"})
    assert seen == ["c"]


def test_boolean_multiply_and_add_become_logical_and_or_and_float_ne_sees_nan():
    """TVM's LLVM codegen cannot compile a boolean multiply that is a kernel's output, and
    compiles a float ``!=`` as an ordered comparison (false for NaN); its simplifier folds
    ``x != x`` to false."""
    from tvm.script import ir as I
    from tvm.script import relax as R

    @I.ir_module
    class Before:
        @R.function
        def main(
            a: R.Tensor((4,), "bool"), b: R.Tensor((4,), "bool"), x: R.Tensor((4,), "float32")
        ):
            m = R.multiply(a, b)
            s = R.add(a, b)
            y = R.multiply(x, x)  # not boolean: left as it is
            n = R.not_equal(x, y)
            u = R.not_equal(x, x)  # x is NaN
            v = R.equal(x, x)  # x is not NaN
            return (m, s, y, n, u, v)

    @I.ir_module
    class Expected:
        @R.function
        def main(
            a: R.Tensor((4,), "bool"), b: R.Tensor((4,), "bool"), x: R.Tensor((4,), "float32")
        ):
            m = R.logical_and(a, b)
            s = R.logical_or(a, b)
            y = R.multiply(x, x)
            e = R.equal(x, y)
            n = R.logical_not(e)
            u = R.isnan(x)
            w = R.isnan(x)
            v = R.logical_not(w)
            return (m, s, y, n, u, v)

    tvm.ir.assert_structural_equal(bool_arith.BoolArithmetic()(Before), Expected)


def test_a_boolean_product_as_an_output_builds_in_tvm():
    """``isfinite`` decomposes to a product of two comparisons; as the model's output it is a
    kernel of its own, which TVM failed to build (the op was moved to LibTorch); its
    ``abs(a) != inf`` was false for NaN in TVM (verification moved that op)."""
    model = Lambda(lambda a: (torch.isfinite(a), (a > 0) + (a < -1)))
    a = torch.tensor([[1.0, float("inf"), float("nan"), -2.0]]).repeat(3, 1)
    compiled = byoc_torch.compile(model, (a,), placement="tvm")
    assert compiled.fallbacks == ()
    for got, want in zip(compiled(a * -1), model(a * -1), strict=True):
        torch.testing.assert_close(got, want)


def test_a_module_without_kernels_is_given_an_empty_one():
    """Every op in LibTorch (the usual placement now) leaves no kernel: TVM then links an
    empty C source module that the C compiler must compile at every VM creation and export
    (0.8-1.0 s each). :func:`schedules.with_host_kernel` adds an empty PrimFunc instead; a
    module that has a kernel is left as it is."""
    from tvm.script import ir as I
    from tvm.script import relax as R
    from tvm.script import tirx as T

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), "float32")):
            return x

    @I.ir_module
    class Expected:
        @T.prim_func
        def byoc_torch_no_kernel():
            T.func_attr({"global_symbol": "byoc_torch_no_kernel"})
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((4,), "float32")):
            return x

    tvm.ir.assert_structural_equal(schedules.with_host_kernel(Before), Expected)
    assert schedules.NO_KERNEL == "byoc_torch_no_kernel"
    assert schedules.with_host_kernel(Expected) is Expected


def _module_kinds(module) -> list[str]:
    return [module.kind] + [k for m in module.imports for k in _module_kinds(m)]


def test_a_model_all_in_libtorch_builds_no_c_source_module():
    """... so a VM of it is made without the C compiler, and it still runs its LibTorch ops."""
    model = Lambda(lambda t: torch.special.erfinv(t))
    x = torch.rand(3, 5)
    compiled = byoc_torch.compile(model, (x,), placement="tvm", torch_executor="torchscript")
    assert [r.op for r in compiled.fallbacks] == ["aten.erfinv.default"]
    kinds = _module_kinds(compiled.executable.mod)
    assert "llvm" in kinds and "c" not in kinds, kinds
    other = torch.rand(3, 5) - 0.5
    torch.testing.assert_close(compiled(other), model(other))
