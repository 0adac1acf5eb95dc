"""Reports: where every node runs, why, and what each LibTorch subgraph takes and gives.

Place in the data flow: beside the pipeline. ``byoc_torch.compile`` builds a :class:`Report`
from the frontend's records and the partitioned module and keeps it in the compiled model (and
in its exported artifact); ``byoc_torch.report`` builds one without compiling; the CLI prints
it (``byoc-torch report``). Text for people (:meth:`Report.to_text`), JSON for tools
(:meth:`Report.to_json`).
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import tvm
from torch import fx
from tvm import relax

import relay_ext

from .errors import ArtifactError
from .ir import torch_functions
from .names import op_key

if TYPE_CHECKING:
    from .records import FallbackRecord

__all__ = ["NodeEntry", "Report", "SubgraphEntry", "build_report", "report_from_ir"]

REASON_NATIVE = "converted by TVM"
REPORT_VERSION = 1


@dataclass(frozen=True)
class NodeEntry:
    """One FX node: where it runs and why."""

    node: str
    op: str
    runs_in: str  # "tvm" or "torch"
    reason: str
    detail: str = ""
    subgraph: str | None = None


@dataclass(frozen=True)
class SubgraphEntry:
    """One LibTorch subgraph: its ops and the tensors that cross into and out of it."""

    symbol: str
    nodes: list[str]
    ops: list[str]
    inputs: list[str]  # Relax types, e.g. R.Tensor((2, 8), dtype="float32")
    outputs: list[str]
    # What runs it ("torchscript" or "aot_inductor", byoc_torch.aot_inductor), why, and each
    # executor's measured time per call in the built model (ms; None: not measured).
    executor: str = "torchscript"
    executor_reason: str = ""
    torchscript_ms: float | None = None
    aot_inductor_ms: float | None = None

    @property
    def crossings(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def with_executor(self, choice) -> SubgraphEntry:
        """This entry with an :class:`~byoc_torch.executor_choice.ExecutorChoice` (None: as is)."""
        if choice is None:
            return self
        return replace(
            self,
            executor=choice.executor,
            executor_reason=choice.reason,
            torchscript_ms=choice.torchscript_ms,
            aot_inductor_ms=choice.aot_inductor_ms,
        )


@dataclass(frozen=True)
class RegionDecision:
    """One region: its nodes and ops, both measured times (ms) and where it runs."""

    index: int
    nodes: list[str]
    ops: list[str]
    tvm_ms: float | None
    torch_ms: float | None  # its TorchScript in byoc_torch's runtime
    side: str
    # As an AOTInductor package (torch_executor "auto"/"aot_inductor"; None: not timed, and
    # aot_inductor_note says why).
    aot_inductor_ms: float | None = None
    aot_inductor_note: str = ""


@dataclass
class PlacementResult:
    """What measured placement measured and chose (shown by reports)."""

    regions: list[RegionDecision] = field(default_factory=list)
    crossing_ms: float = 0.0
    modelled_ms: float = 0.0
    all_tvm_ms: float | None = None
    all_torch_ms: float | None = None
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: float = 0.0
    error: str = ""  # why placement did not run, when it failed (the model then runs as "tvm")
    # The whole-model check (byoc_torch.placement.end_to_end): the candidate kept, each
    # candidate's end-to-end time (ms; None: not timed) and why a candidate was not timed.
    chosen: str = "searched"
    checked_ms: dict[str, float | None] = field(default_factory=dict)
    check_skipped: dict[str, str] = field(default_factory=dict)
    model_key: str = ""  # what the whole-model check's cached result is filed under
    # Not empty when the machine was too noisy to trust a measured difference (a timing's
    # spread stayed high after re-measuring, or a faster candidate was faster only within
    # the spread): what was noisy; the simpler placement was kept (byoc_torch.timing.choose).
    noise: str = ""

    def choose(
        self,
        name: str,
        torch_nodes: set[str],
        checked_ms: dict[str, float | None],
        skipped: dict[str, str],
    ) -> None:
        """Record the whole-model check's choice; every region's side becomes the chosen
        candidate's (``torch_nodes``: the nodes it moves to LibTorch)."""
        self.chosen, self.checked_ms, self.check_skipped = name, dict(checked_ms), dict(skipped)
        self.regions = [
            replace(r, side="torch" if torch_nodes & set(r.nodes) else "tvm") for r in self.regions
        ]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PlacementResult:
        regions = [RegionDecision(**r) for r in data.get("regions", [])]
        rest = {k: v for k, v in data.items() if k != "regions"}
        return cls(regions=regions, **rest)

    def to_text(self) -> str:
        if self.error:
            return f"Measured placement failed, TVM runs all it converts: {self.error}"
        lines = [
            f"Measured placement: {len(self.regions)} region(s), "
            f"{sum(r.side == 'torch' for r in self.regions)} to LibTorch; one crossing "
            f"{self.crossing_ms * 1e3:.2f} us; modelled {self.modelled_ms:.3f} ms "
            f"(all TVM {format_ms(self.all_tvm_ms)}, all LibTorch {format_ms(self.all_torch_ms)}); "
            f"{self.seconds:.1f} s, cache {self.cache_hits} hit(s) / {self.cache_misses} miss(es)",
            f"  {'region':>6}  {'side':<5}  {'TVM ms':>9}  {'LibTorch ms':>11}  "
            f"{'AOTInductor ms':>14}  ops",
        ]
        if self.checked_ms or self.check_skipped:
            timed = [f"{k} {format_ms(v)} ms" for k, v in self.checked_ms.items() if v is not None]
            untimed = [f"{k} not timed: {why}" for k, why in self.check_skipped.items()]
            lines.insert(1, f"  whole model: {'; '.join(timed + untimed)}; kept {self.chosen}")
        if self.noise:
            lines.insert(1, f"  too noisy to trust a difference: {self.noise}")
        for r in self.regions:
            ops = ", ".join(r.ops)
            tvm_ms, torch_ms = format_ms(r.tvm_ms), format_ms(r.torch_ms)
            aoti_ms = format_ms(r.aot_inductor_ms)
            lines.append(
                f"  {r.index:>6}  {r.side:<5}  {tvm_ms:>9}  {torch_ms:>11}  {aoti_ms:>14}  "
                f"{ops[:90]}"
            )
        notes = sorted({r.aot_inductor_note for r in self.regions if r.aot_inductor_note})
        if notes:
            lines.append(f"  AOTInductor not timed for some regions: {'; '.join(notes)}")
        return "\n".join(lines)


def format_ms(value: float | None) -> str:
    return "-" if value is None or math.isinf(value) else f"{value:.4f}"


@dataclass
class Report:
    """Where every node of a model runs. ``totals`` summarizes it."""

    model: str
    nodes: list[NodeEntry] = field(default_factory=list)
    subgraphs: list[SubgraphEntry] = field(default_factory=list)
    placement: PlacementResult | None = None  # what measured placement measured and chose
    notes: list[str] = field(default_factory=list)  # e.g. ops torch could not decompose

    @property
    def totals(self) -> dict:
        ops = [n for n in self.nodes if not n.op.startswith("getitem")]
        torch_ops = sum(1 for n in ops if n.runs_in == "torch")
        total = len(ops)
        return {
            "ops": total,
            "ops_tvm": total - torch_ops,
            "ops_torch": torch_ops,
            "subgraphs": len(self.subgraphs),
            "crossings": sum(s.crossings for s in self.subgraphs),
            "coverage_percent": round(100.0 * (total - torch_ops) / total, 1) if total else 100.0,
        }

    def torch_nodes(self) -> list[NodeEntry]:
        return [n for n in self.nodes if n.runs_in == "torch"]

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "version": REPORT_VERSION,
            "model": self.model,
            "totals": self.totals,
            "nodes": [asdict(n) for n in self.nodes],
            "subgraphs": [{**asdict(s), "crossings": s.crossings} for s in self.subgraphs],
            "placement": None if self.placement is None else self.placement.to_dict(),
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        if data.get("version") != REPORT_VERSION:
            raise ArtifactError(f"report version {data.get('version')} is not {REPORT_VERSION}")
        nodes = [NodeEntry(**n) for n in data["nodes"]]
        subgraphs = [
            SubgraphEntry(**{k: v for k, v in s.items() if k != "crossings"})
            for s in data["subgraphs"]
        ]
        placement = data.get("placement")
        if placement is not None:
            placement = PlacementResult.from_dict(placement)
        notes = [str(n) for n in data.get("notes", [])]
        return cls(str(data["model"]), nodes, subgraphs, placement, notes)

    def to_text(self) -> str:
        t = self.totals
        lines = [
            f"byoc_torch report for {self.model}",
            f"  ops: {t['ops']} total, {t['ops_tvm']} in TVM, {t['ops_torch']} in LibTorch "
            f"(coverage {t['coverage_percent']}%)",
            f"  LibTorch subgraphs: {t['subgraphs']}, tensors crossing per call: {t['crossings']}",
        ]
        lines.extend(f"  note: {note}" for note in self.notes)
        torch_nodes = self.torch_nodes()
        if torch_nodes:
            lines.append("")
            lines.append("Ops that run in LibTorch:")
            width = max(len(n.node) for n in torch_nodes)
            op_width = max(len(n.op) for n in torch_nodes)
            for n in torch_nodes:
                detail = f" — {n.detail}" if n.detail else ""
                lines.append(
                    f"  {n.node:<{width}}  {n.op:<{op_width}}  [{n.subgraph}] {n.reason}{detail}"
                )
        for s in self.subgraphs:
            lines.append("")
            lines.append(f"Subgraph {s.symbol}: {len(s.ops)} op(s), {s.crossings} crossing(s)")
            lines.append(f"  ops:     {', '.join(s.ops)}")
            lines.append(f"  inputs:  {', '.join(s.inputs) or '-'}")
            lines.append(f"  outputs: {', '.join(s.outputs)}")
            times = (
                f"TorchScript {format_ms(s.torchscript_ms)} ms, "
                f"AOTInductor {format_ms(s.aot_inductor_ms)} ms per call"
            )
            why = f" ({s.executor_reason})" if s.executor_reason else ""
            lines.append(f"  runs:    {s.executor}{why}; {times}")
        native = [n for n in self.nodes if n.runs_in == "tvm" and not n.op.startswith("getitem")]
        if native:
            lines.append("")
            lines.append(f"Ops compiled by TVM ({len(native)}):")
            counts: dict[str, int] = {}
            for n in native:
                counts[n.op] = counts.get(n.op, 0) + 1
            for op, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"  {k:4d} x {op}")
        if self.placement is not None:
            lines.append("")
            lines.append(self.placement.to_text())
        return "\n".join(lines)


def _type_str(ty: object) -> str:
    return str(ty).replace("\n", " ")


def _subgraph_entries(mod: tvm.IRModule) -> tuple[list[SubgraphEntry], dict[str, str]]:
    """Entries for the torch functions of a partitioned module, and node name -> symbol."""
    entries = []
    where: dict[str, str] = {}
    for symbol, func in torch_functions(mod).items():
        nodes: list[str] = []

        def visit(expr, nodes=nodes):
            if relay_ext.is_torchop(expr):
                names = [str(n) for n in (expr.attrs.get("nodes") or [])]
                nodes.extend(names or [str(expr.attrs["op_name"])])

        relax.analysis.post_order_visit(func.body, visit)
        for n in nodes:
            where[n] = symbol
        ret = func.ret_ty
        outs = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
        entries.append(
            SubgraphEntry(
                symbol,
                nodes,
                [str(o) for o in func.attrs["torch_ops"]],
                [_type_str(p.ty) for p in func.params],
                [_type_str(o) for o in outs],
            )
        )
    return entries, where


class Imported(Protocol):
    """What a report reads of an import (:class:`byoc_torch.frontend.ImportResult` has it)."""

    records: list[FallbackRecord]  # the nodes that run in LibTorch, and why
    graph: fx.Graph  # the FX graph that was imported
    notes: tuple[str, ...]


def build_report(imported: Imported, partitioned: tvm.IRModule, model_name: str) -> Report:
    """The report of a model from the frontend's result and the partitioned module."""
    subgraphs, where = _subgraph_entries(partitioned)
    records = {r.node: r for r in imported.records}
    entries: list[NodeEntry] = []
    for node in imported.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is operator.getitem:
            src = node.args[0]
            src_name = src.name if isinstance(src, fx.Node) else str(src)
            runs_in = "torch" if src_name in records else "tvm"
            entries.append(
                NodeEntry(
                    node.name,
                    "getitem",
                    runs_in,
                    f"element of {src_name}",
                    subgraph=where.get(src_name),
                )
            )
            continue
        rec = records.get(node.name)
        if rec is None:
            entries.append(NodeEntry(node.name, op_key(node.target), "tvm", REASON_NATIVE))
        else:
            entries.append(
                NodeEntry(node.name, rec.op, "torch", rec.reason, rec.detail, where.get(node.name))
            )
    return Report(model_name, entries, subgraphs, notes=list(imported.notes))


def report_from_ir(mod: tvm.IRModule) -> Report:
    """A report from a partitioned Relax module alone (no FX graph, so no TVM-side reasons)."""
    subgraphs, where = _subgraph_entries(mod)
    entries: list[NodeEntry] = []
    for s in subgraphs:
        for name, op in zip(s.nodes, s.ops, strict=False):
            entries.append(
                NodeEntry(name, op, "torch", "torchop in the module", subgraph=where[name])
            )
    return Report("IRModule", entries, subgraphs)
