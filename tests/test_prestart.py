"""The next trials' workers started early (their imports overlap the current trial): off by default
on the CPU backend (kvprobe's own decision, checked with the stand-in engine of tests/replay_engine.py),
and when forced on, with the real CPU engine, a waiting worker never holds an engine and nothing is
left when the run ends."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, load_results, measure_command, needs_engine
from kvprobe.results.schema import EnginePreparation
from kvprobe.trial.process_group import members
from kvprobe.trial.runner import PRESTART_DEPTH
from replay_engine import standin_environment

VLLM_WORKER = b"kvprobe.engines.vllm_worker"
STANDIN_WORKER = b"kvprobe_replay_worker"


def engine_processes(pids: list[int]) -> list[int]:
    """Those of `pids` that are an engine's own processes: vLLM titles them VLLM::EngineCore and
    VLLM::Worker. (Importing vLLM forks short-lived helpers too; those are no engine.)"""
    engines = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"VLLM::"):
                engines.append(pid)
        except OSError:
            continue
    return engines


def workers(root: Path, worker: bytes = VLLM_WORKER) -> dict[int, dict]:
    """Every vllm_worker process under `root`: waiting (started without a result path, its spec not
    written yet) or running a trial, and the engine processes in its session."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(worker in arg for arg in argv) and str(root).encode() in b" ".join(argv):
            pid = int(entry.name)
            args = [a.decode() for a in argv if a]
            at = next(i for i, arg in enumerate(args) if worker.decode() in arg)  # then SPEC [RESULT | --prepare-like]
            started_early = len(args) == at + 2 or args[at + 2] == "--prepare-like"  # no result path
            waiting = started_early and not Path(args[at + 1]).exists()  # its spec not yet written
            found[pid] = {"waiting": waiting, "engine": engine_processes(members(pid))}
    return found


def measure_watched(
    out: Path, *extra: str, standin: bool = False
) -> tuple[subprocess.CompletedProcess, list[dict[int, dict]]]:
    seen: list[dict[int, dict]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(workers(out, STANDIN_WORKER if standin else VLLM_WORKER))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        command = measure_command(
            out, "--searches", "reference,u_max", "--range", "0.1:0.3", "--tolerance", "0.1", *extra
        )
        env = standin_environment() if standin else None
        finished = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
    finally:
        done.set()
        watcher.join()
    return finished, seen


def test_on_the_cpu_backend_no_worker_waits_during_a_trial(tmp_path):
    done, seen = measure_watched(tmp_path / "out", standin=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert any(seen), "the watcher saw no trial"
    assert not any(w["waiting"] for snapshot in seen for w in snapshot.values())
    (result,) = load_results(tmp_path / "out")
    assert result["options"]["prestart"] is False and "CPU backend" in result["options"]["prestart_reason"]
    assert not any(t["prestarted"] for t in result["trials"])
    assert result["options"]["kv_approach"] == "from_below" and "CPU backend" in result["options"]["kv_approach_reason"]


@needs_engine
@pytest.mark.engine
def test_forced_on_the_waiting_worker_never_holds_an_engine_and_nothing_is_left(tmp_path):
    out = tmp_path / "out"
    done, seen = measure_watched(out, "--prestart", "on")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    waiting = [w for snapshot in seen for w in snapshot.values() if w["waiting"]]
    assert waiting, "no worker was seen waiting"
    running = [w for snapshot in seen for w in snapshot.values() if not w["waiting"]]
    assert not any(w["engine"] for w in waiting)  # no EngineCore, no engine worker in its session
    assert max(sum(w["waiting"] for w in snapshot.values()) for snapshot in seen) == PRESTART_DEPTH
    assert any(len(w["engine"]) >= 2 for w in running)  # the check sees a running engine's processes
    (result,) = load_results(out)
    assert result["options"]["prestart"] is True and result["options"]["prestart_reason"] == "--prestart on"
    assert [t["prestarted"] for t in result["trials"]] == [False, True]
    assert all(t["baseline_restored"] for t in result["trials"])
    assert workers(out) == {}  # the workers waiting for later trials were ended with the run
    assert not list(out.glob(".trials/*/waiting-*.worker.json")) and not list(out.glob(".trials/*/waiting-*.log"))
    log = json.loads((out / "tiny-llama" / next(p.name for p in (out / "tiny-llama").iterdir())).read_text())
    assert log["trials"][1]["log_tail"]  # the adopted worker's log was kept under its trial's name
    prepared = log["trials"][1]["worker"]["prepared"]  # it prepared like the trial running then
    assert prepared["like"] == "trial-001-reference.spec.json" and prepared["error"] is None
    assert prepared["steps"] == ["config", "worker", "model"] and not prepared["cuda_initialized"]
    assert log["trials"][0]["worker"]["prepared"] is None


PREPARE = (
    "import json, sys; from pathlib import Path; from kvprobe.engines.vllm_worker import prepare_engine; "
    "print(json.dumps(prepare_engine(Path(sys.argv[1]))))"
)


@needs_engine
@pytest.mark.engine  # imports vLLM and builds its engine config (no engine start)
def test_a_preparation_that_fails_is_recorded_and_raises_nothing(tmp_path):
    running = tmp_path / "trial-001-reference.spec.json"
    running.write_text(json.dumps({"engine_args": {"model": str(tmp_path / "no-such-model"), "load_format": "dummy"}}))
    done = subprocess.run([sys.executable, "-c", PREPARE, str(running)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    prepared = EnginePreparation.model_validate_json(done.stdout.strip().splitlines()[-1])
    assert prepared.like == running.name and prepared.steps == [] and prepared.error
    assert not prepared.cuda_initialized
