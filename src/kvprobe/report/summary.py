"""The report's numbers as one model: the container against native per model, every experiment's
conditions against their baseline, multi-node runs node by node, and every run's own figures.
`summary.json` is this model as JSON; `runs.csv` is its `runs`."""

from __future__ import annotations

from pydantic import Field

from kvprobe.report.analysis import ModelComparison, SingleSide, analyse_group, analyse_single
from kvprobe.report.cluster import ClusterRun, cluster_runs
from kvprobe.report.compare import AT_U_MAX, METRICS, Model, Unit
from kvprobe.report.conditions import ExperimentModel, analyse_experiments
from kvprobe.report.pairing import group_results
from kvprobe.results.schema import ExperimentProgress, ResultDocument

Cell = str | int | float | bool | None


class ReportSummary(Model):
    models: list[ModelComparison]
    single: list[SingleSide] = Field(
        default_factory=list, description="Runs with no counterpart to compare with: their own figures."
    )
    experiments: list[ExperimentModel] = Field(default_factory=list, description="Conditions against baselines.")
    clusters: list[ClusterRun] = Field(default_factory=list, description="Multi-node runs, node by node.")
    unmatched: list[str]
    metrics: dict[str, Unit] = Field(description="Each metric's unit ('GiB' metrics are stored in bytes).")
    documents: int
    runs: list[dict[str, Cell]] = Field(
        default_factory=list, description="One row per result read, every condition and label: runs.csv."
    )


def run_row(doc: ResultDocument) -> dict[str, Cell]:
    """One run's own figures, with what bounds them: u_max_lower_bound marks every AT_U_MAX column."""
    row: dict[str, Cell] = {
        "model": doc.model,
        "condition": doc.condition,
        "label": doc.label,
        "experiment": doc.experiment.name if doc.experiment else None,
        "run_id": doc.run_id,
        "repeat": doc.repeat,
        "status": doc.status,
        "settings_hash": doc.settings_hash,
        "device": doc.device,
        "engine_starts": doc.engine_starts,
        "u_max_lower_bound": doc.u_max_censored,
        "u_max_boundary": doc.u_max_boundary,
        "enforce_eager": doc.settings.get("enforce_eager"),
        "container_command": " ".join(doc.options.container.command) if doc.options.container else None,
        "kv_bytes_exact": all(f is None or f.bytes_per_block is not None for f in (doc.reference, doc.kv_at_u_max)),
    }
    for name, (_, extract) in METRICS.items():
        row[name] = extract(doc)
    return row


LOWER_BOUND_COLUMNS = AT_U_MAX  # the columns u_max_lower_bound qualifies


def build_report(
    documents: list[ResultDocument], problems: list[str] | None = None, progress: list[ExperimentProgress] | None = None
) -> ReportSummary:
    """The report's numbers. `problems` are files that could not be read; they are listed as unmatched.
    `progress`: the experiment manifests of the directories, for the cells that wrote no result."""
    groups, unmatched = group_results(documents)
    ordered = sorted(documents, key=lambda d: (d.model, d.condition, d.repeat, d.run_id))
    return ReportSummary(
        models=[analyse_group(g) for g in groups if g.matched],
        single=[side for g in groups if not g.matched for side in analyse_single(g)],
        unmatched=list(problems or []) + unmatched,
        metrics={name: unit for name, (unit, _) in METRICS.items()},
        documents=len(documents),
        experiments=analyse_experiments(documents, progress or []),
        clusters=cluster_runs(documents),
        runs=[run_row(d) for d in ordered],
    )
