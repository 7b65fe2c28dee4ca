"""Trials against real processes: a start killed midway, an interrupted run, the memory guard.

Where kvprobe's own machinery is the subject (the timeout, resume after an interrupt or a kill, the
run lock) the engine is a stand-in that replays recorded vLLM starts through the real trial runner
(tests/replay_engine.py); where the engine's own process tree is the subject, the real vLLM runs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MODELS, ROOT, load_results, measure_command, needs_engine, needs_podman, podman_base, wait_until
from kvprobe.config import load_models
from kvprobe.engines import get_engine
from kvprobe.trial.executor import TrialRequest
from kvprobe.trial.monitor import GuardPolicy
from kvprobe.trial.process_group import members
from kvprobe.trial.runner import TrialLimits, TrialRunner, end_stale_groups, write_marker
from replay_engine import ReplayEngine, standin_environment

GIB = 1 << 30
VLLM_WORKER = "kvprobe.engines.vllm_worker"
STANDIN_WORKER = "kvprobe_replay_worker"


def trial_sessions(root: Path, worker: str = STANDIN_WORKER) -> set[int]:
    """Session ids of trials started under `root` (each trial leads its own session) whose worker
    command names `worker`."""
    sessions = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if worker in command and str(root) in command:
                sessions.add(int(entry.name))
    return sessions


def alive(sessions: set[int]) -> list[int]:
    """Live processes of those sessions, the engine's EngineCore and Worker included."""
    return sorted(pid for leader in sessions for pid in members(leader))


def start_tiny_trial(tmp_path, limits, on_sample, engine=None):
    (settings,) = load_models(MODELS, only=["tiny-llama"])
    engine = engine or get_engine()
    runner = TrialRunner(engine, tmp_path, limits, on_sample=on_sample)
    try:
        return runner.run(TrialRequest(1, "manual", engine.engine_args(settings, 0.1), utilization=0.1))
    finally:
        runner.close()


@needs_engine
@pytest.mark.engine
def test_a_trial_interrupted_mid_start_leaves_no_process_behind(tmp_path):
    """Ctrl-C once vLLM's EngineCore and Worker exist: the whole group goes, none outlives the trial."""
    sessions, seen = set(), []

    def interrupt_when_the_engine_is_up(sample):
        sessions.update(trial_sessions(tmp_path, VLLM_WORKER))
        seen.append(len(alive(sessions)))
        if seen[-1] >= 3:  # the trial's own process, EngineCore and its Worker
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        start_tiny_trial(tmp_path, TrialLimits(timeout_s=300), interrupt_when_the_engine_is_up)
    assert max(seen) >= 3 and sessions
    assert alive(sessions) == []
    assert not (tmp_path / "running-trial.json").exists()


def test_a_trial_past_its_timeout_is_ended_and_classified(tmp_path, monkeypatch):
    """The stand-in engine takes 60 s to start; the trial's limit is 3 s."""
    for name, value in standin_environment(start_s=60).items():
        monkeypatch.setenv(name, value)
    sessions = set()
    record = start_tiny_trial(
        tmp_path, TrialLimits(timeout_s=3), lambda sample: sessions.update(trial_sessions(tmp_path)), ReplayEngine()
    )
    assert record.outcome == "timeout" and "no result within 3 s" in record.reason
    assert "engine_start" in record.memory.phases and "ready" not in record.memory.phases
    assert sessions and alive(sessions) == []
    assert record.baseline_restored


def test_a_trial_whose_probe_stalled_is_marked_stalled_not_ok(tmp_path, monkeypatch):
    """The probe's loop stops for 1.5 s (as a paused VM or a swapping host stops it) while the
    stand-in engine starts: the start came up, but the trial is `stalled`, not `ok`."""
    for name, value in standin_environment().items():
        monkeypatch.setenv(name, value)
    calls = []

    def stall_once(sample):
        calls.append(sample)
        if len(calls) == 5:
            time.sleep(1.5)

    record = start_tiny_trial(tmp_path, TrialLimits(timeout_s=120, stall_s=1.0), stall_once, ReplayEngine())
    assert record.outcome == "stalled" and not record.passed, record.reason
    assert record.largest_sample_gap_s is not None and record.largest_sample_gap_s >= 1.5
    assert "no memory sample for" in record.reason


def journal_lines(out: Path) -> int:
    journal_dir = out / ".journal"
    return sum(len(p.read_text().splitlines()) for p in journal_dir.glob("*.jsonl")) if journal_dir.exists() else 0


def started(log: Path) -> bool:
    return log.exists() and "KVPROBE_PHASE engine_start" in log.read_text(errors="replace")


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_an_interrupted_run_resumes_without_repeating_finished_trials(tmp_path, how):
    """Ctrl-C ends the running trial at once; a killed probe leaves it behind for the next run to end.
    The engine is the stand-in, each start 10 s long in the first run, so the second is mid-start
    when the probe is interrupted."""
    out = tmp_path / "out"
    command = measure_command(out, "--searches", "u_max", "--range", "0.1:0.3", "--tolerance", "0.1")
    first = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=standin_environment(start_s=10),
    )
    wait_until(lambda: journal_lines(out) >= 1, 120, "the first trial did not finish")
    wait_until(lambda: any(started(log) for log in out.glob(".trials/*/trial-002-*.log")), 60, "no second trial")
    sessions = trial_sessions(out)
    assert sessions, "no trial was running"
    first.send_signal(getattr(signal, how))
    output, _ = first.communicate(timeout=120)
    assert load_results(out) == []
    if how == "SIGINT":
        assert first.returncode == 130, output
        assert alive(sessions) == []
    else:
        assert alive(sessions), "SIGKILL gave the probe no chance to clean up; the engine should still run"

    second = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, cwd=ROOT, timeout=300, env=standin_environment()
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed, 1 trials journaled" in second.stdout
    if how == "SIGKILL":
        assert "left running by a killed earlier run" in second.stdout
    assert alive(sessions) == []
    (result,) = load_results(out)
    numbers = [t["number"] for t in result["trials"]]
    assert result["replayed_trials"] == 1
    assert len(numbers) == len(set(numbers)) == 2
    assert [t["utilization"] for t in result["trials"]] == [0.2, 0.3]
    assert result["u_max"] == 0.3 and result["searches"]["u_max"]["censored"]
    journal = [json.loads(line) for p in (out / ".journal").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(journal) == 2  # each finished trial journaled once; the interrupted one ran again, once


ALLOCATOR = """
import time
chunks = []
while True:
    chunks.append(bytearray(64 << 20))  # 64 MiB a step, touched: resident at once
    time.sleep(0.2)
"""


class AllocatingEngine(type(get_engine())):
    """The vLLM adapter with its worker replaced by a process that never stops allocating."""

    def worker_command(self, spec_path: str, result_path: str) -> list[str]:
        return [sys.executable, "-c", ALLOCATOR]


def guard_scenario(workdir: str) -> dict:
    """Runs inside a memory-limited container: one allocating trial under the default guard."""
    from kvprobe.environment.memory import host_memory, read_cgroup_memory

    cgroup = read_cgroup_memory()
    guard = GuardPolicy.default(host_memory()["MemTotal"], cgroup.limit_bytes)
    runner = TrialRunner(AllocatingEngine(), Path(workdir), TrialLimits(timeout_s=120, guard=guard))
    record = runner.run(TrialRequest(1, "manual", {}))
    return {"record": record.model_dump(mode="json"), "limit": cgroup.limit_bytes, "floor": guard.cgroup_floor_bytes}


@needs_podman
@pytest.mark.container
def test_the_guard_stops_an_allocating_trial_before_the_cgroup_limit(tmp_path):
    script = (
        f"import json, sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); "
        f"from test_isolation import guard_scenario; print('RESULT', json.dumps(guard_scenario({str(tmp_path)!r})))"
    )
    done = subprocess.run(
        [
            *podman_base("1g"),
            "-v",
            f"{tmp_path}:{tmp_path}",
            "--rootfs",
            "/:O",
            str(ROOT / ".venv/bin/python"),
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # conmon drops an `oom` file in its working directory (containers/conmon#504)
    )
    line = next((text for text in done.stdout.splitlines() if text.startswith("RESULT ")), None)
    assert line, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(line[len("RESULT ") :])
    record = result["record"]
    assert result["limit"] == GIB
    assert record["outcome"] == "guard", record["reason"]
    assert "cgroup headroom" in record["reason"]
    peak = record["memory"]["peak_cgroup_usage"]
    assert peak < result["limit"], "the guard fired only after the limit was reached"
    assert peak > 0.5 * GIB, "the trial was stopped before it had allocated anything"


def test_a_second_measurement_on_the_same_out_refuses_and_the_first_finishes_intact(tmp_path):
    """The directory belongs to one measurement at a time; the second must not end the first's engine
    (the stand-in, its start 10 s long)."""
    out = tmp_path / "out"
    command = measure_command(out, "--searches", "reference")
    env = standin_environment(start_s=10)
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
    wait_until(lambda: trial_sessions(out), 120, "the first measurement started no trial")
    sessions = trial_sessions(out)
    assert sessions, "the first measurement started no trial"
    second = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert second.returncode == 2
    assert f"{out}: in use by another kvprobe measurement (pid {first.pid})" in second.stderr
    assert alive(sessions), "the second run ended the first run's engine"
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    (result,) = load_results(out)
    assert result["status"] == "complete" and [t["outcome"] for t in result["trials"]] == ["ok"]


def test_a_resumed_run_ends_the_workers_a_killed_probe_left_waiting(tmp_path):
    """A probe killed outright leaves its prestarted workers waiting, one marker each: the next run
    ends those, and leaves a stranger that reused a marker's pid alone."""
    run = tmp_path / "run-1"
    run.mkdir()

    def sleeper(*argv: str) -> subprocess.Popen:
        command = [sys.executable, "-c", "import time; time.sleep(120)", *argv]
        return subprocess.Popen(command, start_new_session=True)

    waiting = [sleeper("-m", "kvprobe.engines.vllm_worker", str(run / f"waiting-00{n}.spec.json")) for n in (1, 2)]
    stranger = sleeper("unrelated")
    for n, process in enumerate([*waiting, stranger], 1):
        write_marker(run / f"waiting-00{n}.worker.json", process.pid)
    try:
        ended, spared = end_stale_groups(tmp_path)
        assert sorted(ended) == sorted(p.pid for p in waiting)
        assert spared == [
            f"{run / 'waiting-003.worker.json'}: pid {stranger.pid} runs no engine any more; not signalled"
        ]
        for process in waiting:
            process.wait(timeout=10)  # raises while it lives
        assert stranger.poll() is None
        assert not list(run.glob("waiting-*.worker.json"))
    finally:
        for process in [*waiting, stranger]:
            process.kill()
            process.wait()


def test_a_trial_worker_lets_the_interrupts_through_that_its_spawn_held(tmp_path, monkeypatch):
    """The runner spawns a worker with SIGINT, SIGTERM, SIGHUP and SIGQUIT held (so that a Ctrl-C
    cannot fall between the spawn and the teardown), and a child inherits its parent's signal mask.
    The worker must lift it, or SIGTERM never reaches the engine and every teardown waits for SIGKILL
    (as it did from 2a47d7b until this test). The stand-in worker lifts it as kvprobe's workers do."""
    from kvprobe.worker_protocol import INTERRUPTS

    monkeypatch.setenv("KVPROBE_STANDIN_RECORDING", standin_environment()["KVPROBE_STANDIN_RECORDING"])
    held = sum(1 << (number - 1) for number in INTERRUPTS)
    masks: list[int] = []

    def look(sample) -> None:
        for leader in trial_sessions(tmp_path):
            try:
                status = Path(f"/proc/{leader}/status").read_text()
            except OSError:
                continue
            masks.append(int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16))

    start_tiny_trial(tmp_path, TrialLimits(timeout_s=120), look, engine=ReplayEngine())
    assert masks, "the worker was never seen"
    assert masks[-1] & held == 0, f"the worker still holds {masks[-1] & held:#x}"
