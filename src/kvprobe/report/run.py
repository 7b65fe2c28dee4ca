"""`kvprobe report`: read results directories, build the report's numbers, write the chosen formats."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from kvprobe.errors import InputError
from kvprobe.report.external import external_from_files
from kvprobe.report.summary import ReportSummary, build_report
from kvprobe.report.writers import FORMATS, ReportOptions, write_report
from kvprobe.results.schema import ExperimentProgress, ResultDocument
from kvprobe.results.store import ResultStore, distinct_results


@dataclass
class WrittenReport:
    summary: ReportSummary
    target: Path
    written: list[Path]
    unreadable: list[str]
    counted_once: list[str]  # a result named twice (or copied) is counted once: what was left out


def chosen_formats(formats: str) -> list[str]:
    """`--format`'s comma-separated list (or all), checked."""
    chosen = list(FORMATS) if formats == "all" else [f.strip() for f in formats.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise InputError(f"--format: give one or more of {', '.join(FORMATS)} (comma-separated), or all")
    return chosen


def make_report(
    results_dirs: list[str], out_dir: str | None, formats: str, options: ReportOptions, external: tuple | None = None
) -> WrittenReport:
    """Every result under `results_dirs` as one report in `out_dir` (default: the first dir's report/)."""
    chosen = chosen_formats(formats)
    loaded: list[tuple[Path, ResultDocument]] = []
    unreadable: list[str] = []
    progress: list[ExperimentProgress] = []
    for results_dir in results_dirs:
        root = Path(results_dir)
        if not root.is_dir():
            raise InputError(f"{results_dir}: no such results directory")
        found, problems = ResultStore(root).load_all()
        loaded, unreadable = loaded + found, unreadable + problems
        manifest, unusable = ResultStore(root).experiment_progress()
        progress += [manifest] if manifest else []
        unreadable += [unusable] if unusable else []
    if not loaded:
        detail = "".join(f"\n  {p}" for p in unreadable)
        where = ", ".join(results_dirs)
        raise InputError(f"{where}: no kvprobe result files found (expected MODEL/CONDITION-RUN-rN.json){detail}")
    loaded, counted_once = distinct_results(loaded)
    if external is not None:
        options = dataclasses.replace(options, external=external_from_files(*external))
    summary = build_report([doc for _, doc in loaded], unreadable, progress)
    target = Path(out_dir) if out_dir else Path(results_dirs[0]) / "report"
    return WrittenReport(summary, target, write_report(summary, target, chosen, options), unreadable, counted_once)
