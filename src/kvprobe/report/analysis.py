"""From result documents to a pair report's numbers: per model, the container against native, with statistics.

Nothing here starts an engine or formats text; `report.layout` turns the `ReportSummary` into
words and tables, and `summary.json` is this model as JSON.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kvprobe.report.compare import (
    Comparison,
    Model,
    boundary_kinds,
    bounds,
    compare,
    summarise_metrics,
)
from kvprobe.report.pairing import Group
from kvprobe.report.sizing import SizingDecomposition, decompose_runs
from kvprobe.report.stats import FEW_RUNS, Summary, unstable
from kvprobe.results.schema import BoundaryKind, ContainerRun, ResultDocument
from kvprobe.units import GIB
from kvprobe.vocabulary import LABELS, Label, Pool

# The capacities a pair report holds the container against native with, in its loss table.
COMPARED = ("kv_reference_bytes", "kv_u_max_bytes", "physical_kv_bytes", "u_max", "throughput_tokens_per_s")


class Flag(Model):
    """Something that makes a figure less trustworthy, as pyperf warns of unstable benchmarks."""

    kind: Literal[
        "few_runs", "unstable_sd", "non_monotone", "boundary_flipped", "baseline_not_restored", "incomplete_run"
    ]
    label: Label
    metric: str | None = None
    value: float | None = Field(None, description="n, sd/mean, or the setting that flipped.")
    run: str | None = None


class MeanAttribution(Model):
    """The attribution of a label's runs, part by part averaged over them."""

    pool: Pool
    total_bytes: float
    parts: dict[str, float]
    unexplained_bytes: float


class RecoverableKv(Model):
    """A fill test proved more KV fits in the container than vLLM allocated at u_max."""

    kind: Literal["recoverable_kv"] = "recoverable_kv"
    physical_bytes: float
    allocated_bytes: float


class LimitCut(Model):
    """The container's limit puts host memory out of reach and the same utilization gets less KV."""

    kind: Literal["limit_cut"] = "limit_cut"
    cut_bytes: float
    native_kv_bytes: float
    container_kv_bytes: float


class PageCacheCharged(Model):
    """Page cache charged to the container's cgroup at start."""

    kind: Literal["page_cache_charged"] = "page_cache_charged"
    page_cache_bytes: float


class UMaxDrop(Model):
    kind: Literal["u_max_drop"] = "u_max_drop"
    native: float
    container: float


Finding = RecoverableKv | LimitCut | PageCacheCharged | UMaxDrop


class Caption(Model):
    """Where a label's runs were made, for chart and table captions."""

    device: str | None
    vllm: str | None
    torch: str | None
    kvprobe: str | None
    host_memory_bytes: int
    host: str | None
    kernel: str | None


class ModelComparison(Model):
    """One model at one settings hash: every metric per label, and native against container."""

    model: str
    settings_hash: str
    settings: dict
    versions: dict[str, str | None]
    n: dict[Label, int]
    u_max_censored: dict[Label, bool]
    bounds: dict[Label, list[str]] = Field(description="Metrics that are only lower bounds on that side.")
    boundary: dict[Label, list[BoundaryKind]] = Field(description="What set u_max on that side.")
    stats: dict[Label, dict[str, Summary]]
    comparison: dict[str, Comparison] = Field(description="The container against native as its reference.")
    attribution: dict[Label, MeanAttribution | None]
    attribution_difference: dict[str, float] | None
    findings: list[Finding]
    flags: list[Flag]
    container: ContainerRun | None
    caption: dict[Label, Caption]
    sizing: SizingDecomposition | None = Field(None, description="The container's KV difference by the equation.")


class SingleSide(Model):
    """One model's runs on one side only (native, say, with no container run to hold them against):
    reported as its own figures, compared with nothing."""

    model: str
    label: Label
    settings_hash: str
    settings: dict
    n: int
    bounds: list[str] = Field(description="Metrics that are only lower bounds.")
    boundary: list[BoundaryKind] = Field(description="What set u_max.")
    stats: dict[str, Summary]
    caption: Caption


def analyse_single(group: Group) -> list[SingleSide]:
    """Each side of an unmatched group that has runs, as its own figures."""
    return [
        SingleSide(
            model=group.model,
            label=label,
            settings_hash=group.settings_hash,
            settings=runs[0].settings,
            n=len(runs),
            bounds=bounds(runs),
            boundary=boundary_kinds(runs),
            stats=summarise_metrics(runs),
            caption=_caption(runs),
        )
        for label in LABELS
        if (runs := group.runs[label])
    ]


def _flags(group: Group, stats: dict[Label, dict[str, Summary]]) -> list[Flag]:
    flags: list[Flag] = []
    for label in LABELS:
        runs = group.runs[label]
        if len(runs) < FEW_RUNS:
            flags.append(Flag(kind="few_runs", label=label, value=len(runs)))
        for metric in COMPARED:
            summary = stats[label][metric]
            if summary.sd is not None and summary.mean and unstable(summary):
                flags.append(Flag(kind="unstable_sd", label=label, metric=metric, value=summary.sd / summary.mean))
        for doc in runs:
            if doc.status != "complete":
                flags.append(Flag(kind="incomplete_run", label=label, run=doc.where()))
            for name, search in doc.searches.items():
                if search.non_monotone:
                    flags.append(Flag(kind="non_monotone", label=label, metric=name, run=doc.where()))
                flags += [
                    Flag(kind="boundary_flipped", label=label, metric=name, value=v, run=doc.where())
                    for v in search.flipped
                ]
            if any(not t.baseline_restored for t in doc.trials):
                flags.append(Flag(kind="baseline_not_restored", label=label, run=doc.where()))
    return flags


def mean_attribution(docs: list[ResultDocument]) -> MeanAttribution | None:
    blocks = [d.attribution for d in docs if d.attribution]
    if not blocks:
        return None
    parts = [b.parts.model_dump() for b in blocks]
    return MeanAttribution(
        pool=blocks[0].pool,
        total_bytes=sum(b.total_bytes for b in blocks) / len(blocks),
        parts={k: sum(p[k] for p in parts) / len(parts) for k in sorted(parts[0])},
        unexplained_bytes=sum(b.unexplained_bytes for b in blocks) / len(blocks),
    )


def _findings(
    stats: dict[Label, dict[str, Summary]],
    attribution: dict[Label, MeanAttribution | None],
    bounds: dict[Label, list[str]],
) -> list[Finding]:
    """What the measurements of this model show that a reader can act on (never from a bound)."""
    found: list[Finding] = []
    native, container = stats["native"], stats["container"]
    kv_max, physical = container["kv_u_max_bytes"].mean, container["physical_kv_bytes"].mean
    if kv_max and physical and physical > 1.05 * kv_max and not bounds["container"]:
        found.append(RecoverableKv(physical_bytes=physical, allocated_bytes=kv_max))
    native_kv, container_kv = native["kv_reference_bytes"].mean, container["kv_reference_bytes"].mean
    parts = attribution["container"].parts if attribution["container"] else {}
    if native_kv and container_kv and native_kv > container_kv and parts.get("cgroup_cut", 0) > 0:
        found.append(
            LimitCut(cut_bytes=parts["cgroup_cut"], native_kv_bytes=native_kv, container_kv_bytes=container_kv)
        )
    if parts.get("page_cache", 0) > 0.5 * GIB:
        found.append(PageCacheCharged(page_cache_bytes=parts["page_cache"]))
    native_u, container_u = native["u_max"].mean, container["u_max"].mean
    bounded = bounds["native"] or bounds["container"]
    if native_u and container_u and container_u < native_u - 0.015 and not bounded:
        found.append(UMaxDrop(native=native_u, container=container_u))
    return found


def _caption(docs: list[ResultDocument]) -> Caption:
    doc = docs[0]
    software = doc.environment.software
    return Caption(
        device=doc.device,
        vllm=doc.versions.vllm,
        torch=doc.versions.torch,
        kvprobe=doc.versions.kvprobe,
        host_memory_bytes=doc.environment.host_memory["MemTotal"],
        host=software.get("cpu_model"),
        kernel=software.get("kernel"),
    )


def analyse_group(group: Group) -> ModelComparison:
    """Native and container runs of one model as a two-condition experiment: native is the reference."""
    side_bounds = {label: bounds(group.runs[label]) for label in LABELS}
    stats = {label: summarise_metrics(group.runs[label]) for label in LABELS}
    attribution = {label: mean_attribution(group.runs[label]) for label in LABELS}
    where = None
    if attribution["native"] and attribution["container"]:
        native_parts, container_parts = attribution["native"].parts, attribution["container"].parts
        where = {k: container_parts[k] - native_parts.get(k, 0.0) for k in container_parts}
    return ModelComparison(
        model=group.model,
        settings_hash=group.settings_hash,
        settings=group.runs["native"][0].settings,
        versions={"kvprobe": group.kvprobe, "vllm": group.vllm},
        n={label: len(group.runs[label]) for label in LABELS},
        u_max_censored={label: any(d.u_max_censored for d in group.runs[label]) for label in LABELS},
        bounds=side_bounds,
        boundary={label: boundary_kinds(group.runs[label]) for label in LABELS},
        stats=stats,
        comparison={name: compare(group.runs["native"], group.runs["container"], name) for name in COMPARED},
        attribution=attribution,
        attribution_difference=where,
        findings=_findings(stats, attribution, side_bounds),
        flags=_flags(group, stats),
        container=group.runs["container"][0].options.container,
        caption={label: _caption(group.runs[label]) for label in LABELS},
        sizing=decompose_runs(group.runs["native"], group.runs["container"]),
    )
