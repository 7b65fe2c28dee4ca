"""A results directory is untrusted input, checked by Hypothesis: a link, a FIFO, an oversized file,
deeply nested JSON or garbage planted at any path kvprobe reads or writes under it (and a link or a
file in place of any of its folders), then `kvprobe report` and `kvprobe measure --resume`.

The directory is a real interrupted run of the shipped tiny model (its engine the recorded-engine
stand-in, tests/replay_engine.py: kvprobe's own lock, manifest, journal, markers and trial files,
no vLLM start), so the resume reads its manifest and journal and continues it, beside the committed
sample results. Whatever is planted, no file outside the directory changes, nothing hangs beyond a
bound, and the exit is 0, 1 or 2 with a sentence, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, tiny_models_file
from replay_engine import standin_environment

SAMPLE = ROOT / "tests" / "data" / "results"
VICTIM_TEXT = "outside the results directory\n"
MEASURE = ("--label", "native", "--searches", "reference,u_max")
PLANTS = ("link", "fifo", "oversized", "nested", "garbage")
FOLDER_PLANTS = ("link", "garbage")  # a link to a folder outside, or a file where the folder was
BOUND_S = 120  # a hang is forever; a resumed trial on a loaded 2-core machine took over 60 s once


def kvprobe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kvprobe.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=BOUND_S,
        env=standin_environment(),
    )


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """A run interrupted after its first trial (its manifest open, one trial journaled), the sample
    results beside it; every file and folder it holds, and the files its resume would write next."""
    base = tmp_path_factory.mktemp("template")
    out = base / "out"
    command = [sys.executable, "-m", "kvprobe.cli", "measure", str(tiny_models_file(base)), "--out", str(out), *MEASURE]
    probe = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=standin_environment()
    )
    assert probe.stdout is not None
    for line in probe.stdout:
        if '"event":"trial"' in line:
            probe.send_signal(signal.SIGINT)
            break
    probe.communicate(timeout=BOUND_S)
    assert probe.returncode == 130
    shutil.copytree(SAMPLE, out, dirs_exist_ok=True)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    folders = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_dir())
    (run,) = [Path(f).stem for f in files if f.startswith(".journal/")]
    upcoming = [f".trials/{run}/trial-002-u_max.{suffix}" for suffix in ("spec.json", "log", "result.json")]
    upcoming += [f".trials/{run}/trial-002-u_max.result.json.tmp", f".trials/{run}/trial-002-u_max.measured"]
    upcoming += [f".trials/{run}/running-trial.json", "experiment.json", "summary.json"]
    return out, [*files, *upcoming], folders


def plant(path: Path, kind: str, outside: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "link":
        path.symlink_to(outside / ("folder" if path.suffix == "" else "victim.txt"))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "oversized":
        with open(path, "wb") as handle:
            handle.truncate(2 << 30)  # 2 GiB, sparse: a reader that does not check the size would take it whole
    elif kind == "nested":
        path.write_text("[" * 5000 + "]" * 5000)
    else:
        path.write_bytes(b"\x00\xff{not json\n")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def said_why(done: subprocess.CompletedProcess) -> bool:
    """A failure's sentence: kvprobe's `Error: ...` line (exit 2), or a result whose status says it failed
    and why (exit 1: `failed: ...` in the summary's row)."""
    error = any(line.startswith("Error: ") and len(line) > len("Error: ") + 10 for line in done.stderr.splitlines())
    return error or '"status":"failed: ' in done.stdout


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_anything_planted_under_a_results_directory_is_refused_or_skipped(tmp_path_factory, interrupted, data):
    template, files, folders = interrupted
    where = data.draw(st.sampled_from([*files, *folders]), label="where")
    kind = data.draw(st.sampled_from(FOLDER_PLANTS if where in folders else PLANTS), label="kind")
    base = tmp_path_factory.mktemp("planted")
    out, outside = base / "out", base / "outside"
    shutil.copytree(template, out, symlinks=True)
    (outside / "folder").mkdir(parents=True)
    (outside / "folder" / "kept.txt").write_text(VICTIM_TEXT)
    (outside / "victim.txt").write_text(VICTIM_TEXT)
    models = tiny_models_file(outside)
    plant(out / where, kind, outside)
    before = snapshot(outside)

    for args in (
        ("report", str(out), "--format", "json", "--out", str(base / "report")),
        ("measure", str(models), "--out", str(out), "--resume", *MEASURE),
    ):
        done = kvprobe(*args, cwd=base)
        said = done.stdout + done.stderr
        assert done.returncode in (0, 1, 2), said
        assert "Traceback" not in said, said
        assert done.returncode == 0 or said_why(done), f"a failure must say why: {said}"
        assert snapshot(outside) == before, f"{args[0]} changed a file outside the results directory"
