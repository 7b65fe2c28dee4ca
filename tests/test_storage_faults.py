"""Storage faults end in a sentence and leave nothing half-written: a report --out that cannot be a
folder, and a disk that fills while the report is written (a real 64 KiB tmpfs, root only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from kvprobe.results.loader import load_result

SAMPLE = ROOT / "tests" / "data" / "results"


def report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kvprobe.cli", "report", str(SAMPLE), *args], capture_output=True, text=True, timeout=300
    )


def test_a_report_out_that_cannot_be_a_folder_is_bad_input(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = report("--out", str(blocker / "report"), "--format", "json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "the report cannot be written there" in done.stderr


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"no tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_disk_that_fills_mid_report_leaves_the_old_report_whole(small_disk):
    out = small_disk / "report"
    out.mkdir()
    (out / "summary.json").write_text('{"an": "earlier report"}')
    done = report("--out", str(out), "--format", "all")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "writing the report failed" in done.stderr and "nothing was replaced" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert (out / "summary.json").read_text() == '{"an": "earlier report"}'


def test_a_guard_floor_as_large_as_the_machine_is_refused(tmp_path):
    """It was accepted: the guard then ended every start, and the run said the model did not fit."""
    from kvprobe.environment.memory import read_meminfo

    floor = f"{read_meminfo()['MemTotal'] // (1 << 20) + 1}m"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvprobe.cli",
            "measure",
            str(ROOT / "models.yaml"),
            "--only",
            "tiny-llama",
            "--guard-floor",
            floor,
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "the guard would end every start" in done.stderr, done.stderr


def test_a_torn_experiment_manifest_and_an_unusable_out_are_sentences(tmp_path):
    from kvprobe.errors import InputError
    from kvprobe.experiment.run import MANIFEST, ExperimentRun
    from kvprobe.experiment.spec import load_experiment

    experiment = load_experiment(ROOT / "experiments" / "sizing-cpu.yaml")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text('{"run_id": "2026')  # power lost mid-write
    with pytest.raises(InputError, match="not a readable experiment manifest"):
        ExperimentRun(experiment, out, lambda cell, state: None).run(resume=True)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot be used"):
        ExperimentRun(experiment, blocker / "out", lambda cell, state: None).run(resume=False)


def test_a_disk_that_fills_during_a_measurement_is_a_sentence(small_disk, tmp_path):
    """A full disk at a result or journal write ended in a traceback (recorded-engine stand-in)."""
    from conftest import tiny_models_file
    from replay_engine import standin_environment

    models = tiny_models_file(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvprobe.cli",
            "measure",
            str(models),
            "--out",
            str(small_disk / "out"),
            "--searches",
            "reference",
            "--label",
            "native",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=standin_environment(),
    )
    said = done.stdout + done.stderr
    assert done.returncode in (1, 2) and "Traceback" not in said, said[-3000:]
    assert "No space left on device" in said
    # nothing half-written: no temporary file left, and any result there is whole
    assert not list((small_disk / "out").rglob("*.tmp"))
    for result in (small_disk / "out").glob("*/*.json"):
        load_result(result)


def test_a_torn_experiment_manifest_exits_2_at_the_cli(tmp_path):
    """The same torn experiment.json through `kvprobe experiment --resume`: a sentence and exit 2,
    no traceback, nothing started or overwritten."""
    from click.testing import CliRunner

    from conftest import tiny_models_file
    from kvprobe.cli import main
    from kvprobe.experiment.run import MANIFEST

    path = tmp_path / "experiment.yaml"
    path.write_text(
        f"name: torn\nmodels: {tiny_models_file(tmp_path)}\nbaseline: native\nrepeats: 1\nconditions:\n  native: {{}}\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text('{"run_id": "2026')
    done = CliRunner().invoke(main, ["experiment", str(path), "--out", str(out), "--resume"])
    assert done.exit_code == 2, done.output
    assert "not a readable experiment manifest" in done.output and "Traceback" not in done.output
    assert sorted(p.name for p in out.iterdir()) == [".kvprobe-experiment.lock", MANIFEST]  # the lock: empty
    assert (out / MANIFEST).read_text() == '{"run_id": "2026'  # kept as it was for the user to look at


@pytest.fixture
def read_only_dir(tmp_path):
    """A real read-only file system (a read-only bind mount of a fresh directory); root only."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    folder = tmp_path / "ro"
    folder.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize(
    "command",
    [
        ("measure", "models.yaml", "--only", "tiny-llama"),
        ("experiment", "experiments/ladder-cpu.yaml"),
        ("report", "docs/experiments/sizing-cpu-2026-11-30/results"),
    ],
    ids=["measure", "experiment", "report"],
)
def test_a_read_only_out_is_a_sentence_and_exit_2(read_only_dir, command):
    """measure, experiment and report with --out on a read-only file system: one sentence, exit 2."""
    from conftest import kvprobe

    done = kvprobe(*command, "--out", str(read_only_dir / "out"), check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert done.returncode == 2 and len(errors) == 1 and "Read-only file system" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not any(read_only_dir.iterdir())
