"""The result JSON: one record per trial, one document per model and run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

SCHEMA_VERSION = 1



@dataclass
class TrialRecord:
    """One engine start: what was asked, how it ended, and what memory did meanwhile."""

    number: int
    search: str  # reference, u_max, u_min, kv_blocks, throughput, manual
    utilization: Optional[float]
    kv_cache_memory_bytes: Optional[int]
    fill_target: Optional[float]
    outcome: str  # ok, startup-check, kv-too-small, oom, killed, guard, timeout, error
    reason: str
    returncode: Optional[int]
    started_at: float
    wall_s: float
    teardown_s: float  # from the end of the trial until the group is gone and memory is back
    baseline_restored: bool
    kill_s: float = 0.0  # the part of teardown until no process of the group was left
    passed: bool = False  # ok, and the fill test (if any) reached its target
    num_gpu_blocks: Optional[int] = None
    block_size: Optional[int] = None
    kv_cache_tokens: Optional[int] = None
    kv_cache_bytes: Optional[int] = None
    memory_report: dict[str, Any] = field(default_factory=dict)
    worker: dict[str, Any] = field(default_factory=dict)  # the worker's own result (fill, timings, versions)
    memory: dict[str, Any] = field(default_factory=dict)  # phase samples and extremes
    baseline: dict[str, Any] = field(default_factory=dict)
    log_tail: list[str] = field(default_factory=list)
    log_path: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrialRecord":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
