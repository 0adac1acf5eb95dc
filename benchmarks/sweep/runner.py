"""Running the sweep: one case at a time, compared with eager PyTorch; tables, JSON and the
command line (``python -m benchmarks.sweep``)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict

import torch
from torch.utils import _pytree as pytree

from byoc_torch.tensors import flatten_tvm
from byoc_torch.tolerances import tolerance

from .case import CORRECT, STATUSES, Case, Result, forced
from .cases import CASES

logger = logging.getLogger(__name__)
__all__ = ["format_table", "main", "run_case", "run_sweep", "totals"]


class _Mismatch(AssertionError):
    pass


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:300] if lines else ""


def _compare(got: object, expected: object, case: Case, where: str = "") -> None:
    """Raise :class:`_Mismatch` unless ``got`` matches ``expected`` leaf by leaf."""
    got_leaves = pytree.tree_leaves(got)
    exp_leaves = pytree.tree_leaves(expected)
    if len(got_leaves) != len(exp_leaves):
        raise _Mismatch(f"{len(got_leaves)} outputs, expected {len(exp_leaves)}")
    for k, (g, e) in enumerate(zip(got_leaves, exp_leaves, strict=True)):
        if not isinstance(e, torch.Tensor):  # a constant output (an int of a shape, ...)
            if type(g) is not type(e) or g != e:
                raise _Mismatch(f"{where}output {k}: {g!r} instead of {e!r}")
            continue
        if not isinstance(g, torch.Tensor):
            raise _Mismatch(f"output {k} is a {type(g).__name__}, expected a tensor")
        if not case.compare_values:
            if g.shape != e.shape or g.dtype != e.dtype:
                raise _Mismatch(
                    f"{where}output {k}: {g.dtype}{list(g.shape)} instead of "
                    f"{e.dtype}{list(e.shape)}"
                )
            continue
        if e.dtype.is_floating_point or e.dtype.is_complex:
            rtol, atol = tolerance(e.dtype)
            rtol = case.rtol if case.rtol is not None else rtol
            atol = case.atol if case.atol is not None else atol
        else:
            rtol, atol = 0.0, 0.0
        try:
            torch.testing.assert_close(g, e, rtol=rtol, atol=atol, equal_nan=True)
        except AssertionError as err:
            msg = " ".join(str(err).split())
            raise _Mismatch(f"{where}output {k}: {msg}"[:300]) from None


def _plain_tvm(ep: torch.export.ExportedProgram, inputs: tuple, expected: object, case: Case):
    """``(status, detail)`` of the model through TVM's own importer alone."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    try:
        mod = from_exported_program(ep)
        ex = relax.build(mod, target="llvm")
        vm = relax.VirtualMachine(ex, tvm.cpu())
        out = vm["main"](*[tvm.runtime.from_dlpack(x.contiguous()) for x in inputs])
        got = [torch.from_dlpack(t) for t in flatten_tvm(out)]
    except Exception as err:
        return "error", f"{type(err).__name__}: {_first_line(err)}"
    try:
        exp_leaves = pytree.tree_leaves(expected)
        _compare(got, exp_leaves, case)
    except _Mismatch as err:
        return "wrong", str(err)
    return "ok", ""


def _aten_ops(ep: torch.export.ExportedProgram) -> list[str]:
    """Every ATen op overload of ``ep`` after decomposition, as ``aten.name.overload``."""
    ops = set()
    for node in ep.run_decompositions().graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op == "call_function" and schema is not None:
            ns, _, name = schema.name.partition("::")
            if ns == "aten":
                ops.add(f"aten.{name}.{schema.overload_name or 'default'}")
    return sorted(ops)


def run_case(case: Case, *, plain_tvm: bool = True, keep_traceback: bool = False) -> Result:
    """Run one case; never raises (except KeyboardInterrupt and friends)."""
    import byoc_torch

    t0 = time.perf_counter()
    if case.generate:
        return _run_generate(case, t0, keep_traceback)
    result = Result(case.name, case.category, "error")
    stage = "inputs"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(case.seed)
            model = case.make_model().eval()
            inputs = tuple(case.make_inputs())
            # Random ops draw from PyTorch's generator: eager and compiled start from the
            # same state (a no-op for every other model).
            torch.manual_seed(case.seed + 1)
            with torch.no_grad():
                expected = model(*[_clone(x) for x in inputs])
            stage = "export"
            with torch.no_grad():
                ep = torch.export.export(model, inputs, dynamic_shapes=case.dynamic_shapes)
            stage = "compile"
            options = dict(case.options)
            if case.force_torch:
                options["torch_executed_ops"] = _aten_ops(ep)
            compiled = byoc_torch.compile(ep, **options)
            result.fallback_ops = [r.op for r in compiled.fallbacks]
            result.fallback_reasons = [
                f"{r.op}: {r.reason}" + (f" ({r.detail})" if r.detail else "")
                for r in compiled.fallbacks
            ]
            result.num_torch_subgraphs = compiled.num_torch_subgraphs()
            stage = "run"
            torch.manual_seed(case.seed + 1)
            got = compiled(*inputs)
            stage = "compare"
            _compare(got, expected, case)
            if case.make_alt_inputs is not None:
                stage = "run"
                alt = tuple(case.make_alt_inputs())
                with torch.no_grad():
                    alt_expected = model(*[_clone(x) for x in alt])
                alt_got = compiled(*alt)
                stage = "compare"
                _compare(alt_got, alt_expected, case, "other sizes: ")
            result.status = "fallback" if compiled.fallbacks else "native"
            result.stage = ""
            if plain_tvm and not case.force_torch:
                result.plain_tvm, result.plain_tvm_detail = _plain_tvm(ep, inputs, expected, case)
    except _Mismatch as err:
        result.status, result.stage = "wrong", "compare"
        result.error_type, result.detail = "Mismatch", str(err)
    except Exception as err:
        result.status, result.stage = "error", stage
        result.error_type, result.detail = type(err).__name__, _first_line(err)
        if keep_traceback:
            result.traceback = traceback.format_exc()
    ran_plain = plain_tvm and not case.force_torch and stage not in ("inputs", "export")
    if result.status in ("wrong", "error") and ran_plain:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result.plain_tvm, result.plain_tvm_detail = _plain_tvm(ep, inputs, expected, case)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _clone(x):
    """A tensor input cloned (a model may update it in place); any other input as it is."""
    return x.clone() if isinstance(x, torch.Tensor) else x


def _run_generate(case: Case, t0: float, keep_traceback: bool) -> Result:
    """A generation case: ``model.generate`` through ``torch.compile`` with byoc_torch's
    backend, token for token against eager. ``native``/``fallback`` as for one call (by the
    compiled graphs' LibTorch nodes); a graph that ran in PyTorch instead is an ``error``."""
    import byoc_torch
    from byoc_torch.dynamo import _Graph

    settings = dict(case.generate)
    result = Result(case.name, case.category, "error")
    stage = "inputs"
    graphs: list = []
    inner = byoc_torch.dynamo_backend(**dict(case.options))

    def backend(gm, example_inputs):
        run = inner(gm, example_inputs)
        graphs.append(run)
        return run

    def generate(model, ids, mask):
        if settings["sample"]:
            torch.manual_seed(case.seed)
        return model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=settings["new_tokens"],
            do_sample=settings["sample"],
            top_k=8,
        )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(case.seed)
            model = case.make_model()
            ids, mask = case.make_inputs()
            expected = generate(model, ids, mask)
            stage = "compile"
            torch._dynamo.reset()
            model.forward = torch.compile(model.forward, backend=backend, dynamic=True)
            got = generate(model, ids, mask)
            torch._dynamo.reset()
        eager = [g for g in graphs if not isinstance(g, _Graph)]
        compiled = [c for g in graphs if isinstance(g, _Graph) for c in g.all_compiled]
        result.fallback_ops = sorted({r.op for c in compiled for r in c.fallbacks})
        result.num_torch_subgraphs = sum(c.num_torch_subgraphs() for c in compiled)
        stage = "compare"
        if not torch.equal(got, expected):
            result.status, result.stage = "wrong", "compare"
            result.error_type, result.detail = "Mismatch", "tokens differ from eager's"
        elif eager:
            result.stage, result.error_type = "compile", "EagerFallback"
            result.detail = f"{len(eager)} of {len(graphs)} graphs ran in PyTorch"
        else:
            result.status = "fallback" if result.fallback_ops else "native"
            result.detail = f"{len(graphs)} graphs, {len(compiled)} compiled variants"
    except Exception as err:
        result.status, result.stage = "error", stage
        result.error_type, result.detail = type(err).__name__, _first_line(err)
        if keep_traceback:
            result.traceback = traceback.format_exc()
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def run_sweep(
    cases: Sequence[Case] | None = None,
    verbose: bool = False,
    *,
    plain_tvm: bool = True,
) -> list[Result]:
    """Run ``cases`` (default: all of :data:`CASES`) in order and return one Result each.

    ``verbose`` logs each result (logger ``benchmarks.sweep.runner``, level INFO) and keeps the
    traceback of errors in ``Result.traceback``. ``plain_tvm`` also runs each model through
    TVM's own importer, for context.
    """
    results = []
    for case in CASES if cases is None else cases:
        result = run_case(case, plain_tvm=plain_tvm, keep_traceback=verbose)
        if verbose:
            logger.info("%-30s %-9s %s", case.name, result.status, _summary(result))
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def _summary(r: Result) -> str:
    if r.status in ("wrong", "error"):
        return f"[{r.stage}] {r.error_type}: {r.detail}"
    if r.fallback_ops:
        ops = sorted({re.sub(r"^aten\.|\.default$", "", op) for op in r.fallback_ops})
        return "torch: " + ", ".join(ops)
    return ""


def totals(results: Sequence[Result]) -> dict[str, int | float]:
    """Counts per status, the total and the share of correct results."""
    counts = Counter(r.status for r in results)
    out: dict[str, int | float] = {s: counts.get(s, 0) for s in STATUSES}
    out["total"] = len(results)
    correct = sum(counts.get(s, 0) for s in CORRECT)
    out["share_correct"] = round(correct / len(results), 4) if results else math.nan
    return out


def format_table(results: Sequence[Result]) -> str:
    """A plain-text table of results, then the totals."""
    rows = [("case", "category", "status", "plain TVM", "details")]
    for r in results:
        rows.append((r.name, r.category, r.status, r.plain_tvm, _summary(r)))
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    lines = []
    for row in rows:
        head = "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
        lines.append(f"{head}  {row[4][:140]}".rstrip())
    t = totals(results)
    lines.append("")
    lines.append(
        f"total {t['total']}: native {t['native']}, fallback {t['fallback']}, wrong {t['wrong']}, "
        f"error {t['error']}; correct {t['native'] + t['fallback']}/{t['total']} "
        f"({100 * t['share_correct']:.1f}%)"
    )
    plain = Counter(r.plain_tvm for r in results)
    lines.append("plain TVM alone: " + ", ".join(f"{k} {v}" for k, v in sorted(plain.items())))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.sweep [-k SUBSTR] [--opinfo] [--every N] [--json PATH]
    [--no-plain-tvm] [-v]``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sweep", description="byoc_torch sweep over ATen ops"
    )
    parser.add_argument(
        "-k",
        "--filter",
        action="append",
        default=[],
        help="run only cases whose name or category contains this (repeatable)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    parser.add_argument(
        "--no-plain-tvm", action="store_true", help="skip running each model through plain TVM"
    )
    parser.add_argument(
        "--force-torch",
        action="store_true",
        help="run the selected cases with every ATen op forced into LibTorch",
    )
    parser.add_argument(
        "--opinfo",
        action="store_true",
        help="add one case per OpInfo of torch's database (op_db samples; slow to build)",
    )
    parser.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="N",
        help="run every N-th selected case (a deterministic subset)",
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each case as it runs")
    args = parser.parse_args(argv)

    pool = list(CASES)
    if args.opinfo:
        from .more_cases import opinfo_cases

        pool += opinfo_cases()
    cases = [
        c
        for c in pool
        if not args.filter or any(f in c.name or f in c.category for f in args.filter)
    ][:: max(args.every, 1)]
    if args.force_torch:
        cases = [c if c.force_torch else forced(c) for c in cases]
    if args.list:
        for c in cases:
            print(f"{c.name:32s} {c.category}")
        return 0
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        logger.setLevel(logging.INFO)
    t0 = time.perf_counter()
    results = run_sweep(cases, verbose=args.verbose, plain_tvm=not args.no_plain_tvm)
    elapsed = time.perf_counter() - t0
    print(format_table(results))
    print(f"({elapsed:.1f} s)")
    if args.json:
        data = {"totals": totals(results), "results": [asdict(r) for r in results]}
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
