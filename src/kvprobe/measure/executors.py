"""Executors that wrap the trial runner: the journal (replay finished trials, number new ones,
report progress) and the preparation of the machine before each real engine start.

    JournaledExecutor(journal, PreparedExecutor(TrialRunner(...), ...), progress)
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Protocol

from kvprobe.environment.gpu import Nvml
from kvprobe.results.schema import TrialRecord
from kvprobe.results.store import Journal
from kvprobe.trial.executor import TrialExecutor, TrialRequest

GPU_COOLING_TIMEOUT_S = 600


class Progress(Protocol):
    def trial_started(self, request: TrialRequest) -> None: ...
    def trial_finished(self, model: str, record: TrialRecord, replayed: bool) -> None: ...


class JournaledExecutor:
    """Replays trials a resumed run already finished; numbers, runs and journals the others."""

    def __init__(self, journal: Journal, inner: TrialExecutor, progress: Progress):
        self.journal = journal
        self.inner = inner
        self.progress = progress
        # New trial numbers continue after the journaled ones, so a resumed run never reuses one.
        self._next_number = max((t.number for t in journal.entries.values()), default=0) + 1
        self.replayed = 0

    def run(self, request: TrialRequest) -> TrialRecord:
        key = request.journal_key()
        record = self.journal.get(key)
        if record is not None:
            self.replayed += 1
            self.progress.trial_finished(request.model, record, replayed=True)
            return record
        request = dataclasses.replace(request, number=self._next_number)
        self._next_number += 1
        self.progress.trial_started(request)
        record = self.inner.run(request)
        self.journal.append(key, record)
        self.progress.trial_finished(request.model, record, replayed=False)
        return record


class PreparedExecutor:
    """Cool-down, GPU temperature and page cache, before every engine start."""

    def __init__(
        self,
        inner: TrialExecutor,
        cooldown_s: float = 0.0,
        max_gpu_temp_c: int | None = None,
        drop_caches: bool = False,
        nvml: Nvml | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.inner = inner
        self.cooldown_s = cooldown_s
        self.max_gpu_temp_c = max_gpu_temp_c
        self.drop_caches = drop_caches
        self.nvml = nvml
        self.sleep = sleep
        self._started = 0

    def run(self, request: TrialRequest) -> TrialRecord:
        if self._started and self.cooldown_s:
            self.sleep(self.cooldown_s)
        if self.max_gpu_temp_c is not None and self.nvml is not None:
            self._wait_for_gpu_to_cool(self.nvml, self.max_gpu_temp_c)
        if self.drop_caches:
            drop_page_cache()
        self._started += 1
        return self.inner.run(request)

    def _wait_for_gpu_to_cool(self, nvml: Nvml, max_gpu_temp_c: int) -> None:
        deadline = time.monotonic() + GPU_COOLING_TIMEOUT_S
        while time.monotonic() < deadline:
            temperature = nvml.temperature_c()
            if temperature is None or temperature <= max_gpu_temp_c:
                return
            self.sleep(5)


def drop_page_cache() -> None:
    """Write back and drop the page cache (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as handle:
        handle.write("3\n")


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)
