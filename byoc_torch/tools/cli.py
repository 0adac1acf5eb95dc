"""``byoc-torch`` command line.

``byoc-torch demo`` is the main job on a built-in model: compile it, run it, check it against
eager PyTorch, and print what ran in LibTorch and how fast both are.

``byoc-torch report FILE.py:FACTORY`` prints where every node of a model runs and why;
FACTORY is a function in FILE.py returning ``(model, example_inputs)``.

``byoc-torch bench FILE.py:FACTORY`` is the overhead study (:mod:`byoc_torch.tools.overhead`).

Errors: arguments are checked before any model is loaded. A bad argument (a usage error) exits
with status 2, a failure (an error raised by byoc_torch, the model or PyTorch) with status 1;
either prints one line, ``byoc-torch COMMAND: error: TYPE: message (hint)``, on stderr, and
``--verbose`` adds the traceback. ``BYOC_TORCH_LOG=debug`` shows what byoc_torch logs
(:mod:`byoc_torch.quiet`).

``byoc-torch lib-path`` prints the path of the C++ runtime library; ``--ld-preload`` prints
every library a C++ process without Python loads, as an ``LD_PRELOAD`` value
(docs/deployment.md).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence

import torch

from byoc_torch import _defaults
from byoc_torch.timing import measure_latency

__all__ = ["UsageError", "load_factory", "load_model", "main"]


class UsageError(Exception):
    """A bad command line (exit status 2), found before any work starts."""


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
    for line in fallback_lines(compiled.fallbacks):
        print(line)
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


def fallback_lines(records: Sequence, shown_nodes: int = 3) -> list[str]:
    """One line per (op, reason) of the ops run by LibTorch: how many nodes, the first few
    node names and the reason, with its detail when every node of the line shares it (the
    details per node are in ``compiled.report()``); a model with many LibTorch ops prints a
    line per kind."""
    groups: dict[tuple[str, str], list] = {}
    for rec in records:
        groups.setdefault((rec.op, str(rec.reason)), []).append(rec)
    lines = []
    for (op, why), recs in groups.items():
        details = {rec.detail for rec in recs}
        if len(details) == 1 and recs[0].detail:
            why += f" — {recs[0].detail}"
        nodes = [rec.node for rec in recs]
        names = ", ".join(nodes[:shown_nodes]) + (", ..." if len(nodes) > shown_nodes else "")
        lines.append(f"  {op:<34} {len(nodes):>3} x  {why}  ({names})")
    return lines


def load_factory(spec: str) -> Callable[[], tuple]:
    """The factory named by ``path/to/file.py:function`` (or a built-in ``builtin:NAME``)."""
    import importlib.util
    from pathlib import Path

    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise UsageError(f"expected FILE.py:FACTORY or builtin:NAME, got '{spec}'")
    if path == "builtin":
        from byoc_torch.models import EXAMPLES

        if name not in EXAMPLES:
            raise UsageError(f"no built-in model '{name}' (have {sorted(EXAMPLES)})")
        return EXAMPLES[name]
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"no such file: {file}")
    module_spec = importlib.util.spec_from_file_location(f"_byoc_factory_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UsageError(f"{file} has no function '{name}'")
    return factory


def load_model(spec: str) -> tuple:
    """``(model, example_inputs)`` from the factory named by ``spec`` (see load_factory)."""
    made = load_factory(spec)()
    if not (isinstance(made, tuple) and len(made) == 2):
        raise UsageError(f"{spec}: the factory must return (model, example_inputs)")
    return made


def _module_targets(model: torch.nn.Module, names: Sequence[str]) -> list:
    """``--torch-executed-modules`` values: a submodule's qualified name stays a name; a name
    no submodule has but a submodule's class has (``Gate``) becomes that class."""
    qualified = {n for n, _ in model.named_modules()}
    classes = {type(m).__name__: type(m) for _, m in model.named_modules()}
    return [classes[n] if n not in qualified and n in classes else n for n in names]


def _compile_options(args: argparse.Namespace, model: torch.nn.Module) -> dict:
    """The compile options the shared flags ask for (only those given)."""
    options: dict = {}
    if getattr(args, "torch_executed_ops", None):
        options["torch_executed_ops"] = list(args.torch_executed_ops)
    if getattr(args, "torch_executed_modules", None):
        options["torch_executed_modules"] = _module_targets(model, args.torch_executed_modules)
    if getattr(args, "num_threads", None) is not None:
        options["num_threads"] = args.num_threads
    return options


DRY_RUN_NOTE = (
    "dry run: imported and partitioned only; measured placement (which moves regions to "
    "LibTorch when they measure faster there) and build-failure/verification fallbacks are "
    "skipped, so a build can place more ops in LibTorch"
)


def _report(args: argparse.Namespace) -> int:
    import byoc_torch

    model, inputs = load_model(args.factory)
    options = {"min_block_size": args.min_block_size, "placement": args.placement}
    options |= _compile_options(args, model)
    if args.dry_run:
        report = byoc_torch.report(model, inputs, **options)
        print(DRY_RUN_NOTE, file=sys.stderr if args.json else sys.stdout)
    else:
        report = byoc_torch.compile(model, inputs, target=args.target, **options).report()
    print(report.to_json() if args.json else report.to_text())
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from byoc_torch.tools import overhead

    model, inputs = load_model(args.factory)
    options = _compile_options(args, model)
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)  # eager PyTorch's baseline too
    timing = {"warmup": args.warmup, "repeat": args.repeat, "target": args.target}
    points = overhead.study(
        model,
        inputs,
        mode=args.mode,
        max_k=args.max_k,
        step=args.step,
        seed=args.seed,
        progress=not args.no_progress,
        placement=args.placement,
        options=options,
        **timing,
    )
    found = overhead.baselines(model, inputs, options=options, **timing)
    meta = overhead.metadata(
        model=args.factory,
        mode=args.mode,
        seed=args.seed,
        placement=args.placement,
        options=options | {"torch_executed_modules": args.torch_executed_modules},
        **timing,
    )
    busy = overhead.busy_timings([*found, *points])
    meta["busy_timings"] = busy
    out = Path(args.out)
    written = [
        overhead.write_results(points, out.with_suffix(suffix), metadata=meta, baselines=found)
        for suffix in (".csv", ".json")
    ]
    references = {b.name: b.median_ms for b in found}
    log_y = {"auto": None, "log": True, "linear": False}[args.y_scale]
    written.append(
        overhead.plot_results(
            points, out.with_suffix(".png"), title=args.factory, references=references, log_y=log_y
        )
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
    print(f"wrote {', '.join(str(w) for w in written)}")
    if busy:
        share = round(100 * _defaults.BENCH_BUSY_SPREAD)
        print(
            f"byoc-torch bench: warning: the machine looks busy: the spread (p90-p10) of "
            f"{', '.join(busy)} exceeds {share}% of its median; compare ratios, or re-run "
            "with --num-threads 1 on an idle machine",
            file=sys.stderr,
        )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit status 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _target(text: str) -> str:
    """An argparse type: ``"host"`` (this machine's CPU) or a target TVM knows (checked
    before any model is loaded)."""
    from byoc_torch.cpu import resolve_target

    try:
        resolve_target(text)
    except Exception as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise argparse.ArgumentTypeError(f"TVM does not know '{text}': {first}") from None
    return text


def _shared(parser: argparse.ArgumentParser, *, threads: bool = False) -> None:
    """Flags several commands share."""
    parser.add_argument("--target", default=_defaults.TARGET, type=_target)
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the traceback of an error",
    )
    if threads:
        parser.add_argument(
            "--num-threads",
            type=_count(1),
            default=None,
            metavar="N",
            help=(
                "threads for TVM's pool and LibTorch (default: torch's thread count, capped "
                "by the cores available)"
            ),
        )


def _forcing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--placement",
        choices=list(_defaults.PLACEMENTS),
        default=None,
        help="measured: each region where it measured faster; tvm: TVM runs all it converts",
    )
    parser.add_argument(
        "--torch-executed-ops",
        nargs="*",
        default=[],
        metavar="OP",
        help="ops run in LibTorch (ATen names such as aten.tanh.default, or Relax op names)",
    )
    parser.add_argument(
        "--torch-executed-modules",
        nargs="*",
        default=[],
        metavar="NAME",
        help="submodules run whole in LibTorch: a qualified name (layers.0.gate) or a class "
        "name (Gate: every instance)",
    )


def _lib_path(args: argparse.Namespace) -> int:
    from byoc_torch.runtime import library_path, preload_libraries

    if args.ld_preload:
        print(":".join(str(p) for p in preload_libraries()))
    else:
        print(library_path())
    return 0


def _parser() -> argparse.ArgumentParser:
    from byoc_torch.models import EXAMPLES

    p = _Parser(
        prog="byoc-torch",
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 success, 1 failure, 2 bad arguments. BYOC_TORCH_LOG=debug shows "
        "byoc_torch's log (TVM's and PyTorch's messages included).",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="print the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compile, run and check a built-in model")
    demo.add_argument("--model", default=_defaults.DEMO_MODEL, choices=sorted(EXAMPLES))
    demo.add_argument("--warmup", type=_count(0), default=_defaults.LATENCY_WARMUP)
    demo.add_argument("--repeat", type=_count(1), default=_defaults.LATENCY_REPEAT)
    demo.add_argument("--export", metavar="PATH", help="also write the compiled artifact here")
    _shared(demo)
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
        "--dry-run",
        action="store_true",
        help="import and partition only; do not build (skips measured placement and the "
        "build/verification fallbacks, so a build can place more ops in LibTorch)",
    )
    rep.add_argument("--min-block-size", type=_count(1), default=_defaults.MIN_BLOCK_SIZE)
    _forcing(rep)
    _shared(rep)
    rep.set_defaults(func=_report, placement=_defaults.PLACEMENT)

    bench = sub.add_parser(
        "bench",
        help="overhead study: latency as more ops are offloaded to LibTorch",
        description="Compile the model with k = 0..N ops forced to LibTorch and time each; "
        "write CSV and JSON (with a metadata header and the eager/default baselines) and a PNG "
        "plot. FACTORY is FILE.py:FUNCTION or builtin:NAME.",
    )
    bench.add_argument("factory", metavar="FILE.py:FACTORY")
    bench.add_argument("--mode", choices=["by_type", "random"], default="by_type")
    bench.add_argument("--max-k", type=_count(0), default=None, help="largest k (default: all)")
    bench.add_argument("--step", type=_count(1), default=1)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--warmup", type=_count(0), default=_defaults.LATENCY_WARMUP)
    bench.add_argument("--repeat", type=_count(1), default=50)
    bench.add_argument("--out", default="bench_out/overhead", help="path stem for .csv/.json/.png")
    bench.add_argument("--no-progress", action="store_true")
    scale = bench.add_mutually_exclusive_group()
    scale.add_argument(
        "--log-y",
        dest="y_scale",
        action="store_const",
        const="log",
        help="log y axis (default: log when the latencies span more than "
        f"{_defaults.BENCH_LOG_Y_RANGE:g}x)",
    )
    scale.add_argument("--linear-y", dest="y_scale", action="store_const", const="linear")
    bench.set_defaults(y_scale="auto")
    _forcing(bench)
    _shared(bench, threads=True)
    bench.set_defaults(func=_bench, placement="tvm")

    lib = sub.add_parser(
        "lib-path",
        help="where the C++ runtime library is (what a C++ process preloads)",
        description="Print the path of libbyoc_torch_runtime.so; with --ld-preload, every "
        "library a C++ process without Python loads to run TorchScript archives holding "
        "compiled parts, in order, colon-separated (an LD_PRELOAD value).",
    )
    lib.add_argument("--ld-preload", action="store_true", help="tvm-ffi, TVM runtime, byoc_torch")
    lib.set_defaults(func=_lib_path)
    return p


# Hints printed after a failure's message, by error type (the first match in the MRO wins).
_HINTS = {
    "ExportError": "torch.export cannot capture the model; --torch-executed-modules NAME runs "
    "the part it names in LibTorch",
    "OptionError": "an option names something that does not exist; the message lists what does",
    "UnregisteredOpError": "import the module that registers the custom op before loading",
    "ArtifactError": "the file is damaged or not a byoc_torch artifact; export it again",
    "FullCompilationError": "drop require_full_compilation to let those ops run in LibTorch",
    "InputError": "the example inputs do not fit the model",
    "InputTypeError": "the example inputs do not fit the model",
    "FileNotFoundError": "check the path",
}


def _hint(err: BaseException) -> str:
    for cls in type(err).__mro__:
        if cls.__name__ in _HINTS:
            return _HINTS[cls.__name__]
    return ""


def error_line(command: str, err: BaseException) -> str:
    """The one line a failure prints: ``byoc-torch COMMAND: error: TYPE: first line (hint;
    --verbose for the traceback)``."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    hint = _hint(err)
    extra = f"{hint}; " if hint else ""
    return (
        f"byoc-torch {command}: error: {type(err).__name__}: {first} "
        f"({extra}--verbose for the traceback)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module doc)."""
    parser = _parser()
    args = parser.parse_args(argv)  # exits with status 2 on a bad argument
    verbose = bool(getattr(args, "verbose", False))
    try:
        return int(args.func(args))
    except UsageError as err:
        if verbose:
            traceback.print_exc()
        print(f"byoc-torch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"byoc-torch {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if verbose:
            traceback.print_exc()
        print(error_line(args.command, err), file=sys.stderr)
        return 2 if _is_usage(err) else 1


def _is_usage(err: BaseException) -> bool:
    """An OptionError names an option value the command line gave: a usage error."""
    from byoc_torch.errors import OptionError

    return isinstance(err, OptionError)


if __name__ == "__main__":
    sys.exit(main())
