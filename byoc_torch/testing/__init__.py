"""Builders shared by byoc_torch's tests and benchmarks (not used by the compiler itself).

* ``modules.py`` -- :class:`Lambda` (a module around a function) and :func:`compile_and_check`;
* ``graphs.py``  -- hand-built Relax graphs mixing torchops and native ops, with an eager
  reference, for the partitioner's tests and scale benchmark.
"""

from .modules import Lambda, compile_and_check

__all__ = ["Lambda", "compile_and_check"]
