"""From result documents to the report's numbers: per model, native against container, with statistics.

Nothing here starts an engine or formats text; `report.layout` turns the `ReportSummary` into
words and tables, and `summary.json` is this model as JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kvprobe.report.pairing import Group
from kvprobe.report.stats import FEW_RUNS, Summary, WelchResult, summarise, unstable, welch_t_test
from kvprobe.results.schema import ContainerRun, ResultDocument
from kvprobe.units import GIB
from kvprobe.vocabulary import LABELS, Label, Pool

Unit = Literal["GiB", "tokens", "blocks", "bytes", "", "x", "tok/s"]


def _peak_host_in_use(doc: ResultDocument) -> float | None:
    """MemTotal less the lowest MemAvailable (+ unlisted pages) seen during the u_max start."""
    phases = doc.memory_phases
    lowest = None if phases is None else (phases.lowest_host_released or phases.lowest_host_available)
    return None if lowest is None else doc.environment.host_memory["MemTotal"] - lowest


def _phase(field: str) -> Callable[[ResultDocument], float | None]:
    return lambda doc: None if doc.memory_phases is None else getattr(doc.memory_phases, field)


def _figure(name: str, field: str) -> Callable[[ResultDocument], float | None]:
    def extract(doc: ResultDocument) -> float | None:
        figure = getattr(doc, name)
        return None if figure is None else getattr(figure, field)

    return extract


def _reference_total(doc: ResultDocument) -> float | None:
    """The memory total the engine multiplied gpu_memory_utilization by at the reference start (its log)."""
    if doc.reference is None:
        return None
    trial = next((t for t in doc.trials if t.number == doc.reference.trial), None)
    return None if trial is None else trial.memory_report.budget_total_bytes


# name -> (unit, extractor). "GiB" values are stored in bytes and shown in GiB.
METRICS: dict[str, tuple[Unit, Callable[[ResultDocument], float | None]]] = {
    "kv_reference_bytes": ("GiB", _figure("reference", "bytes")),
    "kv_reference_blocks": ("blocks", _figure("reference", "num_blocks")),
    "kv_reference_tokens": ("tokens", _figure("reference", "tokens")),
    "reference_engine_total_bytes": ("GiB", _reference_total),
    "u_max": ("", lambda d: d.u_max),
    "u_min": ("", lambda d: d.u_min),
    "kv_u_max_bytes": ("GiB", _figure("kv_at_u_max", "bytes")),
    "kv_u_max_blocks": ("blocks", _figure("kv_at_u_max", "num_blocks")),
    "kv_u_max_tokens": ("tokens", _figure("kv_at_u_max", "tokens")),
    "max_concurrency": ("x", _figure("kv_at_u_max", "max_concurrency")),
    "physical_kv_bytes": ("GiB", _figure("physical_capacity", "bytes")),
    "physical_kv_blocks": ("blocks", _figure("physical_capacity", "num_blocks")),
    "physical_kv_tokens": ("tokens", _figure("physical_capacity", "tokens")),
    "peak_host_in_use_bytes": ("GiB", _peak_host_in_use),
    "peak_cgroup_usage_bytes": ("GiB", _phase("peak_cgroup_usage")),
    "peak_gpu_used_bytes": ("GiB", _phase("peak_gpu_used")),
    "throughput_tokens_per_s": ("tok/s", _figure("throughput", "tokens_per_s")),
    "bytes_per_block": ("bytes", _figure("kv_at_u_max", "bytes_per_block")),
    "predicted_bytes_per_block": ("bytes", _figure("prediction", "bytes_per_block")),
    "weights_logged_bytes": ("GiB", _figure("memory_breakdown", "weights_bytes")),
    "predicted_weight_bytes": ("GiB", _figure("prediction", "weight_bytes")),
}

# The capacities the blog post compares: KV at the matched serving utilization, then at u_max.
COMPARED = ("kv_reference_bytes", "kv_u_max_bytes", "physical_kv_bytes", "u_max", "throughput_tokens_per_s")
# A KV capacity's ratio and percentage come from its blocks: exact, where its bytes may come from a
# two-decimal log line (schema 1). Matched runs share the settings hash, so the same bytes per block.
BLOCKS_OF = {
    "kv_reference_bytes": "kv_reference_blocks",
    "kv_u_max_bytes": "kv_u_max_blocks",
    "physical_kv_bytes": "physical_kv_blocks",
}
# u_max, and every figure taken at it, is only a lower bound when the search passed at the top of its range.
AT_U_MAX = ("u_max", "kv_u_max_bytes", "kv_u_max_blocks", "kv_u_max_tokens", "max_concurrency")
SEARCH_OF = {"u_max": "u_max", "u_min": "u_min", "physical_kv_bytes": "kv_blocks"}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Comparison(Model):
    """Native minus container for one metric, from the means of the runs."""

    available: bool = Field(description="Both sides have values and neither is a bound; see `not_compared`.")
    not_compared: Literal["missing", "censored"] | None = None
    native_mean: float | None = None
    container_mean: float | None = None
    lost: float | None = Field(None, description="native_mean - container_mean, in the metric's unit.")
    lost_percent: float | None = None
    ratio_native_over_container: float | None = None
    exact: bool = Field(True, description="False where KV bytes came from the engine's rounded GiB log (schema 1).")
    welch: WelchResult | None = Field(None, description="Welch's t-test, or why there is none (its verdict).")


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
    stats: dict[Label, dict[str, Summary]]
    comparison: dict[str, Comparison]
    attribution: dict[Label, MeanAttribution | None]
    attribution_difference: dict[str, float] | None
    findings: list[Finding]
    flags: list[Flag]
    container: ContainerRun | None
    caption: dict[Label, Caption]
    runs: dict[Label, list[dict[str, str | int | float | None]]]


def compare(first: list[ResultDocument], second: list[ResultDocument], metric: str, bounded: bool) -> Comparison:
    """`first` minus `second` for one metric (native and container in the classic report). A KV
    capacity's ratio and percentage come from its blocks, exact where its bytes may not be."""
    native, container = values_of(first, metric), values_of(second, metric)
    a, b = summarise(native), summarise(container)
    if a.mean is None or b.mean is None:
        return Comparison(available=False, not_compared="missing")
    if bounded:
        return Comparison(available=False, not_compared="censored", native_mean=a.mean, container_mean=b.mean)
    blocks = BLOCKS_OF.get(metric)
    exact = blocks is None or all(_kv_bytes_exact(d, metric) for d in [*first, *second])
    ratio_a, ratio_b = (a.mean, b.mean)
    if blocks is not None:
        ratio_a = summarise(values_of(first, blocks)).mean
        ratio_b = summarise(values_of(second, blocks)).mean
    return Comparison(
        available=True,
        native_mean=a.mean,
        container_mean=b.mean,
        lost=a.mean - b.mean,
        lost_percent=100.0 * (ratio_a - ratio_b) / ratio_a if ratio_a else None,
        ratio_native_over_container=ratio_a / ratio_b if ratio_b else None,
        exact=exact,
        welch=welch_t_test(native, container),
    )


def _kv_bytes_exact(doc: ResultDocument, metric: str) -> bool:
    name = {
        "kv_reference_bytes": "reference",
        "kv_u_max_bytes": "kv_at_u_max",
        "physical_kv_bytes": "physical_capacity",
    }
    figure = getattr(doc, name[metric])
    return figure is None or figure.bytes_per_block is not None


def _bounds(group: Group) -> dict[Label, list[str]]:
    return {label: list(AT_U_MAX) if any(d.u_max_censored for d in group.runs[label]) else [] for label in LABELS}


def _flags(group: Group, stats: dict[Label, dict[str, Summary]]) -> list[Flag]:
    flags: list[Flag] = []
    for label in LABELS:
        runs = group.runs[label]
        if len(runs) < FEW_RUNS:
            flags.append(Flag(kind="few_runs", label=label, value=len(runs)))
        for metric in COMPARED:
            summary = stats[label][metric]
            if unstable(summary):
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


def values_of(docs: list[ResultDocument], metric: str) -> list[float]:
    extract = METRICS[metric][1]
    return [v for v in (extract(d) for d in docs) if v is not None]


def analyse_group(group: Group) -> ModelComparison:
    bounds = _bounds(group)
    stats = {label: {name: summarise(values_of(group.runs[label], name)) for name in METRICS} for label in LABELS}
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
        bounds=bounds,
        stats=stats,
        comparison={
            name: compare(
                group.runs["native"], group.runs["container"], name, any(name in bounds[side] for side in LABELS)
            )
            for name in COMPARED
        },
        attribution=attribution,
        attribution_difference=where,
        findings=_findings(stats, attribution, bounds),
        flags=_flags(group, stats),
        container=group.runs["container"][0].options.container,
        caption={label: _caption(group.runs[label]) for label in LABELS},
        runs={label: [_run_row(d) for d in group.runs[label]] for label in LABELS},
    )
