"""Everything about how a model is measured that does not change its capacity."""

from __future__ import annotations

from dataclasses import dataclass

from kvprobe.results.schema import ContainerRun, GuardSettings, RunOptions
from kvprobe.vocabulary import SEARCHES, Label, Search, Strategy


@dataclass(frozen=True)
class MeasureOptions:
    label: Label = "native"
    repeats: int = 1
    tolerance: float = 0.01
    utilization_range: tuple[float, float] | None = None  # overrides each model's range
    searches: tuple[Search, ...] = SEARCHES
    fill_target: float = 0.95
    throughput: bool = False
    cooldown_s: float = 0.0
    max_gpu_temp_c: int | None = None
    drop_caches: bool = False
    strategy: Strategy = "bracketed"
    confirm: bool = True  # start each boundary's passing setting once more
    retries: int = 1  # a timed-out trial is tried again this often before it counts as a failure
    container: ContainerRun | None = None  # how `kvprobe container` started this run, recorded as-is

    def record(self, utilization_range: tuple[float, float], guard: GuardSettings) -> RunOptions:
        """What a result keeps of these options, with the range searched and the guard applied."""
        kept = {name: getattr(self, name) for name in RunOptions.model_fields if hasattr(self, name)}
        return RunOptions(
            **{**kept, "utilization_range": utilization_range, "guard": guard, "searches": list(self.searches)}
        )
