"""From result documents to the report's numbers: per model, native against container, with statistics.

Nothing here starts an engine or formats text; `report.layout` turns the `ReportSummary` into
words and tables, and `summary.json` is this model as JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kvprobe.report.pairing import Group, group_results
from kvprobe.report.stats import Summary, WelchResult, summarise, welch_t_test
from kvprobe.results.schema import ContainerRun, ResultDocument
from kvprobe.units import GIB
from kvprobe.vocabulary import LABELS, Label, Pool

Unit = Literal["GiB", "tokens", "blocks", "", "x", "tok/s"]


def _peak_memory(doc: ResultDocument) -> float | None:
    phases = doc.memory_phases
    if phases is None:
        return None
    lowest = phases.lowest_host_released or phases.lowest_host_available  # older results lack the first
    return (
        phases.peak_gpu_used
        or phases.peak_cgroup_usage
        or (None if lowest is None else doc.environment.host_memory["MemTotal"] - lowest)
    )


def _figure(name: str, field: str) -> Callable[[ResultDocument], float | None]:
    def extract(doc: ResultDocument) -> float | None:
        figure = getattr(doc, name)
        return None if figure is None else getattr(figure, field)

    return extract


# name -> (unit, extractor). "GiB" values are stored in bytes and shown in GiB.
METRICS: dict[str, tuple[Unit, Callable[[ResultDocument], float | None]]] = {
    "kv_reference_bytes": ("GiB", _figure("reference", "bytes")),
    "kv_reference_tokens": ("tokens", _figure("reference", "tokens")),
    "u_max": ("", lambda d: d.u_max),
    "u_min": ("", lambda d: d.u_min),
    "kv_u_max_bytes": ("GiB", _figure("kv_at_u_max", "bytes")),
    "kv_u_max_blocks": ("blocks", _figure("kv_at_u_max", "num_blocks")),
    "kv_u_max_tokens": ("tokens", _figure("kv_at_u_max", "tokens")),
    "max_concurrency": ("x", _figure("kv_at_u_max", "max_concurrency")),
    "physical_kv_bytes": ("GiB", _figure("physical_capacity", "bytes")),
    "physical_kv_tokens": ("tokens", _figure("physical_capacity", "tokens")),
    "peak_memory_bytes": ("GiB", _peak_memory),
    "throughput_tokens_per_s": ("tok/s", _figure("throughput", "tokens_per_s")),
}

# The capacities the blog post compares: KV at the matched serving utilization, then at u_max.
COMPARED = ("kv_reference_bytes", "kv_u_max_bytes", "physical_kv_bytes", "u_max", "throughput_tokens_per_s")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Comparison(Model):
    """Native minus container for one metric, from the means of the runs."""

    available: bool = Field(description="Both sides have values; the other fields are None otherwise.")
    native_mean: float | None = None
    container_mean: float | None = None
    lost: float | None = Field(None, description="native_mean - container_mean, in the metric's unit.")
    lost_percent: float | None = None
    ratio_native_over_container: float | None = None
    welch: WelchResult | None = Field(None, description="Welch's t-test of the two sides' values.")


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
    stats: dict[Label, dict[str, Summary]]
    comparison: dict[str, Comparison]
    attribution: dict[Label, MeanAttribution | None]
    attribution_difference: dict[str, float] | None
    findings: list[Finding]
    container: ContainerRun | None
    caption: dict[Label, Caption]
    runs: dict[Label, list[dict[str, str | int | float | None]]]


class ReportSummary(Model):
    models: list[ModelComparison]
    unmatched: list[str]
    metrics: dict[str, Unit]
    documents: int


def _compare(native: list[float], container: list[float]) -> Comparison:
    a, b = summarise(native), summarise(container)
    if a.mean is None or b.mean is None:
        return Comparison(available=False)
    lost = a.mean - b.mean
    return Comparison(
        available=True,
        native_mean=a.mean,
        container_mean=b.mean,
        lost=lost,
        lost_percent=100.0 * lost / a.mean if a.mean else None,
        ratio_native_over_container=a.mean / b.mean if b.mean else None,
        welch=welch_t_test(native, container),
    )


def _mean_attribution(docs: list[ResultDocument]) -> MeanAttribution | None:
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
    stats: dict[Label, dict[str, Summary]], attribution: dict[Label, MeanAttribution | None]
) -> list[Finding]:
    """What the measurements of this model show that a reader can act on."""
    found: list[Finding] = []
    native, container = stats["native"], stats["container"]
    kv_max, physical = container["kv_u_max_bytes"].mean, container["physical_kv_bytes"].mean
    if kv_max and physical and physical > 1.05 * kv_max:
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
    if native_u and container_u and container_u < native_u - 0.015:
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


def _run_row(doc: ResultDocument) -> dict[str, str | int | float | None]:
    row: dict[str, str | int | float | None] = {
        "model": doc.model,
        "label": doc.label,
        "run_id": doc.run_id,
        "repeat": doc.repeat,
        "settings_hash": doc.settings_hash,
        "device": doc.device,
        "engine_starts": doc.engine_starts,
    }
    for name, (_, extract) in METRICS.items():
        row[name] = extract(doc)
    return row


def _values(docs: list[ResultDocument], metric: str) -> list[float]:
    extract = METRICS[metric][1]
    return [v for v in (extract(d) for d in docs) if v is not None]


def analyse_group(group: Group) -> ModelComparison:
    stats = {label: {name: summarise(_values(group.runs[label], name)) for name in METRICS} for label in LABELS}
    attribution = {label: _mean_attribution(group.runs[label]) for label in LABELS}
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
        stats=stats,
        comparison={
            name: _compare(_values(group.runs["native"], name), _values(group.runs["container"], name))
            for name in COMPARED
        },
        attribution=attribution,
        attribution_difference=where,
        findings=_findings(stats, attribution),
        container=group.runs["container"][0].options.container,
        caption={label: _caption(group.runs[label]) for label in LABELS},
        runs={label: [_run_row(d) for d in group.runs[label]] for label in LABELS},
    )


def build_report(documents: list[ResultDocument], problems: list[str] | None = None) -> ReportSummary:
    """The report's numbers. `problems` are files that could not be read; they are listed as unmatched."""
    groups, unmatched = group_results(documents)
    return ReportSummary(
        models=[analyse_group(g) for g in groups if g.matched],
        unmatched=list(problems or []) + unmatched,
        metrics={name: unit for name, (unit, _) in METRICS.items()},
        documents=len(documents),
    )
