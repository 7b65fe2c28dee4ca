"""`kvprobe experiment`: one small matrix, interrupted and resumed, feeds every test here (two
conditions x two repeats, the reference start only, on the tiny model).

The engine is a stand-in that replays recorded vLLM starts (tests/replay_engine.py): the scheduling,
resume, perturbations (a real page cache, a real helper holding memory) and report are kvprobe's
own, run for real; the engine is not the subject here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, kvprobe, load_results, tiny_models_file, wait_until
from replay_engine import standin_environment

PAGE_CACHE = 1 << 30
HOLD = 1 << 30


@pytest.fixture(scope="session")
def matrix(tmp_path_factory) -> dict:
    """The matrix, SIGINT once its first result is written, then --resume to the end."""
    directory = tmp_path_factory.mktemp("experiment")
    models = tiny_models_file(directory)
    path = directory / "experiment.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "test",
                "models": str(models),
                "baseline": "page-cache",
                "repeats": 2,
                "searches": ["reference"],
                "conditions": {"page-cache": {"page_cache": "1g"}, "held": {"hold_memory": "1g"}},
            },
            sort_keys=False,  # the conditions' order is the experiment's order
        )
    )
    out = directory / "out"
    command = [sys.executable, "-m", "kvprobe.cli", "experiment", str(path), "--out", str(out)]
    env = standin_environment()
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
    wait_until(lambda: len(list(out.glob("*/*.json"))) >= 1, timeout_s=300, message="no first result")
    first.send_signal(signal.SIGINT)
    interrupted_output, _ = first.communicate(timeout=300)
    cells_after_interrupt = json.loads((out / "experiment.json").read_text())["done"]
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return {
        "out": out,
        "interrupted_rc": first.returncode,
        "interrupted_output": interrupted_output,
        "cells_after_interrupt": cells_after_interrupt,
        "resumed": resumed.stdout,
        "results": load_results(out),
    }


def test_an_interrupt_exits_130_and_resume_finishes_every_cell_once(matrix):
    assert matrix["interrupted_rc"] == 130, matrix["interrupted_output"][-3000:]
    assert 1 <= len(matrix["cells_after_interrupt"]) < 4
    assert "done earlier" in matrix["resumed"]
    cells = sorted((doc["condition"], doc["repeat"]) for doc in matrix["results"])
    assert cells == [("held", 1), ("held", 2), ("page-cache", 1), ("page-cache", 2)]
    manifest = json.loads((matrix["out"] / "experiment.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["done"]) == 4


def test_conditions_ran_interleaved(matrix):
    by_start = sorted(matrix["results"], key=lambda doc: doc["trials"][0]["started_at"])
    assert [(doc["repeat"], doc["condition"]) for doc in by_start] == [
        (1, "page-cache"),
        (1, "held"),
        (2, "page-cache"),
        (2, "held"),
    ]


def test_the_page_cache_really_rose_and_the_helper_really_held_its_memory(matrix):
    for doc in matrix["results"]:
        (trial,) = doc["trials"]
        done = trial["perturbation"]
        assert doc["environment"]["condition"]["name"] == doc["condition"]
        if doc["condition"] == "page-cache":
            assert done["page_cache_requested_bytes"] == PAGE_CACHE
            assert done["page_cache_rise_bytes"] >= 0.9 * PAGE_CACHE
        else:
            assert done["hold_requested_bytes"] == HOLD
            assert done["helper_rss_bytes"] >= 0.9 * HOLD


def test_nothing_of_a_condition_outlives_its_trial(matrix):
    helpers = [
        doc["trials"][0]["perturbation"]["helper_pid"] for doc in matrix["results"] if doc["condition"] == "held"
    ]
    assert helpers and not any(os.path.exists(f"/proc/{pid}") for pid in helpers)
    assert not list((matrix["out"] / ".scratch").glob("*")), "the page-cache file was left behind"
    assert all(doc["trials"][0]["baseline_restored"] for doc in matrix["results"])


def test_the_report_compares_each_condition_with_the_baseline(matrix, tmp_path):
    kvprobe("report", str(matrix["out"]), "--out", str(tmp_path), "--format", "markdown,json")
    summary = json.loads((tmp_path / "summary.json").read_text())
    (experiment,) = summary["experiments"]
    assert experiment["baseline"] == "page-cache"
    assert [c["name"] for c in experiment["conditions"]] == ["page-cache", "held"]
    assert all(c["n"] == 2 for c in experiment["conditions"])
    (verdict,) = experiment["verdicts"]
    assert verdict["name"] == "held"
    measured = experiment["conditions"][1]["measured"]
    assert measured["helper_rss_bytes"] >= 0.9 * HOLD
    report = (tmp_path / "report.md").read_text()
    assert "Why: experiment test, tiny-llama" in report
