"""Compile time, cold and warm, each compile in a fresh process: byoc_torch against
AOTInductor's own compile of the same model.

Why fresh processes: inductor keeps compiled kernels on disk (``TORCHINDUCTOR_CACHE_DIR``) and
warms up once per process (imports, its code caches), so a compile timed after another in the
same process, or on a machine that compiled the model before, is not a cold compile. Here every
compile runs in a new Python process with its own empty inductor cache directory:

* ``aoti``       ``torch.export`` + ``aoti_compile_and_package`` (``freezing=True``) +
                 ``aoti_load_package`` + one call: AOTInductor's own compile;
* ``byoc``       ``byoc_torch.compile(model, inputs, cache_dir=D)`` + one call, ``D`` empty (cold);
* ``byoc_warm``  the same in another fresh process, with the ``cache_dir`` and the inductor cache
                 the ``byoc`` compile left (a second compile of the same model on this machine).

Each figure excludes the child's imports and the model's construction (the same for all). The
three run in turn, ``--repeat`` times (default 2), and each is the median; ``x aoti`` is the
ratio of medians. Targets (issue 19): cold at most 2x AOTInductor's own, warm at most 3 s.

    python -m benchmarks.compile_time [--models hf_bert,hf_gpt2] [--threads 1] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import warnings

_CHILD = """
import json, os, sys, tempfile, time, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(int(sys.argv[3]))
import byoc_torch
from benchmarks.aot_inductor import _model
model, inputs = _model(sys.argv[1])
what = sys.argv[2]
t0 = time.perf_counter()
if what == "aoti":
    with torch.no_grad(), tempfile.TemporaryDirectory() as d:
        ep = torch.export.export(model, tuple(inputs))
        path = torch._inductor.aoti_compile_and_package(
            ep, package_path=os.path.join(d, "m.pt2"), inductor_configs={"freezing": True}
        )
        runner = torch._inductor.aoti_load_package(path)
        runner(*inputs)
    extra = ""
else:
    threads = int(sys.argv[3])
    compiled = byoc_torch.compile(model, inputs, cache_dir=sys.argv[4], num_threads=threads)
    compiled(*inputs)
    report = compiled.report()
    chosen = report.placement.chosen if report.placement is not None else "-"
    extra = chosen + "; " + ",".join(s.executor for s in report.subgraphs)
print(json.dumps({"seconds": time.perf_counter() - t0, "extra": extra}))
"""


def _run(name: str, what: str, threads: int, cache_dir: str, inductor_dir: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": inductor_dir}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, name, what, str(threads), cache_dir],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(name: str, threads: int, repeat: int) -> dict[str, float]:
    seconds: dict[str, list[float]] = {"aoti": [], "byoc": [], "byoc_warm": []}
    placement = ""
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="byoc_torch_compile_time_") as tmp:
            cache, inductor_byoc, inductor_aoti = (
                os.path.join(tmp, d) for d in ("cache", "inductor_byoc", "inductor_aoti")
            )
            seconds["aoti"].append(_run(name, "aoti", threads, cache, inductor_aoti)["seconds"])
            cold = _run(name, "byoc", threads, cache, inductor_byoc)
            seconds["byoc"].append(cold["seconds"])
            placement = cold["extra"]
            warm = _run(name, "byoc", threads, cache, inductor_byoc)
            seconds["byoc_warm"].append(warm["seconds"])
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print(
        f"{name:<14} threads {threads}  aoti {med['aoti']:6.1f} s   byoc cold {med['byoc']:6.1f} s "
        f"= {med['byoc'] / med['aoti']:4.2f}x aoti   warm {med['byoc_warm']:5.1f} s   "
        f"(runs: aoti {_fmt(seconds['aoti'])}; byoc {_fmt(seconds['byoc'])}; "
        f"warm {_fmt(seconds['byoc_warm'])}; kept {placement})",
        flush=True,
    )
    return med


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--models", default="hf_bert,hf_gpt2,hf_vit,hf_resnet,cnn,demo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    print(f"loadavg {os.getloadavg()[0]:.2f}; every compile in a fresh process", flush=True)
    ratios = []
    for name in args.models.split(","):
        med = bench(name, args.threads, args.repeat)
        ratios.append(med["byoc"] / med["aoti"])
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"geomean byoc cold / aoti: {geomean:.2f}x over {len(ratios)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
