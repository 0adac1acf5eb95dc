"""Options shared by every byoc_torch stage, in one small dataclass.

Place in the data flow: built once from the keyword arguments of ``compile``,
``from_exported_program`` or ``partition_for_torch``, and handed to each stage.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

import tvm

from . import _defaults
from .cpu import resolve_target
from .errors import OptionError, OptionTypeError
from .names import RELAX_OFFLOAD_OPS, normalize_op_name, torch_op_exists
from .threads import check_num_threads

__all__ = ["Options"]


@dataclass(frozen=True)
class Options:
    """Options of byoc_torch.

    The names follow Torch-TensorRT's where the meaning matches.

    Attributes:
        target: the TVM target the model is compiled for: ``"host"`` (this machine's CPU,
            :mod:`byoc_torch.cpu`), a target string (``"llvm"``: any CPU of the architecture),
            a dict (``{"kind": "llvm", "mcpu": "skylake"}``, TVM 0.27's form) or a
            ``tvm.target.Target``. One TVM does not know is an
            :class:`~byoc_torch.errors.OptionError`. The artifact records the CPU features the
            target uses, and loading it on a CPU without them raises CPUFeatureError. Default:
            ``"host"``.
        torch_executed_ops: ops forced to LibTorch even when TVM supports them. Each entry
            may be an ATen (or custom) op: ``"aten.tanh"`` (every overload),
            ``"aten.tanh.default"`` (one overload) or the op object (``torch.ops.aten.tanh`` /
            ``torch.ops.aten.tanh.default``); or a Relax op (``"relax.matmul"``,
            ``"relax.nn.conv2d"``, ...; see :data:`byoc_torch.names.RELAX_OFFLOAD_OPS`),
            whose calls in any Relax module the partition pass moves to LibTorch. A name that
            matches no op is an :class:`~byoc_torch.errors.OptionError`. Default: none.
        torch_executed_modules: submodules run whole in LibTorch as scripted TorchScript
            (``torch.jit.script``), given by type (``MyBlock``) or qualified name
            (``"encoder.layer.0"``). Their forward may branch and loop on tensor values,
            which torch.export cannot capture. Default: none.
        min_block_size: a connected block of TVM-compiled ops with fewer ops than this, whose
            inputs come from LibTorch and whose outputs go to LibTorch, runs in LibTorch too,
            so two subgraphs become one and the crossings between them disappear. 1 disables
            it. Default: 1 (off): a crossing costs less than running the block's ops through
            the TorchScript interpreter (benchmarks/min_block_size.py, docs/performance.md).
        require_full_compilation: raise an error listing every op that would run in LibTorch,
            and why, instead of falling back. Default: False.
        verify: after building, run the TVM-compiled part on the example inputs, compare
            every value TVM computes for an FX node with PyTorch's, move the nodes that first
            differ to LibTorch and build again, until the model agrees (see docs/user-guide.md
            for its cost). Build failures tied to one node always fall back this way.
            Default: True: a model must never be silently wrong.
        torch_executed_nodes: FX nodes (by the names reports show, e.g. ``"add_3"``) forced
            to LibTorch; meant for overhead studies (``byoc-torch bench``). Default: none.
        run_decompositions: decompose the ExportedProgram to core ATen first, as TVM's own
            importer does by default. Default: True.
        keep_params_as_input: keep parameters as function inputs instead of binding them as
            constants, as in TVM's importer. Default: False.
        placement: where the ops TVM can convert run. ``"measured"``: each region (about one
            TVM fused kernel) is timed in TVM and in LibTorch on the example inputs, and the
            assignment of least total time, crossings included, is chosen (see
            docs/performance.md); needs example inputs (without them it acts as ``"tvm"``).
            ``"tvm"``: TVM runs everything it can convert (the behaviour before placement
            existed). Default: ``"measured"``.
        placement_cache: a JSON file in which measured placement keeps its measurements
            (keyed by the region's ops, shapes, dtypes, the target and library versions), so
            that compiling the same or a similar model again measures only what is new. The
            measurements are also kept in memory for the process. Default: None (memory only).
        tune_trials: MetaSchedule trials spent tuning the TVM kernels before they are placed
            and built, in total for the compile (:mod:`byoc_torch.tuning`; needs ``pip
            install byoc_torch[tune]``): measured placement tunes its regions first, the
            builds of the whole model spend what is left on kernels the regions did not
            cover. Tuned kernels then compete in measured placement. Default: 0.
        tuning_database: a directory (or ``*.json`` file) where tuning records persist; reused
            across compiles, so a kernel tuned once is not tuned again, and with
            ``tune_trials=0`` the stored schedules are applied without tuning (how shipped
            tuning results are reloaded). Default: None (a temporary one per compile).
        num_threads: the threads TVM's CPU thread pool and LibTorch's intra-op pool may each
            use (a positive int). The model alternates between the two, so they share one
            budget; applied when the compiled model is created, by ``compile`` and again by
            ``load`` (the value is stored in the artifact). Process-wide and not restored:
            it calls ``torch.set_num_threads`` and sets ``TVM_NUM_THREADS`` for the whole
            process, and the model created last wins (see :mod:`byoc_torch.threads`).
            Default: None, the process's ``torch.get_num_threads()`` capped by the cores
            available to it (its affinity mask and cgroup CPU quota), so a compile never
            raises the threads the user chose; the ``torch.compile`` backend keeps
            ``torch.get_num_threads()`` exactly (Dynamo refuses a change).
        torch_executor: what runs each LibTorch subgraph. ``"torchscript"``: its TorchScript
            (which every subgraph carries). ``"aot_inductor"``: an AOTInductor package of the
            subgraph (``torch._inductor.aoti_compile_and_package``, parameters frozen in but
            for large non-convolution constants, which the package takes as inputs;
            matrix-multiply weights packed for oneDNN, stored transposed for MKL's sgemm or
            in panels for the runtime's own multiply, whichever is measured fastest on this
            CPU; dynamic dims kept), compiled at compile
            time, carried
            inside the artifact and run from C++; a subgraph it cannot compile, or whose outputs
            differ from the TorchScript's, keeps the TorchScript and the report says why.
            ``"auto"``: both are timed inside the built model on the example inputs, in turns,
            and the package runs only when faster beyond a 5 % margin and the timing noise
            (a tie keeps the TorchScript); subgraphs whose TorchScript takes less than 0.5 ms
            are not compiled (a compile costs seconds). Needs a C++ compiler at compile time
            (not at load). Default: ``"auto"``.
        cache_dir: a directory for the content-addressed compile cache
            (:mod:`byoc_torch.compile_cache`): whole compiled models (a compile of the same
            exported program with the same options, target and byoc_torch loads the stored
            artifact; not when tuning), AOTInductor packages, and, unless their own options
            name other places, measured placement's timings (``placement.json``) and tuning
            records (``tuning/``, when tuning). Default: None (no cache on disk).
    """

    target: str | Mapping | object = _defaults.TARGET
    torch_executed_ops: tuple[str, ...] = ()
    torch_executed_modules: tuple = ()
    min_block_size: int = _defaults.MIN_BLOCK_SIZE
    require_full_compilation: bool = _defaults.REQUIRE_FULL_COMPILATION
    torch_executed_nodes: tuple[str, ...] = ()
    verify: bool = _defaults.VERIFY
    run_decompositions: bool = _defaults.RUN_DECOMPOSITIONS
    keep_params_as_input: bool = _defaults.KEEP_PARAMS_AS_INPUT
    placement: str = _defaults.PLACEMENT
    placement_cache: str | None = None
    tune_trials: int = _defaults.TUNE_TRIALS
    tuning_database: str | None = None
    num_threads: int | None = _defaults.NUM_THREADS
    torch_executor: str = _defaults.TORCH_EXECUTOR
    cache_dir: str | None = None
    _forced: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_target(self.target)
        ops = self.torch_executed_ops
        if isinstance(ops, str) or not isinstance(ops, Iterable):
            ops = (ops,)
        try:
            normalized = tuple(normalize_op_name(o) for o in ops)
        except ValueError as err:
            raise OptionError(str(err)) from None
        _check_op_names(normalized)
        object.__setattr__(self, "torch_executed_ops", normalized)
        object.__setattr__(self, "_forced", frozenset(normalized))
        mods = self.torch_executed_modules
        if isinstance(mods, str | type) or not isinstance(mods, Iterable):
            mods = (mods,)
        for m in mods:
            if not isinstance(m, str | type):
                raise OptionTypeError(
                    f"torch_executed_modules: {m!r} is neither a module type nor a qualified "
                    "submodule name"
                )
        object.__setattr__(self, "torch_executed_modules", tuple(mods))
        nodes = self.torch_executed_nodes
        if isinstance(nodes, str):
            nodes = (nodes,)
        object.__setattr__(self, "torch_executed_nodes", tuple(str(n) for n in nodes))
        if isinstance(self.min_block_size, bool) or not isinstance(self.min_block_size, int):
            raise OptionTypeError(f"min_block_size must be an int, got {self.min_block_size!r}")
        if self.placement not in _defaults.PLACEMENTS:
            raise OptionError(
                f"placement must be one of {list(_defaults.PLACEMENTS)}, got {self.placement!r}"
            )
        if isinstance(self.tune_trials, bool) or not isinstance(self.tune_trials, int):
            raise OptionTypeError(f"tune_trials must be an int, got {self.tune_trials!r}")
        if self.tune_trials < 0:
            raise OptionError(f"tune_trials must be >= 0, got {self.tune_trials}")
        if self.tuning_database is not None:
            object.__setattr__(self, "tuning_database", str(self.tuning_database))
        if self.placement_cache is not None:
            object.__setattr__(self, "placement_cache", str(self.placement_cache))
        if self.min_block_size < 1:
            raise OptionError(f"min_block_size must be >= 1, got {self.min_block_size}")
        checked_num_threads(self.num_threads)
        if self.torch_executor not in _defaults.TORCH_EXECUTORS:
            raise OptionError(
                f"torch_executor must be one of {list(_defaults.TORCH_EXECUTORS)}, got "
                f"{self.torch_executor!r}"
            )
        if self.cache_dir is not None:
            root = os.fspath(self.cache_dir)
            object.__setattr__(self, "cache_dir", root)
            if self.placement_cache is None:
                object.__setattr__(self, "placement_cache", os.path.join(root, "placement.json"))
            if self.tuning_database is None and self.tune_trials:
                object.__setattr__(self, "tuning_database", os.path.join(root, "tuning"))

    @classmethod
    def from_kwargs(cls, kwargs: Mapping) -> Options:
        """Build Options from keyword arguments (or ``torch.compile``'s ``options`` dict);
        unknown names are an error that lists the valid ones."""
        if not isinstance(kwargs, Mapping):
            raise OptionTypeError(
                f"byoc_torch options must be a dict of option names, got {type(kwargs).__name__}"
            )
        valid = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise OptionTypeError(
                f"unknown byoc_torch option(s) {unknown}; valid options: {sorted(valid)}"
            )
        return cls(**kwargs)

    def replace(self, **changes) -> Options:
        """These options with ``changes`` (checked like :meth:`from_kwargs`)."""
        current = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_forced"}
        return Options.from_kwargs({**current, **changes})

    def tvm_target(self):
        """``target`` as a ``tvm.target.Target`` (``"host"`` resolved, :mod:`byoc_torch.cpu`)."""
        return resolve_target(self.target)

    def is_forced_op(self, target: object) -> bool:
        """True when ``torch_executed_ops`` names this op overload or its packet."""
        if not self._forced:
            return False
        try:
            full = normalize_op_name(target)
        except ValueError:
            return False
        packet = full.rsplit(".", 1)[0]
        return full in self._forced or packet in self._forced


def checked_num_threads(value: object, what: str = "num_threads") -> int | None:
    """``value`` as the option ``num_threads`` (:func:`byoc_torch.threads.check_num_threads`):
    a wrong type is an :class:`OptionTypeError`, a number below 1 an :class:`OptionError`."""
    try:
        return check_num_threads(value, what)
    except TypeError as err:
        raise OptionTypeError(str(err)) from None
    except ValueError as err:
        raise OptionError(str(err)) from None


def _check_target(target: object) -> None:
    """A target TVM can make (or ``"host"``), else an OptionError with TVM's reason."""
    if isinstance(target, tvm.target.Target):
        return
    if not isinstance(target, str | Mapping):
        raise OptionTypeError(
            f"target must be a TVM target string, dict or tvm.target.Target, got {target!r}"
        )
    try:
        resolve_target(dict(target) if isinstance(target, Mapping) else target)
    except Exception as err:  # TVM's ValueError / TVMError: the option is wrong
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OptionError(f"target {target!r} is not a TVM target: {first}") from None


def _check_op_names(names: tuple[str, ...]) -> None:
    """Every name must match an op: a Relax op byoc_torch can offload, or a registered
    PyTorch op; otherwise an OptionError lists what is valid."""
    unknown = [n for n in names if not n.startswith("relax.") and not torch_op_exists(n)]
    unknown += [n for n in names if n.startswith("relax.") and n not in RELAX_OFFLOAD_OPS]
    if unknown:
        raise OptionError(
            f"torch_executed_ops: {sorted(unknown)} match no operator. Valid: a PyTorch op "
            "registered in this process, as 'aten.tanh', 'aten.tanh.default' or "
            f"torch.ops.<ns>.<op>; or a Relax op byoc_torch offloads: {sorted(RELAX_OFFLOAD_OPS)}"
        )
