"""Convolutions by oneDNN directly: the runtime's op ``torch.ops.byoc_torch.conv2d_onednn``
agrees with ``torch.conv2d`` and refuses what it cannot run by name; packages call it where the
verdict says so (measured, or forced), agree with eager, and load in a fresh process."""

from __future__ import annotations

import io
import textwrap
import threading
import zipfile

import pytest
import torch
from torch import fx, nn

import byoc_torch
from byoc_torch import aot_inductor, onednn_convolutions
from byoc_torch.compiled import running_torch_modules
from byoc_torch.testing.packages import whole_program
from byoc_torch.testing.processes import fresh_python
from byoc_torch.torch_library import onednn_convolution_available

pytestmark = pytest.mark.skipif(
    not onednn_convolution_available(), reason="runtime built without oneDNN"
)

conv2d_onednn = torch.ops.byoc_torch.conv2d_onednn if onednn_convolution_available() else None


class TwoConvs(nn.Module):
    """Two convolutions with batch norms and a residual addition, the second strided and
    dilated, then a flattening view of the (contiguous) output: what a CNN's block does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, bias=False)
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)) + h[:, :, ::2, ::2])
        return h.view(h.shape[0], -1)


def _model() -> TwoConvs:
    torch.manual_seed(0)
    model = TwoConvs().eval()
    with torch.no_grad():  # batch norms that are not the identity
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model


def _proxy_calls(package: bytes) -> tuple[int, int]:
    """(custom-op calls through AOTInductor's proxy executor, ATen oneDNN convolutions) in
    the package's wrapper."""
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        (wrapper,) = [n for n in archive.namelist() if n.endswith("wrapper.cpp")]
        source = archive.read(wrapper).decode()
    return source.count("proxy_executor_call_function("), source.count("_convolution_pointwise")


@pytest.mark.parametrize(
    ("batch", "stride", "padding", "dilation", "bias", "channels_last"),
    [
        (1, 1, 1, 1, True, False),
        (2, 2, 0, 1, False, False),
        (3, 1, 2, 2, True, True),
        (2, 2, 3, 1, True, True),
    ],
)
def test_the_op_agrees_with_conv2d(batch, stride, padding, dilation, bias, channels_last):
    """Each case twice: built, then from the kept primitive, on another input."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 5, 3, 3, generator=gen)
    b = torch.randn(16, generator=gen) if bias else None
    for _ in range(2):
        x = torch.randn(batch, 5, 13, 11, generator=gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        got = conv2d_onednn(x, w, b, [stride] * 2, [padding] * 2, [dilation] * 2, 1)
        expected = torch.conv2d(x, w, b, stride, padding, dilation)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_two_weights_of_one_shape_are_kept_apart():
    """The kept primitive and packed weight belong to one weight: another of the same shape,
    and the first changed in place after a copy, each give their own result."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    w1, w2 = torch.randn(6, 4, 3, 3, generator=gen), torch.randn(6, 4, 3, 3, generator=gen)
    for w in (w1, w2, w1):
        got = conv2d_onednn(x, w, None, [1, 1], [1, 1], [1, 1], 1)
        torch.testing.assert_close(got, torch.conv2d(x, w, None, 1, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: (torch.randn(1, 4, 8, 8), torch.randn(6, 2, 3, 3), 2),
            "byoc_torch.conv2d_onednn: only groups=1, got 2",
        ),
        (
            lambda: (torch.randn(1, 4, 8, 8, dtype=torch.float64), torch.randn(6, 4, 3, 3), 1),
            "byoc_torch.conv2d_onednn: input and weight must be float32, got Double and Float",
        ),
        (
            lambda: (torch.randn(4, 8, 8), torch.randn(6, 4, 3, 3), 1),
            "byoc_torch.conv2d_onednn: input (N, C, H, W) and weight (O, C, kH, kW) must be "
            "4-d, got 3-d and 4-d",
        ),
        (
            lambda: (torch.randn(1, 5, 8, 8), torch.randn(6, 4, 3, 3), 1),
            "byoc_torch.conv2d_onednn: input has 5 channels, the weight expects 4",
        ),
        (
            lambda: (torch.randn(1, 4, 2, 2), torch.randn(6, 4, 3, 3), 1),
            "byoc_torch.conv2d_onednn: the input ([1, 4, 2, 2]) is smaller than the kernel",
        ),
    ],
)
def test_what_the_op_cannot_run_is_a_clear_error(make, message):
    x, w, groups = make()
    with pytest.raises(RuntimeError) as err:
        conv2d_onednn(x, w, None, [1, 1], [0, 0], [1, 1], groups)
    assert str(err.value).splitlines()[0] == message


def test_the_rewrite_wraps_each_convolution_in_layout_conversions():
    """A program's two convolutions become the op, each between a channels-last copy of its
    input and a copy of its output in the layout the program was traced with; nothing else
    in the graph changes."""
    model = _model()
    program, _, _ = whole_program(model, (torch.randn(2, 3, 12, 12),))
    before = [n.target for n in program.module.graph.nodes if n.op == "call_function"]
    after_module = onednn_convolutions.rewritten(program.module)
    after = [n.target for n in after_module.graph.nodes if n.op == "call_function"]
    aten = torch.ops.aten
    expected = []
    for target in before:
        if target is aten.convolution.default:
            expected += [aten.clone.default, torch.ops.byoc_torch.conv2d_onednn.default]
            expected += [aten.clone.default]
        else:
            expected.append(target)
    assert before.count(aten.convolution.default) == 2
    assert after == expected
    assert isinstance(after_module, fx.GraphModule)
    assert program.module.graph is not after_module.graph  # the program itself is unchanged


@pytest.mark.parametrize("own", [True, False])
def test_packages_call_the_op_where_the_probe_says_it_is_faster(monkeypatch, own):
    """Measured (the probe faked): the package calls the op for both convolutions, or ATen's
    oneDNN convolutions; either way it agrees with eager on another input and batch size."""
    monkeypatch.setattr("byoc_torch._defaults.AOTI_ONEDNN_CONVOLUTIONS", None)
    asked: list = []

    def fake(shapes):
        asked.append(shapes)
        return own

    monkeypatch.setattr(onednn_convolutions, "_onednn_faster", fake)
    model = _model()
    program, _, _ = whole_program(model, (torch.randn(2, 3, 12, 12),))
    assert program.onednn_convolutions is own
    assert [len(s) for s in asked] == [2]  # both convolutions' shapes, each once
    package = aot_inductor.compile_package(program)
    assert _proxy_calls(package) == ((2, 0) if own else (0, 2))
    runner = torch._inductor.aoti_load_package(_written(package))
    x = torch.linspace(-2, 2, 2 * 3 * 12 * 12).reshape(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(runner(x)[0], model(x), rtol=1e-4, atol=1e-4)


def _written(package: bytes) -> str:
    import tempfile

    handle = tempfile.NamedTemporaryFile(suffix=".pt2", delete=False)
    handle.write(package)
    handle.close()
    return handle.name


@pytest.mark.parametrize(
    ("setting", "available", "expected"),
    [
        (None, True, (True, "convolutions by oneDNN directly: measured faster here")),
        (False, True, (False, "convolutions by ATen's oneDNN ops (AOTI_ONEDNN_CONVOLUTIONS)")),
        (True, True, (True, "convolutions by oneDNN directly (AOTI_ONEDNN_CONVOLUTIONS)")),
        (
            True,
            False,
            (False, "convolutions by ATen's oneDNN ops (this runtime was built without oneDNN)"),
        ),
    ],
)
def test_the_verdict_and_its_words(monkeypatch, setting, available, expected):
    monkeypatch.setattr("byoc_torch._defaults.AOTI_ONEDNN_CONVOLUTIONS", setting)
    monkeypatch.setattr(onednn_convolutions, "onednn_convolution_available", lambda: available)
    monkeypatch.setattr(onednn_convolutions, "_onednn_faster", lambda shapes: True)
    ep = torch.export.export(_model(), (torch.randn(2, 3, 12, 12),)).run_decompositions()
    assert onednn_convolutions.onednn_verdict(ep.graph) == expected
    linear = torch.export.export(nn.Linear(4, 4), (torch.randn(2, 4),)).run_decompositions()
    assert onednn_convolutions.onednn_verdict(linear.graph) == (False, "")


def test_convolutions_off_the_cpu_and_their_weights_are_left_to_aten(monkeypatch):
    """The op has a CPU kernel only: a program traced on another device (meta here, as a
    CUDA one would be) has no convolution for it, and a module whose weight lives elsewhere
    is not rewritten."""
    monkeypatch.setattr("byoc_torch._defaults.AOTI_ONEDNN_CONVOLUTIONS", True)
    with torch.device("meta"):
        model = TwoConvs().eval()
        ep = torch.export.export(model, (torch.randn(2, 3, 12, 12),)).run_decompositions()
    assert onednn_convolutions.convolution_shapes(ep.graph) == []
    assert onednn_convolutions.onednn_verdict(ep.graph) == (False, "")
    program, _, _ = whole_program(_model(), (torch.randn(2, 3, 12, 12),))
    for name, value in list(program.module.named_buffers()):
        if value.dim() == 4:  # the convolutions' weights, moved off the CPU
            parent, _, leaf = name.rpartition(".")
            owner = program.module.get_submodule(parent) if parent else program.module
            owner.register_buffer(leaf, value.to("meta"))
    rewritten = onednn_convolutions.rewritten(program.module)
    targets = [n.target for n in rewritten.graph.nodes if n.op == "call_function"]
    assert torch.ops.byoc_torch.conv2d_onednn.default not in targets
    assert targets.count(torch.ops.aten.convolution.default) == 2


@pytest.mark.parametrize(("aten_ms", "onednn_ms", "own"), [(1.0, 0.8, True), (1.0, 0.97, False)])
def test_the_op_must_win_beyond_the_margin(monkeypatch, aten_ms, onednn_ms, own):
    """timing.choose decides, ATen's (inductor's own) kept on a tie. Both callables are real:
    each runs its convolutions once before its timing is faked."""
    from byoc_torch import frozen_weights
    from byoc_torch.timing import Timing

    def fake_times(fns):
        for fn in fns.values():
            fn()
        return {"aten": Timing(aten_ms, 0.02), "onednn": Timing(onednn_ms, 0.02)}

    monkeypatch.setattr(frozen_weights, "robust_times", fake_times)
    onednn_convolutions._onednn_faster.cache_clear()
    shape = ((1, 4, 9, 9), (8, 4, 3, 3), (1, 1), (1, 1), (1, 1), True)
    try:
        assert onednn_convolutions._onednn_faster((shape,)) is own
    finally:
        onednn_convolutions._onednn_faster.cache_clear()


@pytest.fixture(scope="module")
def compiled_model():
    """TwoConvs compiled whole as one package with the op (forced), batch dynamic."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("byoc_torch._defaults.AOTI_ONEDNN_CONVOLUTIONS", True)
        model = _model()
        example = (torch.randn(2, 3, 12, 12),)
        ep = torch.export.export(model, example).run_decompositions()
        every_op = {
            str(n.target).rsplit(".", 1)[0]
            for n in ep.graph.nodes
            if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
        }
        compiled = byoc_torch.compile(
            model,
            example,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
            torch_executed_ops=sorted(every_op),
            torch_executor="aot_inductor",
            placement="tvm",
        )
    return model, compiled


def test_a_compiled_model_runs_the_op_and_agrees_with_eager(compiled_model):
    model, compiled = compiled_model
    (entry,) = compiled.report().subgraphs
    assert entry.executor == "aot_inductor"
    assert "convolutions by oneDNN directly (AOTI_ONEDNN_CONVOLUTIONS)" in entry.executor_reason
    from byoc_torch.runtime import TorchRuntime

    (spec,) = TorchRuntime(running_torch_modules(compiled.executable)[0]).specs()
    assert _proxy_calls(bytes(spec.aoti_package)) == (2, 0)
    for batch in (1, 5):
        x = torch.linspace(-3, 3, batch * 3 * 12 * 12).reshape(batch, 3, 12, 12)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_threads_calling_one_model_each_get_their_own_answer(compiled_model):
    model, compiled = compiled_model
    inputs = [
        torch.randn(b, 3, 12, 12, generator=torch.Generator().manual_seed(b)) for b in (1, 2, 3, 4)
    ]
    results: dict[int, torch.Tensor] = {}

    def work(k: int) -> None:
        with torch.no_grad():
            for _ in range(20):
                results[k] = compiled(inputs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with torch.no_grad():
        for k, x in enumerate(inputs):
            torch.testing.assert_close(results[k], model(x), rtol=1e-4, atol=1e-4)


def test_an_artifact_with_the_op_loads_in_a_fresh_process(compiled_model, tmp_path):
    model, compiled = compiled_model
    path = compiled.export(tmp_path / "convs.so")
    x = torch.randn(3, 3, 12, 12)  # not the example input, another batch size
    with torch.no_grad():
        expected = model(x)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(
        f"""
        import torch, byoc_torch
        m = byoc_torch.load({str(path)!r})
        torch.save(m(torch.load({str(tmp_path / "x.pt")!r})), {str(tmp_path / "got.pt")!r})
        print(m.report().subgraphs[0].executor)
        """
    )
    proc = fresh_python("-c", script, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["aot_inductor"]
    torch.testing.assert_close(torch.load(tmp_path / "got.pt"), expected, rtol=1e-4, atol=1e-4)
