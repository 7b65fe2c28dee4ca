"""The kvprobe agent on one Ray node: samples and guards that node's memory during a trial,
measures the trial's processes there at ready, and ends them at teardown.

It is plain Python (ray_cluster makes it a Ray actor), so it runs without Ray in unit tests.
The trial's processes are found by their environment: the engine's driver starts Ray with
`runtime_env={"env_vars": {TRIAL_TAG: tag}}`, which vLLM hands on to every worker it places, and
Ray gives each worker the pid of the raylet that started it. Two Ray nodes on one host (a test
cluster) share /proc, so a process belongs to this node when its raylet is this node's; the
engine's driver (not a Ray worker) belongs to the node the probe runs on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from kvprobe.environment.facts import collect
from kvprobe.environment.gpu import CUDA_VISIBLE_DEVICES, Nvml
from kvprobe.results.schema import EngineAtReady, MemorySample, NodeTrial, TrialBaseline
from kvprobe.trial.monitor import GuardPolicy, MemorySampler, measure_at_ready, summarise, wait_until_back
from kvprobe.trial.process_group import end_processes, processes_memory
from kvprobe.worker_protocol import TRIAL_TAG

RAYLET_PID = "RAY_RAYLET_PID"
# Ray's memory monitor kills workers when the node's memory use passes a threshold; NVIDIA's
# two-Spark playbook turns it off (0). Ray reads it from the raylet's environment.
MEMORY_MONITOR = "RAY_memory_monitor_refresh_ms"


def _environment_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or a zombie
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")[:120]
    except (OSError, IndexError):
        return ""


def tag_matches(tag: str | None, prefix: str) -> bool:
    """A trial's tag is RUN_ID/NUMBER: a run's prefix matches all its trials, a trial's only itself."""
    return tag is not None and (tag == prefix or tag.startswith(prefix + "/"))


@dataclass(frozen=True)
class TrialProcesses:
    here: list[int]
    other_nodes_same_host: list[int]


def trial_processes(prefix: str, raylet_pid: str | None, probe_node: bool) -> TrialProcesses:
    """The processes whose trial tag matches `prefix`: this node's, and other Ray nodes' on this host."""
    here: list[int] = []
    elsewhere: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        environment = _environment_of(int(entry))
        if not tag_matches(environment.get(TRIAL_TAG), prefix):
            continue
        owner = environment.get(RAYLET_PID)
        mine = owner == raylet_pid if owner is not None else probe_node
        (here if mine else elsewhere).append(int(entry))
    return TrialProcesses(here, elsewhere)


class NodeAgent:
    """One node's sampler, guard and teardown for the trials of one run."""

    def __init__(self, node_id: str, probe_node: bool, guard: bool, floor_bytes: int | None, interval_s: float = 0.1):
        """`guard`: whether to guard; its floors are this node's own (its memory, its cgroup, and
        pessimistic where its GPU memory is host memory), `floor_bytes` overriding them as --guard-floor."""
        self.node_id = node_id
        self.probe_node = probe_node
        self.interval_s = interval_s
        self.raylet_pid = os.environ.get(RAYLET_PID)
        # The agent watches its node's GPUs, whatever CUDA_VISIBLE_DEVICES Ray gave its actor: those
        # of its raylet's environment (all of the machine's where it has none; two nodes sharing a
        # host are given one GPU each this way).
        self.raylet_environment = _environment_of(int(self.raylet_pid)) if self.raylet_pid else {}
        visible = self.raylet_environment.get(CUDA_VISIBLE_DEVICES)
        self.environment = collect(visible=visible)
        self.guard = GuardPolicy.for_environment(self.environment, floor_bytes, enabled=guard)
        self.nvml = Nvml(visible=visible)
        self.sampler = MemorySampler(self.nvml)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tag = ""
        self._samples: list[MemorySample] = []
        self._phases: dict[str, float] = {}
        self._baseline: TrialBaseline | None = None
        self._at_ready: EngineAtReady | None = None
        self._other_nodes_bytes = 0.0
        self._titles: list[str] = []
        self._breach: str | None = None

    def describe(self) -> dict:
        """This node's environment block, guard floors and Ray memory-monitor setting (as JSON, for Ray)."""
        return {
            "environment": self.environment.model_dump(mode="json"),
            "guard": self.guard.settings().model_dump(),
            "memory_monitor_refresh_ms": self.raylet_environment.get(MEMORY_MONITOR),
        }

    def _processes(self, prefix: str) -> TrialProcesses:
        return trial_processes(prefix, self.raylet_pid, self.probe_node)

    def begin(self, tag: str) -> None:
        """The trial `tag` starts: take the baseline and sample (and guard) until `end`."""
        self._tag = tag
        self._samples, self._phases = [], {}
        self._at_ready, self._breach, self._titles, self._other_nodes_bytes = None, None, [], 0.0
        self._baseline = self.sampler.baseline()
        self._samples.append(self._baseline)
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self._thread.start()

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval_s):
            sample = self.sampler.sample()
            with self._lock:
                self._samples.append(sample)
            breach = self.guard.breach(sample)
            if breach and self._breach is None:
                self._breach = breach
                # The guard keeps this host alive: end the trial's processes here at once, not
                # only after the probe has heard of it (it ends the rest, and `end` checks).
                with contextlib.suppress(RuntimeError):
                    end_processes(lambda: self._processes(self._tag).here, grace_s=0.0)

    def poll(self) -> str | None:
        """Why the guard ended the trial on this node, or None."""
        return self._breach

    def mark(self, phase: str) -> None:
        """The engine reached `phase` (its log said so): take this node's sample for it. At
        `ready`, first measure the trial's processes here, so the two describe one moment."""
        if phase == "ready":
            found = self._processes(self._tag)
            self._at_ready = measure_at_ready(found.here, self.nvml)
            self._other_nodes_bytes = float(processes_memory(found.other_nodes_same_host)["private_bytes"])
            self._titles = sorted(_title(pid) for pid in found.here)
        sample = self.sampler.sample()
        with self._lock:
            self._samples.append(sample)
        self._phases.setdefault(phase, sample.t)

    def end(self, settle_timeout_s: float, tolerance_bytes: int) -> dict:
        """After the driver ended: end what of the trial is still alive here, wait for memory to come
        back to the baseline, and return this node's NodeTrial (as JSON, for Ray)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        leftovers = len(self._processes(self._tag).here)
        end_processes(lambda: self._processes(self._tag).here)
        restored = self._settle(settle_timeout_s, tolerance_bytes)
        with self._lock:
            memory = summarise(self._samples, self._phases)
        trial = NodeTrial(
            node_id=self.node_id,
            hostname=socket.gethostname(),
            baseline=self._baseline or TrialBaseline(),
            memory=memory,
            engine_at_ready=self._at_ready,
            same_host_other_nodes_bytes=self._other_nodes_bytes,
            process_titles=self._titles,
            guard_breach=self._breach,
            leftovers_ended=leftovers,
            baseline_restored=restored,
        )
        return trial.model_dump(mode="json")

    def _settle(self, timeout_s: float, tolerance_bytes: int) -> bool:
        """Wait until this node's host memory, and its cgroup's, are back near the baseline."""
        baseline = self._baseline
        if baseline is None:
            return True

        def is_back(now: MemorySample) -> bool:
            cgroup_ok = now.cgroup_usage is None or now.cgroup_usage <= (baseline.cgroup_usage or 0) + tolerance_bytes
            return cgroup_ok and now.host_released >= baseline.host_released - tolerance_bytes

        return wait_until_back(self.sampler, is_back, timeout_s)

    def sweep(self, prefix: str) -> int:
        """End every process of the run `prefix` still alive here (left by a killed probe)."""
        pids = self._processes(prefix).here
        end_processes(lambda: self._processes(prefix).here)
        return len(pids)
