"""Replaying a committed run from its journal: the real resume path (Journal, JournaledExecutor)
answers every engine start the searches ask for, and nothing else may be started.

A stand-in for the engine, used by the golden-journal tests: `replay_run` pushes a journal's
recorded trials through `ModelSearches` with the options the committed result recorded, then
through `build_document`, so the rebuilt document can be compared with the committed one.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from kvprobe.config import ModelSettings
from kvprobe.engines import get_engine
from kvprobe.measure.build import build_document
from kvprobe.measure.executors import JournaledExecutor
from kvprobe.measure.model import ModelSearches
from kvprobe.measure.options import MeasureOptions
from kvprobe.output.progress import TrialProgress
from kvprobe.results.loader import load_result
from kvprobe.results.schema import ResultDocument, TrialRecord
from kvprobe.results.store import Journal
from kvprobe.trial.executor import TrialRequest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


class NotInJournal(AssertionError):
    """The searches asked for an engine start the committed run never made."""


class NoEngine:
    """The inner executor of a replay: every start the journal does not answer is a mismatch."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def run(self, request: TrialRequest) -> TrialRecord:
        self.asked.append(request.journal_key())
        raise NotInJournal(f"the searches asked for a start the run never made: {request.journal_key()}")


@dataclass(frozen=True)
class CommittedRun:
    """One committed journal and the result document its run wrote beside it."""

    journal: Path
    result: Path
    several: bool = False  # the run measured several models: one journal, a result each

    @property
    def name(self) -> str:
        docs = ROOT / "docs"  # the golden journals' names; a journal elsewhere (tests/data) by its path
        name = str(self.journal.relative_to(docs if self.journal.is_relative_to(docs) else ROOT))
        return f"{name}:{self.result.parent.name}" if self.several else name


def committed_runs() -> list[CommittedRun]:
    """Every journal under docs/ with each result its run wrote (`MODEL/CONDITION-RUN_ID-rREPEAT.json`:
    one per model measured, each replayed from that model's entries)."""
    runs = []
    for journal in sorted((ROOT / "docs").glob("**/.journal/*.jsonl")):
        results = sorted(journal.parent.parent.glob(f"*/*-{journal.stem}-r*.json"))
        assert results, f"{journal}: no result beside it"
        runs += [CommittedRun(journal, result, several=len(results) > 1) for result in results]
    return runs


def settings_of(committed: ResultDocument) -> ModelSettings:
    """The model's settings as the run recorded them, its config.json from this repository's configs/
    (the recorded path was the measuring machine's)."""
    recorded = {k: v for k, v in committed.settings.items() if k in ModelSettings.model_fields}
    model = CONFIGS / Path(committed.model_path).name
    return ModelSettings.model_validate(
        {
            **recorded,
            "name": committed.model,
            "model": str(model),
            "load_format": "dummy",  # configs/ holds config.json only; the recorded format is in `recorded`
            "utilization_range": committed.options.utilization_range,
        }
    ).model_copy(update={"load_format": recorded.get("load_format", "auto")})


def options_of(committed: ResultDocument) -> MeasureOptions:
    """The measurement options the committed result recorded (strategy, tolerance, range, searches...)."""
    recorded = committed.options
    return MeasureOptions(
        label=committed.label,
        tolerance=recorded.tolerance,
        utilization_range=recorded.utilization_range,
        searches=tuple(recorded.searches),
        fill_target=recorded.fill_target,
        throughput=committed.throughput is not None,
        cooldown_s=recorded.cooldown_s,
        drop_caches=recorded.drop_caches,
        strategy=recorded.strategy,
        confirm=recorded.confirm,
        prestart="on" if recorded.prestart else "off",
        prestart_reason=recorded.prestart_reason,
        kv_approach=recorded.kv_approach,
        kv_approach_reason=recorded.kv_approach_reason,
        container=recorded.container,
        condition=committed.environment.condition,
        experiment=committed.experiment,
        only_repeat=committed.repeat,
        host_shared=recorded.host_shared,
    )


@dataclass
class Replayed:
    committed: ResultDocument
    rebuilt: ResultDocument
    journal_entries: int


def replay_run(run: CommittedRun, workdir: Path) -> Replayed:
    """The committed run again, every engine start answered by its journal (a copy: the journal
    is appended to only on a miss, and a miss raises first)."""
    committed = load_result(run.result)
    journal_copy = workdir / run.journal.name
    shutil.copyfile(run.journal, journal_copy)
    journal = Journal(journal_copy)
    assert journal.skipped == [], f"{run.name}: unusable journal lines {journal.skipped}"
    executor = JournaledExecutor(journal, NoEngine(), TrialProgress(Console(file=io.StringIO())))
    settings, options = settings_of(committed), options_of(committed)
    found = ModelSearches(settings, committed.repeat, executor, get_engine(), options, committed.options.guard).run()
    rebuilt = build_document(
        found,
        settings,
        options,
        committed.options.guard,
        committed.environment,
        committed.run_id,
        committed.repeat,
        committed.started_at,
        replayed=executor.replayed,
    )
    model = json.dumps(committed.model)
    entries = sum(1 for key in journal.entries if key.startswith(f"[{model},"))  # journal_key leads with it
    return Replayed(committed, rebuilt, entries)
