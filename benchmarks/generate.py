"""Hugging Face ``generate`` through ``torch.compile``: byoc_torch's backend against inductor.

For each family (tiny random-init models of :mod:`byoc_torch.testing.hf_models`, no
downloads), in one process on the CPU, the recipe users write::

    model.forward = torch.compile(model.forward, backend=..., dynamic=True)
    model.generate(ids, attention_mask=mask, max_new_tokens=N, do_sample=False)

is run for ``byoc_torch`` (placement as ``--placement``) and ``inductor`` (on-disk caches
disabled: a cold compile), each on a fresh copy of the model. It prints, per family and
backend: the first generate's seconds (Dynamo's captures and the backend's compiles
included), the graphs Dynamo handed the backend (one per phase expected: prefill, decode), in
how many of its three generates the tokens equal eager's (greedy, sampled with a seed, greedy
at another prompt length; a batch of two left-padded prompts each), and the milliseconds per
new token of that last generate (no compile). A family that raises is reported as failing,
and the sweep goes on; the last lines give the pass rate and the ratios' geomean. ``ratio``
is byoc_torch's first generate over inductor's (target: <= 2).

    python -m benchmarks.generate [--families llama,t5] [--new-tokens N] [--placement tvm]
                                  [--threads N] [--json out.json]

Timings on a busy machine are inflated for both backends alike; compare the ratio.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import torch
from torch._dynamo.utils import counters

from byoc_torch.testing.hf_models import GENERATION_FAMILIES, hf_generator, padded_prompts

CASES = 3  # generates compared per family and backend: greedy, sampled, greedy at a new length


def _generate(model, prompt, new_tokens: int, sample: bool):
    ids, mask = prompt
    if sample:
        torch.manual_seed(7)
    return model.generate(
        ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=sample, top_k=8
    )


def run_family(family: str, new_tokens: int, placement: str) -> dict:
    """One family: eager reference, then each backend on a fresh copy."""
    import byoc_torch

    base = hf_generator(family)
    prompts = [padded_prompts(2, (7, 5), seed=1), padded_prompts(2, (11, 8), seed=2)]
    want = {
        (p, s): _generate(base, prompts[p], new_tokens, s) for p in (0, 1) for s in (False, True)
    }
    backends = {
        "byoc_torch": byoc_torch.dynamo_backend(placement=placement),
        "inductor": "inductor",
    }
    row: dict = {"family": family}
    for name, backend in backends.items():
        torch._dynamo.reset()
        counters.clear()
        model = copy.deepcopy(base)
        model.forward = torch.compile(model.forward, backend=backend, dynamic=True)
        cases: dict[str, bool] = {}
        try:
            start = time.perf_counter()
            first = _generate(model, prompts[0], new_tokens, False)
            first_s = time.perf_counter() - start
            cases["greedy"] = torch.equal(first, want[(0, False)])
            sampled = _generate(model, prompts[0], new_tokens, True)
            cases["sampled"] = torch.equal(sampled, want[(0, True)])
            start = time.perf_counter()
            second = _generate(model, prompts[1], new_tokens, False)
            per_token_ms = (time.perf_counter() - start) * 1e3 / new_tokens
            cases["greedy, new length"] = torch.equal(second, want[(1, False)])
        except Exception as e:  # a failure is a result of the sweep, not its end
            row[name] = {"fails": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            continue
        row[name] = {
            "first_generate_s": round(first_s, 2),
            "graphs": int(counters["stats"]["unique_graphs"]),
            "cases": cases,
            "tokens_equal_eager": all(cases.values()),
            "ms_per_token": round(per_token_ms, 2),
        }
    if "fails" in row["byoc_torch"] or "fails" in row["inductor"]:
        row["ratio"] = None
        return row
    row["ratio"] = round(
        row["byoc_torch"]["first_generate_s"] / row["inductor"]["first_generate_s"], 2
    )
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(GENERATION_FAMILIES))
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--placement", default="tvm", choices=("tvm", "measured"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch._inductor.config.force_disable_caches = True
    rows = []
    head = f"{'family':8} {'backend':10} {'first s':>8} {'graphs':>6} {'same':5} {'ms/tok':>8}"
    print(head)
    for family in args.families.split(","):
        row = run_family(family, args.new_tokens, args.placement)
        rows.append(row)
        for name in ("byoc_torch", "inductor"):
            r = row[name]
            if "fails" in r:
                print(f"{family:8} {name:10} fails: {r['fails']}")
                continue
            print(
                f"{family:8} {name:10} {r['first_generate_s']:8.1f} {r['graphs']:6d} "
                f"{sum(r['cases'].values())}/{len(r['cases']):<3} {r['ms_per_token']:8.2f}"
            )
        if row["ratio"] is not None:
            print(f"{family:8} {'ratio':10} {row['ratio']:8.2f}", flush=True)
    print()
    for name in ("byoc_torch", "inductor"):
        runs = [row[name] for row in rows]
        equal = sum(sum(r.get("cases", {}).values()) for r in runs)
        total = CASES * len(runs)
        print(f"{name}: tokens equal eager's in {equal}/{total} generates ({len(runs)} families)")
    ratios = [row["ratio"] for row in rows if row["ratio"] is not None]
    if ratios:
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"first generate byoc_torch / inductor: geomean {geomean:.2f}, max {max(ratios):.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
