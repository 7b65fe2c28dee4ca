"""From an experiment's results to "why": every condition against the baseline, per model.

For each condition: n, mean, sd and 95% CI of the KV cache at the serving utilization, u_max and
the KV cache at u_max; the change against the baseline with Welch's test; the attribution parts
that moved (the "why" column); what the condition measurably did (the rise in Cached, the
helper's RSS). Each condition is then held against the loss of the condition it `explains`:
the share of that loss it reproduces. Numbers only; `report.layout` writes the words.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from pydantic import Field

from kvprobe.report.analysis import (
    AT_U_MAX,
    Comparison,
    MeanAttribution,
    Model,
    compare,
    mean_attribution,
    summarise,
    values_of,
)
from kvprobe.report.stats import Summary
from kvprobe.results.schema import Condition, ResultDocument
from kvprobe.units import MIB

CONDITION_METRICS = ("kv_reference_bytes", "reference_engine_total_bytes", "u_max", "kv_u_max_bytes")
MOVED_PART_BYTES = 64 * MIB  # attribution parts that moved less than this are not named as a cause
SIGNIFICANT_P = 0.05


def condition_stem(index: int) -> str:
    """The file name of the n-th experiment model's KV chart (names from users never name files)."""
    return f"conditions_{index}_kv_cache"


def attribution_stem(index: int) -> str:
    return f"conditions_{index}_memory"


Evidence = Literal["changed", "below_bound", "no_change", "not_significant", "too_few", "bound", "missing"]
"""below_bound: the baseline is only a lower bound (u_max at the top of its range) and every run of the
condition lies below all of it: the condition lowered the metric by at least the (negative) change."""


class Change(Model):
    """A condition's mean minus the baseline's for one metric, and whether the data show a change."""

    baseline_mean: float | None
    condition_mean: float | None
    change: float | None = Field(description="condition - baseline, in the metric's unit.")
    change_percent: float | None = Field(description="From blocks for KV capacities (exact).")
    p_value: float | None
    evidence: Evidence


class PerturbationMeasured(Model):
    """What the condition did, averaged over its trials (None where it did not do that)."""

    page_cache_rise_bytes: float | None = None
    helper_rss_bytes: float | None = None
    cgroup_limit_bytes: int | None = None
    caches_dropped: bool = False


class ConditionResult(Model):
    name: str
    condition: Condition | None
    n: int
    stats: dict[str, Summary]
    bounds: list[str] = Field(description="Metrics that are only lower bounds (u_max at the top of its range).")
    attribution: MeanAttribution | None
    measured: PerturbationMeasured


class ConditionVerdict(Model):
    """One condition against the baseline, and against the loss it may explain."""

    name: str
    changes: dict[str, Change]
    moved_parts: dict[str, float] = Field(description="Attribution part -> condition minus baseline, largest first.")
    share_of_loss: dict[str, float | None] = Field(
        description="The change as a share of the explained condition's change (1.0: reproduces all of it)."
    )


class ExperimentModel(Model):
    """One experiment, one model: its conditions and their verdicts."""

    experiment: str
    model: str
    baseline: str
    explains: str | None
    conditions: list[ConditionResult]
    verdicts: list[ConditionVerdict]
    missing_baseline: bool


def _evidence(comparison: Comparison) -> tuple[Evidence, float | None]:
    if comparison.not_compared is not None:
        return ("bound" if comparison.not_compared == "censored" else "missing"), None
    welch = comparison.welch
    if welch is None or welch.verdict == "too_few":
        return "too_few", None
    if welch.verdict == "identical":
        return "no_change", None
    if welch.verdict == "no_variance":  # each side repeated its own value: a difference is exact
        return ("changed" if comparison.lost else "no_change"), None
    return ("changed" if welch.p_value < SIGNIFICANT_P else "not_significant"), welch.p_value


def _below_a_bound(baseline: list[ResultDocument], runs: list[ResultDocument], metric: str) -> Change | None:
    """A condition whose every value lies under a baseline that is only a lower bound: the change is an
    upper bound (at most this much, i.e. lowered by at least its size); no test statistic applies."""
    base, mine = values_of(baseline, metric), values_of(runs, metric)
    if not base or not mine or max(mine) >= min(base):
        return None
    base_mean, mean = sum(base) / len(base), sum(mine) / len(mine)
    return Change(
        baseline_mean=base_mean,
        condition_mean=mean,
        change=mean - base_mean,
        change_percent=100.0 * (mean / base_mean - 1.0),
        p_value=None,
        evidence="below_bound",
    )


def _change(baseline: list[ResultDocument], runs: list[ResultDocument], metric: str) -> Change:
    base_bound, own_bound = metric in _bounds(baseline), metric in _bounds(runs)
    if base_bound and not own_bound:
        below = _below_a_bound(baseline, runs, metric)
        if below is not None:
            return below
    comparison = compare(runs, baseline, metric, base_bound or own_bound)  # condition minus baseline
    evidence, p_value = _evidence(comparison)
    return Change(
        baseline_mean=comparison.container_mean,
        condition_mean=comparison.native_mean,
        change=comparison.lost,
        change_percent=None
        if comparison.lost_percent is None or not comparison.ratio_native_over_container
        else 100.0 * (comparison.ratio_native_over_container - 1.0),
        p_value=p_value,
        evidence=evidence,
    )


def _measured(runs: list[ResultDocument]) -> PerturbationMeasured:
    done = [t.perturbation for d in runs for t in d.trials if t.perturbation is not None]

    def mean(field: str) -> float | None:
        values = [getattr(p, field) for p in done if getattr(p, field) is not None]
        return sum(values) / len(values) if values else None

    limits = [p.cgroup_limit_bytes for p in done if p.cgroup_limit_bytes]
    return PerturbationMeasured(
        page_cache_rise_bytes=mean("page_cache_rise_bytes"),
        helper_rss_bytes=mean("helper_rss_bytes"),
        cgroup_limit_bytes=limits[0] if limits else None,
        caches_dropped=any(p.caches_dropped for p in done),
    )


def _bounds(runs: list[ResultDocument]) -> list[str]:
    return [m for m in CONDITION_METRICS if m in AT_U_MAX] if any(d.u_max_censored for d in runs) else []


def _condition_result(name: str, runs: list[ResultDocument]) -> ConditionResult:
    return ConditionResult(
        name=name,
        condition=runs[0].environment.condition if runs else None,
        n=len(runs),
        stats={m: summarise(values_of(runs, m)) for m in CONDITION_METRICS},
        bounds=_bounds(runs),
        attribution=mean_attribution(runs),
        measured=_measured(runs),
    )


def _moved(baseline: MeanAttribution | None, other: MeanAttribution | None) -> dict[str, float]:
    if baseline is None or other is None:
        return {}
    moved = {part: other.parts.get(part, 0.0) - baseline.parts.get(part, 0.0) for part in other.parts}
    moved["unexplained"] = other.unexplained_bytes - baseline.unexplained_bytes
    large = {part: change for part, change in moved.items() if abs(change) >= MOVED_PART_BYTES}
    return dict(sorted(large.items(), key=lambda item: -abs(item[1])))


def _share(change: Change, loss: Change | None) -> float | None:
    """The change as a share of the explained condition's; only where both are shown by the data."""
    if loss is None or change.evidence not in ("changed", "no_change") or loss.evidence != "changed":
        return None
    return (change.change or 0.0) / loss.change if loss.change else None


def _experiment_model(name: str, model: str, baseline: str, explains: str | None, runs: dict) -> ExperimentModel:
    named = next((d.experiment.conditions for docs in runs.values() for d in docs if d.experiment.conditions), [])
    order = [baseline, *(c for c in [*named, *sorted(runs)] if c != baseline)]
    order = list(dict.fromkeys(c for c in order if runs.get(c) or c == baseline))
    results = [_condition_result(c, runs.get(c, [])) for c in order]
    base_runs = runs.get(baseline, [])
    changes_of = {c: {m: _change(base_runs, runs[c], m) for m in CONDITION_METRICS} for c in order[1:]}
    loss = changes_of.get(explains) if explains else None
    verdicts = [
        ConditionVerdict(
            name=c,
            changes=changes_of[c],
            moved_parts=_moved(results[0].attribution, result.attribution),
            share_of_loss={m: _share(changes_of[c][m], loss[m] if loss else None) for m in CONDITION_METRICS}
            if c != explains
            else {},
        )
        for c, result in zip(order[1:], results[1:], strict=True)
    ]
    return ExperimentModel(
        experiment=name,
        model=model,
        baseline=baseline,
        explains=explains,
        conditions=results,
        verdicts=verdicts,
        missing_baseline=not base_runs,
    )


def analyse_experiments(documents: list[ResultDocument]) -> list[ExperimentModel]:
    """Every experiment's models, from complete results that name an experiment (any directory)."""
    grouped: dict[tuple, dict[str, list[ResultDocument]]] = defaultdict(lambda: defaultdict(list))
    for doc in documents:
        if doc.experiment is not None and doc.status == "complete":
            key = (doc.experiment.name, doc.model, doc.experiment.baseline, doc.experiment.explains)
            grouped[key][doc.condition].append(doc)
    return [_experiment_model(*key, runs) for key, runs in sorted(grouped.items(), key=lambda item: item[0][:2])]
