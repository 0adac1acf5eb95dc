"""Operator sweep: how byoc_torch fares on a broad set of real ATen ops.

What it is for: a quick, deterministic survey of which PyTorch ops run natively in TVM, which
run (correctly) through the LibTorch fallback, and which break -- and where. Each case is a tiny
``nn.Module`` with seeded example inputs chosen inside the op's domain. For each case the sweep

1. exports the model with ``torch.export`` (eval mode, no grad),
2. compiles it with :func:`byoc_torch.compile` and runs it,
3. compares the outputs with eager PyTorch (``torch.testing.assert_close``; tolerances by
   dtype, integer and bool outputs exact),

and classifies it:

* ``native``   -- no node fell back to LibTorch and the result is correct;
* ``fallback`` -- some nodes ran in LibTorch and the result is correct;
* ``wrong``    -- it ran, but the result differs from eager;
* ``error``    -- an exception at export, compile or run (its type and first line are kept).

For context it also records whether the op alone goes through plain TVM
(``tvm.relax.frontend.torch.from_exported_program`` + ``relax.build`` + run).

Besides one category per op family, three categories probe byoc_torch itself: ``dynamic``
(exported with dynamic dims, also run at other sizes), ``boundary`` (views, empty, 0-d,
non-contiguous and channels-last tensors, parameters and constants crossing TVM <-> LibTorch) and
``forced`` (a case re-run with every ATen op forced into LibTorch: a test of the TorchScript
byoc_torch writes; ``--force-torch`` does this for any selection).

Beyond the op families: ``classes`` has one case per coverage class byoc_torch handles
(``torch.cond``, complex / ``None`` / shape outputs, random ops seeded alike for eager and
compiled, zero-size dims, sparse buffers, a failing decomposition, training batch norm, uint64,
dynamic ranges, long reductions), ``models`` builds model families from transformers configs
(random init, no downloads; :mod:`byoc_torch.testing.hf_models`), and ``--opinfo`` adds one
case per entry of PyTorch's OpInfo database (``op_db``, its first float32 sample; needs
``expecttest``). ``--every N`` runs every N-th selected case: a deterministic subset.

Run it with ``python -m benchmarks.sweep`` (``--help`` lists the options, ``--json PATH`` writes
the results). One case's failure never stops the sweep.

The sweep lives outside the installed package: ``case.py`` (what a case and a result are),
``cases.py`` (the case data), ``more_cases.py`` (classes, models, OpInfo), ``runner.py``
(running, comparing, reporting, the command line).
"""

from .case import CORRECT, STATUSES, Case, Result, forced
from .cases import CASES, select_cases
from .runner import main, run_case, run_sweep, totals

__all__ = [
    "CASES",
    "CORRECT",
    "STATUSES",
    "Case",
    "Result",
    "forced",
    "main",
    "run_case",
    "run_sweep",
    "select_cases",
    "totals",
]
