"""What a run shows while it runs: on a terminal the live line (start k of about n, ETA, phase, the
memory figure the guard acts on and its floor); piped, one JSON Lines (or logfmt) record per line.

Most measurements here use the stand-in engine (tests/replay_engine.py), which replays recorded vLLM
starts: the trial runner, its sampling and phase marks, and the display are kvprobe's own code. One
drives the real CPU engine in a pseudo-terminal, as a user's overnight run would be watched."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, needs_engine, tiny_models_file
from kvprobe.output.progress import RecordConsole, headroom_warning, record_key, record_line
from kvprobe.trial.monitor import GuardPolicy
from replay_engine import standin_environment

GIB = 1 << 30
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def measure_command(tmp_path, *extra: str) -> list[str]:
    models = tiny_models_file(tmp_path)
    out = tmp_path / "out"
    return [sys.executable, "-m", "kvprobe.cli", "measure", str(models), "--searches", "reference,u_max",
            "--out", str(out), *extra]  # fmt: skip


def run_in_pty(command: list[str], env: dict[str, str], timeout_s: float = 300) -> tuple[int, str]:
    """`command` on a pseudo-terminal 200 columns wide; its exit code and everything it showed."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    env = {**env, "COLUMNS": "200", "LINES": "50", "TERM": "xterm-256color"}
    process = subprocess.Popen(
        command, stdin=follower, stdout=follower, stderr=follower, cwd=ROOT, env=env, start_new_session=True
    )
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process has ended
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:  # past the limit: end kvprobe and whatever engine it started
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_a_terminal_shows_k_of_n_eta_phase_and_the_guards_figure_and_floor(tmp_path):
    code, shown = run_in_pty(measure_command(tmp_path), standin_environment(start_s=3.0))
    assert code == 0, shown[-3000:]
    assert re.search(r"start 1 of about \d+", shown), shown[-3000:]
    assert re.search(r"start [2-9] of about \d+", shown)
    assert "ETA after the first start" in shown
    assert re.search(r"ETA ~\d+ (s|min) \(from \d+ starts\)", shown)
    assert re.search(r"phase (importing|weights|profiling|KV allocated)", shown)
    assert re.search(r"(MemAvailable|MemFree) \d+\.\d\d GiB \(guard floor \d+\.\d\d GiB\)", shown)


@needs_engine
@pytest.mark.engine
def test_a_real_engine_run_on_a_terminal_shows_its_progress(tmp_path):
    """vLLM's CPU backend, two starts (the reference, and u_max over a range whose top passes)."""
    command = measure_command(tmp_path, "--range", "0.2:0.22", "--no-confirm")
    code, shown = run_in_pty(command, dict(os.environ), timeout_s=900)
    assert code == 0, shown[-3000:]
    assert re.search(r"start 1 of about \d+", shown) and re.search(r"start 2 of about \d+", shown), shown[-3000:]
    assert re.search(r"ETA ~\d+ (s|min) \(from 1 starts?\)", shown), shown[-3000:]
    for phase in ("importing", "weights", "profiling", "KV allocated"):
        assert f"phase {phase}" in shown, phase
    assert re.search(r"(MemAvailable|MemFree) \d+\.\d\d GiB \(guard floor \d+\.\d\d GiB\)", shown)
    assert re.search(r"tiny-llama\s.*\bcomplete\b", shown), shown[-3000:]  # the summary row at the end


def test_piped_every_line_is_a_json_record(tmp_path):
    done = subprocess.run(
        measure_command(tmp_path, "--show-engine-log"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=standin_environment(),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines()]  # every line parses
    events = {record["event"] for record in records}
    assert {"message", "start", "phase", "trial", "engine_log", "row"} <= events
    starts = [r for r in records if r["event"] == "start"]
    assert starts[0]["start"] == 1 and starts[0]["of_about"] >= len(starts)
    assert any(r.get("eta_s") is not None for r in starts[1:])
    phases = [r for r in records if r["event"] == "phase"]
    assert all(r["guard_floor_bytes"] and r["guard_figure"] in ("MemAvailable", "MemFree") for r in phases)
    rows = [r for r in records if r["event"] == "row"]
    assert rows and all(" " not in key for row in rows for key in row)
    assert "kv_at_u_max_gib" in rows[0]


def test_logfmt_records_quote_what_has_spaces_and_keys_have_none():
    line = record_line({"event": "message", "text": 'a "quoted" path /x y', "n": 3, "ok": True, "none": None}, "logfmt")
    assert line == 'event=message text="a \\"quoted\\" path /x y" n=3 ok=true none=null'
    assert record_key("KV@u_max GiB") == "kv_at_u_max_gib" and record_key("u_ref KV GiB") == "u_ref_kv_gib"
    assert "\n" not in record_line({"text": "two\nlines"}, "jsonl")


def test_a_record_console_renders_markup_to_plain_text_on_one_line(tmp_path):
    path = tmp_path / "out.jsonl"
    with open(path, "w") as file:
        console = RecordConsole("jsonl", file=file)
        console.print("[yellow]warning:[/] " + "a very long line " * 20)
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["text"].startswith("warning: a very long line") and "[" not in record["text"]


def test_a_warning_comes_when_the_guards_figure_starts_near_its_floor():
    unified = GuardPolicy(host_floor_bytes=3 * GIB, cgroup_floor_bytes=None, pessimistic=True)
    said = headroom_warning(unified, {"MemAvailable": 40 * GIB, "MemFree": 3 * GIB})
    assert said and said.startswith("MemFree 3.00 GiB is already near the guard floor 3.00 GiB")
    assert "drop_caches" in said
    discrete = GuardPolicy(host_floor_bytes=3 * GIB, cgroup_floor_bytes=None, pessimistic=False)
    assert headroom_warning(discrete, {"MemAvailable": 40 * GIB, "MemFree": 3 * GIB}) is None
    assert headroom_warning(GuardPolicy.disabled(), {"MemAvailable": GIB, "MemFree": GIB}) is None
