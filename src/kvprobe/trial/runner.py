"""One isolated engine start: its own process group, a timeout, the guard, and a full teardown."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kvprobe.engines.vllm import VllmEngine
from kvprobe.environment.gpu import Nvml
from kvprobe.results.schema import EngineAtReady, MemorySample, NodeTrial, TrialRecord, WorkerResult
from kvprobe.trial.executor import TrialRequest
from kvprobe.trial.monitor import GuardPolicy, MemorySampler, measure_at_ready, summarise, wait_until_back
from kvprobe.trial.process_group import become_subreaper, members, reap_zombies, resident_memory, terminate
from kvprobe.units import MIB
from kvprobe.vocabulary import Outcome
from kvprobe.worker_protocol import PHASE_MARK, TRIAL_TAG


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


def end_stale_groups(trials_root: Path) -> list[int]:
    """End trial groups that a killed probe (SIGKILL, power loss of the terminal) left running."""
    ended = []
    markers = [*trials_root.glob(f"*/{RUNNING_MARKER}"), *trials_root.glob(f"*/{WAITING_MARKERS}")]
    for marker in markers:
        try:
            leader = int(json.loads(marker.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            marker.unlink(missing_ok=True)
            continue
        if any(_is_engine(pid) for pid in members(leader)):  # not a stranger that reused the pid
            terminate(leader)
            ended.append(leader)
        marker.unlink(missing_ok=True)
    return ended


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
    settle_timeout_s: float = 60.0
    gpu_baseline_tolerance: int = 512 * MIB
    host_baseline_tolerance: int = 512 * MIB
    guard: GuardPolicy = field(default_factory=GuardPolicy.disabled)


class TrialRunner:
    """Runs trials one after another in `workdir`, each a fresh engine process group."""

    def __init__(
        self,
        engine: VllmEngine,
        workdir: Path,
        limits: TrialLimits,
        on_sample: Callable[[MemorySample], None] | None = None,
        prestart: bool = False,
        cluster: ClusterAgents | None = None,
    ):
        """`cluster`: the engine spans Ray nodes; their agents sample, guard and tear down there too."""
        self.engine = engine
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.on_sample = on_sample
        self.cluster = cluster
        self.prestart = prestart
        self.waiting: deque[WaitingWorker] = deque()  # the next trials' workers, in the order they will run
        self._prestarted = 0
        self.nvml = Nvml()
        self.sampler = MemorySampler(self.nvml)
        become_subreaper()
        self.stale_groups_ended = end_stale_groups(self.workdir.parent)
        # what a killed earlier run of this id left on any node (its driver group just ended above)
        self.stale_on_nodes = cluster.sweep(self.workdir.name) if cluster else {}
        if self.stale_groups_ended or self.stale_on_nodes:
            self._wait_until_memory_is_steady()

    def close(self) -> None:
        """End the workers waiting for trials that will not come, then let NVML go."""
        self._end_waiting()
        self.nvml.__exit__()

    def _spawn(self, command: list[str], log_path: Path, tag: str | None = None) -> subprocess.Popen:
        """A worker in its own session and process group, its output in `log_path`; `tag` names its
        trial in its environment (cluster.agent finds the trial's processes by it)."""
        env = {**os.environ, **self.engine.worker_environment(), **({TRIAL_TAG: tag} if tag else {})}
        with open(log_path, "wb") as log:
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
            marker.write_text(json.dumps({"pid": process.pid}))
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

    def _launch(self, spec: dict, spec_path: Path, result_path: Path, log_path: Path) -> tuple[subprocess.Popen, bool]:
        """(the trial's worker, whether it was prestarted): a waiting worker gets its spec, else a new one starts."""
        spec_path.write_text(json.dumps(spec, indent=1))
        if not self.waiting:
            command = self.engine.worker_command(str(spec_path), str(result_path))
            return self._spawn(command, log_path, spec.get("ray", {}).get("tag")), False
        waiting = self.waiting.popleft()
        os.replace(waiting.log_path, log_path)  # the worker keeps writing; the log now bears its trial's name
        ready = waiting.spec_path.with_name(waiting.spec_path.name + ".tmp")
        ready.write_text(json.dumps({**spec, "result_path": str(result_path)}))
        os.replace(ready, waiting.spec_path)  # the worker sees the whole spec or none; spec_path keeps the record
        waiting.marker.unlink(missing_ok=True)
        return waiting.process, True

    def run(self, request: TrialRequest) -> TrialRecord:
        stem = self.workdir / f"trial-{request.number:03d}-{request.search}"
        spec_path, result_path, log_path = (Path(f"{stem}.{suffix}") for suffix in ("spec.json", "result.json", "log"))
        ready_gate = Path(f"{stem}.measured")
        for stale in (result_path, ready_gate):
            stale.unlink(missing_ok=True)
        spec = {
            "engine_args": request.engine_args,
            "usage_context": request.usage_context,
            "ready_gate": str(ready_gate),
            "workload": {
                "generate_tokens": request.generate_tokens,
                "fill_target": request.fill_target,
                "throughput": request.throughput,
            },
        }
        if self.cluster is not None:
            tag = f"{self.workdir.name}/{request.number}"  # RUN_ID/NUMBER: a resumed run sweeps its RUN_ID
            spec["ray"] = {"address": self.cluster.address, "tag": tag}
            self.cluster.begin(tag)
        baseline = self.sampler.baseline()
        started_at = time.time()
        marker = self.workdir / RUNNING_MARKER
        process, prestarted = self._launch(spec, spec_path, result_path, log_path)
        marker.write_text(json.dumps({"pid": process.pid, "started_at": started_at}))
        try:
            if self.prestart:
                self._start_waiting(spec_path)
            verdict, samples, phases, engine_memory = self._watch(process, log_path, ready_gate)
        except BaseException:  # Ctrl-C or SIGTERM: never leave an engine (or a waiting worker) behind
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

        log_text = log_path.read_text(errors="replace")
        worker = WorkerResult.model_validate_json(result_path.read_text()) if result_path.exists() else WorkerResult()
        memory = summarise(samples, phases)
        memory.engine_at_ready = engine_memory
        memory.probe_gpu_bytes = sum(
            p.used_bytes or 0 for p in (engine_memory.gpu_processes if engine_memory else []) if p.pid == os.getpid()
        )
        timing = {"started_at": started_at, "wall_s": wall_s, "teardown_s": teardown_s, "kill_s": kill_s}
        record = TrialRecord(
            **request.recorded(),
            **timing,
            outcome="ok",
            reason="",
            returncode=process.returncode,
            baseline_restored=restored,
            prestarted=prestarted,
            waiting_worker_pid=self.waiting[0].process.pid if self.waiting else None,
            memory_report=self.engine.memory_report(log_text),
            worker=worker,
            memory=memory,
            baseline=baseline,
            log_tail=log_text.splitlines()[-LOG_TAIL_LINES:],
            log_path=str(log_path),
            nodes=nodes,
        )
        done = memory.phases.get("done")
        if done is not None and worker.cuda is not None:  # CUDA's view is taken last, so that its context
            memory.phases["done"] = done.model_copy(update={"cuda_free": worker.cuda.free_bytes})  # never
            # shares the device with the engine's start
        self._judge(record, verdict, worker, log_text)
        return record

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
            with open(log_path, "rb") as log:
                log.seek(offset)
                chunk = log.read()
            offset += len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            seen = len(phases)
            for raw in lines:
                self._mark_phase(raw.decode(errors="replace"), sample.t, phases)
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
                ready_gate.touch()  # the engine waited idle at ready for these reads
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
            released = now.host_released + self._waiting_private_bytes()  # the next trials' workers are not ours
            return gpu_ok and released >= baseline.host_released - self.limits.host_baseline_tolerance

        return wait_until_back(self.sampler, is_back, self.limits.settle_timeout_s)

    def _judge(
        self, record: TrialRecord, verdict: tuple[Outcome, str] | None, worker: WorkerResult, log_text: str
    ) -> None:
        if verdict is not None:
            record.outcome, record.reason = verdict
        elif record.returncode == 0 and worker.num_gpu_blocks is not None:
            record.outcome = "ok"
        elif record.returncode is not None and record.returncode < 0:
            record.outcome, record.reason = "killed", f"worker ended by signal {-record.returncode}"
            engine_said = self.engine.classify(log_text)
            if engine_said.outcome != "error":
                record.outcome, record.reason = engine_said.outcome, engine_said.reason
        else:
            said = self.engine.classify(log_text)
            record.outcome, record.reason = said.outcome, said.reason

        if record.outcome != "ok":
            return
        record.num_gpu_blocks = worker.num_gpu_blocks or None
        record.block_size = worker.block_size
        record.bytes_per_block = worker.bytes_per_block
        record.kv_cache_tokens = kv_tokens(record)
        record.kv_cache_bytes = _kv_bytes(record)
        fill = worker.fill
        if fill is not None:
            fill.peak_kv_usage_logged = self.engine.logged_peak_kv_usage(log_text)
        if record.fill_target and fill and fill.peak_kv_usage + 1e-9 < record.fill_target:
            record.reason = (
                f"fill reached {fill.peak_kv_usage:.1%} of the KV blocks, below the {record.fill_target:.0%} target"
            )
            record.passed = False
            return
        record.passed = True
        record.reason = record.reason or "started and generated"


def kv_tokens(record: TrialRecord) -> int | None:
    """The engine's own token capacity. With full and sliding-window layers a block holds one group's
    layers, so blocks x block size would count every token once per group (twice for GPT-OSS)."""
    logged = record.memory_report.kv_cache_tokens_logged
    if logged:
        return logged
    return record.num_gpu_blocks * record.block_size if record.num_gpu_blocks and record.block_size else None


def _kv_bytes(record: TrialRecord) -> int | None:
    """What the engine allocated, exactly: blocks x bytes per block. Without bytes per block (an MLA
    model, an engine that does not say), the budget asked for, else the engine's two-decimal GiB log."""
    if record.num_gpu_blocks and record.bytes_per_block:
        return record.num_gpu_blocks * record.bytes_per_block
    if record.kv_cache_memory_bytes:
        return int(record.kv_cache_memory_bytes)
    logged = record.memory_report.kv_cache_bytes
    return int(logged) if logged is not None else None
