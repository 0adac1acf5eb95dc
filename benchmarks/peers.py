"""byoc_torch against its peers: eager, torch.compile, AOTInductor, ONNX Runtime, TVM alone,
byoc_torch.

For each model (the built-in suite of :mod:`byoc_torch.models` and the Hugging Face models of
:mod:`byoc_torch.testing.hf_models`, random weights), in one process, on the CPU:

* ``eager``        PyTorch eager under ``torch.no_grad()`` (the reference);
* ``inductor``     ``torch.compile(model)`` (inductor, default mode), under no_grad;
* ``aoti``         AOTInductor with freezing, the strongest LibTorch-side contestant:
                   ``torch._inductor.aoti_compile_and_package(torch.export.export(model,
                   args), inductor_configs={"freezing": True})`` (parameters frozen in as
                   constants: oneDNN weight prepacking, epilogue fusion), loaded with
                   ``torch._inductor.aoti_load_package``, called under no_grad;
* ``onnxruntime``  ``torch.onnx.export(model, args, dynamo=True)`` to a temporary file, run by
                   ONNX Runtime's CPUExecutionProvider with default session options;
* ``tvm``          TVM alone: ``tvm.relax.frontend.torch.from_exported_program`` +
                   ``relax.build(target="llvm")``, untuned;
* ``byoc``         ``byoc_torch.compile(model, inputs)`` with whatever its defaults are;
* ``byoc_tvm``     ``byoc_torch.compile(..., placement="tvm")``, only when ``Options`` has a
                   ``placement`` field at run time (otherwise the column is left out);
* ``byoc_tuned``   ``byoc_torch.compile(..., tune_trials=N)`` with ``--tune-trials N``, only
                   when ``Options`` has a ``tune_trials`` field.

Every contestant's first output is compared with eager's (``torch.testing.assert_close``,
rtol = atol = 1e-3); a contestant that differs is recorded as ``"wrong: ..."`` and not timed,
one that cannot export, build or run as ``"fails: ..."``.

Timing (:func:`byoc_torch.timing.interleaved_samples`): a warm-up, then ``--rounds`` rounds;
each round runs every contestant in turn for about ``--budget-ms`` (at least one call), and
keeps the median of its calls; the reported latency is the median over rounds. ``x eager`` is
latency / eager latency (below 1 is faster than eager); the geomean row is over the models
where the contestant has a time. ``setup`` is the seconds from the nn.Module to the first
output: export, compile, build and the first call (for eager, the first call alone);
inductor's on-disk caches are disabled so that its setup is a cold compile, as for the others.

    python -m benchmarks.peers [--models a,b] [--rounds N] [--json out.json] [--plot out.png]
                               [--tune-trials N] [--budget-ms MS] [--threads N]

On a machine that other jobs keep busy, multi-threaded runs collapse (OpenMP workers wait at
barriers for descheduled peers: eager BERT-like took 250-1100 ms at 2 threads against 38 ms
at 1 thread, load average 7 on 2 cores); ``--threads 1`` then gives comparable figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import io
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports transformers

import torch
from torch.utils._pytree import tree_leaves

import byoc_torch
from byoc_torch.models import SUITE
from byoc_torch.timing import interleaved_samples

RTOL = ATOL = 1e-3
BASE_CONTESTANTS = ("eager", "inductor", "aoti", "onnxruntime", "tvm", "byoc")
FAILURE_PREFIXES = ("fails: ", "wrong: ")

Inputs = tuple[torch.Tensor, ...]
Builder = Callable[[], tuple[torch.nn.Module, Inputs]]


@dataclasses.dataclass
class Prepared:
    """A contestant ready to time (``fn``), or the reason it is not (``status``)."""

    fn: Callable[[], object] | None
    setup_s: float | None
    status: str = "ok"
    placement: str | None = None  # byoc_torch: the whole-model check's choice; executors


# --- models ----------------------------------------------------------------------------------


def model_builders() -> dict[str, Builder]:
    """Every benchmark model by name: the built-in suite, then the Hugging Face models."""
    from byoc_torch.testing.hf_models import HF_MODELS

    return {**SUITE, **HF_MODELS}


def option_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(byoc_torch.Options) if not f.name.startswith("_")}


def contestants(tune_trials: int | None) -> dict[str, dict[str, Any]]:
    """Contestant name -> byoc_torch options (``{}`` for the non-byoc contestants), with the
    columns whose option byoc_torch does not have left out."""
    fields = option_fields()
    out: dict[str, dict[str, Any]] = {name: {} for name in BASE_CONTESTANTS}
    if "placement" in fields:
        out["byoc_tvm"] = {"placement": "tvm"}
    if tune_trials:
        if "tune_trials" in fields:
            out["byoc_tuned"] = {"tune_trials": tune_trials}
        else:
            print("note: byoc_torch.Options has no tune_trials; byoc_tuned left out", flush=True)
    return out


# --- output checks ---------------------------------------------------------------------------


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SUMMARY = re.compile(r"^<class '(?:[\w.]*\.)?(\w+)'>: (.+)$", re.M)


def _reason(err: BaseException) -> str:
    """``"fails: Type: first line"``; for torch.onnx's long reports, the root cause from its
    exception summary."""
    text = _ANSI.sub("", str(err))
    summary = _SUMMARY.search(text)
    if summary:
        kind, message = summary.groups()
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        kind, message = type(err).__name__, lines[0] if lines else ""
    return f"fails: {kind}: {message.strip()[:120]}"


def compare(got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> str:
    """``"ok"`` when the leaves match eager's within tolerance, else ``"wrong: ..."``."""
    if len(got) != len(expected):
        return f"wrong: {len(got)} outputs, eager has {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        try:
            torch.testing.assert_close(g, e, rtol=RTOL, atol=ATOL, check_dtype=False)
        except AssertionError:
            if g.shape != e.shape:
                return f"wrong: output {i} has shape {tuple(g.shape)}, eager {tuple(e.shape)}"
            diff = (g.double() - e.double()).abs().max().item()
            return f"wrong: output {i} max abs diff {diff:.3g}"
    return "ok"


def _leaves(value: object) -> list[torch.Tensor]:
    return [x for x in tree_leaves(value) if isinstance(x, torch.Tensor)]


def _checked(
    make: Callable[[], tuple[Callable[[], object], Callable[[object], list[torch.Tensor]]]],
    expected: list[torch.Tensor],
) -> Prepared:
    """Set a contestant up with ``make`` (-> run, to_torch), run it once, compare."""
    t0 = time.perf_counter()
    try:
        run, to_torch = make()
        first = run()
        setup_s = time.perf_counter() - t0
        status = compare(to_torch(first), expected)
    except Exception as err:  # any failure of export, build or run is a result
        return Prepared(None, None, _reason(err))
    return Prepared(run if status == "ok" else None, setup_s, status)


# --- contestants -----------------------------------------------------------------------------


def prepare_eager(model: torch.nn.Module, inputs: Inputs, expected: list) -> Prepared:
    def make():
        def run():
            with torch.no_grad():
                return model(*inputs)

        return run, _leaves

    return _checked(make, expected)


def prepare_inductor(model: torch.nn.Module, inputs: Inputs, expected: list) -> Prepared:
    def make():
        import torch._inductor.config

        torch._dynamo.reset()
        # Cold compiles, like every other contestant's: no FX-graph or kernel cache on disk
        # from an earlier run (or an earlier model) shortens the setup time.
        torch._inductor.config.force_disable_caches = True
        compiled = torch.compile(model)

        def run():
            with torch.no_grad():
                return compiled(*inputs)

        return run, _leaves

    return _checked(make, expected)


def prepare_aoti(model: torch.nn.Module, inputs: Inputs, expected: list, workdir: Path) -> Prepared:
    def make():
        import torch._inductor.config

        torch._inductor.config.force_disable_caches = True  # a cold compile, as for the others
        with torch.no_grad():
            ep = torch.export.export(model, inputs)
            path = torch._inductor.aoti_compile_and_package(
                ep,
                package_path=str(workdir / "model.pt2"),
                inductor_configs={"freezing": True},
            )
        runner = torch._inductor.aoti_load_package(path)

        def run():
            with torch.no_grad():
                return runner(*inputs)

        return run, _leaves

    return _checked(make, expected)


def prepare_onnxruntime(
    model: torch.nn.Module, inputs: Inputs, expected: list, workdir: Path, threads: int | None
) -> Prepared:
    def make():
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError("onnxruntime missing: pip install byoc_torch[bench]") from err
        path = workdir / "model.onnx"
        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            torch.onnx.export(model, inputs, str(path), dynamo=True)
        options = ort.SessionOptions()  # defaults, unless --threads
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]
        if len(names) != len(inputs):
            raise RuntimeError(f"ONNX graph has {len(names)} inputs, the model {len(inputs)}")
        feed = {n: x.numpy() for n, x in zip(names, inputs, strict=True)}
        return (
            lambda: session.run(None, feed),
            lambda outs: [torch.from_numpy(o) for o in outs],
        )

    return _checked(make, expected)


def prepare_tvm(model: torch.nn.Module, inputs: Inputs, expected: list) -> Prepared:
    def make():
        import tvm
        import tvm.relax.frontend.torch
        from tvm import relax

        from byoc_torch.tensors import flatten_tvm, to_tvm

        with torch.no_grad():
            ep = torch.export.export(model, inputs)
        mod = tvm.relax.frontend.torch.from_exported_program(ep)
        executable = relax.build(mod, target=tvm.target.Target("llvm"))
        vm = relax.VirtualMachine(executable, tvm.cpu())
        args = [to_tvm(x) for x in inputs]
        return (
            lambda: vm["main"](*args),
            lambda out: [torch.from_numpy(t.numpy()) for t in flatten_tvm(out)],
        )

    return _checked(make, expected)


def prepare_byoc(
    model: torch.nn.Module, inputs: Inputs, expected: list, options: dict[str, Any]
) -> Prepared:
    made = []

    def make():
        compiled = byoc_torch.compile(model, inputs, **options)
        made.append(compiled)
        return (lambda: compiled(*inputs)), _leaves

    prepared = _checked(make, expected)
    if made:
        report = made[0].report()
        chosen = report.placement.chosen if report.placement is not None else "-"
        runs = ",".join(s.executor for s in report.subgraphs) or "no subgraph"
        prepared = dataclasses.replace(prepared, placement=f"{chosen}; {runs}")
    return prepared


def prepare(
    name: str, options: dict, model, inputs: Inputs, expected: list, tmp: Path, threads: int | None
) -> Prepared:
    if name == "eager":
        return prepare_eager(model, inputs, expected)
    if name == "inductor":
        return prepare_inductor(model, inputs, expected)
    if name == "aoti":
        return prepare_aoti(model, inputs, expected, tmp)
    if name == "onnxruntime":
        return prepare_onnxruntime(model, inputs, expected, tmp, threads)
    if name == "tvm":
        return prepare_tvm(model, inputs, expected)
    return prepare_byoc(model, inputs, expected, options)


# --- the run ---------------------------------------------------------------------------------


def bench_model(
    name: str,
    builder: Builder,
    entrants: dict[str, dict[str, Any]],
    rounds: int,
    budget_s: float,
    warmup: int,
    threads: int | None = None,
) -> dict[str, Any]:
    """One model: prepare every contestant, time the ready ones interleaved."""
    torch.manual_seed(0)
    model, inputs = builder()
    model = model.eval()
    with torch.no_grad():
        expected = _leaves(model(*inputs))
    ready: dict[str, Callable[[], object]] = {}
    row: dict[str, Any] = {
        "latency_ms": {},
        "x_eager": {},
        "setup_s": {},
        "calls_per_round": {},
        "placement": {},
    }
    with tempfile.TemporaryDirectory(prefix="peers_") as tmp:
        for contestant, options in entrants.items():
            prep = prepare(contestant, options, model, inputs, expected, Path(tmp), threads)
            row["setup_s"][contestant] = prep.setup_s
            if prep.fn is None:
                row["latency_ms"][contestant] = prep.status
            else:
                ready[contestant] = prep.fn
            shown = f"{prep.setup_s:.1f} s" if prep.setup_s is not None else "-"
            kept = ""
            if prep.placement is not None:
                row["placement"][contestant] = prep.placement
                kept = f" ({prep.placement})"
            print(
                f"  {name:<10} {contestant:<12} setup {shown:>8}  {prep.status}{kept}", flush=True
            )
        if "eager" not in ready:
            raise RuntimeError(f"{name}: eager itself does not run: {row['latency_ms']}")
        # What LibTorch-based contestants ran at (a compile can set the process's threads).
        row["torch_threads_timed"] = torch.get_num_threads()
        per_round, calls = interleaved_samples(ready, rounds, warmup=warmup, budget_s=budget_s)
    for contestant in entrants:
        if contestant in ready:
            row["latency_ms"][contestant] = statistics.median(per_round[contestant])
            row["calls_per_round"][contestant] = calls[contestant]
    eager_ms = row["latency_ms"]["eager"]
    for contestant in entrants:
        value = row["latency_ms"][contestant]
        row["x_eager"][contestant] = value / eager_ms if isinstance(value, float) else value
    row["latency_ms"] = {c: row["latency_ms"][c] for c in entrants}
    row["rounds_ms"] = per_round
    del ready, model
    gc.collect()
    return row


def geomeans(models: dict[str, dict], entrants: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per contestant: geomean of x eager over the models it has a time for, and how many."""
    out = {}
    for c in entrants:
        xs = [r["x_eager"][c] for r in models.values() if isinstance(r["x_eager"][c], float)]
        gm = math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else None
        out[c] = {"geomean": gm, "models": len(xs), "of": len(models)}
    return out


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, float):
        return format(value, fmt)
    if value is None:
        return "-"
    return str(value).split(":")[0]  # "fails" / "wrong"; reasons listed under the table


def format_table(result: dict[str, Any]) -> str:
    entrants = result["meta"]["contestants"]
    models = result["models"]
    w = max(12, *(len(c) + 2 for c in entrants))
    head = f"{'model':<11}{'eager ms':>10}" + "".join(f"{c:>{w}}" for c in entrants[1:])
    lines = ["x eager (latency / eager latency; < 1 is faster than eager; median of rounds)"]
    lines += [head, "-" * len(head)]
    for name, r in models.items():
        cells = "".join(f"{_cell(r['x_eager'][c], '.2f'):>{w}}" for c in entrants[1:])
        lines.append(f"{name:<11}{r['latency_ms']['eager']:>10.2f}{cells}")
    gm = result["geomean_x_eager"]
    cells = "".join(
        f"{(format(gm[c]['geomean'], '.2f') if gm[c]['geomean'] else '-'):>{w}}"
        for c in entrants[1:]
    )
    lines += ["-" * len(head), f"{'geomean':<11}{'':>10}{cells}"]
    counts = {c: f"{gm[c]['models']}/{gm[c]['of']}" for c in entrants[1:]}
    cells = "".join(f"{counts[c]:>{w}}" for c in entrants[1:])
    lines.append(f"{'(models)':<11}{'':>10}{cells}")
    lines += ["", "latency, ms", f"{'model':<11}" + "".join(f"{c:>{w}}" for c in entrants)]
    for name, r in models.items():
        cells = "".join(f"{_cell(r['latency_ms'][c], '.3f'):>{w}}" for c in entrants)
        lines.append(f"{name:<11}{cells}")
    lines += ["", "setup, s (export + compile/build + first call)"]
    lines.append(f"{'model':<11}" + "".join(f"{c:>{w}}" for c in entrants))
    for name, r in models.items():
        cells = "".join(f"{_cell(r['setup_s'][c], '.1f'):>{w}}" for c in entrants)
        lines.append(f"{name:<11}{cells}")
    notes = [
        f"  {name} / {c}: {v}"
        for name, r in models.items()
        for c, v in r["latency_ms"].items()
        if isinstance(v, str)
    ]
    if notes:
        lines += ["", "failures:", *notes]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Grouped bars of latency per model (log scale); failures have no bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entrants = result["meta"]["contestants"]
    names = list(result["models"])
    width = 0.8 / len(entrants)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names)), 4.5))
    for i, c in enumerate(entrants):
        xs, ys = [], []
        for j, name in enumerate(names):
            v = result["models"][name]["latency_ms"][c]
            if isinstance(v, float):
                xs.append(j - 0.4 + (i + 0.5) * width)
                ys.append(v)
        ax.bar(xs, ys, width=width, label=c)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_ylabel("latency, ms (log; no bar = fails/wrong)")
    ax.set_title("byoc_torch and peers, CPU, median of rounds")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(
    models: Sequence[str],
    rounds: int,
    tune_trials: int | None = None,
    budget_s: float = 0.2,
    warmup: int = 2,
    threads: int | None = None,
) -> dict[str, Any]:
    """The whole benchmark, as the JSON-able dictionary ``main`` writes. ``threads`` (default:
    each library's own choice) is applied to PyTorch (eager, inductor, LibTorch subgraphs),
    TVM (``TVM_NUM_THREADS``, read when its thread pool starts) and ONNX Runtime."""
    if threads:
        os.environ["TVM_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    builders = model_builders() if any(m not in SUITE for m in models) else dict(SUITE)
    unknown = [m for m in models if m not in builders]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {sorted(builders)}")
    entrants = contestants(tune_trials)
    result: dict[str, Any] = {"meta": _meta(rounds, budget_s, entrants), "models": {}}
    result["meta"]["threads"] = threads or "library defaults"
    for name in models:
        t0 = time.perf_counter()
        print(f"{name}:", flush=True)
        result["models"][name] = bench_model(
            name, builders[name], entrants, rounds, budget_s, warmup, threads
        )
        print(f"  {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
    result["geomean_x_eager"] = geomeans(result["models"], list(entrants))
    return result


def _meta(rounds: int, budget_s: float, entrants: dict[str, dict]) -> dict[str, Any]:
    import tvm

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    versions["tvm"] = getattr(tvm, "__version__", "?")
    for mod in ("onnxruntime", "onnx", "transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "contestants": list(entrants),
        "contestant_options": entrants,
        "byoc_options_fields": sorted(option_fields()),
        "rounds": rounds,
        "budget_ms_per_round": budget_s * 1e3,
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "versions": versions,
        "failure_prefixes": list(FAILURE_PREFIXES),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_at_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--models", help="comma-separated; default: the built-in suite + HF models")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--budget-ms", type=float, default=200.0, help="per contestant per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per contestant")
    p.add_argument(
        "--threads", type=int, help="threads for every contestant (default: library defaults)"
    )
    p.add_argument("--tune-trials", type=int, help="adds byoc_tuned (needs Options.tune_trials)")
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    names = args.models.split(",") if args.models else [*SUITE, *_hf_names()]
    t0 = time.perf_counter()
    result = run(
        names, args.rounds, args.tune_trials, args.budget_ms / 1e3, args.warmup, args.threads
    )
    result["meta"]["command"] = "python -m benchmarks.peers " + " ".join(argv or sys.argv[1:])
    result["meta"]["total_s"] = time.perf_counter() - t0
    result["meta"]["loadavg_at_end"] = os.getloadavg()
    print()
    print(format_table(result))
    print(f"\ntotal {result['meta']['total_s']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(result, args.plot)
    return 0


def _hf_names() -> list[str]:
    from byoc_torch.testing.hf_models import HF_MODELS

    return list(HF_MODELS)


if __name__ == "__main__":
    sys.exit(main())
