"""Where a compiled model's time goes: oneDNN's kernels against everything around them, beside
ONNX Runtime's kernels against everything around its own.

For each model, in one process on the CPU: byoc_torch compiles it with its defaults and ONNX
Runtime runs its export (both set up as ``benchmarks.peers`` sets them up). Then

* latency of eager, byoc_torch and ONNX Runtime, interleaved
  (:func:`byoc_torch.timing.interleaved_samples`, median of per-round medians);
* **byoc_torch's oneDNN kernels**: one call with oneDNN's verbose mode on
  (``torch.backends.mkldnn.verbose``, which logs each primitive's execution time), summed by
  primitive kind (convolution, inner product / matmul, reorders). What is left of the call's
  latency is everything else: inductor's own loops, MKL's batched multiplies of attention, and
  each ATen oneDNN op's setup around its kernel (descriptors, allocations);
* **ONNX Runtime's kernels**: ``--profile-calls`` calls with its profiler on, each node's
  kernel time summed by operator type and averaged per call.

The question it answers: when ONNX Runtime is faster, is it its kernels or what surrounds
them? On the Zen 4 host (docs/performance.md) the kernels were level -- oneDNN's convolutions
and multiplies run at 80-114 GFLOP/s, near one core's peak -- and the difference was the rest.

    python -m benchmarks.kernel_share [--models hf_resnet,hf_vit] [--threads 1] [--rounds 7]
        [--profile-calls 30]

The kernel sums come from one call (oneDNN) or an average (ONNX Runtime) with the respective
logging on, which adds a little time of its own; read them as shares, not as latencies.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

import byoc_torch
from byoc_torch.timing import interleaved_samples

from .peers import model_builders

DEFAULT_MODELS = "hf_resnet,hf_vit,hf_gpt2"


@contextlib.contextmanager
def _captured_fd1(sink: list[str]):
    """Everything written to file descriptor 1 inside the block (C code's stdout included),
    appended to ``sink`` as lines."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            sink.extend(tmp.read().decode(errors="replace").splitlines())


def onednn_kernels(fn, calls: int) -> dict[str, float]:
    """Milliseconds of oneDNN primitive execution per call of ``fn``, by primitive kind, the
    median over ``calls`` logged calls (from oneDNN's verbose lines
    ``onednn_verbose,...,exec,cpu,<kind>,...,<ms>``)."""
    fn()  # primitives created and cached before the logged calls
    lines: list[str] = []
    with _captured_fd1(lines), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        for _ in range(calls):
            fn()
    execs: list[tuple[str, float]] = []
    for line in lines:
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        try:
            execs.append((fields[at + 2], float(fields[-1])))
        except (IndexError, ValueError):
            continue
    if not execs or len(execs) % calls:
        return {}  # no oneDNN kernel ran, or calls differ: nothing to attribute
    per = len(execs) // calls
    kinds = sorted({k for k, _ in execs})
    out = {}
    for kind in kinds:
        sums = [
            sum(ms for k, ms in execs[c * per : (c + 1) * per] if k == kind) for c in range(calls)
        ]
        out[kind] = statistics.median(sums)
    return out


def onnxruntime_kernels(model, inputs, threads: int | None, calls: int, workdir: Path):
    """(a function running the exported model in ONNX Runtime, ms of kernel time per call by
    operator type: the median over ``calls`` profiled calls)."""
    import onnxruntime as ort

    path = workdir / "model.onnx"
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        torch.onnx.export(model, inputs, str(path), dynamo=True)

    def session(profile: bool):
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = str(workdir / "ort_profile")
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    plain, profiled = session(False), session(True)
    feed = {i.name: x.numpy() for i, x in zip(plain.get_inputs(), inputs, strict=True)}
    for _ in range(calls):
        profiled.run(None, feed)
    events = json.loads(Path(profiled.end_profiling()).read_text())
    runs = [
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    ]
    nodes = [
        (e["ts"], e["args"].get("op_name", "?"), e["dur"] / 1e3)  # us -> ms
        for e in events
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
    ]
    ops = sorted({op for _, op, _ in nodes})
    per_run = [
        {op: sum(ms for ts, o, ms in nodes if o == op and start <= ts <= end) for op in ops}
        for start, end in runs
    ]
    per_call = {op: statistics.median(r[op] for r in per_run) for op in ops} if per_run else {}
    return (lambda: plain.run(None, feed)), per_call


def _top(by_kind: dict[str, float], n: int = 4) -> str:
    parts = sorted(by_kind.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"{k} {v:.3f}" for k, v in parts)


def bench(name: str, threads: int | None, rounds: int, calls: int) -> None:
    model, inputs = model_builders()[name]()
    model = model.eval()
    compiled = byoc_torch.compile(model, inputs)
    report = compiled.report()
    chosen = report.placement.chosen if report.placement is not None else "-"
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        ort_run, ort_ops = onnxruntime_kernels(model, inputs, threads, calls, Path(tmp))
        fns = {
            "eager": lambda: model(*inputs),
            "byoc": lambda: compiled(*inputs),
            "onnxruntime": ort_run,
        }
        samples, _ = interleaved_samples(fns, rounds)
        ms = {k: statistics.median(v) for k, v in samples.items()}
        dnnl = onednn_kernels(lambda: compiled(*inputs), calls)
    dnnl_ms = sum(dnnl.values())
    heavy = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}
    ort_heavy = sum(v for k, v in ort_ops.items() if k in heavy)
    ort_all = sum(ort_ops.values())
    print(f"\n{name}: eager {ms['eager']:.3f} ms; byoc_torch placement {chosen}")
    print(
        f"  byoc_torch   {ms['byoc']:.3f} ms = {ms['byoc'] / ms['eager']:.2f}x eager; oneDNN "
        f"kernels {dnnl_ms:.3f} ms ({_top(dnnl)}); the rest {ms['byoc'] - dnnl_ms:.3f} ms"
    )
    print(
        f"  onnxruntime  {ms['onnxruntime']:.3f} ms = {ms['onnxruntime'] / ms['eager']:.2f}x "
        f"eager; conv / gemm / matmul kernels {ort_heavy:.3f} ms, all kernels {ort_all:.3f} ms "
        f"({_top(ort_ops)}); the rest {ms['onnxruntime'] - ort_heavy:.3f} ms",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--profile-calls", type=int, default=30)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"threads {torch.get_num_threads()}; load average at start "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        flush=True,
    )
    for name in args.models.split(","):
        bench(name, args.threads, args.rounds, args.profile_calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
