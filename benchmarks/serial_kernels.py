"""AOTInductor packages with serial kernels against packages whose kernels take their thread
count at run time, on one thread.

byoc_torch compiles its packages with inductor's ``cpp.dynamic_threads`` (one package serves
any thread count), except for a model whose thread budget is one thread: then with
``cpp.threads=1`` (:data:`byoc_torch.aot_inductor._SERIAL_CONFIGS`), so its kernels have no
OpenMP parallel region. A dynamic-threads kernel opens one at every call even on one thread,
and libgomp's barrier at its end makes a futex system call.

For each model (built-in examples or :mod:`byoc_torch.testing.hf_models`), in one process on
one thread, the whole decomposed program as byoc_torch compiles a package
(:func:`byoc_torch.testing.packages.whole_program`, then
:func:`byoc_torch.aot_inductor.compile_package` with ``serial`` False and True) is timed
against eager: :func:`byoc_torch.timing.interleaved_samples`, round-robin, median of the
per-round medians; every package is first checked against eager on the example inputs.

    python -m benchmarks.serial_kernels [--models demo,cnn,hf_resnet] [--rounds 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import torch

from byoc_torch import aot_inductor
from byoc_torch.testing.packages import whole_program
from byoc_torch.timing import interleaved_samples

from .aot_inductor import _model
from .aoti_freezing import _flat, _load

DEFAULT_MODELS = "demo,cnn,vit,gpt,hf_bert,hf_resnet"


def run(name: str, rounds: int) -> dict[str, float]:
    """Median ms per call of eager and of both packages of model ``name``."""
    model, inputs = _model(name)
    model.eval()
    with torch.no_grad():
        expected = _flat(model(*inputs))
    program, _, args = whole_program(model, tuple(inputs))
    fns = {"eager": lambda: model(*inputs)}
    with tempfile.TemporaryDirectory(prefix="byoc_torch_serial_kernels_") as workdir:
        for serial in (False, True):
            key = "serial" if serial else "run-time threads"
            runner = _load(aot_inductor.compile_package(program, serial=serial), workdir, key)
            with torch.no_grad():
                got = _flat(runner(*args))
            for g, e in zip(got, expected, strict=True):
                torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-3)
            fns[key] = lambda runner=runner: runner(*args)
        with torch.no_grad():
            samples, _ = interleaved_samples(fns, rounds)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"one thread; load average {os.getloadavg()[0]:.1f} at the start")
    print("| model | eager ms | run-time threads | serial | serial / run-time |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        ms = run(name, args.rounds)
        dyn, ser = ms["run-time threads"], ms["serial"]
        print(
            f"| {name} | {ms['eager']:.3f} | {dyn / ms['eager']:.3f}x | {ser / ms['eager']:.3f}x "
            f"| {ser / dyn:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
