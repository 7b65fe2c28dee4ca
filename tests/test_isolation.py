"""Trials against real processes: a start killed midway, an interrupted run, the memory guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MODELS, ROOT, load_results, needs_engine, needs_podman, podman_base
from kvprobe.config import load_models
from kvprobe.engines import get_engine
from kvprobe.trial.monitor import GuardPolicy
from kvprobe.trial.process_group import members
from kvprobe.trial.runner import TrialLimits, TrialRequest, TrialRunner

GIB = 1 << 30


def engine_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "VLLM::" in line or "kvprobe.engines.vllm_worker" in line]


@needs_engine
@pytest.mark.engine
def test_a_trial_killed_mid_start_leaves_no_process_behind(tmp_path):
    (settings,) = load_models(MODELS, only=["tiny-llama"])
    engine = get_engine()
    runner = TrialRunner(engine, tmp_path, TrialLimits(timeout_s=15))
    seen_children = []
    runner.on_sample = lambda sample: seen_children.append(len(engine_processes()))
    record = runner.run(TrialRequest(1, "manual", engine.engine_args(settings, 0.1), utilization=0.1))
    runner.close()
    assert record.outcome == "timeout"
    assert max(seen_children) >= 2, "the engine never spawned its core process; the kill proved nothing"
    assert engine_processes() == []
    assert record.baseline_restored
    assert record.teardown_s < 60


@needs_engine
@pytest.mark.engine
@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_an_interrupted_run_resumes_without_repeating_finished_trials(tmp_path, how):
    """Ctrl-C ends the running trial at once; a killed probe leaves it behind for the next run to end."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "kvprobe.cli", "measure", str(MODELS), "--only", "tiny-llama", "--out", str(out),
               "--searches", "u_max", "--range", "0.1:0.3", "--tolerance", "0.1"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    journal_dir = out / ".journal"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        lines = sum(len(p.read_text().splitlines()) for p in journal_dir.glob("*.jsonl")) if journal_dir.exists() else 0
        if lines >= 1:
            break
        time.sleep(0.5)
    time.sleep(8)  # the second trial is mid-start now
    first.send_signal(getattr(signal, how))
    output, _ = first.communicate(timeout=120)
    assert load_results(out) == []
    if how == "SIGINT":
        assert first.returncode == 130, output
        assert engine_processes() == []
    else:
        assert engine_processes(), "SIGKILL gave the probe no chance to clean up; the engine should still run"

    second = subprocess.run(command + ["--resume"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed, 1 trials journaled" in second.stdout
    if how == "SIGKILL":
        assert "left running by a killed earlier run" in second.stdout
    assert engine_processes() == []
    (result,) = load_results(out)
    numbers = [t["number"] for t in result["trials"]]
    assert result["replayed_trials"] == 1
    assert len(numbers) == len(set(numbers)) == 2
    assert [t["utilization"] for t in result["trials"]] == [0.2, 0.3]
    assert result["u_max"] == 0.3 and result["searches"]["u_max"]["censored"]
    journal = [json.loads(line) for p in (out / ".journal").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(journal) == 2  # each finished trial journaled once; the interrupted one ran again, once
    attribution = result["attribution"]  # natively: the host pool, no cgroup cut
    assert attribution["pool"] == "host" and attribution["parts"]["cgroup_cut"] == 0
    assert abs(attribution["unexplained_bytes"]) <= 0.01 * attribution["total_bytes"], attribution


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
    return {"record": record.to_dict(), "limit": cgroup.limit_bytes, "floor": guard.cgroup_floor_bytes}


@needs_podman
@pytest.mark.container
def test_the_guard_stops_an_allocating_trial_before_the_cgroup_limit(tmp_path):
    script = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); "
              f"from test_isolation import guard_scenario; print('RESULT', json.dumps(guard_scenario({str(tmp_path)!r})))")
    done = subprocess.run(
        podman_base("1g") + ["-v", f"{tmp_path}:{tmp_path}", "--rootfs", "/:O", str(ROOT / ".venv/bin/python"), "-c", script],
        capture_output=True, text=True, timeout=300,
    )
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(line[len("RESULT "):])
    record = result["record"]
    assert result["limit"] == GIB
    assert record["outcome"] == "guard", record["reason"]
    assert "cgroup headroom" in record["reason"]
    peak = record["memory"]["peak_cgroup_usage"]
    assert peak < result["limit"], "the guard fired only after the limit was reached"
    assert peak > 0.5 * GIB, "the trial was stopped before it had allocated anything"
