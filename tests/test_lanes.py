"""Trials in parallel across GPUs (`kvprobe experiment --devices`): the lanes' bookkeeping with real
child processes, and the refusals on recorded machines (a simulation: environment.recorded).

The cells' children here are a stand-in (tests/lane_child.py), not vLLM: they take the request
kvprobe hands a cell, note when they ran and which device they saw, sleep, and write the result a
cell's measurement would. The subject is the experiment's scheduling, not the engine; that each
device's figures equal a run alone needs two GPUs and is not shown here.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tiny_models_file
from kvprobe.environment.facts import collect
from kvprobe.experiment import run as experiment_run
from kvprobe.experiment.lanes import lane_problems
from kvprobe.experiment.run import MANIFEST, ExperimentRun
from kvprobe.experiment.spec import load_experiment
from kvprobe.results.store import ResultStore

MACHINES = ROOT / "tests/data/machines"
CHILD = Path(__file__).parent / "lane_child.py"


def experiment_file(directory: Path, repeats: int = 2, **model_changes) -> Path:
    models = tiny_models_file(directory, **model_changes)
    path = directory / "experiment.yaml"
    body = {"name": "lanes", "models": str(models), "baseline": "a", "repeats": repeats, "searches": ["reference"]}
    path.write_text(yaml.safe_dump({**body, "conditions": {"a": {}, "b": {}}}, sort_keys=False))
    return path


@pytest.fixture
def standin_children(monkeypatch, tmp_path):
    """Every cell's child is tests/lane_child.py; returns the file it notes each run in."""
    notes = tmp_path / "notes.jsonl"
    monkeypatch.setenv("LANE_CHILD_NOTES", str(notes))
    monkeypatch.setattr(experiment_run, "kvprobe_command", lambda: [sys.executable, str(CHILD)])
    return notes


def test_two_lanes_run_cells_at_once_each_on_its_own_device_and_directory(tmp_path, standin_children):
    out = tmp_path / "out"
    said: list[str] = []
    run = ExperimentRun(load_experiment(experiment_file(tmp_path)), out, lambda c, s: said.append(s), ("0", "1"))
    outcome = run.run(resume=False)
    assert outcome.status == 0 and outcome.unfinished == {}
    notes = [json.loads(line) for line in standin_children.read_text().splitlines()]
    assert sorted(n["cell"] for n in notes) == ["a/r1", "a/r2", "b/r1", "b/r2"]  # each cell once
    for note in notes:  # each on its lane's device, writing into its lane's directory
        assert note["out_dir"] == str(out / f"lane-{note['device']}") and note["host_shared"] is True
    first, second = sorted(notes, key=lambda n: n["started"])[:2]
    assert second["started"] < first["ended"] and first["device"] != second["device"]  # at the same time
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["done"]) == {"a/r1", "a/r2", "b/r1", "b/r2"} and manifest["status"] == "finished"
    assert "starting on GPU 0" in said and "starting on GPU 1" in said
    assert len(ResultStore(out).result_files()) == 4  # the report reads every lane
    assert (out / "lane-0" / "console-a-r1.log").exists() or (out / "lane-1" / "console-a-r1.log").exists()


def test_without_devices_cells_run_one_at_a_time_in_out_itself(tmp_path, standin_children):
    out = tmp_path / "out"
    outcome = ExperimentRun(load_experiment(experiment_file(tmp_path)), out, lambda c, s: None).run(resume=False)
    assert outcome.status == 0
    notes = sorted((json.loads(line) for line in standin_children.read_text().splitlines()), key=lambda n: n["started"])
    assert all(n["device"] is None and n["out_dir"] == str(out) and n["host_shared"] is False for n in notes)
    assert all(later["started"] >= earlier["ended"] for earlier, later in itertools.pairwise(notes))


def test_an_interrupt_ends_every_lanes_cell_and_resume_finishes_them(tmp_path, standin_children, monkeypatch):
    monkeypatch.setenv("LANE_CHILD_SLEEP", "30")
    out = tmp_path / "out"
    path = experiment_file(tmp_path)
    timer = threading.Timer(2.0, lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    started = time.monotonic()
    outcome = ExperimentRun(load_experiment(path), out, lambda c, s: None, ("0", "1")).run(resume=False)
    assert outcome.status == 130 and time.monotonic() - started < 20  # both ended by SIGTERM, not slept out
    notes = [json.loads(line) for line in standin_children.read_text().splitlines()]
    assert sorted(n["cell"] for n in notes) == ["a/r1", "b/r1"] and all(n["interrupted"] for n in notes)
    monkeypatch.setenv("LANE_CHILD_SLEEP", "0.2")
    resumed = ExperimentRun(load_experiment(path), out, lambda c, s: None, ("0", "1")).run(resume=True)
    assert resumed.status == 0 and set(json.loads((out / MANIFEST).read_text())["done"]) == {
        "a/r1",
        "a/r2",
        "b/r1",
        "b/r2",
    }


def test_lanes_are_refused_where_the_kv_does_not_have_a_pool_per_gpu(tmp_path):
    experiment = load_experiment(experiment_file(tmp_path))
    spark = collect(recorded=MACHINES / "dgx-spark-native", visible=None)
    (problem,) = lane_problems(experiment, spark, ("0",))
    assert "need discrete GPUs" in problem and "one pool" in problem and "unified memory" in problem
    cpu = collect(recorded=MACHINES / "dgx-spark-native", visible=None)
    cpu.gpu.available, cpu.gpu.devices, cpu.gpu.reason = False, [], "NVML unavailable: no driver"
    pool, device = lane_problems(experiment, cpu, ("0",))  # the CPU backend: no GPU at all
    assert "NVML unavailable" in pool and "'0' names no GPU" in device
    assert lane_problems(experiment, spark, ()) == []  # no lanes asked: nothing to refuse


def test_lanes_on_two_discrete_gpus_check_each_device_and_model(tmp_path):
    h200s = collect(recorded=MACHINES / "h200-x2", visible=None)
    assert lane_problems(load_experiment(experiment_file(tmp_path)), h200s, ("0", "GPU-9f8e7d6c")) == []
    tp2 = load_experiment(experiment_file(tmp_path, tensor_parallel_size=2))
    problems = lane_problems(tp2, h200s, ("0", "2", "0"))
    assert any("'2' names no GPU of this machine" in p for p in problems)
    assert any("named twice" in p for p in problems)
    assert any("model 'tiny-llama': needs 2 GPUs" in p for p in problems)
    (alias,) = lane_problems(load_experiment(experiment_file(tmp_path)), h200s, ("0", "GPU-0a1b2c3d"))
    assert "named twice (by index or UUID)" in alias


def test_conditions_that_act_on_the_whole_host_are_refused_in_lanes(tmp_path):
    h200s = collect(recorded=MACHINES / "h200-x2", visible=None)
    path = experiment_file(tmp_path)
    body = yaml.safe_load(path.read_text())
    body["conditions"] = {"a": {}, "held": {"hold_memory": "1g"}, "cached": {"page_cache": "1g", "drop_caches": True}}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    problems = lane_problems(load_experiment(path), h200s, ("0", "1"))
    assert [p.split(": ", 2)[1:] for p in problems] == [
        [
            "condition 'held'",
            "field 'hold_memory': acts on the whole host, so on every lane's trials at once; "
            "run this experiment without --devices",
        ],
        [
            "condition 'cached'",
            "field 'page_cache': acts on the whole host, so on every lane's trials at once; "
            "run this experiment without --devices",
        ],
        [
            "condition 'cached'",
            "field 'drop_caches': acts on the whole host, so on every lane's trials at once; "
            "run this experiment without --devices",
        ],
    ]


def test_a_lanes_cell_interrupted_on_its_own_stops_the_other_lanes(tmp_path, standin_children, monkeypatch):
    """One lane's cell exits 130 (its measurement was interrupted): the experiment stops as on Ctrl-C,
    the other lane's running cell is ended and recorded, and no new cell starts."""
    monkeypatch.setenv("LANE_CHILD_SLEEP", "30")
    monkeypatch.setenv("LANE_CHILD_EXIT_130", "a/r1")
    out = tmp_path / "out"
    started = time.monotonic()
    outcome = ExperimentRun(load_experiment(experiment_file(tmp_path)), out, lambda c, s: None, ("0", "1")).run(False)
    assert outcome.status == 130 and time.monotonic() - started < 20
    notes = [json.loads(line) for line in standin_children.read_text().splitlines()]
    assert sorted(n["cell"] for n in notes) == ["a/r1", "b/r1"]
    assert set(outcome.unfinished) == {"a/r1", "b/r1"}


def test_a_resumed_cell_goes_back_to_its_lane(tmp_path, standin_children, monkeypatch):
    """Its journal is in that lane's directory: the cell interrupted on GPU 1 resumes on GPU 1 even
    when GPU 0 is free first."""
    monkeypatch.setenv("LANE_CHILD_SLEEP", "30")
    out = tmp_path / "out"
    path = experiment_file(tmp_path)
    timer = threading.Timer(2.0, lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    ExperimentRun(load_experiment(path), out, lambda c, s: None, ("0", "1")).run(resume=False)
    lanes_then = json.loads((out / MANIFEST).read_text())["lanes"]
    assert sorted(lanes_then.values()) == ["0", "1"]
    standin_children.unlink()
    monkeypatch.setenv("LANE_CHILD_SLEEP", "0.2")
    ExperimentRun(load_experiment(path), out, lambda c, s: None, ("0", "1")).run(resume=True)
    notes = {n["cell"]: n["device"] for n in map(json.loads, standin_children.read_text().splitlines())}
    for cell, device in lanes_then.items():
        assert notes[cell] == device, (cell, notes)


@pytest.mark.skipif(collect(visible=None).kv_pool == "gpu", reason="this machine has discrete GPUs: lanes would run")
def test_the_cli_refuses_lanes_here_with_exit_2(tmp_path):
    from conftest import kvprobe

    done = kvprobe(
        "experiment", str(experiment_file(tmp_path)), "--out", str(tmp_path / "o"), "--devices", "0,1", check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "need discrete GPUs" in done.stdout + done.stderr
    assert not (tmp_path / "o").exists()  # nothing written


def test_resume_ends_a_trial_group_a_killed_lane_left_running(tmp_path, standin_children):
    """A lane's trial group outlives a SIGKILLed experiment; `--resume` ends it even in a lane that
    gets no cell now (here: every cell is done but the stale group's lane is swept anyway)."""
    import subprocess

    from kvprobe.trial.runner import RUNNING_MARKER, write_marker

    out = tmp_path / "out"
    path = experiment_file(tmp_path, repeats=1)
    ExperimentRun(load_experiment(path), out, lambda c, s: None, ("0", "1")).run(resume=False)
    stale = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)  # kvprobe trial stand-in"], start_new_session=True
    )
    trials = out / "lane-1" / ".trials" / "run-killed"
    trials.mkdir(parents=True)
    write_marker(trials / RUNNING_MARKER, stale.pid)
    resumed = ExperimentRun(load_experiment(path), out, lambda c, s: None, ("0",)).run(resume=True)
    assert resumed.status == 0
    assert stale.wait(timeout=30) is not None and not (trials / RUNNING_MARKER).exists()
