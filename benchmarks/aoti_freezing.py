"""What freezing does to an AOTInductor package of a whole model, weight class by weight class.

For each model (the Hugging Face models of :mod:`byoc_torch.testing.hf_models` or the built-in
examples), in one process on the CPU, AOTInductor packages of the same decomposed program
are timed against eager:

* ``frozen``         every parameter, buffer and constant frozen in (``freezing=True``), as
                     AOTInductor's users compile it (matrices packed for oneDNN);
* ``byoc``           what byoc_torch compiles (:func:`byoc_torch.aot_inductor.nodes_program`
                     over the whole program, then ``compile_package``): frozen too, but the
                     large constants no convolution reads are inputs of the package; float32
                     matrices of matrix multiplies packed for oneDNN, stored transposed for
                     MKL's sgemm or in panels for the runtime's multiply, as measured on this
                     CPU (``_defaults.AOTI_MATMUL_WEIGHTS``);
* ``packed``, ``transposed``, ``panels``, ``inputs``: as ``byoc`` with that setting forced
                     (``inputs``: the matrices are inputs of the package, MKL's sgemm on their
                     transposed view);
* ``not_frozen``     no freezing: every weight an input, no constant folding or prepacking.

In AOT mode inductor packs a frozen linear weight for oneDNN's ``_linear_pointwise`` (it cannot
use MKL's packed sgemm there); whether that beats MKL's sgemm on the unpacked matrix depends on
the CPU. Convolution weights stay frozen in all but ``not_frozen`` (oneDNN prepacking and
batch-norm folding). Also printed: each package's size. Latency:
:func:`byoc_torch.timing.interleaved_samples`, round-robin, median of per-round medians; every
package is first checked against eager.

    python -m benchmarks.aoti_freezing [--models hf_bert,hf_resnet] [--threads 1] [--rounds 7]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile

import torch

from byoc_torch import _defaults, aot_inductor
from byoc_torch.testing.packages import whole_program
from byoc_torch.timing import interleaved_samples

DEFAULT_MODELS = "hf_bert,hf_gpt2,hf_vit,hf_resnet"


def _model(name: str):
    if name.startswith("hf_"):
        from byoc_torch.testing import hf_models

        return hf_models.HF_MODELS[name]()
    from byoc_torch.models import get_example

    return get_example(name)


def _load(data: bytes, workdir: str, name: str):
    path = os.path.join(workdir, f"{name}.pt2")
    with open(path, "wb") as f:
        f.write(data)
    return torch._inductor.aoti_load_package(path)


# name -> (_defaults.AOTI_MATMUL_WEIGHTS, _defaults.AOTI_FROZEN_MAX_BYTES) it is compiled with;
# "byoc" keeps the defaults.
_SETTINGS = {
    "frozen": ("packed", math.inf),
    "byoc": (None, None),
    "packed": ("packed", None),
    "transposed": ("transposed", None),
    "panels": ("panels", None),
    "inputs": ("inputs", None),
}


def _packages(model, inputs, workdir: str) -> dict[str, tuple]:
    """name -> (runner, its arguments, package bytes)."""
    found = {}
    for name, (matrices, max_bytes) in _SETTINGS.items():
        saved = (_defaults.AOTI_MATMUL_WEIGHTS, _defaults.AOTI_FROZEN_MAX_BYTES)
        try:
            if name != "byoc":
                _defaults.AOTI_MATMUL_WEIGHTS = matrices
            if max_bytes is not None:
                _defaults.AOTI_FROZEN_MAX_BYTES = max_bytes
            program, _, args = whole_program(model, inputs)
            data = aot_inductor.compile_package(program)
            found[name] = (_load(data, workdir, name), args, len(data))
        finally:
            _defaults.AOTI_MATMUL_WEIGHTS, _defaults.AOTI_FROZEN_MAX_BYTES = saved
    ep = torch.export.export(model, inputs)
    path = os.path.join(workdir, "not_frozen.pt2")
    with torch.no_grad():
        torch._inductor.aoti_compile_and_package(ep, package_path=path)
    found["not_frozen"] = (torch._inductor.aoti_load_package(path), inputs, os.path.getsize(path))
    return found


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


def run(name: str, rounds: int) -> None:
    model, inputs = _model(name)
    model.eval()
    inputs = tuple(inputs)
    with torch.no_grad():
        expected = _flat(model(*inputs))
    with tempfile.TemporaryDirectory(prefix="byoc_torch_aoti_freezing_") as workdir:
        packages = _packages(model, inputs, workdir)
        fns = {"eager": lambda: model(*inputs)}
        for key, (runner, args, _) in packages.items():
            with torch.no_grad():
                got = _flat(runner(*args))
            for g, e in zip(got, expected, strict=True):
                torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-3)
            fns[key] = lambda runner=runner, args=args: runner(*args)
        with torch.no_grad():
            samples, _ = interleaved_samples(fns, rounds)
    ms = {k: statistics.median(v) for k, v in samples.items()}
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    print(f"{name} (threads {torch.get_num_threads()}, loadavg {os.getloadavg()[0]:.1f})")
    print(f"  eager {ms['eager']:.3f} ms; weights {weights / 1e6:.2f} MB")
    for key, (_, _, size) in packages.items():
        print(
            f"  {key:11s} {ms[key]:8.3f} ms  {ms[key] / ms['eager']:.2f}x eager  "
            f"package {size / 1e6:.2f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        run(name, args.rounds)


if __name__ == "__main__":
    main()
