"""A results directory is untrusted input, checked by Hypothesis: a link, a FIFO, an oversized file or
deeply nested JSON planted at any path kvprobe reads or writes under it, then `kvprobe report` and
`kvprobe measure --resume` of the shipped tiny model, its engine the recorded-engine stand-in
(tests/replay_engine.py: kvprobe's own lock, manifest, journal, markers and trial files, no vLLM start).
Whatever is planted,
no file outside the directory changes, nothing hangs beyond a bound, and the exit is 0, 1 or 2 with
a sentence, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, tiny_models_file
from replay_engine import standin_environment

SAMPLE = ROOT / "tests" / "data" / "results"
VICTIM_TEXT = "outside the results directory\n"
RUN_ID = "20261125T120024-252c"
# Every kind of file kvprobe reads or writes under a results directory.
PATHS = (
    ".kvprobe.lock",
    ".kvprobe-run-native.json",
    f".journal/{RUN_ID}.jsonl",
    f".trials/{RUN_ID}/running-trial.json",
    f".trials/{RUN_ID}/waiting-001.worker.json",
    f".trials/{RUN_ID}/trial-001-reference.log",
    f".trials/{RUN_ID}/trial-001-reference.spec.json",
    "tiny-llama/native-20261125T120024-252c-r1.json",
    "tiny-llama/native-20261125T999999-0000-r1.json",
    "experiment.json",
    "summary.json",
)
PLANTS = ("link", "fifo", "oversized", "nested", "garbage")
BOUND_S = 60


def plant(path: Path, kind: str, victim: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    if kind == "link":
        path.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "oversized":
        with open(path, "wb") as handle:
            handle.truncate(2 << 30)  # 2 GiB, sparse: a reader that does not check the size would take it whole
    elif kind == "nested":
        path.write_text("[" * 5000 + "]" * 5000)
    else:
        path.write_bytes(b"\x00\xff{not json\n")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kvprobe.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=BOUND_S,
        env=standin_environment(),
    )


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(PATHS), kind=st.sampled_from(PLANTS))
def test_anything_planted_under_a_results_directory_is_refused_or_skipped(tmp_path_factory, where, kind):
    base = tmp_path_factory.mktemp("planted")
    out = base / "out"
    shutil.copytree(SAMPLE, out)
    victim = base / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    models = tiny_models_file(base)
    plant(out / where, kind, victim)

    for args in (
        ("report", str(out), "--format", "json", "--out", str(base / "report")),
        ("measure", str(models), "--out", str(out), "--resume", "--label", "native", "--searches", "reference"),
    ):
        done = run(*args, cwd=base)
        said = done.stdout + done.stderr
        assert done.returncode in (0, 1, 2), said
        assert "Traceback" not in said, said
        assert done.returncode == 0 or said.strip(), "a failure must say why"
        assert victim.read_text() == VICTIM_TEXT
