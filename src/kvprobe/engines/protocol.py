"""What kvprobe asks of a serving engine's adapter, outside the worker process: every adapter
(engines.vllm.VllmEngine, engines.trtllm.TrtllmEngine) implements this, and the searches and the
trial runner use nothing else. The worker side is kvprobe.worker_protocol."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from kvprobe.engines.vllm import Classification
from kvprobe.results.schema import EngineMemoryReport

if TYPE_CHECKING:
    from kvprobe.config import ModelSettings


class Engine(Protocol):
    name: str
    phase_patterns: dict[str, re.Pattern]
    """Log lines that tell where an engine start is (weights_loaded, kv_allocated, ...)."""

    def worker_command(
        self, spec_path: str, result_path: str | None = None, prepare_like: str | None = None
    ) -> list[str]:
        """The worker process; without a result path it imports first, then waits for its spec."""
        ...

    def worker_environment(self) -> dict[str, str]:
        """Variables the worker needs (log levels that carry the sizing lines)."""
        ...

    def usage_context(self, settings: ModelSettings) -> str:
        """The engine's notion of which defaults apply (vLLM's UsageContext name)."""
        ...

    def engine_args(
        self, settings: ModelSettings, utilization: float | None = None, *, kv_cache_memory_bytes: int | None = None
    ) -> dict:
        """The engine's own arguments for one start: a utilization (the engine's meaning) or a KV budget."""
        ...

    def classify(self, log_text: str) -> Classification:
        """A failed start's class and the line that decided it."""
        ...

    def logged_peak_kv_usage(self, log_text: str) -> float | None:
        """The highest KV cache usage the engine printed, where it prints one."""
        ...

    def memory_report(self, log_text: str) -> EngineMemoryReport:
        """The engine's own memory figures from its log, in bytes."""
        ...
