"""What a search asks of a trial, and the one-method protocol through which it asks.

`TrialRunner` is the real executor (an isolated engine start); tests pass their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from kvprobe.results.schema import TrialRecord
from kvprobe.vocabulary import SearchName


@dataclass
class TrialRequest:
    """What one trial starts: a utilization or an explicit KV budget, and the workload after it."""

    number: int
    search: SearchName
    engine_args: dict[str, Any]
    usage_context: str = "OPENAI_API_SERVER"
    model: str = ""
    repeat: int = 1
    attempt: int = 0  # a timed-out start is tried again; each attempt is journaled apart
    confirmation: int = 0  # a boundary's setting started again to confirm it (1), journaled apart
    utilization: float | None = None
    kv_cache_memory_bytes: int | None = None
    fill_target: float | None = None
    throughput: dict[str, int] | None = None
    generate_tokens: int = 8

    def recorded(self) -> dict[str, Any]:
        """The fields of the request that its TrialRecord repeats."""
        return {
            "number": self.number,
            "search": self.search,
            "utilization": self.utilization,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes,
            "fill_target": self.fill_target,
            "confirmation": self.confirmation,
        }

    def journal_key(self) -> str:
        """What identifies this trial across a resumed run (its number does not)."""
        fields = [
            self.model,
            self.repeat,
            self.search,
            self.utilization,
            self.kv_cache_memory_bytes,
            self.fill_target,
            bool(self.throughput),
        ]
        confirmation = f"+confirm{self.confirmation}" if self.confirmation else ""
        return json.dumps(fields) + f"#{self.attempt}{confirmation}"


class TrialExecutor(Protocol):
    """Runs one trial to its end (its process group gone, memory back) and records it."""

    def run(self, request: TrialRequest) -> TrialRecord: ...
