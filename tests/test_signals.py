"""Signals to the probe while a real vLLM engine (CPU backend) runs: a closed terminal (SIGHUP), and
interrupts repeated during the teardown, end the engine group and leave nothing behind. A probe
stopped mid-start (SIGSTOP) is checked with the stand-in engine: there the probe is the subject."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import measure_command, needs_engine, wait_until
from kvprobe.trial.process_group import members
from replay_engine import standin_environment
from test_isolation import VLLM_WORKER, trial_sessions


def engine_sessions(out: Path) -> set[int]:
    """Sessions of this run's real vLLM trial workers (each trial leads its own session)."""
    return trial_sessions(out, VLLM_WORKER)


def start_probe(out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`kvprobe measure` of the tiny model's reference start, natively, its output kept."""
    command = measure_command(out, "--searches", "reference", "--label", "native")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@needs_engine
@pytest.mark.engine
@pytest.mark.parametrize("first", [signal.SIGHUP, signal.SIGQUIT], ids=["SIGHUP", "SIGQUIT"])
def test_a_closed_terminal_then_repeated_interrupts_still_end_the_engine(tmp_path, first):
    """SIGHUP (a closed terminal) or SIGQUIT killed the probe outright and the engine held its memory
    until a later run; a second Ctrl-C during the first one's teardown abandoned it (exit 130, engine
    alive, marker left)."""
    out = tmp_path / "out"
    probe = start_probe(out)
    sessions: set[int] = set()

    def engine_up() -> bool:
        sessions.update(engine_sessions(out))
        return sum(len(members(leader)) for leader in sessions) >= 3  # the worker, EngineCore, its Worker

    wait_until(engine_up, 600, "the engine never came up")
    probe.send_signal(first)
    for _ in range(3):  # Ctrl-C again and again while the first interrupt tears the trial down
        time.sleep(0.2)
        if probe.poll() is None:
            probe.send_signal(signal.SIGINT)
    output, _ = probe.communicate(timeout=120)
    assert probe.returncode == 130, output
    assert [pid for leader in sessions for pid in members(leader)] == []
    assert list(out.glob(".trials/*/running-trial.json")) == []


def test_a_probe_stopped_while_the_engine_starts_marks_the_trial_stalled_and_starts_it_again(tmp_path):
    """A probe stopped for over a minute recorded such a trial `ok`, its phases collapsed. The probe's
    machinery is the subject, not the engine: the stand-in engine (tests/replay_engine.py) replays a
    recorded start that takes 12 s, so the 8 s stop falls inside it."""
    out = tmp_path / "out"
    probe = start_probe(out, standin_environment(start_s=12))
    sessions: set[int] = set()

    def engine_starting() -> bool:
        sessions.update(trial_sessions(out))
        return bool(sessions)

    wait_until(engine_starting, 600, "no trial started")
    probe.send_signal(signal.SIGSTOP)  # as a paused VM or a swapping host stops it
    time.sleep(8)
    probe.send_signal(signal.SIGCONT)
    output, _ = probe.communicate(timeout=900)
    assert probe.returncode == 0, output
    (result,) = [json.loads(p.read_text()) for p in out.glob("tiny-llama/*.json")]
    first, again = result["trials"]
    assert first["outcome"] == "stalled" and first["largest_sample_gap_s"] >= 7, first["reason"]
    assert again["outcome"] == "ok" and result["status"] == "complete"


@needs_engine
@pytest.mark.engine
def test_a_reference_start_ended_by_the_guard_fails_the_result(tmp_path):
    """It gave `status complete` and exit 0 with no figure measured."""
    from kvprobe.environment.memory import read_meminfo

    floor = read_meminfo()["MemAvailable"] - (256 << 20)  # the engine's own start crosses it
    out = tmp_path / "out"
    done = subprocess.run(
        [*measure_command(out, "--searches", "reference", "--label", "native", "--guard-floor", str(floor))],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 1, done.stdout[-2000:]
    (result,) = [json.loads(p.read_text()) for p in out.glob("tiny-llama/*.json")]
    assert result["status"] == "failed" and result["trials"][0]["outcome"] == "guard"
    assert result["errors"][0].startswith("reference start measured nothing: guard")
