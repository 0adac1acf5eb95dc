"""``byoc-torch`` command line.

``byoc-torch demo`` is the main job on a built-in model: compile it, run it, check it against
eager PyTorch, and print what ran in LibTorch and how fast both are.

``byoc-torch report FILE.py:FACTORY`` prints where every node of a model runs and why;
FACTORY is a function in FILE.py returning ``(model, example_inputs)``.

``byoc-torch bench FILE.py:FACTORY`` is the overhead study (:mod:`byoc_torch.tools.overhead`).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from byoc_torch import _defaults
from byoc_torch.timing import measure_latency

__all__ = ["load_factory", "load_model", "main"]


def _demo(args: argparse.Namespace) -> int:
    import byoc_torch
    from byoc_torch.models import get_example

    model, inputs = get_example(args.model)
    print(f"byoc_torch demo: built-in model '{args.model}' ({type(model).__name__})")
    t0 = time.perf_counter()
    compiled = byoc_torch.compile(model, inputs, target=args.target)
    compile_s = time.perf_counter() - t0
    print(f"compiled in {compile_s:.1f} s for target {args.target}")

    with torch.no_grad():
        expected = model(*inputs)
    got = compiled(*inputs)
    try:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    except AssertionError as err:
        print(f"MISMATCH against eager PyTorch:\n{err}")
        return 1
    print("result matches eager PyTorch (torch.testing.assert_close, rtol=atol=1e-4)")

    print(f"\nops run by LibTorch ({len(compiled.fallbacks)}):")
    for rec in compiled.fallbacks:
        detail = f" — {rec.detail}" if rec.detail else ""
        print(f"  {rec.node:<20} {rec.op:<34} {rec.reason}{detail}")
    print(f"torch subgraphs: {compiled.num_torch_subgraphs()}")

    with torch.no_grad():
        eager_ms, eager_spread = measure_latency(lambda: model(*inputs), args.warmup, args.repeat)
    hybrid_ms, hybrid_spread = measure_latency(lambda: compiled(*inputs), args.warmup, args.repeat)
    print(
        f"\nlatency (median of {args.repeat}, after {args.warmup} warm-up runs; spread = max-min):"
    )
    print(f"  eager PyTorch : {eager_ms:8.3f} ms  (spread {eager_spread:.3f} ms)")
    print(f"  byoc_torch    : {hybrid_ms:8.3f} ms  (spread {hybrid_spread:.3f} ms)")
    if args.export:
        path = compiled.export(args.export)
        print(f"\nexported to {path}; load it with byoc_torch.load('{path}')")
    return 0


def load_factory(spec: str) -> Callable[[], tuple]:
    """The factory named by ``path/to/file.py:function`` (or a built-in ``builtin:NAME``)."""
    import importlib.util
    from pathlib import Path

    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise SystemExit(f"byoc-torch: expected FILE.py:FACTORY, got '{spec}'")
    if path == "builtin":
        from byoc_torch.models import EXAMPLES

        if name not in EXAMPLES:
            raise SystemExit(f"byoc-torch: no built-in model '{name}' (have {sorted(EXAMPLES)})")
        return EXAMPLES[name]
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"byoc-torch: no such file: {file}")
    module_spec = importlib.util.spec_from_file_location(f"_byoc_factory_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise SystemExit(f"byoc-torch: {file} has no function '{name}'")
    return factory


def load_model(spec: str) -> tuple:
    """``(model, example_inputs)`` from the factory named by ``spec`` (see load_factory)."""
    made = load_factory(spec)()
    if not (isinstance(made, tuple) and len(made) == 2):
        raise SystemExit("byoc-torch: the factory must return (model, example_inputs)")
    return made


def _report(args: argparse.Namespace) -> int:
    import byoc_torch

    model, inputs = load_model(args.factory)
    options = {"min_block_size": args.min_block_size, "placement": args.placement}
    if args.torch_executed_ops:
        options["torch_executed_ops"] = args.torch_executed_ops
    if args.torch_executed_modules:
        options["torch_executed_modules"] = args.torch_executed_modules
    if args.dry_run:
        report = byoc_torch.report(model, inputs, **options)
    else:
        report = byoc_torch.compile(model, inputs, target=args.target, **options).report()
    print(report.to_json() if args.json else report.to_text())
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from byoc_torch.tools import overhead

    model, inputs = load_model(args.factory)
    points = overhead.study(
        model,
        inputs,
        mode=args.mode,
        max_k=args.max_k,
        step=args.step,
        seed=args.seed,
        warmup=args.warmup,
        repeat=args.repeat,
        target=args.target,
        progress=not args.no_progress,
    )
    references = overhead.reference_latencies(
        model, inputs, warmup=args.warmup, repeat=args.repeat, target=args.target
    )
    out = Path(args.out)
    csv_path = overhead.write_results(points, out.with_suffix(".csv"))
    json_path = overhead.write_results(points, out.with_suffix(".json"))
    png_path = overhead.plot_results(
        points, out.with_suffix(".png"), title=args.factory, references=references
    )
    print(
        f"{'k':>4} {'offloaded':>9} {'subgraphs':>9} {'crossings':>9} {'median ms':>10} "
        f"{'p10-p90 ms':>17}"
    )
    for p in points:
        print(
            f"{p.k:>4} {p.offloaded_ops:>9} {p.subgraphs:>9} {p.crossings:>9} "
            f"{p.median_ms:>10.3f} {p.p10_ms:>8.3f}-{p.p90_ms:<8.3f}"
        )
    for name, ms in references.items():
        print(f"{name}: {ms:.3f} ms")
    print(f"wrote {csv_path}, {json_path}, {png_path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from byoc_torch.models import EXAMPLES

    p = argparse.ArgumentParser(prog="byoc-torch", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compile, run and check a built-in model")
    demo.add_argument("--model", default=_defaults.DEMO_MODEL, choices=sorted(EXAMPLES))
    demo.add_argument("--target", default=_defaults.TARGET)
    demo.add_argument("--warmup", type=int, default=_defaults.LATENCY_WARMUP)
    demo.add_argument("--repeat", type=int, default=_defaults.LATENCY_REPEAT)
    demo.add_argument("--export", metavar="PATH", help="also write the compiled artifact here")
    demo.set_defaults(func=_demo)

    rep = sub.add_parser(
        "report",
        help="where every node of a model runs, and why",
        description="FACTORY is FILE.py:FUNCTION (FUNCTION() returns (model, example_inputs)) "
        "or builtin:NAME for a built-in model.",
    )
    rep.add_argument("factory", metavar="FILE.py:FACTORY")
    rep.add_argument("--json", action="store_true", help="print JSON instead of text")
    rep.add_argument(
        "--dry-run", action="store_true", help="import and partition only; do not build"
    )
    rep.add_argument("--target", default=_defaults.TARGET)
    rep.add_argument("--min-block-size", type=int, default=_defaults.MIN_BLOCK_SIZE)
    rep.add_argument(
        "--placement",
        choices=list(_defaults.PLACEMENTS),
        default=_defaults.PLACEMENT,
        help="measured: each region where it measured faster; tvm: TVM runs all it converts",
    )
    rep.add_argument("--torch-executed-ops", nargs="*", default=[], metavar="OP")
    rep.add_argument("--torch-executed-modules", nargs="*", default=[], metavar="NAME")
    rep.set_defaults(func=_report)

    bench = sub.add_parser(
        "bench",
        help="overhead study: latency as more ops are offloaded to LibTorch",
        description="Compile the model with k = 0..N ops forced to LibTorch and time each; "
        "write CSV, JSON and a PNG plot. FACTORY is FILE.py:FUNCTION or builtin:NAME.",
    )
    bench.add_argument("factory", metavar="FILE.py:FACTORY")
    bench.add_argument("--mode", choices=["by_type", "random"], default="by_type")
    bench.add_argument("--max-k", type=int, default=None, help="largest k (default: all)")
    bench.add_argument("--step", type=int, default=1)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--warmup", type=int, default=_defaults.LATENCY_WARMUP)
    bench.add_argument("--repeat", type=int, default=50)
    bench.add_argument("--target", default=_defaults.TARGET)
    bench.add_argument("--out", default="bench_out/overhead", help="path stem for .csv/.json/.png")
    bench.add_argument("--no-progress", action="store_true")
    bench.set_defaults(func=_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # torch.export and TorchScript emit deprecation chatter that says nothing about the run.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
