"""What a run shows while it runs: on a terminal the live line (start k of about n, ETA, phase, the
memory figure the guard acts on and its floor); piped, one JSON Lines (or logfmt) record per line.

Most measurements here use the stand-in engine (tests/replay_engine.py), which replays recorded vLLM
starts: the trial runner, its sampling and phase marks, and the display are kvprobe's own code. The
real CPU engine's run on a pseudo-terminal, as a user's overnight run would be watched, is
tests/test_engine_window.py's (one run serves both)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import ROOT, run_in_pty, tiny_models_file
from kvprobe.output.progress import RecordConsole, headroom_warning, record_key, record_line
from kvprobe.trial.monitor import GuardPolicy
from replay_engine import standin_environment

GIB = 1 << 30


def measure_command(tmp_path, *extra: str) -> list[str]:
    models = tiny_models_file(tmp_path)
    out = tmp_path / "out"
    return [sys.executable, "-m", "kvprobe.cli", "measure", str(models), "--searches", "reference,u_max",
            "--out", str(out), *extra]  # fmt: skip


def test_a_terminal_shows_k_of_n_eta_phase_and_the_guards_figure_and_floor(tmp_path):
    code, shown = run_in_pty(measure_command(tmp_path), standin_environment(start_s=3.0))
    assert code == 0, shown[-3000:]
    assert re.search(r"start 1 of about \d+", shown), shown[-3000:]
    assert re.search(r"start [2-9] of about \d+", shown)
    assert "ETA after the first start" in shown
    assert re.search(r"ETA ~\d+ (s|min) \(from \d+ starts\)", shown)
    assert re.search(r"phase (importing|weights|profiling|KV allocated)", shown)
    assert re.search(r"(MemAvailable|MemFree) \d+\.\d\d GiB \(guard floor \d+\.\d\d GiB\)", shown)


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
