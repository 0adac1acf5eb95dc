"""Builders shared by byoc_torch's tests and benchmarks (not used by the compiler itself).

* ``modules.py`` -- :class:`Lambda` (a module around a function) and :func:`compile_and_check`;
* ``graphs.py``  -- hand-built Relax graphs mixing torchops and native ops, with an eager
  reference, for the partitioner's tests and scale benchmark;
* ``artifacts.py`` -- a valid serialized torch runtime module and re-sealing of mutated copies,
  for the artifact fuzz tests and benchmark;
* ``concurrency.py`` -- :func:`~byoc_torch.testing.concurrency.hammer`, many threads calling
  one model at once;
* ``custom_ops.py`` -- a ``torch.library`` custom op (``byoc_torch_testing::scale_shift``)
  for ``call_torch``'s tests and docs;
* ``hf_models.py`` -- Hugging Face models built from configs with random weights (no
  downloads), for the peers benchmark and its tests;
* ``packages.py`` -- a whole model as one AOTInductor package program, for the executor's
  tests and the freezing benchmark.
"""

from .modules import Lambda, compile_and_check

__all__ = ["Lambda", "compile_and_check"]
