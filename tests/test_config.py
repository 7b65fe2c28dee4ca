"""models.yaml: every bad input exits 2 with one message naming file, model and field."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvprobe.config import ConfigError, load_models

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny-llama"


def write(tmp_path: Path, text: str) -> Path:
    shutil.copytree(TINY, tmp_path / "tiny")
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


GOOD = """
defaults:
  load_format: dummy
models:
  - name: tiny
    model: tiny
    max_model_len: 256
"""


def test_shipped_models_file_loads():
    models = load_models(ROOT / "models.yaml")
    names = [m.name for m in models]
    assert names == [
        "tiny-llama",
        "deepseek-r1-distill-qwen-7b",
        "qwen2.5-72b-instruct",
        "gpt-oss-120b",
        "qwen2.5-72b-instruct-fp8",
    ]
    for model in models:
        config = json.loads((Path(model.model) / "config.json").read_text())
        assert config["architectures"]


def test_defaults_apply_and_paths_resolve_from_the_file(tmp_path):
    (model,) = load_models(write(tmp_path, GOOD))
    assert model.load_format == "dummy"
    assert Path(model.model) == (tmp_path / "tiny").resolve()


def test_settings_hash_matches_for_the_same_architecture_elsewhere(tmp_path):
    (here,) = load_models(write(tmp_path, GOOD))
    (shipped,) = load_models(ROOT / "models.yaml", only=["tiny-llama"])
    assert here.architecture_digest == shipped.architecture_digest
    assert here.settings_hash() != shipped.settings_hash()  # dtype and lengths differ
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "tiny", moved)
    (again,) = load_models(write(tmp_path / "b", GOOD.replace("model: tiny", f"model: {moved}")))
    assert again.settings_hash() == here.settings_hash()


BAD_CASES = {
    "yaml-syntax": ("models: [\n  - name: x\n", ["YAML syntax error", "line"]),
    "unknown-key": (GOOD + "    colour: blue\n", ["model 'tiny'", "field 'colour'", "unknown key"]),
    "wrong-type": (
        GOOD.replace("max_model_len: 256", "max_model_len: lots"),
        ["model 'tiny'", "field 'max_model_len'", "integer"],
    ),
    "missing-dir": (GOOD.replace("model: tiny", "model: nowhere"), ["model 'tiny'", "field 'model'", "does not exist"]),
    "utilization-high": (
        GOOD + "    gpu_memory_utilization: 1.5\n",
        ["model 'tiny'", "field 'gpu_memory_utilization'", "1"],
    ),
    "utilization-zero": (
        GOOD + "    gpu_memory_utilization: 0\n",
        ["model 'tiny'", "field 'gpu_memory_utilization'", "greater than 0"],
    ),
    "range-outside": (
        GOOD + "    utilization_range: [0.5, 1.2]\n",
        ["model 'tiny'", "field 'utilization_range'", "outside (0, 1]"],
    ),
    "engine-arg": (
        GOOD + "    extra_engine_args: {swap_spaceship: 4}\n",
        ["model 'tiny'", "field 'extra_engine_args'", "unknown vLLM engine argument 'swap_spaceship'"],
    ),
    "controlled-arg": (
        GOOD + "    extra_engine_args: {kv_cache_memory_bytes: 4}\n",
        ["field 'extra_engine_args'", "set by the probe"],
    ),
    "unknown-default": (
        GOOD.replace("load_format: dummy", "load_format: dummy\n  colour: red"),
        ["defaults", "colour"],
    ),
    "no-weights": (
        GOOD.replace("load_format: dummy", "load_format: auto"),
        ["model 'tiny'", "field 'load_format'", "no weight files"],
    ),
    "duplicate": (
        GOOD + "  - name: tiny\n    model: tiny\n    max_model_len: 128\n",
        ["model 'tiny'", "field 'name'", "more than once"],
    ),
    "top-level-key": (GOOD + "extras: 1\n", ["field 'extras'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_raises_config_error_naming_file_model_and_field(tmp_path, case):
    text, expected = BAD_CASES[case]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_models(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_a_known_engine_argument_is_accepted(tmp_path):
    (model,) = load_models(write(tmp_path, GOOD + "    extra_engine_args: {enable_prefix_caching: false, seed: 3}\n"))
    assert model.extra_engine_args == {"enable_prefix_caching": False, "seed": 3}


@pytest.mark.parametrize("case", ["wrong-type", "engine-arg", "yaml-syntax"])
def test_cli_exits_2_with_one_message_and_writes_nothing(tmp_path, case):
    text, expected = BAD_CASES[case]
    path = write(tmp_path, text)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "kvprobe.cli", "measure", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error:"), result.stderr
    assert all(fragment in errors[0] for fragment in expected)
    assert not out.exists()


def test_cli_rejects_a_range_outside_zero_one(tmp_path):
    path = write(tmp_path, GOOD)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvprobe.cli",
            "measure",
            str(path),
            "--out",
            str(tmp_path / "out"),
            "--range",
            "0.2:1.3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--range" in result.stderr and "outside (0, 1]" in result.stderr
    assert not (tmp_path / "out").exists()


def test_drop_caches_needs_root(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "kvprobe.cli",
            "measure",
            str(ROOT / "models.yaml"),
            "--out",
            str(out),
            "--drop-caches",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "Error: --drop-caches needs root and a writable /proc/sys/vm/drop_caches"
    assert not out.exists()


def test_an_unreadable_models_file_is_bad_input(tmp_path):
    path = write(tmp_path, GOOD)
    path.chmod(0o000)
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "kvprobe.cli",
            "measure",
            str(path),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr


def test_engine_defaults_change_the_hash_and_the_usage_context(tmp_path):
    from kvprobe.engines import get_engine

    (serve,) = load_models(write(tmp_path, GOOD))
    (offline,) = load_models(write(tmp_path / "b", GOOD + "    engine_defaults: offline\n"))
    assert serve.engine_defaults == "serve" and serve.settings_hash() != offline.settings_hash()
    assert get_engine().usage_context(serve) == "OPENAI_API_SERVER"
    assert get_engine().usage_context(offline) == "LLM_CLASS"
