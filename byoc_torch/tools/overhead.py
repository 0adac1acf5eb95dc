"""Overhead study: how does latency depend on the number of ops offloaded to LibTorch?

Place in the data flow: a user of ``byoc_torch.compile``. For one model it compiles k = 0..N
variants, each forcing more ops to LibTorch, and measures each: latency (warm-up, repeats,
median and spread), offloaded ops, LibTorch subgraphs and crossings. Two ways to pick ops:

* ``mode="by_type"``: the model's TVM-compiled op types, most frequent first; variant k forces
  the first k types (``torch_executed_ops``), so whole families move together;
* ``mode="random"``: one seeded random order of the TVM-compiled nodes; variant k forces the
  first k nodes (``torch_executed_nodes``), so the sets are nested and k grows by ``step``.

Every variant is compiled with ``placement="tvm"``, so TVM runs exactly what is not forced
(measured placement would move ops by itself). :func:`reference_latencies` times what a reader
compares against -- eager PyTorch and byoc_torch's default (measured placement) -- and the plot
draws them as horizontal lines.

Results go to CSV/JSON (:func:`write_results`) and a PNG plot (:func:`plot_results`).
``byoc-torch bench FILE.py:FACTORY`` is the command-line front end.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..driver import compile as byoc_compile
from ..driver import report as byoc_report
from ..timing import latency_samples

logger = logging.getLogger(__name__)

__all__ = [
    "StudyPoint",
    "build_figure",
    "plot_results",
    "reference_latencies",
    "study",
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
    model: torch.nn.Module, inputs: tuple, mode: str, max_k: int | None, step: int, seed: int
) -> list[tuple[int, dict, list[str]]]:
    """(k, options, forced names) per variant."""
    base = byoc_report(model, inputs)
    native = [n for n in base.nodes if n.runs_in == "tvm" and n.op.startswith("aten.")]
    if mode == "by_type":
        counts: dict[str, int] = {}
        for n in native:
            counts[n.op] = counts.get(n.op, 0) + 1
        types = sorted(counts, key=lambda op: (-counts[op], op))
        limit = len(types) if max_k is None else min(max_k, len(types))
        ks = list(range(0, limit + 1, step))
        if ks[-1] != limit:
            ks.append(limit)
        return [(k, {"torch_executed_ops": types[:k]}, types[:k]) for k in ks]
    if mode == "random":
        names = [n.node for n in native]
        random.Random(seed).shuffle(names)
        limit = len(names) if max_k is None else min(max_k, len(names))
        ks = list(range(0, limit + 1, step))
        if ks[-1] != limit:
            ks.append(limit)
        return [(k, {"torch_executed_nodes": names[:k]}, names[:k]) for k in ks]
    raise ValueError(f"mode must be 'by_type' or 'random', got {mode!r}")


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
    target: str = "llvm",
    progress: bool = True,
    check: bool = True,
) -> list[StudyPoint]:
    """Compile and time the model with k = 0..N ops forced to LibTorch (see module doc).

    With ``check``, every variant's output is compared with eager PyTorch first.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    inputs = tuple(example_inputs)
    model = model.eval()
    with torch.no_grad():
        expected = model(*inputs)
    variants = _variants(model, inputs, mode, max_k, step, seed)
    points: list[StudyPoint] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(variants), desc="byoc-torch bench", unit="variant")
    try:
        for k, options, forced in variants:
            t0 = time.perf_counter()
            compiled = byoc_compile(model, inputs, target=target, placement="tvm", **options)
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
                    median_ms=statistics.median(samples),
                    p10_ms=_quantile(samples, 0.1),
                    p90_ms=_quantile(samples, 0.9),
                    min_ms=min(samples),
                    max_ms=max(samples),
                    compile_s=compile_s,
                    samples=samples,
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


def reference_latencies(
    model: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    *,
    warmup: int = 10,
    repeat: int = 50,
    target: str = "llvm",
) -> dict[str, float]:
    """Median latency (ms) of eager PyTorch and of ``byoc_torch.compile`` with its defaults,
    the references the study's plot draws."""
    inputs = tuple(example_inputs)
    model = model.eval()
    compiled = byoc_compile(model, inputs, target=target)
    with torch.no_grad():
        eager = latency_samples(lambda: model(*inputs), warmup, repeat)
    default = latency_samples(lambda: compiled(*inputs), warmup, repeat)
    return {EAGER: statistics.median(eager), DEFAULT: statistics.median(default)}


_CSV_FIELDS = [
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


def write_results(points: Sequence[StudyPoint], path: str | Path) -> Path:
    """Write ``.csv`` (one row per variant) or ``.json`` (everything, samples included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps([asdict(p) for p in points], indent=2))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
            w.writeheader()
            for p in points:
                row = {name: getattr(p, name) for name in _CSV_FIELDS}
                row["forced"] = " ".join(p.forced)
                w.writerow(row)
    else:
        raise ValueError(f"write_results: use a .csv or .json path, got {path}")
    return path


def build_figure(
    points: Sequence[StudyPoint], title: str = "", references: Mapping[str, float] | None = None
):
    """The study's matplotlib figure: latency (median, p10-p90 band) against offloaded ops,
    each point labelled ``subgraphs/crossings``, the ``references`` (name -> ms) as horizontal
    lines, and a legend saying what every mark means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    xs = [p.offloaded_ops for p in points]
    med = [p.median_ms for p in points]
    lo = [p.median_ms - p.p10_ms for p in points]
    hi = [p.p90_ms - p.median_ms for p in points]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
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
    for k, (name, ms) in enumerate((references or {}).items()):
        ax.axhline(
            ms, linestyle=styles[k % len(styles)], color=f"C{k + 1}", label=f"{name}: {ms:.3f} ms"
        )
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], linestyle="none", marker="$n/m$", markersize=14, color="0.3"))
    labels.append("label n/m: LibTorch subgraphs / tensors crossing TVM <-> LibTorch")
    ax.set_xlabel("ops offloaded to LibTorch (forced; the rest in TVM)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title or "byoc_torch overhead study")
    ax.grid(True, alpha=0.3)
    ax.legend(handles, labels, loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_results(
    points: Sequence[StudyPoint],
    path: str | Path,
    title: str = "",
    references: Mapping[str, float] | None = None,
) -> Path:
    """Write :func:`build_figure`'s figure as a PNG."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = build_figure(points, title, references)
    fig.savefig(path)
    plt.close(fig)
    return path
