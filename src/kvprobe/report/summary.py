"""The report's numbers as one model: native against container per model, every experiment's
conditions against their baseline, and multi-node runs node by node. `summary.json` is this model as JSON."""

from __future__ import annotations

from pydantic import Field

from kvprobe.report.analysis import METRICS, Model, ModelComparison, Unit, analyse_group
from kvprobe.report.cluster import ClusterRun, cluster_runs
from kvprobe.report.conditions import ExperimentModel, analyse_experiments
from kvprobe.report.pairing import group_results
from kvprobe.results.schema import ResultDocument


class ReportSummary(Model):
    models: list[ModelComparison]
    experiments: list[ExperimentModel] = Field(default_factory=list, description="Conditions against baselines.")
    clusters: list[ClusterRun] = Field(default_factory=list, description="Multi-node runs, node by node.")
    unmatched: list[str]
    metrics: dict[str, Unit]
    documents: int


def build_report(documents: list[ResultDocument], problems: list[str] | None = None) -> ReportSummary:
    """The report's numbers. `problems` are files that could not be read; they are listed as unmatched."""
    groups, unmatched = group_results(documents)
    return ReportSummary(
        models=[analyse_group(g) for g in groups if g.matched],
        unmatched=list(problems or []) + unmatched,
        metrics={name: unit for name, (unit, _) in METRICS.items()},
        documents=len(documents),
        experiments=analyse_experiments(documents),
        clusters=cluster_runs(documents),
    )
