"""One isolated engine start: its own process group, a timeout, the guard, and a full teardown."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kvprobe.engines.protocol import Engine
from kvprobe.environment.gpu import Nvml
from kvprobe.results.schema import EngineAtReady, MemorySample, NodeTrial, TrialRecord, WorkerResult
from kvprobe.safe_io import (
    MAX_LOG_BYTES,
    UnsafeFile,
    create_new,
    no_follow,
    read_bytes,
    read_json,
    read_text,
    write_new,
)
from kvprobe.trial.executor import TrialRequest
from kvprobe.trial.judge import Observed, judge
from kvprobe.trial.monitor import GuardPolicy, MemorySampler, measure_at_ready, summarise, wait_until_back
from kvprobe.trial.process_group import (
    become_subreaper,
    interrupts_held,
    members,
    process_identity,
    reap_zombies,
    resident_memory,
    terminate,
)
from kvprobe.units import MIB
from kvprobe.vocabulary import Outcome
from kvprobe.worker_protocol import PHASE_MARK, TRIAL_TAG, RayJoin, Throughput, WorkerSpec, Workload


class ClusterAgents(Protocol):
    """What a trial asks of the Ray cluster's node agents (cluster.ray_cluster.RayCluster)."""

    address: str

    def begin(self, tag: str) -> None: ...
    def breach(self) -> str | None: ...
    def mark(self, phase: str) -> None: ...
    def end(self, settle_timeout_s: float, tolerance_bytes: int) -> list[NodeTrial]: ...
    def sweep(self, prefix: str) -> dict[str, int]: ...


LOG_TAIL_LINES = 40
RUNNING_MARKER = "running-trial.json"  # present while a trial runs; left behind only if the probe was killed
WAITING_MARKERS = "waiting-*.worker.json"  # one per prestarted worker, present while it waits for its trial
# Workers kept importing ahead: a start refused at its check ends in seconds, and the worker of the
# trial after it must have imported by then too (imports took 14-18 s on the H100 in docs/benchmarks.md).
PRESTART_DEPTH = 2


def _is_engine(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"vllm" in command.lower() or b"kvprobe" in command


MAX_MARKER_BYTES = 4096


def write_marker(path: Path, pid: int, **extra: float) -> None:
    """Name the trial's worker `pid` by the process it is now (start time, boot id), not the pid alone."""
    identity = process_identity(pid) or {"pid": pid}
    write_new(path, json.dumps({**identity, **extra}))


def _why_not_to_signal(named: dict, leader: int) -> str | None:
    """None when the marker's pid is the very process kvprobe started and it still runs an engine;
    else why that pid must not be signalled (an empty reason: the process is simply gone)."""
    if leader <= 1 or leader in (os.getpid(), os.getpgrp(), os.getsid(0)):
        return f"pid {leader} is kvprobe's own process, group or session"
    now = process_identity(leader)
    if now is None:
        return ""
    if "start_time" not in named or "boot_id" not in named:
        return f"pid {leader}: the marker predates start times and boot ids, so the process cannot be told apart"
    if named["boot_id"] != now["boot_id"]:
        return f"pid {leader}: the marker was written before the last reboot"
    if named["start_time"] != now["start_time"]:
        return f"pid {leader} is now another process (its start time differs)"
    if not any(_is_engine(pid) for pid in members(leader)):
        return f"pid {leader} runs no engine any more"
    return None


def end_stale_groups(trials_root: Path) -> tuple[list[int], list[str]]:
    """End trial groups that a killed probe (SIGKILL, power loss of the terminal) left running:
    (the groups ended, one line per marker whose pid was not signalled, saying why)."""
    ended, spared = [], []
    markers = [*trials_root.glob(f"*/{RUNNING_MARKER}"), *trials_root.glob(f"*/{WAITING_MARKERS}")]
    for marker in markers:
        try:
            named = read_json(marker, MAX_MARKER_BYTES)
            leader = int(named["pid"])
        except (OSError, ValueError, KeyError, TypeError):  # UnsafeFile is a ValueError
            marker.unlink(missing_ok=True)
            continue
        reason = _why_not_to_signal(named, leader)
        if reason is None:
            terminate(leader)
            ended.append(leader)
        elif reason:
            spared.append(f"{marker}: {reason}; not signalled")
        marker.unlink(missing_ok=True)
    return ended, spared


@dataclass
class WaitingWorker:
    """A worker started ahead of its trial: it has imported vLLM and waits for `spec_path`."""

    process: subprocess.Popen
    spec_path: Path
    log_path: Path
    marker: Path  # names its pid for a resumed run while it waits


@dataclass
class TrialLimits:
    timeout_s: float = 900.0
    sample_interval_s: float = 0.1  # 10 Hz
    stall_s: float = 5.0  # a gap this long between samples: the probe was stalled (see judge.STALLED)
    settle_timeout_s: float = 60.0
    gpu_baseline_tolerance: int = 512 * MIB
    host_baseline_tolerance: int = 512 * MIB
    host_shared: bool = False  # other trials share the host (experiment --devices): only the GPU is awaited
    guard: GuardPolicy = field(default_factory=GuardPolicy.disabled)


class TrialRunner:
    """Runs trials one after another in `workdir`, each a fresh engine process group."""

    def __init__(
        self,
        engine: Engine,
        workdir: Path,
        limits: TrialLimits,
        on_sample: Callable[[MemorySample], None] | None = None,
        prestart: bool = False,
        cluster: ClusterAgents | None = None,
        on_log: Callable[[list[str], dict[str, float]], None] | None = None,
    ):
        """`cluster`: the engine spans Ray nodes; their agents sample, guard and tear down there too.
        `on_log`: told each batch of new engine log lines and the phases marked so far (in order)."""
        self.engine = engine
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.on_sample = on_sample
        self.on_log = on_log
        self.cluster = cluster
        self.prestart = prestart
        self.waiting: deque[WaitingWorker] = deque()  # the next trials' workers, in the order they will run
        self._prestarted = 0
        self.nvml = Nvml()
        self.sampler = MemorySampler(self.nvml)
        become_subreaper()
        self.stale_groups_ended, self.stale_markers_spared = end_stale_groups(self.workdir.parent)
        # what a killed earlier run of this id left on any node (its driver group just ended above)
        self.stale_on_nodes = cluster.sweep(self.workdir.name) if cluster else {}
        if self.stale_groups_ended or self.stale_on_nodes:
            self._wait_until_memory_is_steady()

    def close(self) -> None:
        """End the workers waiting for trials that will not come, then let NVML go."""
        with interrupts_held():
            self._end_waiting()
        self.nvml.__exit__()

    def _spawn(self, command: list[str], log_path: Path, tag: str | None = None) -> subprocess.Popen:
        """A worker in its own session and process group, its output in `log_path`; `tag` names its
        trial in its environment (cluster.agent finds the trial's processes by it)."""
        env = {**os.environ, **self.engine.worker_environment(), **({TRIAL_TAG: tag} if tag else {})}
        with os.fdopen(create_new(log_path), "wb") as log:
            return subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
            )

    def _start_waiting(self, running_spec: Path) -> None:
        """Start the next trials' workers now, up to PRESTART_DEPTH: they import, and prepare like the
        running trial (`running_spec`), while it runs (discrete GPUs only: they create no CUDA
        context, and their host memory is not the pool measured there). Across Ray nodes they only
        import: building a config there may reach for the cluster before the trial has joined it."""
        like = None if self.cluster is not None else str(running_spec)
        while len(self.waiting) < PRESTART_DEPTH:
            self._prestarted += 1
            stem = self.workdir / f"waiting-{self._prestarted:03d}"
            spec_path, log_path, marker = (Path(f"{stem}.{suffix}") for suffix in ("spec.json", "log", "worker.json"))
            process = self._spawn(self.engine.worker_command(str(spec_path), prepare_like=like), log_path)
            write_marker(marker, process.pid)
            self.waiting.append(WaitingWorker(process, spec_path, log_path, marker))

    def _end_waiting(self) -> None:
        while self.waiting:
            worker = self.waiting.popleft()
            terminate(worker.process.pid)
            worker.process.wait()
            worker.log_path.unlink(missing_ok=True)  # it never ran a trial: nothing to keep
            worker.marker.unlink(missing_ok=True)

    def _waiting_private_bytes(self) -> int:
        """The waiting workers' own pages: not part of the trial being torn down."""
        return sum(resident_memory(worker.process.pid)["private_bytes"] for worker in self.waiting)

    def _launch(
        self, spec: WorkerSpec, spec_path: Path, result_path: Path, log_path: Path
    ) -> tuple[subprocess.Popen, bool]:
        """(the trial's worker, whether it was prestarted): a waiting worker gets its spec, else a new one starts."""
        write_new(spec_path, spec.model_dump_json(indent=1))
        if not self.waiting:
            command = self.engine.worker_command(str(spec_path), str(result_path))
            return self._spawn(command, log_path, spec.ray.tag if spec.ray else None), False
        waiting = self.waiting.popleft()
        os.replace(waiting.log_path, log_path)  # the worker keeps writing; the log now bears its trial's name
        ready = waiting.spec_path.with_name(waiting.spec_path.name + ".tmp")
        write_new(ready, spec.model_copy(update={"result_path": str(result_path)}).model_dump_json(indent=1))
        os.replace(ready, waiting.spec_path)  # the worker sees the whole spec or none; spec_path keeps the record
        waiting.marker.unlink(missing_ok=True)
        return waiting.process, True

    def run(self, request: TrialRequest) -> TrialRecord:
        stem = self.workdir / f"trial-{request.number:03d}-{request.search}"
        spec_path, result_path, log_path = (Path(f"{stem}.{suffix}") for suffix in ("spec.json", "result.json", "log"))
        ready_gate = Path(f"{stem}.measured")
        for stale in (result_path, ready_gate, Path(f"{result_path}.tmp")):  # .tmp: the worker writes it
            stale.unlink(missing_ok=True)
        workload = Workload(
            generate_tokens=request.generate_tokens,
            fill_target=request.fill_target,
            throughput=Throughput(**request.throughput) if request.throughput else None,
        )
        spec = WorkerSpec(
            engine_args=request.engine_args,
            usage_context=request.usage_context,
            ready_gate=str(ready_gate),
            workload=workload,
        )
        if self.cluster is not None:
            tag = f"{self.workdir.name}/{request.number}"  # RUN_ID/NUMBER: a resumed run sweeps its RUN_ID
            spec = spec.model_copy(update={"ray": RayJoin(address=self.cluster.address, tag=tag)})
            self.cluster.begin(tag)
        baseline = self.sampler.baseline()
        started_at = time.time()
        marker = self.workdir / RUNNING_MARKER
        process: subprocess.Popen | None = None
        try:
            # An interrupt arriving while the worker is spawned waits until its group is known: one that
            # came between the spawn and this try left the engine running after kvprobe exited 130.
            with interrupts_held():
                process, prestarted = self._launch(spec, spec_path, result_path, log_path)
                write_marker(marker, process.pid, started_at=started_at)
            if self.prestart:
                self._start_waiting(spec_path)
            verdict, samples, phases, engine_memory = self._watch(process, log_path, ready_gate)
        except BaseException:  # Ctrl-C, SIGTERM or SIGHUP: never leave an engine (or a waiting worker) behind
            with interrupts_held():  # a second interrupt waits until the teardown is done
                if process is not None:
                    terminate(process.pid)
                    process.wait()
                marker.unlink(missing_ok=True)
                ready_gate.unlink(missing_ok=True)
                self._end_waiting()
                if self.cluster is not None:
                    with contextlib.suppress(Exception):  # the interrupt goes on even if a node cannot answer
                        self.cluster.end(self.limits.settle_timeout_s, self.limits.host_baseline_tolerance)
            raise
        wall_s = time.time() - started_at
        teardown_started = time.monotonic()
        with interrupts_held():  # an interrupt now takes effect once the group is gone
            kill_s = terminate(process.pid)
            process.wait()
            marker.unlink(missing_ok=True)
            ready_gate.unlink(missing_ok=True)
        restored = self._settle(baseline)
        nodes = []
        if self.cluster is not None:  # the driver is gone: each node ends what is left there and settles
            nodes = self.cluster.end(self.limits.settle_timeout_s, self.limits.host_baseline_tolerance)
            restored = restored and all(node.baseline_restored for node in nodes)
        teardown_s = time.monotonic() - teardown_started

        log_text = read_text(log_path, MAX_LOG_BYTES, errors="replace")
        worker = _worker_result(result_path)
        memory = summarise(samples, phases)
        memory.engine_at_ready = engine_memory
        memory.probe_gpu_bytes = sum(
            p.used_bytes or 0 for p in (engine_memory.gpu_processes if engine_memory else []) if p.pid == os.getpid()
        )
        done = memory.phases.get("done")
        if done is not None and worker.cuda is not None:  # CUDA's view is taken last, so that its context
            memory.phases["done"] = done.model_copy(update={"cuda_free": worker.cuda.free_bytes})  # never
            # shares the device with the engine's start
        if worker.fill is not None:
            worker.fill.peak_kv_usage_logged = self.engine.logged_peak_kv_usage(log_text)
        memory_report = self.engine.memory_report(log_text)
        observed = Observed(
            verdict=verdict,
            returncode=process.returncode,
            worker=worker,
            said=self.engine.classify(log_text),
            fill_target=request.fill_target,
            kv_cache_memory_bytes=request.kv_cache_memory_bytes,
            memory_report=memory_report,
            largest_sample_gap_s=largest_gap(samples),
            stall_s=self.limits.stall_s,
        )
        return TrialRecord(
            **request.recorded(),
            **judge(observed).model_dump(),
            started_at=started_at,
            wall_s=wall_s,
            teardown_s=teardown_s,
            kill_s=kill_s,
            returncode=process.returncode,
            baseline_restored=restored,
            prestarted=prestarted,
            waiting_worker_pid=self.waiting[0].process.pid if self.waiting else None,
            memory_report=memory_report,
            worker=worker,
            memory=memory,
            baseline=baseline,
            log_tail=log_text.splitlines()[-LOG_TAIL_LINES:],
            log_path=str(log_path),
            nodes=nodes,
            largest_sample_gap_s=observed.largest_sample_gap_s,
        )

    def _watch(
        self, process: subprocess.Popen, log_path: Path, ready_gate: Path
    ) -> tuple[tuple[Outcome, str] | None, list[MemorySample], dict[str, float], EngineAtReady | None]:
        """Sample until the worker exits; return (outcome, reason) if we had to stop it, the samples,
        the phase marks and the engine's own memory once it was ready (PSS, NVML processes). The
        worker waits at ready until `ready_gate` exists, so those reads see an idle engine."""
        samples: list[MemorySample] = []
        phases: dict[str, float] = {}
        deadline = time.monotonic() + self.limits.timeout_s
        offset = 0
        pending = b""
        engine_memory: EngineAtReady | None = None
        while True:
            sample = self.sampler.sample()
            samples.append(sample)
            if self.on_sample:
                self.on_sample(sample)
            with open(log_path, "rb", opener=no_follow) as log:
                log.seek(offset)
                chunk = log.read()
            offset += len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            seen = len(phases)
            decoded = [raw.decode(errors="replace") for raw in lines]
            for line in decoded:
                self._mark_phase(line, sample.t, phases)
            if self.on_log and decoded:
                self.on_log(decoded, phases)
            if self.cluster is not None:
                for phase in list(phases)[seen:]:
                    self.cluster.mark(phase)
            if "ready" in phases and engine_memory is None:
                engine_memory = measure_at_ready(members(process.pid), self.nvml)
                # The sample in whose loop the mark was read was taken before the engine wrote it
                # (startup's transient memory still held): the ready sample is taken beside the
                # engine's own measurement instead, while the engine waits idle at ready.
                at_ready = self.sampler.sample()
                samples.append(at_ready)
                phases["ready"] = at_ready.t
                write_new(ready_gate, b"")  # the engine waited idle at ready for these reads
            verdict: tuple[Outcome, str] | None = None
            if process.poll() is not None:
                reap_zombies()
                return None, samples, phases, engine_memory
            breach = self.limits.guard.breach(sample) or (self.cluster.breach() if self.cluster else None)
            if breach:
                verdict = ("guard", breach)
            elif time.monotonic() > deadline:
                verdict = ("timeout", f"no result within {self.limits.timeout_s:.0f} s")
            if verdict:
                return verdict, samples, phases, engine_memory
            time.sleep(self.limits.sample_interval_s)

    def _mark_phase(self, line: str, t: float, phases: dict[str, float]) -> None:
        if line.startswith(PHASE_MARK):
            name = line.split()[1]
            phases.setdefault(name, t)
            return
        for name, pattern in self.engine.phase_patterns.items():
            if name not in phases and pattern.search(line):
                phases[name] = t

    def _wait_until_memory_is_steady(self, window_s: float = 2.0, tolerance: int = 64 * MIB) -> None:
        """After ending a stale group, let the kernel hand its memory back before any baseline is taken."""
        deadline = time.monotonic() + self.limits.settle_timeout_s
        last = self.sampler.sample().host_released
        while time.monotonic() < deadline:
            time.sleep(window_s)
            now = self.sampler.sample().host_released
            if abs(now - last) <= tolerance:
                return
            last = now

    def _settle(self, baseline: MemorySample) -> bool:
        """Wait until every device's and the host's memory are back near their pre-trial values."""

        def is_back(now: MemorySample) -> bool:
            gpu_ok = all(
                before is None or after is None or after <= before + self.limits.gpu_baseline_tolerance
                for before, after in zip(baseline.gpu_used_devices or [], now.gpu_used_devices or [], strict=False)
            )
            if self.limits.host_shared:
                return gpu_ok
            released = now.host_released + self._waiting_private_bytes()  # the next trials' workers are not ours
            return gpu_ok and released >= baseline.host_released - self.limits.host_baseline_tolerance

        return wait_until_back(self.sampler, is_back, self.limits.settle_timeout_s)


def _worker_result(path: Path) -> WorkerResult:
    """What the worker wrote; none (the log then tells what happened) if it wrote nothing usable."""
    try:
        return WorkerResult.model_validate_json(read_bytes(path))
    except (FileNotFoundError, UnsafeFile):
        return WorkerResult()


def largest_gap(samples: list[MemorySample]) -> float:
    """The longest time between two samples: the probe samples at 10 Hz, so seconds here mean it was
    stopped (a paused VM, a swapping host) and missed what the engine did meanwhile."""
    return max((b.t - a.t for a, b in itertools.pairwise(samples)), default=0.0)
