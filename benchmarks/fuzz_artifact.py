"""Fuzz byoc_torch's artifacts: whole exported files (default), or the torch runtime module.

``--target file`` (the default): mutations of a whole exported artifact (``CompiledModule.export``
of a model with TVM kernels and a LibTorch subgraph): truncation anywhere (a quarter of them in
the last 128 bytes, where the seal is), bit flips anywhere (a quarter in the seal), random byte
overwrites, appended garbage (sometimes a second seal), inserted and deleted bytes, and bit
flips inside the model's stored weights (found in the file by their bytes). Each case
loads the file with ``byoc_torch.load`` and calls the model on an input different from the
example input, in its own child process forked from a parent that imported torch, TVM and
byoc_torch once (a fork server: no interpreter start per case), with a per-case timeout. Each
case is classified: ``crash`` (killed by a signal or died without a result), ``hang`` (timed
out), ``different`` (loaded and returned other numbers than the intact artifact: the silent
failure), ``unclear_error`` (an exception that is not a byoc_torch error naming the file),
``clean_error`` (``ArtifactError`` or another byoc_torch error naming the file) or
``identical`` (loaded and returned exactly the intact artifact's output). Any crash, hang,
different output or unclear error fails the run.

``--target blob``: mutations of a valid serialized torch runtime module (two subgraphs, one
carrying a scripted submodule) fed to its loader: bit flips, truncation, huge values in
length/count fields, random bytes, inserted and deleted bytes, and splices of two artifacts.
Each case must either load or raise a Python exception whose message names byoc_torch; a
crash, a hang (per-case timeout) or an allocation beyond --max-rss-mb is a failure. Cases run
in chunks in a child process so that a crash is caught and its case reproduced by seed.

    python -m benchmarks.fuzz_artifact [--target file|blob] [--cases 10000] [--seed 0] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path

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


def blob_main(args: argparse.Namespace) -> int:
    """The torch runtime module's loader, fed mutated serialized modules (see module doc)."""
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


# -- whole files ----------------------------------------------------------------------------------
FILE_KINDS = ["truncate", "bitflip", "byte", "append", "insert", "delete", "parameter"]
CLASSES = ["identical", "clean_error", "different", "unclear_error", "crash", "hang"]
FAILURES = ("different", "unclear_error", "crash", "hang")
SEAL_REGION = 128  # bytes at the end of the file a quarter of the truncations and flips aim at


def mutate_file(
    valid: bytes, rng: random.Random, parameters: list[tuple[int, int]]
) -> tuple[str, bytes]:
    """One mutation of a whole artifact file: (kind, mutated bytes). ``parameters`` are the
    (offset, length) spans where the model's weights lie in the file: a "parameter" mutation
    flips bits there, the damage a random flip in a large file rarely hits but that changes
    the numbers without breaking anything else."""
    kind = rng.choice(FILE_KINDS)
    data = bytearray(valid)
    if kind == "parameter":
        start, length = parameters[rng.randrange(len(parameters))]
        for _ in range(rng.randint(1, 8)):
            data[start + rng.randrange(length)] ^= 1 << rng.randrange(8)
        return kind, bytes(data)
    near_end = rng.random() < 0.25
    low = len(data) - SEAL_REGION if near_end else 0
    if kind == "truncate":
        data = data[: rng.randrange(low, len(data))]
    elif kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(low, len(data))
            data[at] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(low, len(data))] = rng.getrandbits(8)
    elif kind == "append":
        if rng.random() < 0.2:  # a second seal, as if the file had been sealed twice
            data += valid[-64:]
        else:
            data += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096)))
    elif kind == "insert":
        at = rng.randrange(low, len(data) + 1)
        data[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    else:  # delete
        at = rng.randrange(low, len(data))
        del data[at : at + rng.randint(1, 64)]
    return kind, bytes(data)


def _file_case(data: bytes, path: Path, x, expected, unsealed: bool) -> str:
    """Load ``data`` as an artifact at ``path`` and call it: the case's class."""
    import torch

    import byoc_torch

    path.write_bytes(data)
    try:
        out = byoc_torch.load(path, allow_unsealed=unsealed)(x)
    except byoc_torch.ByocTorchError as err:
        return "clean_error" if str(path) in str(err) else "unclear_error: " + str(err)[:300]
    except Exception as err:  # any other exception is not the promised clear error
        return f"unclear_error: {type(err).__name__}: {str(err)[:300]}"
    return "identical" if torch.equal(out, expected) else "different"


def _fork_case(
    data: bytes, workdir: Path, case: int, x, expected, unsealed: bool
) -> tuple[int, int]:
    """Fork a child that runs one case and writes its class to a pipe: (pid, read fd)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(read_fd)
            private = workdir / f"tmp-{case}"
            private.mkdir()
            tempfile.tempdir = str(private)  # byoc_torch's private load copies go here
            result = _file_case(data, workdir / f"case-{case}.so", x, expected, unsealed)
            os.write(write_fd, result.encode("utf-8", "replace")[:4000])
        except BaseException:
            code = 3
        os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _reap(pid: int, read_fd: int) -> str:
    """The class of a finished child (it has exited)."""
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"crash: {signal.Signals(os.WTERMSIG(status)).name}"
    if not chunks:
        return f"crash: exit {os.waitstatus_to_exitcode(status)} without a result"
    return b"".join(chunks).decode("utf-8", "replace")


def build_valid_file(workdir: Path):
    """Compile a small model (TVM kernels and one LibTorch subgraph) in this process and export
    it: (the artifact's bytes, a test input unlike the example input, the intact output, the
    (offset, length) spans of the model's weights in the file, as stored or transposed)."""
    import torch

    import byoc_torch

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, x):
            return torch.special.erfinv(torch.tanh(self.fc(x)) * 0.9) + self.fc(x)

    torch.manual_seed(0)
    example = torch.randn(4, 8)
    model = Model().eval()
    compiled = byoc_torch.compile(model, (example,), placement="tvm", num_threads=1, verify=False)
    assert compiled.num_torch_subgraphs() == 1
    path = compiled.export(workdir / "valid.so")
    x = torch.randn(4, 8) * 3
    data = path.read_bytes()
    spans = []
    for p in model.parameters():
        for layout in (p, p.t()) if p.dim() == 2 else (p,):
            raw = layout.detach().contiguous().numpy().tobytes()
            at = data.find(raw)
            if at >= 0:
                spans.append((at, len(raw)))
    if not spans:
        raise RuntimeError("no weight of the fuzz model is stored verbatim in its artifact")
    return data, x, compiled(x), spans


def file_main(args: argparse.Namespace) -> int:
    """Whole exported files, each load+call in a forked child (see module doc)."""
    # One thread everywhere before anything starts a pool: the children are forked.
    os.environ["OMP_NUM_THREADS"] = os.environ["TVM_NUM_THREADS"] = "1"
    import warnings

    from byoc_torch import artifact_file

    warnings.filterwarnings("ignore")
    t0 = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="byoc_torch_fuzz_"))
    totals = dict.fromkeys(CLASSES, 0)
    by_kind: dict[str, dict[str, int]] = {k: dict.fromkeys(CLASSES, 0) for k in FILE_KINDS}
    failures: list[dict] = []
    try:
        valid, x, expected, parameters = build_valid_file(workdir)
        if args.unsealed:  # what the seal protects against: TVM's loader alone
            valid = valid[: -artifact_file.TRAILER_SIZE]
        setup = time.time() - t0
        # Case -1 is the intact file: it must load and give the intact output.
        pid, fd = _fork_case(valid, workdir, -1, x, expected, args.unsealed)
        baseline = _reap(pid, fd)
        if baseline != "identical":
            print(f"the intact artifact does not reproduce its output: {baseline}")
            return 2
        pending = list(range(args.cases))
        pending.reverse()
        active: dict[int, tuple[int, int, str, float]] = {}  # read fd -> pid, case, kind, start
        next_report = 1000
        while pending or active:
            while pending and len(active) < args.jobs:
                case = pending.pop()
                rng = random.Random(args.seed * 1_000_003 + case)
                kind, data = mutate_file(valid, rng, parameters)
                pid, fd = _fork_case(data, workdir, case, x, expected, args.unsealed)
                active[fd] = (pid, case, kind, time.time())
            ready, _, _ = select.select(list(active), [], [], 0.5)
            now = time.time()
            for fd in list(active):
                pid, case, kind, start = active[fd]
                if fd in ready:
                    result = _reap(pid, fd)  # EOF: the child has exited (or closed the pipe)
                elif now - start > args.case_timeout:
                    os.kill(pid, signal.SIGKILL)
                    _reap(pid, fd)
                    result = "hang"
                else:
                    continue
                del active[fd]
                cls = result.split(":", 1)[0]
                totals[cls] += 1
                by_kind[kind][cls] += 1
                if cls in FAILURES:
                    failures.append({"case": case, "kind": kind, "what": result})
            done = sum(totals.values())
            if done >= next_report:
                print(f"  {done}/{args.cases} cases, {time.time() - t0:.0f} s", flush=True)
                next_report += 1000
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = round(time.time() - t0, 1)
    summary = {
        "target": "file",
        "cases": args.cases,
        "seed": args.seed,
        "jobs": args.jobs,
        "unsealed": args.unsealed,
        "artifact_bytes": len(valid),
        "totals": totals,
        "by_kind": by_kind,
        "setup_seconds": round(setup, 1),
        "seconds": seconds,
        "failures": failures,
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("by_kind", "failures")}))
    for f in failures[:20]:
        print("  failure:", f)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", choices=("file", "blob"), default="file")
    p.add_argument("--cases", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="file: children at a time")
    p.add_argument("--chunk", type=int, default=2500, help="blob: cases per child process")
    p.add_argument("--case-timeout", type=float, default=30.0)
    p.add_argument("--max-rss-mb", type=float, default=4096, help="blob: peak RSS allowed")
    p.add_argument(
        "--unsealed",
        action="store_true",
        help="file: mutate the artifact without its seal, loaded with allow_unsealed=True "
        "(shows what the seal prevents; failures are expected)",
    )
    p.add_argument("--json")
    args = p.parse_args(argv)
    return file_main(args) if args.target == "file" else blob_main(args)


if __name__ == "__main__":
    sys.exit(main())
