"""The run: every model for every repeat, resumable. It owns the run manifest and decides what is
measured next; one model's searches are `ModelSearches`, one engine start is the executor's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from kvprobe.config import ModelSettings
from kvprobe.engines.protocol import Engine
from kvprobe.measure.build import build_document
from kvprobe.measure.executors import JournaledExecutor
from kvprobe.measure.model import ModelSearches
from kvprobe.measure.options import MeasureOptions
from kvprobe.results.loader import load_result
from kvprobe.results.schema import Environment, GuardSettings, ResultDocument
from kvprobe.results.store import Journal, ResultStore


class RunEvents(Protocol):
    def already_measured(self, model: str, repeat: int, path: Path) -> None: ...
    def result_written(self, path: Path) -> None: ...


class Scheduler:
    """One run of `kvprobe measure` in one results directory.

    `identity` holds every option that decides what the run measures: --resume continues only
    an unfinished run with the same identity, and skips every model and repeat already written.
    """

    def __init__(self, store: ResultStore, models: list[ModelSettings], options: MeasureOptions, identity: dict):
        self.store = store
        self.models = models
        self.options = options
        self.identity = identity
        self.run_id = ""

    def start(self, resume: bool) -> tuple[str, bool]:
        """Open (or resume) the run; return its id and whether it was resumed."""
        self.run_id, resumed = self.store.open_run(self.options.condition_name, resume, self.identity)
        return self.run_id, resumed

    def journal(self) -> Journal:
        return self.store.journal(self.run_id)

    def measure(
        self,
        executor: JournaledExecutor,
        engine: Engine,
        environment: Environment,
        guard: GuardSettings,
        events: RunEvents,
    ) -> list[ResultDocument]:
        """Every model for every repeat, in that order; results already written are read back."""
        documents = []
        for repeat in self.options.repeat_numbers:
            for settings in self.models:
                path = self.store.result_path(settings.name, self.options.condition_name, self.run_id, repeat)
                if path.exists():
                    events.already_measured(settings.name, repeat, path)
                    documents.append(load_result(path))
                    continue
                replayed_before, started_at = executor.replayed, time.time()
                found = ModelSearches(settings, repeat, executor, engine, self.options, guard).run()
                document = build_document(
                    found,
                    settings,
                    self.options,
                    guard,
                    environment,
                    self.run_id,
                    repeat,
                    started_at,
                    replayed=executor.replayed - replayed_before,
                )
                self.store.write_result(path, document)
                events.result_written(path)
                documents.append(document)
        return documents

    def finish(self) -> None:
        self.store.close_run(self.options.condition_name, self.run_id, self.identity)
