"""LibTorch subgraph executors: eager against byoc_torch with each ``torch_executor``, and the
compile cache cold against warm.

For each model (Hugging Face models of :mod:`byoc_torch.testing.hf_models` or the built-in
examples of :mod:`byoc_torch.models`, random weights), in one process, on the CPU:

* ``eager``         PyTorch eager under ``torch.no_grad()``;
* ``byoc``          ``byoc_torch.compile(model, inputs)`` with its defaults
                    (``torch_executor="auto"``), with a fresh ``cache_dir`` (a cold compile);
* ``byoc_aoti``     ``torch_executor="aot_inductor"``: every LibTorch subgraph that compiles
                    runs as an AOTInductor package;
* ``byoc_ts``       ``torch_executor="torchscript"``: the TorchScript executor alone;
* ``byoc_warm``     the ``byoc`` compile again with the same ``cache_dir`` (its compile time is
                    the warm-cache figure; the model is the same as ``byoc``'s);
* ``aoti``          AOTInductor's own compile of the whole model, for the compile-time ratio:
                    ``torch.export`` + ``aoti_compile_and_package`` with ``freezing=True`` +
                    ``aoti_load_package`` (timed as a peer). It runs after byoc_torch's compiles
                    in the same process, with inductor warm, so the ratio flatters it
                    (2.2-3.1x here where ``benchmarks/compile_time.py``, every compile in a
                    fresh process, measured 1.6-1.9x for the same HF models).

``--only-default`` leaves out ``byoc_aoti`` and ``byoc_ts`` (the compile-time study).

Memory, printed after the latencies: the artifact's size against the model's weights (every
parameter's and buffer's bytes), and the peak resident size of a fresh process that loads the
artifact and calls it once against one that builds the eager model and calls it once
(``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` would carry over the benchmark process's
own peak through fork and exec; both import torch, TVM and byoc_torch, so the difference is
the model's).

Every contestant's outputs are compared with eager's (``torch.testing.assert_close``, rtol =
atol = 1e-3) before timing. Latency: :func:`byoc_torch.timing.interleaved_samples`,
round-robin, the median over rounds of each round's median; ``x eager`` is the ratio to eager.
Each line also gives the placement the whole-model check kept and what runs each LibTorch
subgraph.

    python -m benchmarks.aot_inductor [--models hf_bert,hf_vit] [--threads 1] [--rounds N]
        [--only-default]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

import byoc_torch
from byoc_torch import compile_cache
from byoc_torch.timing import interleaved_samples


def _model(name: str):
    if name.startswith("hf_"):
        from byoc_torch.testing import hf_models

        return getattr(hf_models, name)()
    from byoc_torch.models import get_example

    return get_example(name)


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


def _compile(model, inputs, **options):
    t0 = time.perf_counter()
    compiled = byoc_torch.compile(model, inputs, **options)
    compiled(*inputs)
    return compiled, time.perf_counter() - t0


def _describe(compiled) -> str:
    report = compiled.report()
    chosen = report.placement.chosen if report.placement is not None else "-"
    runs = ",".join(s.executor for s in report.subgraphs) or "no subgraph"
    return f"{chosen}; {runs}"


def _aoti_own(model, inputs, workdir: str):
    """AOTInductor's own compile of the whole model (freezing), loaded; and its time."""
    t0 = time.perf_counter()
    with torch.no_grad():
        ep = torch.export.export(model, tuple(inputs))
        path = torch._inductor.aoti_compile_and_package(
            ep,
            package_path=os.path.join(workdir, "model.pt2"),
            inductor_configs={"freezing": True},
        )
    runner = torch._inductor.aoti_load_package(path)
    runner(*inputs)
    return runner, time.perf_counter() - t0


_PEAK_RSS = """
import sys, torch, byoc_torch
from benchmarks.aot_inductor import _model
inputs = torch.load(sys.argv[3])
if sys.argv[2] == "eager":
    model, _ = _model(sys.argv[1])
else:
    model = byoc_torch.load(sys.argv[2])
with torch.no_grad():
    model(*inputs)
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(int(status.split()[0]))  # kB
"""


def _peak_rss_mb(name: str, what: str, inputs_path: str) -> float:
    """Peak resident size (MB) of a fresh process running ``what`` ("eager": the model built
    there, or an artifact path, loaded) once on the inputs saved at ``inputs_path``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, name, what, inputs_path],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def memory(name: str, model, inputs, compiled, workdir: str) -> None:
    """Artifact size against the weights, and a loaded model's peak RSS against eager's."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    path = compiled.export(os.path.join(workdir, "model.so"))
    size = os.path.getsize(path)
    saved = os.path.join(workdir, "inputs.pt")
    torch.save(tuple(inputs), saved)
    eager_mb = _peak_rss_mb(name, "eager", saved)
    loaded_mb = _peak_rss_mb(name, str(path), saved)
    print(
        f"  memory: artifact {size / 1e6:.2f} MB = {size / max(weights, 1):.2f}x the weights "
        f"({weights / 1e6:.2f} MB); peak RSS loaded {loaded_mb:.0f} MB vs eager {eager_mb:.0f} MB "
        f"({loaded_mb / eager_mb:.2f}x)",
        flush=True,
    )


def bench(name: str, rounds: int, threads: int, only_default: bool = False) -> None:
    torch.set_num_threads(threads)
    model, inputs = _model(name)
    with torch.no_grad():
        expected = _flat(model(*inputs))
    cache = tempfile.mkdtemp(prefix="byoc_torch_bench_cache_")
    compiled: dict[str, object] = {}
    setup: dict[str, float] = {}
    n = {"num_threads": threads}
    compiled["byoc"], setup["byoc"] = _compile(model, inputs, cache_dir=cache, **n)
    if not only_default:
        compiled["byoc_aoti"], setup["byoc_aoti"] = _compile(
            model, inputs, torch_executor="aot_inductor", **n
        )
        compiled["byoc_ts"], setup["byoc_ts"] = _compile(
            model, inputs, torch_executor="torchscript", **n
        )
    compile_cache.MEMORY.clear()  # the warm compile reads the disk cache
    compiled["byoc_warm"], setup["byoc_warm"] = _compile(model, inputs, cache_dir=cache, **n)
    peer, setup["aoti"] = _aoti_own(model, inputs, cache)
    for c in [*compiled.values(), peer]:
        torch.testing.assert_close(_flat(c(*inputs)), expected, rtol=1e-3, atol=1e-3)

    def eager():
        with torch.no_grad():
            return model(*inputs)

    fns = {
        "eager": eager,
        **{k: (lambda c=c: c(*inputs)) for k, c in compiled.items()},
        "aoti": lambda: peer(*inputs),
    }
    samples, _ = interleaved_samples(fns, rounds)
    ms = {k: statistics.median(v) for k, v in samples.items()}
    print(f"\n{name} (threads {torch.get_num_threads()}, loadavg {os.getloadavg()[0]:.1f})")
    print(f"  {'contestant':<10} {'ms':>9} {'x eager':>8} {'setup s':>8}  placement; executors")
    for key in fns:
        line = f"  {key:<10} {ms[key]:>9.3f} {ms[key] / ms['eager']:>8.2f}"
        if key in compiled:
            line += f" {setup[key]:>8.1f}  {_describe(compiled[key])}"
        elif key in setup:
            line += f" {setup[key]:>8.1f}"
        print(line)
    print(
        f"  compile: byoc cold {setup['byoc']:.1f} s = {setup['byoc'] / setup['aoti']:.2f}x "
        f"AOTInductor's own ({setup['aoti']:.1f} s, same process, inductor warm: "
        f"benchmarks.compile_time is the fair ratio); warm cache_dir {setup['byoc_warm']:.1f} s",
        flush=True,
    )
    memory(name, model, inputs, compiled["byoc"], cache)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--models", default="hf_bert,hf_vit")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--only-default", action="store_true", help="byoc default, warm, aoti only")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    for name in args.models.split(","):
        bench(name, args.rounds, args.threads, args.only_default)
    return 0


if __name__ == "__main__":
    sys.exit(main())
