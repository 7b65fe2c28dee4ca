"""A cell is finished only by its results: whatever its child's exit code, a cell without a result for
every model is unfinished, named at the end, left for `--resume`, and the experiment exits 0, 1 or 130.

The first tests run `ExperimentRun` in this process with a stand-in for the cell's child process
(`_start_cell` replaced: it writes the result files a real child would, or not, and returns a given
exit code): the bookkeeping is the subject, not the measurement. The last runs the real command with
a real podman container whose measurement is killed at its start (a stand-in interpreter exits 137
for `measure`, as the OOM killer would), beside a native condition measured with the replay stand-in
engine."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, needs_podman, tiny_models_file
from kvprobe.errors import InputError
from kvprobe.experiment.run import MANIFEST, ExperimentRun
from kvprobe.experiment.spec import load_experiment
from replay_engine import standin_environment


def experiment_file(directory: Path, conditions: dict, repeats: int = 1) -> Path:
    models = tiny_models_file(directory)
    path = directory / "experiment.yaml"
    body = {"name": "cells", "models": str(models), "baseline": "a", "repeats": repeats, "searches": ["reference"]}
    path.write_text(yaml.safe_dump({**body, "conditions": conditions}, sort_keys=False))
    return path


class FinishedChild:
    """A cell's child that has already exited with `code` (what `_start_cell` returns, stood in)."""

    def __init__(self, code: int):
        self.code = code

    def poll(self) -> int:
        return self.code

    def interrupt(self) -> None:
        pass

    def finish(self) -> int:
        return self.code


class StandinChildren:
    """Stands in for the cells' child processes: per condition, the exit code and whether results are written."""

    def __init__(self, plan: dict[str, tuple[int, bool]], status: str = "complete"):
        self.plan, self.status, self.started = plan, status, []

    def start_cell(self, run: ExperimentRun, cell, lane, run_id: str, resume: bool) -> FinishedChild:
        self.started.append(cell.key)
        code, writes = self.plan[cell.condition.name]
        if writes:
            for model in run.experiment.models:
                path = lane.out_dir / model.name / f"{cell.condition.name}-x-r{cell.repeat}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                reference = {"run_id": run_id, "name": "cells"}
                path.write_text(
                    json.dumps(
                        {
                            "condition": cell.condition.name,
                            "repeat": cell.repeat,
                            "experiment": reference,
                            "status": "failed" if cell.condition.name == "failed" else self.status,
                        }
                    )
                )
        return FinishedChild(code)


def run_with(monkeypatch, path: Path, out: Path, plan: dict[str, tuple[int, bool]], resume: bool = False):
    children = StandinChildren(plan)

    def start_cell(run: ExperimentRun, cell, lane, run_id: str, resume: bool) -> FinishedChild:
        return children.start_cell(run, cell, lane, run_id, resume)

    monkeypatch.setattr(ExperimentRun, "_start_cell", start_cell)
    outcome = ExperimentRun(load_experiment(path), out, lambda cell, state: None).run(resume)
    return outcome, children.started, json.loads((out / MANIFEST).read_text())


def test_exit_codes_do_not_finish_a_cell_its_results_do(tmp_path, monkeypatch):
    path = experiment_file(tmp_path, {"a": {}, "silent": {}, "oom": {}, "odd": {}, "late": {}, "failed": {}})
    out = tmp_path / "out"
    plan = {"a": (0, True), "silent": (0, False), "oom": (247, False), "odd": (3, True), "late": (130, True)}
    plan["failed"] = (1, True)
    outcome, started, manifest = run_with(monkeypatch, path, out, plan)
    assert outcome.status == 130 and started == ["a/r1", "silent/r1", "oom/r1", "odd/r1", "late/r1"]
    # interrupted after writing its result: finished, complete
    assert manifest["done"] == {"a/r1": 0, "odd/r1": 0, "late/r1": 0}
    outcome, started, manifest = run_with(monkeypatch, path, out, plan, resume=True)
    assert started == ["silent/r1", "oom/r1", "failed/r1"]
    assert outcome.status == 1  # never 247 or 3
    assert set(outcome.unfinished) == {"silent/r1", "oom/r1"}
    assert outcome.unfinished["oom/r1"] == "exit 247, no result for tiny-llama"
    assert manifest["done"]["failed/r1"] == 1 and manifest["status"] == "unfinished"

    plan = {**plan, "silent": (0, True), "oom": (0, True)}  # the retried cells now write their results
    outcome, started, manifest = run_with(monkeypatch, path, out, plan, resume=True)
    assert started == ["silent/r1", "oom/r1"] and outcome.unfinished == {}
    assert outcome.status == 1 and manifest["status"] == "finished"  # "failed"'s result is not complete


def test_a_result_of_another_run_or_repeat_does_not_finish_a_cell(tmp_path, monkeypatch):
    path = experiment_file(tmp_path, {"a": {}}, repeats=2)
    out = tmp_path / "out"
    stale = out / "tiny-llama" / "a-old-r2.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"condition": "a", "repeat": 2, "experiment": {"run_id": "earlier"}}))
    outcome, _, _ = run_with(monkeypatch, path, out, {"a": (0, False)})
    assert set(outcome.unfinished) == {"a/r1", "a/r2"}


def test_an_interrupted_cell_stops_the_experiment_with_130(tmp_path, monkeypatch):
    path = experiment_file(tmp_path, {"a": {}, "b": {}})
    outcome, started, manifest = run_with(monkeypatch, path, tmp_path / "out", {"a": (130, False), "b": (0, True)})
    assert outcome.status == 130 and started == ["a/r1"] and manifest["status"] == "running"


def test_resume_follows_the_settings_not_the_bytes_and_refuses_other_settings(tmp_path, monkeypatch):
    """A comment edited since (as happened to the committed ladder's file) does not restart the
    experiment; another setting, or a manifest of another shape, is refused rather than overwritten."""
    path = experiment_file(tmp_path, {"a": {}, "b": {}})
    out = tmp_path / "out"
    run_with(monkeypatch, path, out, {"a": (130, True), "b": (0, True)})
    # a comment, and a default written out, added after the run: the same settings
    path.write_text("# a comment added after the run\n" + path.read_text() + "cooldown: 0.0\n")
    outcome, started, manifest = run_with(monkeypatch, path, out, {"a": (0, True), "b": (0, True)}, resume=True)
    assert started == ["b/r1"] and manifest["done"] == {"a/r1": 0, "b/r1": 0} and outcome.status == 0

    recorded = (out / MANIFEST).read_text()
    path.write_text(path.read_text().replace("repeats: 1", "repeats: 1\ntolerance: 0.05"))
    with pytest.raises(InputError, match=r"other experiment settings or models.*remove experiment\.json"):
        run_with(monkeypatch, path, out, {"a": (0, True), "b": (0, True)}, resume=True)
    assert (out / MANIFEST).read_text() == recorded  # nothing overwritten

    (out / MANIFEST).write_text(json.dumps({**json.loads(recorded), "done": ["a/r1"]}))
    with pytest.raises(InputError, match="not a readable experiment manifest"):
        run_with(monkeypatch, path, out, {"a": (0, True), "b": (0, True)}, resume=True)


def test_a_manifest_of_the_file_digest_era_still_resumes(tmp_path, monkeypatch):
    path = experiment_file(tmp_path, {"a": {}, "b": {}})
    out = tmp_path / "out"
    run_with(monkeypatch, path, out, {"a": (130, True), "b": (0, True)})
    manifest = json.loads((out / MANIFEST).read_text())
    old = {**manifest, "identity": load_experiment(path).file_digests()}
    (out / MANIFEST).write_text(json.dumps(old))
    _, started, manifest = run_with(monkeypatch, path, out, {"a": (0, True), "b": (0, True)}, resume=True)
    assert started == ["b/r1"] and manifest["run_id"] == old["run_id"]


@needs_podman
@pytest.mark.container
def test_a_container_killed_at_its_start_leaves_its_cell_unfinished_and_resume_retries_it(tmp_path):
    out = tmp_path / "out"
    attempts = out / ".attempts"  # in the results directory: the one the container writes through to
    killed = tmp_path / "python"  # the stand-in interpreter: runs `kvprobe env`, "is killed" for `measure`
    killed.write_text(
        f'#!/bin/sh\ncase "$*" in *" measure "*) echo x >> {attempts}; echo "Killed" >&2; exit 137;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    killed.chmod(killed.stat().st_mode | stat.S_IXUSR)
    box = {"runtime": "podman", "rootfs": "/:O", "memlock": "none", "stack": "none", "python": str(killed)}
    path = experiment_file(tmp_path, {"a": {}, "box": {"container": {**box, "ipc": "private", "shm_size": "1g"}}})
    command = [sys.executable, "-m", "kvprobe.cli", "experiment", str(path), "--out", str(out)]
    env = standin_environment()
    first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert "unfinished: box/r1: exit 1, no result for tiny-llama" in " ".join(first.stdout.split())
    again = subprocess.run([*command, "--resume"], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert again.returncode == 1 and "a, repeat 1: done earlier" in again.stdout
    assert attempts.read_text().count("x") == 2  # the container cell was started again, the native one not
    manifest = json.loads((out / MANIFEST).read_text())
    assert list(manifest["done"]) == ["a/r1"] and list(manifest["unfinished"]) == ["box/r1"]
    assert not os.path.exists(out / "tiny-llama" / "box") and len(list(out.glob("tiny-llama/a-*.json"))) == 1


@needs_podman
@pytest.mark.container
def test_a_container_the_runtime_refuses_to_start_is_refused_before_the_first_cell(tmp_path):
    """podman itself refuses the container (CPUs this machine does not have, exit 125): the preflight's
    probe container says so, naming the condition, before any cell runs (exit 2, no result written).
    A container that starts at preflight and dies in its cell: the test above, unfinished and retried."""
    out = tmp_path / "out"
    box = {"runtime": "podman", "rootfs": "/:O", "memlock": "none", "stack": "none"}
    path = experiment_file(tmp_path, {"a": {}, "box": {"container": {**box, "runtime_flags": ["--cpuset-cpus=999"]}}})
    command = [sys.executable, "-m", "kvprobe.cli", "experiment", str(path), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600, env=standin_environment())
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    (problem,) = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert "condition 'box'" in problem and "requested CPUs are not available" in problem
    assert not list(out.glob("tiny-llama/*.json")) and not list(out.glob(".trials/*/*.log"))
