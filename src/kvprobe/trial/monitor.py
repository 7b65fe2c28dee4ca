"""Memory sampling during a trial, and the guard that stops a start before it can freeze the host."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvprobe.environment.gpu import Nvml
from kvprobe.environment.memory import LAYOUTS, cgroup_file_bytes, kernel_unaccounted, read_cgroup_memory, read_meminfo
from kvprobe.environment.memory_model import node_free
from kvprobe.results.schema import EngineAtReady, Environment, GuardSettings, MemorySample, TrialBaseline, TrialMemory
from kvprobe.trial.process_group import processes_memory
from kvprobe.units import GIB, MIB, gib


class MemorySampler:
    """Reads host, cgroup and NVML memory; cheap enough for 10 samples a second."""

    def __init__(self, nvml: Nvml, root: Path = Path("/")):
        """`root`: where /proc and /sys are (a recorded machine's directory in simulations)."""
        self.nvml = nvml
        self.root = Path(root)
        cgroup = read_cgroup_memory(self.root / "sys/fs/cgroup", self.root / "proc/self/cgroup")
        self._cgroup_dir = Path(cgroup.path) if cgroup.path else None
        self._usage_file = None
        self._limit = cgroup.limit_bytes
        if self._cgroup_dir is not None:
            self._usage_file = self._cgroup_dir / LAYOUTS["v2" if cgroup.version == "v2" else "v1"].usage

    def baseline(self) -> TrialBaseline:
        """A sample taken before a trial, with the page cache charged to our cgroup then."""
        return TrialBaseline(**self.sample().model_dump(), cgroup_file_bytes=cgroup_file_bytes())

    def sample(self) -> MemorySample:
        info = read_meminfo(self.root / "proc/meminfo")
        usage = None
        if self._usage_file is not None and self._limit is not None:
            try:
                usage = int(self._usage_file.read_text())
            except (OSError, ValueError):
                usage = None
        per_device = self.nvml.used_bytes()
        used = [u for u in per_device if u is not None]
        free_per_device = self.nvml.free_bytes()
        return MemorySample(
            t=time.time(),
            host_available=info.get("MemAvailable", 0),
            page_cache=info.get("Cached", 0) + info.get("Buffers", 0),
            cgroup_usage=usage,
            cgroup_limit=self._limit,
            gpu_used=sum(used) if used else None,
            gpu_used_devices=per_device or None,
            host_unaccounted=kernel_unaccounted(info),
            host_free=info.get("MemFree"),
            node_free=node_free(self.root) or None,
            shmem=info.get("Shmem"),
            device_free=free_per_device if any(f is not None for f in free_per_device) else None,
        )


@dataclass(frozen=True)
class GuardPolicy:
    """Floors under which a trial's process group is killed. None disables a floor."""

    host_floor_bytes: int | None
    cgroup_floor_bytes: int | None
    pessimistic: bool = False  # the host floor applies to the lowest of MemAvailable and MemFree

    @classmethod
    def default(
        cls, host_total: int, cgroup_limit: int | None, floor_override: int | None = None, pessimistic: bool = False
    ) -> GuardPolicy:
        """Host: the larger of 2 GiB and 3% of MemTotal. Cgroup: 3% of its limit, at least 128 MiB.

        A cgroup that hits its limit only meets its own OOM killer, not a frozen host, so its
        floor only keeps the kill ours (classified, logged) rather than the kernel's. Where GPU
        memory is host memory (`pessimistic`), a start that looks fine by MemAvailable can still
        wedge the host when MemFree is low (CUDA's free memory there tracks MemFree): the floor
        then applies to the lowest of the two.
        """
        if floor_override is not None:
            return cls(floor_override, floor_override if cgroup_limit is not None else None, pessimistic)
        host = max(2 * GIB, int(0.03 * host_total))
        cgroup = max(128 * MIB, int(0.03 * cgroup_limit)) if cgroup_limit is not None else None
        return cls(host, cgroup, pessimistic)

    @classmethod
    def for_environment(
        cls, environment: Environment, floor_override: int | None = None, enabled: bool = True
    ) -> GuardPolicy:
        """The default floors of the machine `environment` describes: its memory, its cgroup, and
        pessimistic where its GPU memory is host memory (see default)."""
        if not enabled:
            return cls.disabled()
        model = environment.memory_model
        return cls.default(
            environment.host_memory["MemTotal"],
            environment.cgroup.limit_bytes,
            floor_override,
            pessimistic=model is not None and model.gpu_memory_is_host_memory,
        )

    @classmethod
    def disabled(cls) -> GuardPolicy:
        return cls(None, None)

    def host_view(self, sample: MemorySample) -> tuple[str, float | None]:
        """The host figure the floor applies to (None where unreadable), and its name."""
        free, available = sample.host_free, sample.host_available
        if self.pessimistic and free is not None and available is not None and free < available:
            return "MemFree", free
        return "MemAvailable", available

    def breach(self, sample: MemorySample) -> str | None:
        name, value = self.host_view(sample)
        if self.host_floor_bytes is not None and value is not None and value < self.host_floor_bytes:
            floor = gib(self.host_floor_bytes, unit=True)
            return f"host {name} {gib(value, unit=True)} fell below the guard floor {floor}"
        headroom = sample.cgroup_headroom
        if self.cgroup_floor_bytes is not None and headroom is not None and headroom < self.cgroup_floor_bytes:
            return (
                f"cgroup headroom {gib(headroom, unit=True)} fell below the guard floor "
                f"{gib(self.cgroup_floor_bytes, unit=True)}"
            )
        return None

    def settings(self) -> GuardSettings:
        return GuardSettings(
            host_floor_bytes=self.host_floor_bytes,
            cgroup_floor_bytes=self.cgroup_floor_bytes,
            pessimistic=self.pessimistic,
        )


def measure_at_ready(pids: list[int], nvml: Nvml) -> EngineAtReady:
    """An engine's processes once it is ready: PSS, NVML's per-process use, and the page cache
    charged to our cgroup meanwhile."""
    return EngineAtReady(
        **processes_memory(pids), gpu_processes=nvml.processes(), cgroup_file_bytes=cgroup_file_bytes()
    )


def wait_until_back(sampler: MemorySampler, is_back: Callable[[MemorySample], bool], timeout_s: float) -> bool:
    """Sample until `is_back` holds (True), or `timeout_s` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not is_back(sampler.sample()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _peak(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def summarise(samples: list[MemorySample], phases: dict[str, float]) -> TrialMemory:
    """Values at trial start and at each phase mark, plus the extremes."""
    if not samples:
        return TrialMemory()

    def at(t: float) -> MemorySample:
        return next((s for s in samples if s.t >= t), samples[-1])

    return TrialMemory(
        start=samples[0],
        phases={name: at(t) for name, t in phases.items()},
        lowest_host_available=min((s.host_available for s in samples if s.host_available is not None), default=None),
        lowest_host_released=min(s.host_released for s in samples),
        peak_cgroup_usage=_peak([s.cgroup_usage for s in samples]),
        peak_gpu_used=_peak([s.gpu_used for s in samples]),
        peak_page_cache=_peak([s.page_cache for s in samples]),
        count=len(samples),
        rate_hz=len(samples) / max(1e-6, samples[-1].t - samples[0].t) if len(samples) > 1 else None,
    )
