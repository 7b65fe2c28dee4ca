"""`kvprobe measure -- vllm serve MODEL --flag ...`: the user's own command line, parsed with vLLM's own
argument parser, becomes the same typed settings (and settings hash) as the equivalent models file;
an unknown flag is refused with vLLM's message, in one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from conftest import ROOT, needs_engine
from kvprobe.cli import main
from kvprobe.config import load_models, models_from_serve_command
from kvprobe.measure.request import MeasureRequest
from replay_engine import standin_environment
from test_prestart import PREPARE

TINY = ROOT / "configs" / "tiny-llama"
FLAGS = ["--gpu-memory-utilization", "0.2", "--max-model-len", "512", "--load-format", "dummy"]
FLAGS += ["--dtype", "float32", "--enforce-eager", "--max-num-seqs", "256"]


def equivalent_yaml(directory, **extra) -> list:
    entry = {"name": "tiny", "model": str(TINY), "gpu_memory_utilization": 0.2, "max_model_len": 512}
    entry |= {"load_format": "dummy", "dtype": "float32", "enforce_eager": True, "max_num_seqs": 256, **extra}
    path = directory / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [entry]}))
    return load_models(path)


@needs_engine  # vLLM installed (its parser; CI fails instead of skipping)
def test_the_serve_command_hashes_as_its_yaml(tmp_path):
    (from_yaml,) = equivalent_yaml(tmp_path)
    request = MeasureRequest(serve_command=("vllm", "serve", str(TINY), *FLAGS), out_dir=str(tmp_path))
    (from_command,) = request.models()  # the path `kvprobe measure -- vllm serve ...` takes
    assert from_command.settings_hash() == from_yaml.settings_hash()
    assert from_command.capacity_settings() == from_yaml.capacity_settings()
    (from_config_json,) = models_from_serve_command(["vllm", "serve", str(TINY / "config.json"), *FLAGS])
    assert from_config_json.settings_hash() == from_yaml.settings_hash()
    assert from_command.name == "tiny-llama"


@needs_engine  # vLLM installed (its parser; CI fails instead of skipping)
def test_engine_flags_land_in_extra_engine_args_and_server_flags_are_left_out(tmp_path):
    (from_yaml,) = equivalent_yaml(tmp_path, extra_engine_args={"max_num_batched_tokens": 1024})
    command = ["vllm", "serve", str(TINY), *FLAGS, "--max-num-batched-tokens", "1024", "--port", "8123"]
    (model,) = models_from_serve_command(command)
    assert model.extra_engine_args == {"max_num_batched_tokens": 1024}
    assert model.settings_hash() == from_yaml.settings_hash()
    (other,) = models_from_serve_command(["vllm", "serve", str(TINY), *FLAGS, "--max-num-batched-tokens", "2048"])
    assert other.settings_hash() != from_yaml.settings_hash()


@needs_engine  # vLLM installed (its parser; CI fails instead of skipping)
def test_an_unknown_vllm_flag_exits_2_with_one_line_of_vllms_own(tmp_path):
    runner = CliRunner()
    args = ["measure", "--out", str(tmp_path), "--", "vllm", "serve", str(TINY), *FLAGS, "--bogus-flag", "1"]
    done = runner.invoke(main, args)
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and "unrecognized arguments: --bogus-flag 1" in lines[0], done.output
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_without_vllm_the_kv_flags_still_parse_and_others_are_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm.entrypoints.launchers.cli_args", None)  # import fails: no vLLM
    (from_yaml,) = equivalent_yaml(tmp_path)
    (model,) = models_from_serve_command(["vllm", "serve", str(TINY), *FLAGS])
    assert model.settings_hash() == from_yaml.settings_hash()
    with pytest.raises(Exception, match="unrecognized arguments: --port") as refused:
        models_from_serve_command(["vllm", "serve", str(TINY), *FLAGS, "--port", "1"])
    assert "without vLLM installed" in str(refused.value) and "\n" not in str(refused.value)


def test_bad_serve_input_names_the_field(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm.entrypoints.launchers.cli_args", None)
    with pytest.raises(Exception, match="vllm serve: field 'gpu_memory_utilization'"):
        models_from_serve_command(
            ["vllm", "serve", str(TINY), "--load-format", "dummy", "--gpu-memory-utilization", "2"]
        )
    with pytest.raises(Exception, match="no model"):
        models_from_serve_command(["vllm", "serve", "--max-model-len", "512"])


def test_a_serve_command_and_a_models_file_are_one_or_the_other():
    with pytest.raises(ValueError, match="one of the two"):
        MeasureRequest()
    with pytest.raises(ValueError, match="--only selects from a models file"):
        MeasureRequest(serve_command=("vllm", "serve", "x"), only=("a",))


@needs_engine  # vLLM installed (its parser; CI fails instead of skipping)
def test_measure_from_the_serve_command_records_the_yamls_hash(tmp_path):
    """The whole measure path from a serve command, with the stand-in engine (tests/replay_engine.py):
    the subject is kvprobe's reading of the command (vLLM's own parser, in the probe) and the result it
    writes. That real vLLM takes the engine arguments the probe wrote is checked without an engine
    start: vLLM builds its engine config from the trial's spec (vllm_worker.prepare_engine)."""
    (from_yaml,) = equivalent_yaml(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "kvprobe.cli", "measure", "--searches", "reference", "--out", str(out)]
    command += ["--log-format", "jsonl", "--", "vllm", "serve", str(TINY), *FLAGS]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT, env=standin_environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (result,) = out.glob("tiny-llama/*.json")
    document = json.loads(result.read_text())
    assert document["settings_hash"] == from_yaml.settings_hash()
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert any(record["event"] == "trial" and record["passed"] for record in records)
    (spec,) = out.glob(".trials/*/trial-001-reference.spec.json")
    prepared = subprocess.run([sys.executable, "-c", PREPARE, str(spec)], capture_output=True, text=True, timeout=600)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    verdict = json.loads(prepared.stdout.strip().splitlines()[-1])
    assert verdict["error"] is None and verdict["steps"][0] == "config", verdict
