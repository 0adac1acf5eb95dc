"""Overhead study: how does latency depend on the number of ops offloaded to LibTorch?

Place in the data flow: a user of ``byoc_torch.compile``. For one model it compiles k = 0..N
variants, each forcing more ops to LibTorch, and measures each: latency (warm-up, repeats,
median and spread), offloaded ops, LibTorch subgraphs and crossings. Two ways to pick ops:

* ``mode="by_type"``: the model's TVM-compiled op types, most frequent first; variant k forces
  the first k types (``torch_executed_ops``), so whole families move together;
* ``mode="random"``: one seeded random order of the TVM-compiled nodes; variant k forces the
  first k nodes (``torch_executed_nodes``), so the sets are nested and k grows by ``step``.

Every variant is compiled with ``placement="tvm"`` unless asked otherwise, so TVM runs exactly
what is not forced (measured placement would move ops by itself); ``options`` forced in every
variant (``torch_executed_ops``/``torch_executed_modules``, e.g. a submodule that branches,
which torch.export cannot capture) and ``num_threads`` apply to all variants and baselines.
:func:`baselines` times what a reader compares against -- eager PyTorch and byoc_torch's
default (measured placement) -- and the plot draws them as horizontal lines.

Results go to CSV/JSON with a metadata header (:func:`metadata`: settings, threads, library
versions, CPU, load) and the baselines (:func:`write_results`), and to a PNG plot
(:func:`plot_results`; log y when the values span more than 10x, legend outside the axes).
:func:`busy_timings` names the timings whose spread says the machine was busy.
``byoc-torch bench FILE.py:FACTORY`` is the command-line front end.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import _defaults
from ..driver import compile as byoc_compile
from ..driver import report as byoc_report
from ..errors import OptionError
from ..timing import latency_samples

logger = logging.getLogger(__name__)

__all__ = [
    "Baseline",
    "StudyPoint",
    "baselines",
    "build_figure",
    "busy_timings",
    "metadata",
    "plot_results",
    "read_csv",
    "reference_latencies",
    "spread_ratio",
    "study",
    "wants_log_scale",
    "write_results",
]


@dataclass
class StudyPoint:
    """One variant of the study."""

    k: int
    forced: list[str]
    offloaded_ops: int
    subgraphs: int
    crossings: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    compile_s: float
    samples: list[float] = field(default_factory=list, repr=False)


def _quantile(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    pos = q * (len(ys) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ys) - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * (pos - lo)


def _variants(
    model: torch.nn.Module,
    inputs: tuple,
    mode: str,
    max_k: int | None,
    step: int,
    seed: int,
    base: Mapping[str, object],
) -> list[tuple[int, dict, list[str]]]:
    """(k, options, forced names) per variant; ``base`` (options every variant gets: ops and
    modules forced to LibTorch, threads) is merged into each variant's options."""
    report = byoc_report(model, inputs, **base)
    native = [n for n in report.nodes if n.runs_in == "tvm" and n.op.startswith("aten.")]
    base_ops = list(base.get("torch_executed_ops", ()))
    if mode == "by_type":
        counts: dict[str, int] = {}
        for n in native:
            counts[n.op] = counts.get(n.op, 0) + 1
        order = sorted(counts, key=lambda op: (-counts[op], op))
        key = "torch_executed_ops"
    elif mode == "random":
        order = [n.node for n in native]
        random.Random(seed).shuffle(order)
        key = "torch_executed_nodes"
    else:
        raise OptionError(f"mode must be 'by_type' or 'random', got {mode!r}")
    limit = len(order) if max_k is None else min(max_k, len(order))
    ks = list(range(0, limit + 1, step))
    if ks[-1] != limit:
        ks.append(limit)
    variants = []
    for k in ks:
        options = dict(base)
        if key == "torch_executed_ops":
            options[key] = base_ops + order[:k]
        else:
            options[key] = order[:k]
        variants.append((k, options, order[:k]))
    return variants


def study(
    model: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    *,
    mode: str = "by_type",
    max_k: int | None = None,
    step: int = 1,
    seed: int = 0,
    warmup: int = 10,
    repeat: int = 50,
    target: str | dict = _defaults.TARGET,
    progress: bool = True,
    check: bool = True,
    placement: str = "tvm",
    options: Mapping[str, object] | None = None,
) -> list[StudyPoint]:
    """Compile and time the model with k = 0..N ops forced to LibTorch (see module doc).

    ``placement`` is every variant's placement (``"tvm"``: TVM runs exactly what is not
    forced); ``options`` are further compile options every variant gets (e.g.
    ``torch_executed_ops``/``torch_executed_modules`` forced in all of them, ``num_threads``).
    With ``check``, every variant's output is compared with eager PyTorch first.
    """
    if step < 1:
        raise OptionError(f"step must be >= 1, got {step}")
    if max_k is not None and max_k < 0:
        raise OptionError(f"max_k must be >= 0, got {max_k}")
    inputs = tuple(example_inputs)
    model = model.eval()
    base = dict(options or {})
    with torch.no_grad():
        expected = model(*inputs)
    variants = _variants(model, inputs, mode, max_k, step, seed, base)
    points: list[StudyPoint] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(variants), desc="byoc-torch bench", unit="variant")
    try:
        for k, variant_options, forced in variants:
            t0 = time.perf_counter()
            compiled = byoc_compile(
                model, inputs, target=target, placement=placement, **variant_options
            )
            compile_s = time.perf_counter() - t0
            if check:
                torch.testing.assert_close(compiled(*inputs), expected, rtol=1e-4, atol=1e-4)
            samples = latency_samples(lambda c=compiled: c(*inputs), warmup, repeat)
            totals = compiled.report().totals
            points.append(
                StudyPoint(
                    k=k,
                    forced=list(forced),
                    offloaded_ops=totals["ops_torch"],
                    subgraphs=totals["subgraphs"],
                    crossings=totals["crossings"],
                    compile_s=compile_s,
                    **_stats(samples),
                )
            )
            logger.debug("bench k=%d: %.3f ms", k, points[-1].median_ms)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(k=k, ms=f"{points[-1].median_ms:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return points


EAGER = "eager PyTorch"
DEFAULT = "byoc_torch default (measured placement)"


@dataclass
class Baseline:
    """A reference the study is compared against: eager PyTorch or byoc_torch's default
    compile (measured placement, with the study's base options)."""

    name: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    samples: list[float] = field(default_factory=list, repr=False)


def _stats(samples: list[float]) -> dict:
    return {
        "median_ms": statistics.median(samples),
        "p10_ms": _quantile(samples, 0.1),
        "p90_ms": _quantile(samples, 0.9),
        "min_ms": min(samples),
        "max_ms": max(samples),
        "samples": samples,
    }


def baselines(
    model: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    *,
    warmup: int = 10,
    repeat: int = 50,
    target: str | dict = _defaults.TARGET,
    options: Mapping[str, object] | None = None,
) -> list[Baseline]:
    """Eager PyTorch and ``byoc_torch.compile`` with its defaults (plus ``options``), timed
    like the study's points; the references its plot draws."""
    inputs = tuple(example_inputs)
    model = model.eval()
    compiled = byoc_compile(model, inputs, target=target, **dict(options or {}))
    with torch.no_grad():
        eager = latency_samples(lambda: model(*inputs), warmup, repeat)
    default = latency_samples(lambda: compiled(*inputs), warmup, repeat)
    return [Baseline(EAGER, **_stats(eager)), Baseline(DEFAULT, **_stats(default))]


def reference_latencies(
    model: torch.nn.Module, example_inputs: Sequence[torch.Tensor], **timing
) -> dict[str, float]:
    """Median latency (ms) of each of :func:`baselines` (same keywords), by name."""
    return {b.name: b.median_ms for b in baselines(model, example_inputs, **timing)}


def spread_ratio(timing: StudyPoint | Baseline) -> float:
    """(p90 - p10) / median: how much one timing's samples disagree."""
    return (timing.p90_ms - timing.p10_ms) / timing.median_ms if timing.median_ms > 0 else 0.0


def busy_timings(timings: Sequence[StudyPoint | Baseline]) -> list[str]:
    """The timings whose spread says the machine was busy (:func:`spread_ratio` above
    ``_defaults.BENCH_BUSY_SPREAD``), named ``k=K`` or by baseline name."""
    return [
        f"k={t.k}" if isinstance(t, StudyPoint) else t.name
        for t in timings
        if spread_ratio(t) > _defaults.BENCH_BUSY_SPREAD
    ]


def metadata(
    *,
    model: str,
    mode: str,
    seed: int,
    placement: str,
    target: str,
    warmup: int,
    repeat: int,
    options: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """What a reader of the results needs to reproduce or judge them: the study's settings,
    the threads, library versions and the machine (CPU, cores, load average)."""
    import platform

    import tvm
    import tvm_ffi

    from .. import __version__

    opts = dict(options or {})
    return {
        "model": model,
        "mode": mode,
        "seed": seed,
        "placement": placement,
        "target": target if isinstance(target, str) else json.dumps(target, sort_keys=True),
        "warmup": warmup,
        "repeat": repeat,
        "num_threads": opts.get("num_threads"),
        "torch_threads": torch.get_num_threads(),
        "torch_executed_ops": list(opts.get("torch_executed_ops", ())),
        "torch_executed_modules": list(opts.get("torch_executed_modules", ())),
        "byoc_torch": __version__,
        "torch": torch.__version__,
        "tvm": tvm.__version__,
        "tvm_ffi": tvm_ffi.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_CSV_FIELDS = [
    "variant",
    "k",
    "offloaded_ops",
    "subgraphs",
    "crossings",
    "median_ms",
    "p10_ms",
    "p90_ms",
    "min_ms",
    "max_ms",
    "compile_s",
    "forced",
]


def write_results(
    points: Sequence[StudyPoint],
    path: str | Path,
    *,
    metadata: Mapping[str, object] | None = None,
    baselines: Sequence[Baseline] = (),
) -> Path:
    """Write ``.csv`` or ``.json``.

    JSON: ``{"metadata": ..., "baselines": [...], "points": [...]}``, samples included. CSV: the
    metadata as ``# key: value`` lines, then a header and one row per baseline (``variant`` =
    its name, no ``k``) and per point (``variant`` = ``forced``; ``forced`` = the ops or nodes
    that point forced, space-separated)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(metadata or {})
    if path.suffix == ".json":
        data = {
            "metadata": meta,
            "baselines": [asdict(b) for b in baselines],
            "points": [asdict(p) for p in points],
        }
        path.write_text(json.dumps(data, indent=2))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            for key, value in meta.items():
                f.write(f"# {key}: {json.dumps(value) if not isinstance(value, str) else value}\n")
            w = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
            w.writeheader()
            for b in baselines:
                row = {name: getattr(b, name, "") for name in _CSV_FIELDS}
                w.writerow(row | {"variant": b.name, "k": "", "forced": ""})
            for p in points:
                row = {name: getattr(p, name, "") for name in _CSV_FIELDS}
                w.writerow(row | {"variant": "forced", "forced": " ".join(p.forced)})
    else:
        raise OptionError(f"write_results: use a .csv or .json path, got {path}")
    return path


def read_csv(path: str | Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(metadata, rows) of a CSV :func:`write_results` wrote."""
    meta: dict[str, str] = {}
    body: list[str] = []
    for line in Path(path).read_text().splitlines(keepends=True):
        if line.startswith("# ") and not body:
            key, _, value = line[2:].rstrip("\n").partition(": ")
            meta[key] = value
        else:
            body.append(line)
    return meta, list(csv.DictReader(body))


def wants_log_scale(values: Sequence[float]) -> bool:
    """Log y when the plotted values span more than ``_defaults.BENCH_LOG_Y_RANGE`` times."""
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) / min(positive) > _defaults.BENCH_LOG_Y_RANGE


def build_figure(
    points: Sequence[StudyPoint],
    title: str = "",
    references: Mapping[str, float] | None = None,
    *,
    log_y: bool | None = None,
):
    """The study's matplotlib figure: latency (median, p10-p90 band) against offloaded ops,
    each point labelled ``subgraphs/crossings``, the ``references`` (name -> ms) as horizontal
    lines, and a legend outside the axes saying what every mark means. ``log_y``: True/False
    forces the y scale; None picks log when the values span more than 10x
    (:func:`wants_log_scale`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    references = dict(references or {})
    xs = [p.offloaded_ops for p in points]
    med = [p.median_ms for p in points]
    lo = [p.median_ms - p.p10_ms for p in points]
    hi = [p.p90_ms - p.median_ms for p in points]
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=120)
    ax.errorbar(
        xs, med, yerr=[lo, hi], fmt="o-", capsize=3, label="forced variants: median (p10-p90)"
    )
    for p in points:
        ax.annotate(
            f"{p.subgraphs}/{p.crossings}",
            (p.offloaded_ops, p.median_ms),
            textcoords="offset points",
            xytext=(7, 5),
            ha="left",
            fontsize=8,
        )
    styles = ("--", ":", "-.")
    for k, (name, ms) in enumerate(references.items()):
        ax.axhline(
            ms, linestyle=styles[k % len(styles)], color=f"C{k + 1}", label=f"{name}: {ms:.3f} ms"
        )
    values = [p.p10_ms for p in points] + [p.p90_ms for p in points] + list(references.values())
    if log_y is None:
        log_y = wants_log_scale(values)
    if log_y:
        ax.set_yscale("log")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], linestyle="none", marker="$n/m$", markersize=14, color="0.3"))
    labels.append("label n/m: LibTorch subgraphs / tensors crossing TVM <-> LibTorch")
    ax.set_xlabel("ops offloaded to LibTorch (forced; the rest in TVM)")
    ax.set_ylabel("latency (ms, log scale)" if log_y else "latency (ms)")
    ax.set_title(title or "byoc_torch overhead study")
    ax.grid(True, alpha=0.3, which="both" if log_y else "major")
    ax.legend(
        handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8
    )
    fig.tight_layout()
    return fig


def plot_results(
    points: Sequence[StudyPoint],
    path: str | Path,
    title: str = "",
    references: Mapping[str, float] | None = None,
    *,
    log_y: bool | None = None,
) -> Path:
    """Write :func:`build_figure`'s figure as a PNG."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = build_figure(points, title, references, log_y=log_y)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
