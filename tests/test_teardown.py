"""A trial's teardown (trial.process_group.terminate): what handles SIGTERM gets a short grace, then
SIGKILL; what ignores SIGTERM by design, like Python's resource tracker, is left to clean up after
the others and exit by itself. Stand-ins for vLLM's processes, named as such: a worker that does not
act on SIGTERM (vLLM's CPU VLLM::Worker spun 5-6 s after it, seen here) and a tracker that ignores
SIGTERM and exits once the pipe from the others closes."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import wait_until
from kvprobe.trial.process_group import members, terminate

WORKER = "import signal, time; signal.signal(signal.SIGTERM, lambda *a: None); time.sleep(60)"
TRACKER = (
    "import signal, sys, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); sys.stdin.read(); "
    "pathlib.Path(sys.argv[1]).write_text('cleaned up')"
)
LEADER = """
import subprocess, sys, time
tracker = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[3]], stdin=subprocess.PIPE)
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdin=subprocess.DEVNULL)
time.sleep(60)
"""


def test_a_worker_deaf_to_sigterm_is_killed_after_the_grace_and_the_tracker_cleans_up(tmp_path):
    cleaned = tmp_path / "cleaned"
    leader = subprocess.Popen([sys.executable, "-c", LEADER, WORKER, TRACKER, str(cleaned)], start_new_session=True)
    wait_until(lambda: len(members(leader.pid)) >= 3, 30, "the stand-in group never came up")
    started = time.monotonic()
    terminate(leader.pid)
    took = time.monotonic() - started
    leader.wait()
    assert members(leader.pid) == []
    assert cleaned.read_text() == "cleaned up"  # the tracker saw the others go and exited by itself
    assert took < 4.0, f"teardown took {took:.1f} s: the deaf worker should be killed after the grace (SIGTERM_GRACE_S)"
