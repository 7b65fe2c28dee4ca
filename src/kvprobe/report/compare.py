"""The one comparison model of the report: a reference and what changed, metric by metric.

As pyperf's `CompareResult(ref, changed)`: every comparison in a report is a condition's runs held
against a reference's. Native against container is a two-condition experiment with native as the
reference; an experiment holds each of its conditions against its baseline. `compare` is the only
place that decides whether two sets of runs can be compared, and how.

Figures at u_max are lower bounds in runs whose u_max search passed at the top of its range; those
runs are left out of a comparison (and counted), the runs with an exact u_max on both sides are
compared, and an exact u_max set by kvprobe's guard is never compared with one set by the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kvprobe.report.stats import SIGNIFICANT_P, Summary, WelchResult, summarise, welch_t_test
from kvprobe.results.schema import BoundaryKind, ResultDocument

Unit = Literal["GiB", "tokens", "blocks", "bytes", "fraction", "requests", "tok/s", "percent"]
"""How a metric is shown. "GiB" metrics are stored in bytes and shown in GiB."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _phase(field: str) -> Callable[[ResultDocument], float | None]:
    return lambda doc: None if doc.memory_phases is None else getattr(doc.memory_phases, field)


def _host_in_use(field: str) -> Callable[[ResultDocument], float | None]:
    """MemTotal less the lowest of one host-memory reading seen during the u_max start."""

    def extract(doc: ResultDocument) -> float | None:
        lowest = None if doc.memory_phases is None else getattr(doc.memory_phases, field)
        return None if lowest is None else doc.environment.host_memory["MemTotal"] - lowest

    return extract


def _figure(name: str, field: str) -> Callable[[ResultDocument], float | None]:
    def extract(doc: ResultDocument) -> float | None:
        figure = getattr(doc, name)
        return None if figure is None else getattr(figure, field)

    return extract


def engine_total(doc: ResultDocument) -> float | None:
    """The memory total the engine multiplied gpu_memory_utilization by at the reference start (its log)."""
    if doc.reference is None:
        return None
    trial = next((t for t in doc.trials if t.number == doc.reference.trial), None)
    return None if trial is None else trial.memory_report.budget_total_bytes


def _physical_failing(doc: ResultDocument) -> float | None:
    """The smallest KV budget (blocks) that failed above the physical capacity: the bracket's top."""
    search = doc.searches.get("kv_blocks")
    return None if search is None or search.censored or doc.physical_capacity is None else search.failing


def _physical_gap(doc: ResultDocument) -> float | None:
    failing, passing = _physical_failing(doc), _figure("physical_capacity", "num_blocks")(doc)
    return None if failing is None or not passing else 100.0 * (failing - passing) / passing


# name -> (unit, extractor), in the order reports and runs.csv show them.
METRICS: dict[str, tuple[Unit, Callable[[ResultDocument], float | None]]] = {
    "kv_reference_bytes": ("GiB", _figure("reference", "bytes")),
    "kv_reference_blocks": ("blocks", _figure("reference", "num_blocks")),
    "kv_reference_tokens": ("tokens", _figure("reference", "tokens")),
    "reference_engine_total_bytes": ("GiB", engine_total),
    "u_max": ("fraction", lambda d: d.u_max),
    "u_min": ("fraction", lambda d: d.u_min),
    "kv_u_max_bytes": ("GiB", _figure("kv_at_u_max", "bytes")),
    "kv_u_max_blocks": ("blocks", _figure("kv_at_u_max", "num_blocks")),
    "kv_u_max_tokens": ("tokens", _figure("kv_at_u_max", "tokens")),
    "max_concurrency": ("requests", _figure("kv_at_u_max", "max_concurrency")),
    "physical_kv_bytes": ("GiB", _figure("physical_capacity", "bytes")),
    "physical_kv_blocks": ("blocks", _figure("physical_capacity", "num_blocks")),
    "physical_kv_tokens": ("tokens", _figure("physical_capacity", "tokens")),
    "physical_kv_failing_blocks": ("blocks", _physical_failing),
    "physical_kv_gap_percent": ("percent", _physical_gap),
    "peak_host_in_use_bytes": ("GiB", _host_in_use("lowest_host_released")),
    "peak_host_in_use_by_available_bytes": ("GiB", _host_in_use("lowest_host_available")),
    "peak_cgroup_usage_bytes": ("GiB", _phase("peak_cgroup_usage")),
    "peak_gpu_used_bytes": ("GiB", _phase("peak_gpu_used")),
    "throughput_tokens_per_s": ("tok/s", _figure("throughput", "tokens_per_s")),
    "bytes_per_block": ("bytes", _figure("kv_at_u_max", "bytes_per_block")),
    "predicted_bytes_per_block": ("bytes", _figure("prediction", "bytes_per_block")),
    "weights_logged_bytes": ("GiB", _figure("memory_breakdown", "weights_bytes")),
    "predicted_weight_bytes": ("GiB", _figure("prediction", "weight_bytes")),
}
UNITS: dict[str, Unit] = {name: unit for name, (unit, _) in METRICS.items()}

# A KV capacity's ratio and percentage come from its blocks: exact, where its bytes may come from a
# two-decimal log line (schema 1). Compared runs share the settings hash, so the same bytes per block.
BLOCKS_OF = {
    "kv_reference_bytes": "kv_reference_blocks",
    "kv_u_max_bytes": "kv_u_max_blocks",
    "physical_kv_bytes": "physical_kv_blocks",
}
_FIGURE_OF = {
    "kv_reference_bytes": "reference",
    "kv_u_max_bytes": "kv_at_u_max",
    "physical_kv_bytes": "physical_capacity",
}
# u_max, and every figure taken at it, is only a lower bound when the search passed at the top of its range.
AT_U_MAX = ("u_max", "kv_u_max_bytes", "kv_u_max_blocks", "kv_u_max_tokens", "max_concurrency")


def values_of(docs: list[ResultDocument], metric: str) -> list[float]:
    extract = METRICS[metric][1]
    return [v for v in (extract(d) for d in docs) if v is not None]


def bounds(runs: list[ResultDocument]) -> list[str]:
    """The metrics that are only lower bounds in these runs' means (a u_max at the top of its range)."""
    return list(AT_U_MAX) if any(d.u_max_censored for d in runs) else []


def boundary_kinds(runs: list[ResultDocument]) -> list[BoundaryKind]:
    """What set u_max in these runs, each kind once, in a fixed order."""
    return sorted({d.u_max_boundary for d in runs if d.u_max_boundary is not None})


def summarise_metrics(runs: list[ResultDocument]) -> dict[str, Summary]:
    return {name: summarise(values_of(runs, name)) for name in METRICS}


Evidence = Literal[
    "changed", "no_change", "not_significant", "too_few", "below_bound", "bound", "unlike_boundaries", "missing"
]
"""changed: Welch's p < 0.05, or both sides constant and different. below_bound: the reference is only
a lower bound and every run of the changed side lies below all of it (lowered by at least that much).
bound: a side has only lower bounds. unlike_boundaries: u_max was set by different things on the two
sides (e.g. kvprobe's guard against the engine's own refusal): not the same quantity. missing: a side
has no value."""
COMPARED_EVIDENCE: tuple[Evidence, ...] = ("changed", "no_change", "not_significant", "too_few")


class Comparison(Model):
    """What changed against the reference, for one metric: changed minus reference, from the means."""

    evidence: Evidence
    reference_mean: float | None = None
    changed_mean: float | None = None
    reference_n: int = Field(0, description="Runs of the reference compared (lower bounds left out).")
    changed_n: int = 0
    left_out: int = Field(0, description="Runs left out on both sides: their u_max was only a lower bound.")
    reference_boundary: list[BoundaryKind] = Field(default_factory=list, description="What set u_max there.")
    changed_boundary: list[BoundaryKind] = Field(default_factory=list)
    change: float | None = Field(None, description="changed_mean - reference_mean, in the metric's unit.")
    change_percent: float | None = Field(None, description="Of the reference; from blocks for KV capacities.")
    ratio: float | None = Field(None, description="changed / reference; from blocks for KV capacities.")
    exact: bool = Field(True, description="False where KV bytes came from the engine's rounded GiB log (schema 1).")
    welch: WelchResult | None = Field(None, description="Welch's t-test of changed - reference, with its interval.")

    @property
    def compared(self) -> bool:
        return self.evidence in COMPARED_EVIDENCE


def _kv_bytes_exact(doc: ResultDocument, metric: str) -> bool:
    figure = getattr(doc, _FIGURE_OF[metric])
    return figure is None or figure.bytes_per_block is not None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _evidence(welch: WelchResult, change: float) -> Evidence:
    if welch.verdict == "too_few":
        return "too_few"
    if welch.verdict == "identical":
        return "no_change"
    if welch.verdict == "no_variance":  # each side repeated its own value: a difference is exact
        return "changed" if change else "no_change"
    return "changed" if (welch.p_value or 1.0) < SIGNIFICANT_P else "not_significant"


def _relative(reference: list[ResultDocument], changed: list[ResultDocument], metric: str) -> tuple[float, float]:
    """The two means a percentage and ratio are taken from: blocks for a KV capacity, else the metric."""
    name = BLOCKS_OF.get(metric, metric)
    return _mean(values_of(reference, name)) or 0.0, _mean(values_of(changed, name)) or 0.0


def compare(reference: list[ResultDocument], changed: list[ResultDocument], metric: str) -> Comparison:
    """`changed` held against `reference` for one metric."""
    all_reference, all_changed = values_of(reference, metric), values_of(changed, metric)
    if not all_reference or not all_changed:
        return Comparison(evidence="missing", reference_mean=_mean(all_reference), changed_mean=_mean(all_changed))
    at_u_max = metric in AT_U_MAX
    ref_runs = [d for d in reference if not (at_u_max and d.u_max_censored)]
    new_runs = [d for d in changed if not (at_u_max and d.u_max_censored)]
    ref_values, new_values = values_of(ref_runs, metric), values_of(new_runs, metric)
    sides = {
        "reference_n": len(ref_values),
        "changed_n": len(new_values),
        "left_out": len(reference) + len(changed) - len(ref_runs) - len(new_runs),
        "reference_boundary": boundary_kinds(reference) if at_u_max else [],
        "changed_boundary": boundary_kinds(changed) if at_u_max else [],
    }
    if not ref_values and new_values and max(all_changed) < min(all_reference):
        change = _mean(all_changed) - _mean(all_reference)  # type: ignore[operator]
        return Comparison(
            evidence="below_bound",
            reference_mean=_mean(all_reference),
            changed_mean=_mean(all_changed),
            change=change,
            change_percent=100.0 * change / _mean(all_reference),  # type: ignore[operator]
            **sides,
        )
    if not ref_values or not new_values:
        return Comparison(
            evidence="bound", reference_mean=_mean(all_reference), changed_mean=_mean(all_changed), **sides
        )
    reference_mean, changed_mean = _mean(ref_values), _mean(new_values)
    if at_u_max and boundary_kinds(ref_runs) != boundary_kinds(new_runs):
        return Comparison(
            evidence="unlike_boundaries", reference_mean=reference_mean, changed_mean=changed_mean, **sides
        )
    base, other = _relative(ref_runs, new_runs, metric)
    welch = welch_t_test(new_values, ref_values)
    change = changed_mean - reference_mean  # type: ignore[operator]
    return Comparison(
        evidence=_evidence(welch, change),
        reference_mean=reference_mean,
        changed_mean=changed_mean,
        change=change,
        change_percent=100.0 * (other - base) / base if base else None,
        ratio=other / base if base else None,
        exact=metric not in BLOCKS_OF or all(_kv_bytes_exact(d, metric) for d in [*ref_runs, *new_runs]),
        welch=welch,
        **sides,
    )
