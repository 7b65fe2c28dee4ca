"""Memory sampling during a trial, and the guard that stops a start before it can freeze the host."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from kvprobe.environment.gpu import Nvml
from kvprobe.environment.memory import LAYOUTS, kernel_unaccounted, read_cgroup_memory, read_meminfo

GIB = 1 << 30
MIB = 1 << 20


@dataclass
class MemorySample:
    t: float
    host_available: int
    page_cache: int
    cgroup_usage: Optional[int]
    cgroup_limit: Optional[int]
    gpu_used: Optional[int]  # summed over visible devices; None where NVML cannot tell
    gpu_used_devices: Optional[list[Optional[int]]] = None  # per device, for tensor-parallel starts
    host_unaccounted: Optional[int] = None  # see environment.memory.kernel_unaccounted

    @property
    def host_released(self) -> int:
        """MemAvailable plus the kernel's unlisted pages: what no process holds. Freed pages can sit
        unlisted for tens of seconds on free-page-reporting VMs before MemAvailable sees them."""
        return self.host_available + (self.host_unaccounted or 0)

    @property
    def cgroup_headroom(self) -> Optional[int]:
        if self.cgroup_limit is None or self.cgroup_usage is None:
            return None
        return self.cgroup_limit - self.cgroup_usage

    def to_dict(self) -> dict:
        return asdict(self)


class MemorySampler:
    """Reads host, cgroup and NVML memory; cheap enough for 10 samples a second."""

    def __init__(self, nvml: Nvml, cgroup_root: str = "/sys/fs/cgroup"):
        self.nvml = nvml
        self.cgroup_root = cgroup_root
        cgroup = read_cgroup_memory(cgroup_root)
        self._cgroup_dir = Path(cgroup.path) if cgroup.path else None
        self._usage_file = None
        self._limit = cgroup.limit_bytes
        if self._cgroup_dir is not None:
            self._usage_file = self._cgroup_dir / LAYOUTS["v2" if cgroup.version == "v2" else "v1"].usage

    def sample(self) -> MemorySample:
        info = read_meminfo()
        usage = None
        if self._usage_file is not None and self._limit is not None:
            try:
                usage = int(self._usage_file.read_text())
            except (OSError, ValueError):
                usage = None
        per_device = self.nvml.used_bytes()
        used = [u for u in per_device if u is not None]
        return MemorySample(
            t=time.time(),
            host_available=info.get("MemAvailable", 0),
            page_cache=info.get("Cached", 0) + info.get("Buffers", 0),
            cgroup_usage=usage,
            cgroup_limit=self._limit,
            gpu_used=sum(used) if used else None,
            gpu_used_devices=per_device or None,
            host_unaccounted=kernel_unaccounted(info),
        )


@dataclass(frozen=True)
class GuardPolicy:
    """Floors under which a trial's process group is killed. None disables a floor."""

    host_floor_bytes: Optional[int]
    cgroup_floor_bytes: Optional[int]

    @classmethod
    def default(cls, host_total: int, cgroup_limit: Optional[int], floor_override: Optional[int] = None) -> "GuardPolicy":
        """Host: the larger of 2 GiB and 3% of MemTotal. Cgroup: 3% of its limit, at least 128 MiB.

        A cgroup that hits its limit only meets its own OOM killer, not a frozen host, so its
        floor only keeps the kill ours (classified, logged) rather than the kernel's.
        """
        if floor_override is not None:
            return cls(floor_override, floor_override if cgroup_limit is not None else None)
        host = max(2 * GIB, int(0.03 * host_total))
        cgroup = max(128 * MIB, int(0.03 * cgroup_limit)) if cgroup_limit is not None else None
        return cls(host, cgroup)

    @classmethod
    def disabled(cls) -> "GuardPolicy":
        return cls(None, None)

    def breach(self, sample: MemorySample) -> Optional[str]:
        if self.host_floor_bytes is not None and sample.host_available < self.host_floor_bytes:
            return (
                f"host MemAvailable {sample.host_available / GIB:.2f} GiB fell below the guard floor "
                f"{self.host_floor_bytes / GIB:.2f} GiB"
            )
        headroom = sample.cgroup_headroom
        if self.cgroup_floor_bytes is not None and headroom is not None and headroom < self.cgroup_floor_bytes:
            return (
                f"cgroup headroom {headroom / GIB:.2f} GiB fell below the guard floor "
                f"{self.cgroup_floor_bytes / GIB:.2f} GiB"
            )
        return None

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(samples: list[MemorySample], phases: dict[str, float]) -> dict:
    """Values at trial start and at each phase mark, plus the extremes."""
    if not samples:
        return {}

    def at(t: float) -> dict:
        after = next((s for s in samples if s.t >= t), samples[-1])
        return after.to_dict()

    summary = {"start": samples[0].to_dict(), "phases": {name: at(t) for name, t in phases.items()}}
    summary["lowest_host_available"] = min(s.host_available for s in samples)
    summary["lowest_host_released"] = min(s.host_released for s in samples)
    usages = [s.cgroup_usage for s in samples if s.cgroup_usage is not None]
    summary["peak_cgroup_usage"] = max(usages) if usages else None
    gpu = [s.gpu_used for s in samples if s.gpu_used is not None]
    summary["peak_gpu_used"] = max(gpu) if gpu else None
    summary["peak_page_cache"] = max(s.page_cache for s in samples)
    summary["count"] = len(samples)
    summary["rate_hz"] = len(samples) / max(1e-6, samples[-1].t - samples[0].t) if len(samples) > 1 else None
    return summary
