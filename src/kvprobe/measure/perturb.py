"""What an experiment's condition does to the machine around each engine start, and what it measured.

`PerturbedExecutor` wraps the trial runner: before a start it reads a file into the page cache
(`page_cache`) and starts a helper that holds anonymous memory (`hold_memory`); after the trial it
ends the helper and evicts the file, so nothing of the condition outlives its trial. What really
happened (the rise in Cached, the helper's RSS) goes into the trial's `perturbation`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
from pathlib import Path

from kvprobe.config import ModelSettings
from kvprobe.environment.memory import read_meminfo
from kvprobe.errors import RunFailed
from kvprobe.results.schema import Condition, Perturbation, TrialRecord
from kvprobe.safe_io import child_python, create_new, no_follow
from kvprobe.trial.executor import TrialExecutor, TrialRequest
from kvprobe.units import MIB

CHUNK = 64 * MIB
HELPER_READY_TIMEOUT_S = 120.0


class PerturbationFailed(RunFailed):
    """The condition could not be put in place (the helper died, the file could not be written)."""


class PageCacheFile:
    """A file of `size` bytes under `directory`, read into the page cache on demand and evicted after."""

    def __init__(self, directory: Path, size: int):
        self.path = Path(directory) / f"page-cache-{size}.bin"
        self.size = size

    def ensure(self) -> None:
        """Write the file once (random bytes, so no filesystem can store it sparse or compressed)."""
        if not self.path.is_symlink() and self.path.is_file() and self.path.stat().st_size == self.size:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        block = os.urandom(CHUNK)
        tmp = self.path.with_suffix(".tmp")
        with os.fdopen(create_new(tmp), "wb") as handle:
            left = self.size
            while left > 0:
                left -= handle.write(block[: min(left, CHUNK)])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self.evict()

    def fill(self) -> int:
        """Read the whole file; return how much Cached rose (the kernel's own account)."""
        self.evict()
        before = read_meminfo()["Cached"]
        with open(self.path, "rb", buffering=0, opener=no_follow) as handle:
            while handle.read(CHUNK):
                pass
        return read_meminfo()["Cached"] - before

    def evict(self) -> None:
        if not self.path.exists():
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class MemoryHolder:
    """A helper process in its own process group that touches `size` bytes of anonymous memory and
    keeps them until it is ended (kvprobe.measure.hold_memory)."""

    def __init__(self, size: int):
        self.size = size
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> tuple[int, int]:
        """(pid, resident bytes) once the helper holds its memory."""
        command = [*child_python(), "-m", "kvprobe.measure.hold_memory", str(self.size)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True, text=True
        )
        stdout = self.process.stdout
        assert stdout is not None, "stdout=PIPE"
        ready, _, _ = select.select([stdout], [], [], HELPER_READY_TIMEOUT_S)
        line = stdout.readline() if ready else "no answer in time"  # "held": every page touched
        if line.strip() != "held":
            self.end()
            raise PerturbationFailed(f"the hold_memory helper did not hold {self.size} bytes ({line.strip()!r})")
        return self.process.pid, resident_bytes(self.process.pid)

    def end(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PerturbedExecutor:
    """Puts a condition in place around every engine start and records what it measured."""

    def __init__(self, inner: TrialExecutor, condition: Condition, scratch: Path):
        self.inner = inner
        self.condition = condition
        self.page_cache = PageCacheFile(scratch, condition.page_cache_bytes) if condition.page_cache_bytes else None
        if self.page_cache is not None:
            self.page_cache.ensure()

    def run(self, request: TrialRequest) -> TrialRecord:
        condition = self.condition
        if not condition.perturbs:
            return self.inner.run(request)
        done = Perturbation(caches_dropped=condition.drop_caches, cgroup_limit_bytes=condition.cgroup_limit_bytes)
        holder = MemoryHolder(condition.hold_memory_bytes) if condition.hold_memory_bytes else None
        try:
            if self.page_cache is not None:
                done.page_cache_requested_bytes = self.page_cache.size
                done.page_cache_rise_bytes = self.page_cache.fill()
            if holder is not None:
                done.hold_requested_bytes = holder.size
                done.helper_pid, done.helper_rss_bytes = holder.start()
            record = self.inner.run(request)
        finally:
            if holder is not None:
                holder.end()
            if self.page_cache is not None:
                self.page_cache.evict()
        return record.model_copy(update={"perturbation": done})

    def close(self) -> None:
        if self.page_cache is not None:
            self.page_cache.path.unlink(missing_ok=True)


def with_condition(models: list[ModelSettings], condition: Condition) -> list[ModelSettings]:
    """The models as the condition loads them: from its weight files (`weights: real`), or weightless."""
    if condition.weights is None:
        return models
    if condition.weights == "dummy":
        return [m.model_copy(update={"load_format": "dummy"}) for m in models]
    weights_dir = condition.weights_dir
    assert weights_dir is not None, "the experiment file's check requires weights_dir with weights: real"
    return [
        m.model_copy(update={"model": weights_dir.replace("{model}", m.name), "load_format": "safetensors"})
        for m in models
    ]
