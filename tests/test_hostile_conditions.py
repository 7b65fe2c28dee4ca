"""A shared experiment file or command line is reviewed before it runs: runtime flags that would defeat
kvprobe's cleanup are refused, those that widen what a container may touch are shown and flagged,
engine arguments that run code from elsewhere are said, and sizes this machine cannot honour are
refused at load (exit 2), before any cell starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT
from kvprobe.cli import main
from kvprobe.environment.memory import read_meminfo
from kvprobe.measure.containers import runtime_flag_problems, runtime_flag_warnings
from replay_engine import standin_environment

MODELS = ROOT / "models.yaml"


def experiment_file(tmp_path: Path, conditions: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(
        f"name: review\nmodels: {MODELS}\nonly: [tiny-llama]\nbaseline: native\nrepeats: 1\n"
        f"conditions:\n  native: {{}}\n{conditions}"
    )
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("flag", ["--name=mine", "--rm=false", "-d", "--entrypoint=/bin/sh", "--restart=always"])
def test_a_runtime_flag_that_defeats_cleanup_is_refused(tmp_path, flag):
    """--name made the interrupt stop a container that did not exist; --rm=false left one behind."""
    assert runtime_flag_problems([flag])
    done = invoke(
        "container",
        str(MODELS),
        "--runtime",
        "podman",
        "--rootfs",
        "/:O",
        f"--runtime-flag={flag}",
        "--out",
        str(tmp_path / "out"),
    )
    assert done.exit_code == 2 and f"--runtime-flag {flag}: refused" in done.output


def test_an_experiment_files_runtime_flags_that_defeat_cleanup_are_refused_at_load(tmp_path):
    """The same flags in an experiment file passed --dry-run with exit 0 and no word."""
    path = experiment_file(
        tmp_path,
        "  boxed:\n    container: {runtime: podman, rootfs: '/:O',\n"
        "                runtime_flags: ['--rm=false', '--name=x', '--cpus=2']}\n",
    )
    done = invoke("experiment", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert done.exit_code == 2, done.output
    refused = [line for line in done.output.splitlines() if "container.runtime_flags" in line]
    assert len(refused) == 2, done.output
    assert (
        "condition 'boxed'" in refused[0] and "--rm=false: refused: kvprobe removes the container itself" in refused[0]
    )
    assert "--name=x: refused: kvprobe names the container itself" in refused[1]
    assert not (tmp_path / "out").exists()


def test_widening_flags_are_shown_on_a_dry_run_of_a_shared_file(tmp_path):
    """--dry-run hid a condition's runtime flags."""
    path = experiment_file(
        tmp_path,
        "  boxed:\n    container: {runtime: podman, rootfs: '/:O', runtime_flags: ['--privileged', '-v=/:/host']}\n",
    )
    done = invoke("experiment", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert done.exit_code == 0, done.output
    assert "runtime flags --privileged -v=/:/host" in done.output
    assert "--runtime-flag --privileged: the container may touch every device and capability" in done.output
    assert "--runtime-flag -v=/:/host: the container may touch a host path mounted inside" in done.output
    assert runtime_flag_warnings(["--cpus=2"]) == []


CODE_RUNNING = [
    ("trust_remote_code", "true"),
    ("worker_cls", "my.module.Worker"),
    ("worker_extension_cls", "my.module.Extension"),
    ("model_impl", "transformers"),
]


def code_running_models(tmp_path: Path, arg: str, value: str) -> Path:
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n  - name: remote\n    model: {ROOT / 'configs/tiny-llama'}\n    max_model_len: 256\n"
        f"    load_format: dummy\n    extra_engine_args: {{{arg}: {value}}}\n"
    )
    return models


@pytest.mark.parametrize(("arg", "value"), CODE_RUNNING)
def test_engine_arguments_that_run_code_are_said_on_a_dry_run(tmp_path, arg, value):
    models = code_running_models(tmp_path, arg, value)
    path = tmp_path / "experiment.yaml"
    path.write_text(f"name: code\nmodels: {models}\nbaseline: native\nrepeats: 1\nconditions:\n  native: {{}}\n")
    done = invoke("experiment", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert done.exit_code == 0, done.output
    assert f"model 'remote': extra_engine_args {arg}: the engine runs code" in done.output


def test_engine_arguments_that_run_code_are_said_before_the_first_start_of_a_measurement(tmp_path):
    """A real `kvprobe measure` (the recorded-engine stand-in in place of vLLM): the warning comes
    before the first trial."""
    models = code_running_models(tmp_path, "worker_cls", "my.module.Worker")
    command = [sys.executable, "-m", "kvprobe.cli", "measure", str(models), "--out", str(tmp_path / "out")]
    command += ["--searches", "reference"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=standin_environment())
    events = [json.loads(line) for line in done.stdout.splitlines()]
    said = next(
        i for i, e in enumerate(events) if "extra_engine_args worker_cls: the engine runs code" in e.get("text", "")
    )
    first_trial = next(i for i, e in enumerate(events) if e["event"] in ("phase", "trial"))
    assert said < first_trial, done.stdout


@pytest.mark.parametrize(
    ("condition", "says"),
    [
        ("page_cache: 1000t", "field 'page_cache': 1024000.00 GiB is beyond any machine"),
        ("hold_memory: 100000g", "field 'hold_memory': 100000.00 GiB is beyond any machine"),
        ("cgroup_limit: 1k", "field 'cgroup_limit': 0.00 GiB is below 0.50 GiB: too small for an engine to start"),
    ],
)
def test_sizes_the_machine_cannot_honour_are_refused_at_load(tmp_path, condition, says):
    """They passed --dry-run; run, they filled the disk, brought the OOM killer or ended in exit 247."""
    path = experiment_file(tmp_path, f"  big:\n    {condition}\n")
    done = invoke("experiment", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert done.exit_code == 2 and says in done.output and "Traceback" not in done.output


@pytest.mark.parametrize(
    ("condition", "says"),
    [
        ("page_cache: 1000g", "field 'page_cache': 1000.00 GiB is more than this machine's memory"),
        ("hold_memory: {all_but_1g}", "field 'hold_memory': "),
        ("cgroup_limit: 1000g", "field 'cgroup_limit': 1000.00 GiB is more than this machine's memory"),
    ],
)
def test_sizes_this_machine_cannot_honour_are_refused_before_the_first_cell(tmp_path, condition, says):
    """The issue's sizes (1000g of page cache, memory held up to the OOM killer, a limit above the
    machine): said on a dry run (the file may be meant for another machine), refused by a real run
    with exit 2 before any cell, nothing written."""
    if "cgroup_limit" in condition and os.geteuid() != 0:
        pytest.skip("a cgroup limit needs root, refused for that first")
    total = read_meminfo()["MemTotal"]
    condition = condition.format(all_but_1g=f"{(total >> 20) - 1024}m")  # held, it leaves 1 GiB: sized to this machine
    path = experiment_file(tmp_path, f"  big:\n    {condition}\n")
    out = tmp_path / "out"
    dry = invoke("experiment", str(path), "--out", str(out), "--dry-run")
    assert dry.exit_code == 0 and f"warning: on this machine, {path}: condition 'big': {says}" in dry.output
    if "hold_memory" in condition:
        assert "leaves less than 2.00 GiB of this machine's" in dry.output
    run = invoke("experiment", str(path), "--out", str(out))
    lines = [line for line in run.output.splitlines() if "condition 'big'" in line]
    assert run.exit_code == 2 and len(lines) == 1 and says in lines[0], run.output
    assert not out.exists() or not any(out.rglob("*.json"))
