"""Fuzz the torch runtime module's loader with 10,000+ mutated artifacts.

Mutations of a valid serialized module (two subgraphs, one carrying a scripted submodule):
bit flips, truncation, huge values in length/count fields, random bytes, inserted and deleted
bytes, and splices of two artifacts. Each case must either load or raise a Python exception
whose message names byoc_torch; a crash, a hang (per-case timeout) or an allocation beyond
--max-rss-mb is a failure. Cases run in a child process so that a crash is caught and its
case reproduced by seed.

    python benchmarks/fuzz_artifact.py [--cases 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import struct
import sys
import time

KINDS = ["bitflip", "truncate", "huge", "random", "insert", "delete", "splice"]


def mutate(valid: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(KINDS)
    data = bytearray(valid)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 16)):
            b = rng.randrange(len(data) * 8)
            data[b // 8] ^= 1 << (b % 8)
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "huge":
        offset = rng.randrange(0, len(data) - 8)
        value = rng.choice([2**31 - 1, 2**32 - 1, 2**63, 2**64 - 1, 10**12, rng.getrandbits(64)])
        struct.pack_into("<Q", data, offset, value)
    elif kind == "random":
        data = bytearray(rng.getrandbits(8) for _ in range(rng.randint(0, 2048)))
        if rng.random() < 0.5:
            data[:8] = b"BYOCTRCH"[: len(data)]
    elif kind == "insert":
        at = rng.randrange(len(data) + 1)
        data[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    elif kind == "delete":
        at = rng.randrange(len(data))
        del data[at : at + rng.randint(1, 64)]
    else:  # splice
        cut = rng.randrange(len(data))
        other = rng.randrange(len(valid))
        data = data[:cut] + valid[other:]
    return kind, bytes(data)


def payload_start(valid: bytes) -> int:
    """Offset of the first scripted-submodule payload (parsed by PyTorch's own loader)."""
    return valid.index(b"PK\x03\x04") if b"PK\x03\x04" in valid else len(valid)


def worker(seed: int, start: int, count: int, queue) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import tvm_ffi

    from byoc_torch.testing.artifacts import reseal, valid_artifact

    VALID = valid_artifact()  # the same valid artifact the tests mutate

    protected = payload_start(VALID)

    load = tvm_ffi.get_global_func("ffi.Module.load_from_bytes.torch")
    stats = {"loaded": 0, "clear_error": 0, "unclear_error": 0}
    for i in range(start, start + count):
        rng = random.Random(seed * 1_000_003 + i)
        kind, data = mutate(VALID, rng)
        # Half the cases get a fixed-up checksum, so the parser's own checks are exercised,
        # unless the mutation reaches the submodule payload (PyTorch's zip/pickle loader,
        # which the checksum guards; see docs/security.md).
        if (
            rng.random() < 0.5
            and data[:protected] != VALID[:protected]
            and (data[protected:] == VALID[protected:] or len(data) < protected)
        ):
            data = reseal(data)
            kind += "+resealed"
        queue.put(("case", i, kind))
        try:
            load(data)
            stats["loaded"] += 1
        except (ValueError, RuntimeError, TypeError) as err:
            if "byoc_torch" in str(err):
                stats["clear_error"] += 1
            else:
                stats["unclear_error"] += 1
                queue.put(("unclear", i, kind, str(err)[:200]))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(("done", stats, rss))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=2500)
    p.add_argument("--case-timeout", type=float, default=30.0)
    p.add_argument("--max-rss-mb", type=float, default=4096)
    p.add_argument("--json")
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    totals = {"loaded": 0, "clear_error": 0, "unclear_error": 0, "crash": 0, "hang": 0}
    failures = []
    max_rss = 0.0
    t0 = time.time()
    start = 0
    while start < args.cases:
        count = min(args.chunk, args.cases - start)
        queue = ctx.Queue()
        proc = ctx.Process(target=worker, args=(args.seed, start, count, queue))
        proc.start()
        last = (start, "?")
        done = False
        while not done:
            try:
                msg = queue.get(timeout=args.case_timeout + 60)
            except Exception:
                if proc.is_alive():
                    totals["hang"] += 1
                    failures.append({"case": last[0], "kind": last[1], "what": "hang"})
                    proc.kill()
                else:
                    totals["crash"] += 1
                    failures.append(
                        {"case": last[0], "kind": last[1], "what": f"exit {proc.exitcode}"}
                    )
                break
            if msg[0] == "case":
                last = (msg[1], msg[2])
            elif msg[0] == "unclear":
                failures.append({"case": msg[1], "kind": msg[2], "what": msg[3]})
            elif msg[0] == "done":
                for k, v in msg[1].items():
                    totals[k] += v
                max_rss = max(max_rss, msg[2])
                done = True
        proc.join(timeout=30)
        # Resume after the case that failed, if any.
        start = last[0] + 1 if not done else start + count
        print(f"  {start}/{args.cases} cases, {time.time() - t0:.0f} s", flush=True)
    ok = totals["unclear_error"] == 0 and totals["crash"] == 0 and totals["hang"] == 0
    ok = ok and max_rss <= args.max_rss_mb
    print(
        json.dumps({**totals, "max_rss_mb": round(max_rss, 1), "seconds": round(time.time() - t0)})
    )
    for f in failures[:20]:
        print("  failure:", f)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"totals": totals, "max_rss_mb": max_rss, "failures": failures}, fh)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
