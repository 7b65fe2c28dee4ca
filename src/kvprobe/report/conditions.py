"""From an experiment's results to "why": every condition against the baseline, per model.

For each condition: n, mean, sd and 95% CI of the KV cache at the serving utilization, u_max and
the KV cache at u_max; the change against the baseline with Welch's test; the attribution parts
that moved (the "why" column); what the condition measurably did (the rise in Cached, the
helper's RSS). Each condition is then held against the loss of the condition it `explains`:
the share of that loss it reproduces. An isolation ladder (`ladder: true`) is also read step by
step: each rung against the rung before it, and the step that costs the KV. Numbers only;
`report.layout` writes the words.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from fractions import Fraction
from itertools import pairwise
from typing import Literal

from pydantic import Field

from kvprobe.report.analysis import MeanAttribution, mean_attribution
from kvprobe.report.compare import Comparison, Model, boundary_kinds, bounds, compare, engine_total, summarise_metrics
from kvprobe.report.sizing import SizingDecomposition, decompose_runs
from kvprobe.report.stats import Summary, linear_trend
from kvprobe.results.schema import BoundaryKind, Condition, ExperimentProgress, ResultDocument
from kvprobe.units import GIB, MIB

CONDITION_METRICS = ("kv_reference_bytes", "reference_engine_total_bytes", "u_max", "kv_u_max_bytes")
MOVED_PART_BYTES = 64 * MIB  # attribution parts that moved less than this are not named as a cause
# Two engine memory totals closer than this are the same total: vLLM logs it to 0.01 GiB.
SAME_TOTAL_BYTES = GIB // 100


def condition_stem(index: int) -> str:
    """The file name of the n-th experiment model's KV chart (names from users never name files)."""
    return f"conditions_{index}_kv_cache"


def attribution_stem(index: int) -> str:
    return f"conditions_{index}_memory"


def ladder_stem(index: int) -> str:
    return f"conditions_{index}_ladder"


class PerturbationMeasured(Model):
    """What the condition did, averaged over its trials (None where it did not do that)."""

    page_cache_rise_bytes: float | None = None
    helper_rss_bytes: float | None = None
    cgroup_limit_bytes: int | None = None
    caches_dropped: bool = False


class RepeatTrend(Model):
    """A condition's KV at gpu_memory_utilization against its repeat number (report.stats.linear_trend)."""

    n: int
    slope_bytes_per_repeat: float
    ci95_bytes: tuple[float, float] | None = Field(None, description="None below three repeats.")
    p_value: float | None = None


class OddCell(Model):
    """A run whose engine multiplied another memory total than the experiment's other runs (its log)."""

    condition: str
    repeat: int
    engine_total_bytes: float
    usual_total_bytes: float = Field(description="The usual total: its condition's, else the experiment's.")


class ConditionResult(Model):
    name: str
    condition: Condition | None
    n: int
    stats: dict[str, Summary]
    bounds: list[str] = Field(description="Metrics that are only lower bounds (u_max at the top of its range).")
    boundary: list[BoundaryKind] = Field(description="What set u_max in this condition's runs.")
    attribution: MeanAttribution | None
    measured: PerturbationMeasured
    trend: RepeatTrend | None = Field(None, description="KV at gpu_memory_utilization against the repeat number.")


class ConditionVerdict(Model):
    """One condition against the baseline, and against the loss it may explain."""

    name: str
    changes: dict[str, Comparison] = Field(description="Metric -> this condition against the baseline.")
    moved_parts: dict[str, float] = Field(description="Attribution part -> condition minus baseline, largest first.")
    share_of_loss: dict[str, float | None] = Field(
        description="The change as a share of the explained condition's change (1.0: reproduces all of it)."
    )
    sizing: SizingDecomposition | None = Field(
        None, description="The reference KV difference split by the engine's sizing equation (report.sizing)."
    )


class LadderStep(Model):
    """One rung of an isolation ladder against the measured rung before it."""

    name: str
    previous: str = Field(description="The rung compared with: the one before, or the last one measured before it.")
    changes: dict[str, Comparison] = Field(description="Metric -> this rung against the previous one.")
    moved_parts: dict[str, float] = Field(
        description="Attribution part -> this rung minus the previous, largest first."
    )
    sizing: SizingDecomposition | None = Field(
        None, description="The reference KV step split by the engine's sizing equation: which input the step moved."
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
    order: Literal["interleaved", "blocked"] = "interleaved"
    ladder: list[LadderStep] = Field(
        default_factory=list, description="A ladder experiment's steps, in order; empty for any other experiment."
    )
    unmeasured: list[str] = Field(
        default_factory=list, description="Conditions the experiment names that have no complete run here."
    )
    missing_cells: list[str] = Field(
        default_factory=list,
        description="Cells of this experiment run that wrote no result, and why (experiment.json).",
    )
    odd_cells: list[OddCell] = Field(
        default_factory=list, description="Runs whose engine multiplied another memory total than the rest."
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


def _repeat_trend(runs: list[ResultDocument]) -> RepeatTrend | None:
    ordered = sorted(runs, key=lambda d: d.repeat)
    kv = [Fraction(d.reference.bytes) for d in ordered if d.reference is not None and d.reference.bytes is not None]
    if len(kv) < 2:
        return None
    fit = linear_trend(kv)
    return RepeatTrend(n=fit.n, slope_bytes_per_repeat=float(fit.slope), ci95_bytes=fit.ci95, p_value=fit.p_value)


def _usual_total(totals: list[float]) -> float | None:
    """The total at least two of these runs logged, the most common one (None: no two agree)."""
    counted = Counter(round(t / SAME_TOTAL_BYTES) for t in totals).most_common(1)
    return counted[0][0] * SAME_TOTAL_BYTES if counted and counted[0][1] >= 2 else None


def odd_cells(runs: dict[str, list[ResultDocument]]) -> list[OddCell]:
    """Runs whose engine memory total (what gpu_memory_utilization multiplied) differs from the usual
    one: their condition's, or where no two of its runs agree, the whole experiment's (a VM's balloon,
    a limit that came and went). Their KV is not comparable with the rest's."""
    totals = {c: [(d, t) for d in docs if (t := engine_total(d)) is not None] for c, docs in runs.items()}
    everywhere = _usual_total([t for found in totals.values() for _, t in found])
    cells = []
    for condition, found in totals.items():
        usual = _usual_total([t for _, t in found]) or everywhere
        if usual is None:
            continue
        cells += [
            OddCell(condition=condition, repeat=d.repeat, engine_total_bytes=t, usual_total_bytes=usual)
            for d, t in found
            if abs(t - usual) > SAME_TOTAL_BYTES
        ]
    return cells


def _condition_result(name: str, runs: list[ResultDocument]) -> ConditionResult:
    return ConditionResult(
        name=name,
        condition=runs[0].environment.condition if runs else None,
        n=len(runs),
        stats={m: summary for m, summary in summarise_metrics(runs).items() if m in CONDITION_METRICS},
        bounds=[m for m in bounds(runs) if m in CONDITION_METRICS],
        boundary=boundary_kinds(runs),
        attribution=mean_attribution(runs),
        measured=_measured(runs),
        trend=_repeat_trend(runs),
    )


def _moved(baseline: MeanAttribution | None, other: MeanAttribution | None) -> dict[str, float]:
    if baseline is None or other is None:
        return {}
    moved = {part: other.parts.get(part, 0.0) - baseline.parts.get(part, 0.0) for part in other.parts}
    moved["unexplained"] = other.unexplained_bytes - baseline.unexplained_bytes
    large = {part: change for part, change in moved.items() if abs(change) >= MOVED_PART_BYTES}
    return dict(sorted(large.items(), key=lambda item: -abs(item[1])))


def _share(change: Comparison, loss: Comparison | None) -> float | None:
    """The change as a share of the explained condition's; only where both are shown by the data."""
    if loss is None or change.evidence not in ("changed", "no_change") or loss.evidence != "changed":
        return None
    return (change.change or 0.0) / loss.change if loss.change else None


def _ladder_steps(order: list[str], results: list[ConditionResult], runs: dict[str, list[ResultDocument]]):
    """Each measured rung against the measured rung before it (`order` holds measured rungs only)."""
    return [
        LadderStep(
            name=rung,
            previous=previous,
            changes={m: compare(runs[previous], runs[rung], m) for m in CONDITION_METRICS},
            moved_parts=_moved(before.attribution, after.attribution),
            sizing=decompose_runs(runs[previous], runs[rung]),
        )
        for (previous, before), (rung, after) in pairwise(zip(order, results, strict=True))
    ]


def costliest_step(model: ExperimentModel) -> tuple[LadderStep, str, Comparison] | None:
    """The ladder step that lowers the KV most, among the decreases its runs show (None: no step does)."""
    shown = [
        (step, metric, step.changes[metric])
        for step in model.ladder
        for metric in ("kv_reference_bytes", "kv_u_max_bytes")
        if step.changes[metric].evidence in ("changed", "below_bound") and (step.changes[metric].change or 0.0) < 0
    ]
    return min(shown, key=lambda item: item[2].change_percent or 0.0, default=None)


def _experiment_model(
    name: str, model: str, baseline: str, explains: str | None, runs: dict[str, list[ResultDocument]]
) -> ExperimentModel:
    info = next((d.experiment for docs in runs.values() for d in docs if d.experiment), None)
    named = info.conditions if info and info.conditions else []
    order = [baseline, *(c for c in [*named, *sorted(runs)] if c != baseline)]
    order = list(dict.fromkeys(c for c in order if runs.get(c) or c == baseline))
    results = [_condition_result(c, runs.get(c, [])) for c in order]
    base_runs = runs.get(baseline, [])
    changes_of = {c: {m: compare(base_runs, runs[c], m) for m in CONDITION_METRICS} for c in order[1:]}
    loss = changes_of.get(explains) if explains else None
    verdicts = [
        ConditionVerdict(
            name=c,
            changes=changes_of[c],
            moved_parts=_moved(results[0].attribution, result.attribution),
            share_of_loss={m: _share(changes_of[c][m], loss[m] if loss else None) for m in CONDITION_METRICS}
            if c != explains
            else {},
            sizing=decompose_runs(base_runs, runs[c]),
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
        order=info.order if info else "interleaved",
        ladder=_ladder_steps(order, results, runs) if info and info.ladder and base_runs else [],
        unmeasured=[c for c in named if not runs.get(c)],
        odd_cells=odd_cells(runs),
    )


def missing_cells(runs: dict[str, list[ResultDocument]], progress: Sequence[ExperimentProgress]) -> list[str]:
    """The cells of these runs' experiment runs that wrote no result (their manifests say why), and a
    line for a run that has not finished (the cells it has not reached are not known here)."""
    run_ids = {d.experiment.run_id for docs in runs.values() for d in docs if d.experiment and d.experiment.run_id}
    lines = []
    for manifest in progress:
        if manifest.run_id not in run_ids:
            continue
        lines += [f"{cell}: {why}" for cell, why in sorted(manifest.unfinished.items())]
        if manifest.status == "running":
            lines.append(
                f"experiment run {manifest.run_id} has not finished (interrupted or still running): the cells "
                f"it has not reached are not listed; {len(manifest.done)} finished"
            )
    return lines


def analyse_experiments(
    documents: list[ResultDocument], progress: Sequence[ExperimentProgress] = ()
) -> list[ExperimentModel]:
    """Every experiment's models, from complete results that name an experiment (any directory), with the
    cells their manifests (`progress`) say wrote no result."""
    grouped: dict[tuple[str, str, str, str | None], dict[str, list[ResultDocument]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for doc in documents:
        if doc.experiment is not None and doc.status == "complete":
            key = (doc.experiment.name, doc.model, doc.experiment.baseline, doc.experiment.explains)
            grouped[key][doc.condition].append(doc)
    return [
        _experiment_model(*key, runs).model_copy(update={"missing_cells": missing_cells(runs, progress)})
        for key, runs in sorted(grouped.items(), key=lambda item: item[0][:2])
    ]
