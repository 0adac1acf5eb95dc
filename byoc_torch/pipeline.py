"""One compile's pipeline: import, partition and build, spelled once.

Place in the data flow: between the driver and the stages. The driver exports the model
(:mod:`byoc_torch.program`) and makes one :class:`Pipeline`, which owns the program, the
options (the target among them), the example inputs and the input tree. Everything that
imports or builds the model goes through it: the compile loop, verification's probes
(does the model build / agree with these nodes moved?), placement's whole-model candidates and
``byoc_torch.report``. The program is decomposed once (:func:`prepare_program`), PyTorch's
reference values are computed once, and imports and builds are memoized by the nodes they move
to LibTorch. It also installs the LibTorch subgraphs' executors (TorchScript or AOTInductor
packages, :mod:`byoc_torch.aot_inductor`) in a build.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import tvm
from tvm import relax

from . import schedules
from .codegen import LowerTorchFunctions, weights_in_packages_only
from .compiled import running_torch_modules
from .cpu import requirements
from .errors import first_line
from .frontend import ImportResult, import_with_records
from .names import is_relax_op_name
from .options import Options
from .partition import PartitionForTorch
from .program import Program, foreign_ops, signature
from .records import FallbackRecord, Reason
from .reporting import Report, build_report
from .runtime.module import TorchRuntime
from .signature import Signature
from .tensors import target_device_type, tvm_ready
from .threads import budget_threads
from .verify import diverging_nodes, outputs_agree, seeded_references

logger = logging.getLogger(__name__)

__all__ = ["Built", "Pipeline", "bind_kept_params"]


@dataclass(frozen=True)
class Built:
    """One build of the model: what was imported, partitioned, lowered and built."""

    imported: ImportResult
    partitioned: tvm.IRModule
    lowered: tvm.IRModule
    executable: tvm.runtime.Module  # its signature metadata is provisional (no report)


class Pipeline:
    """The stages of one compile, over one program with one set of options.

    ``records`` arguments name the nodes moved to LibTorch (besides what the frontend moves
    itself): placement's choice, build failures, verification's blame.
    """

    def __init__(
        self,
        program: Program,
        opts: Options,
        checked: tuple[torch.Tensor, ...] | None = None,
        tuning_budget=None,
    ) -> None:
        self.program, self.opts = program, opts
        self.target = opts.tvm_target()
        self.device = target_device_type(self.target)
        self.checked = checked  # the inputs verification runs on (see Program.checked_inputs)
        self.tuning_budget = tuning_budget  # tune_trials, in total for this compile
        # AOTInductor packages for a one-thread budget have serial kernels (resolved now: the
        # compile times its candidates on one thread whatever the budget, threads.one_thread).
        self.serial_kernels = budget_threads(opts.num_threads) == 1
        # The ATen names act in the frontend; the pass takes the Relax ones.
        relax_ops = [n for n in opts.torch_executed_ops if is_relax_op_name(n)]
        self._partition = PartitionForTorch(torch_executed_ops=relax_ops)
        self._references: dict | None = None
        self._imports: dict[tuple, ImportResult] = {}
        self._builds: dict[tuple, Built] = {}

    @functools.cached_property
    def provisional(self) -> str:
        """The signature without the report, set on each build until the final one is known
        (the compile loop reads it before building, so that a mistake in it is not taken for
        a build failure)."""
        return self.signature(None).to_json()

    @staticmethod
    def _key(records: dict[str, FallbackRecord]) -> tuple:
        return tuple(sorted((r.node, r.op, str(r.reason), r.detail) for r in records.values()))

    # -- the stages ---------------------------------------------------------------------------
    def imported(self, records: dict[str, FallbackRecord] | None = None) -> ImportResult:
        """The frontend's import with ``records`` moved to LibTorch. With
        ``keep_params_as_input=True`` the parameters are bound into ``main`` here, once: the
        compiled model takes the model's inputs only."""
        records = records or {}
        key = self._key(records)
        if key not in self._imports:
            imported = import_with_records(self.program.ep, self.opts, records)
            if self.opts.keep_params_as_input:
                imported = dataclasses.replace(imported, mod=bind_kept_params(imported.mod))
            self._imports[key] = imported
        return self._imports[key]

    def partitioned(self, imported: ImportResult) -> tvm.IRModule:
        return self._partition(imported.mod)

    def build(self, records: dict[str, FallbackRecord], executor: str = "torchscript") -> Built:
        """The model built (tuned as the options say) with ``records`` moved to LibTorch;
        raises what the build raises. With ``executor="aot_inductor"`` (the whole-model
        check's candidate) it is a build of its own whose LibTorch subgraphs run AOTInductor
        packages (those that compile)."""
        key = (self._key(records), executor)
        if key not in self._builds:
            imported = self.imported(records)
            partitioned = self.partitioned(imported)
            lowered = LowerTorchFunctions(metadata=self.provisional)(partitioned)
            lowered = self._tuned(lowered)
            executable = schedules.build(lowered, self.target)
            built = Built(imported, partitioned, lowered, executable)
            if executor != "torchscript":
                self.choose_executors(built, None, executor)
            self._builds[key] = built
        return self._builds[key]

    def choose_executors(
        self,
        built: Built,
        inputs: tuple | None,
        mode: str,
        why: str | None = None,
    ) -> dict:
        """Each LibTorch subgraph's executor in ``built``, TorchScript or AOTInductor, chosen
        as ``mode`` says (``Options.torch_executor``, :func:`byoc_torch.executor_choice.
        choose_executors`; "auto" times both on ``inputs``); the packages chosen are installed
        in the built module. ``why``: the reason the executor of a mode other than "auto" is
        reported with (None: the ``torch_executor`` setting)."""
        from .compile_cache import CompileCache
        from .executor_choice import choose_executors

        run = None
        if inputs is not None:
            main = relax.VirtualMachine(built.executable, tvm.device(self.device))["main"]
            args = [tvm_ready(x.contiguous()) for x in inputs]

            def run():
                with torch.no_grad():
                    return main(*args)

        cache_dir = self.opts.cache_dir
        return choose_executors(
            running_torch_modules(built.executable),
            built.partitioned,
            built.imported.ep,
            run,
            mode,
            CompileCache(cache_dir) if cache_dir is not None else None,
            self.device,
            why,
            self.serial_kernels,
        )

    def weights_once(self, built: Built) -> tuple[Built, list[str]]:
        """``built`` rebuilt so that the constants its installed AOTInductor packages froze
        live only in the packages (:func:`byoc_torch.codegen.weights_in_packages_only`), and
        the symbols of the subgraphs that now run only as their packages; ``built`` itself
        when there are none. The rebuild costs one more build of the lowered module."""
        runtimes = TorchRuntime.find(built.executable)
        if not runtimes:
            return built, []
        own = runtimes[0]
        lowered, symbols = weights_in_packages_only(built.lowered, own.specs(), own.metadata())
        if not symbols:
            return built, []
        executable = schedules.build(lowered, self.target)
        return dataclasses.replace(built, lowered=lowered, executable=executable), symbols

    def _tuned(self, lowered: tvm.IRModule) -> tvm.IRModule:
        """``lowered`` with the tuning options applied, or as it is; a tuning failure leaves
        the kernels untuned (tuning is an optimization) with a warning."""
        if not self.opts.tune_trials and self.opts.tuning_database is None:
            return lowered
        from .tuning import tune_with_options

        try:
            return tune_with_options(lowered, self.opts, self.tuning_budget)
        except Exception as err:  # a MetaSchedule failure must not fail the compile
            warnings.warn(
                f"byoc_torch.compile: tuning failed ({first_line(err)}); the TVM kernels are "
                "built untuned",
                stacklevel=2,
            )
            return lowered

    # -- verification's probes ----------------------------------------------------------------
    def references(self) -> dict:
        """PyTorch's value of every node on the checked inputs (after verification's seed,
        :func:`byoc_torch.verify.seeded_references`), computed once."""
        if self._references is None:
            self._references = seeded_references(self.imported().ep, self.checked)
        return self._references

    def builds(self, records: dict[str, FallbackRecord], names: list[str]) -> bool:
        """Does the model build (untuned) with ``names`` and ``records`` moved to LibTorch?"""
        return self._probe(records, names, schedules.build)

    def lowers(self, records: dict[str, FallbackRecord], names: list[str]) -> bool:
        """Does the model get through the first half of a build, legalization and fusion
        (:func:`byoc_torch.schedules.lower`), with ``names`` and ``records`` moved to LibTorch?
        The culprit search's probe when a build fails there already, for half the cost."""
        return self._probe(records, names, schedules.lower)

    def _probe(self, records: dict, names: list[str], step: Callable) -> bool:
        forced = dict(records)
        for name in names:
            forced.setdefault(name, FallbackRecord(name, name, Reason.BUILD))
        try:
            mod = self.partitioned(self.imported(forced))
            step(LowerTorchFunctions()(mod), self.target)
        except Exception:  # any failure counts as "does not build"
            return False
        return True

    def agrees(self, records: dict, blamed: dict, names: list[str]) -> bool:
        """Do the outputs agree with PyTorch's with ``names`` (of ``blamed``) and ``records``
        moved to LibTorch?"""
        forced = {**records, **{n: blamed[n] for n in names}}
        try:
            imported = self.imported(forced)
            mod = self.partitioned(imported)
            return outputs_agree(imported, mod, self.checked, self.target, self.references())
        except Exception as err:  # a variant that does not build or run does not agree
            logger.debug("verification: moving %s fails: %s", names, err)
            return False

    def diverging(self, built: Built) -> dict[str, FallbackRecord]:
        """The nodes of ``built`` whose TVM value first differs from PyTorch's."""
        return diverging_nodes(
            built.imported,
            built.partitioned,
            self.checked,
            self.target,
            self.references(),
            built.executable,
        )

    # -- what the compiled model says about itself --------------------------------------------
    def report(self, imported: ImportResult, partitioned: tvm.IRModule) -> Report:
        return build_report(imported, partitioned, model_name=self.program.model_name)

    def signature(self, report: Report | None, imported: ImportResult | None = None) -> Signature:
        """What the compiled model takes and returns, with the CPU its code needs; with
        ``imported`` (the final build), its foreign ops and mutated inputs too."""
        p = self.program
        ops = foreign_ops(imported) if imported is not None else ()
        mutations = imported.mutations if imported is not None else ()
        return signature(
            p.ep,
            self.device,
            report,
            self.opts.num_threads,
            p.names,
            p.tree,
            ops,
            mutations,
            requirements(self.target),
            tuple(name for name, _ in p.state),
        )


def bind_kept_params(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` whose ``main`` has its ``params`` attribute (kept parameters, trailing inputs
    of ``main``) bound as constants."""
    detached, params = relax.frontend.detach_params(mod)
    values = params.get("main")
    if not values:
        return mod
    kept = list(detached["main"].params)[-len(values) :]
    return relax.transform.BindParams("main", dict(zip(kept, values, strict=True)))(detached)
