"""Interrupting `kvprobe container` with the real runtime (podman) and the real engine: Ctrl-C in the
native half starts no container; SIGTERM in the container half leaves no container and no engine."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, container_command, needs_engine, needs_podman, wait_until
from test_isolation import VLLM_WORKER, alive, trial_sessions

pytestmark = [needs_engine, needs_podman, pytest.mark.engine, pytest.mark.container]


def start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "out"
    command = container_command(out, "--searches", "reference", *extra)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT), out


def containers(process: subprocess.Popen) -> list[str]:
    done = subprocess.run(
        ["podman", "ps", "-a", "--filter", f"name=kvprobe-measure-{process.pid}", "--format", "{{.Names}} {{.Status}}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [line for line in done.stdout.splitlines() if line.strip()]


def test_ctrl_c_in_the_native_half_starts_no_container(tmp_path):
    process, out = start(tmp_path, "--both")
    wait_until(lambda: trial_sessions(out, VLLM_WORKER))
    sessions = trial_sessions(out, VLLM_WORKER)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 130, output
    assert "the container half was not started" in output
    assert containers(process) == []
    assert alive(sessions) == []
    assert not list(out.glob("*/container-*.json"))


def test_sigterm_in_the_container_half_leaves_no_container_and_no_engine(tmp_path):
    process, out = start(tmp_path)
    # The results directory is mounted read-write: the trial's marker shows on the host once it runs.
    wait_until(lambda: list(out.glob(".trials/*/running-trial.json")))
    wait_until(lambda: any("Up" in line for line in containers(process)))
    time.sleep(5)  # mid-start: the engine's processes exist inside the container
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 130, output
    assert "stopped and removed container" in output
    assert containers(process) == []
    leftover = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", leftover.stdout  # no engine, no probe: nothing mentions this run
