"""`kvprobe container` failures with the real runtimes: every one a clear message, nothing measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import MODELS, kvprobe, needs_podman
from kvprobe.config import load_models
from kvprobe.measure.containers import build_command, mounts, settings_problems, version_mismatch
from kvprobe.report.pairing import check_pairs
from kvprobe.results.schema import ContainerSettings
from kvprobe.results.store import ResultStore

DATA = Path(__file__).parent / "data" / "results"


def test_the_argument_list_is_a_list_with_read_only_models_and_a_writable_results_dir(tmp_path):
    models = load_models(MODELS, only=["tiny-llama"])
    spec = ContainerSettings(runtime="docker", image="kvprobe-vllm", memory="8g", gpus="all")
    flags = mounts(models, MODELS, tmp_path, [])
    command = build_command(spec, ["kvprobe", "measure", str(MODELS)], flags)
    assert command[:2] == ["docker", "run"]
    assert command[command.index("--gpus") : command.index("--gpus") + 2] == ["--gpus", "all"]
    assert "memlock=-1:-1" in command and "--network" in command and command[command.index("--network") + 1] == "none"
    # the original study's flags by default: --ipc=host --ulimit memlock=-1 --ulimit stack=67108864
    assert command[command.index("--ipc") : command.index("--ipc") + 2] == ["--ipc", "host"]
    assert "stack=67108864:67108864" in command and "--shm-size" not in command
    assert f"{Path(models[0].model)}:{Path(models[0].model)}:ro" in command
    assert f"{tmp_path}:{tmp_path}" in command
    assert command[-3:] == ["kvprobe", "measure", str(MODELS)] and command[-4] == "kvprobe-vllm"
    assert settings_problems(ContainerSettings(runtime="docker", rootfs="/")) == [
        "--rootfs needs podman; docker runs images (--image)"
    ]


def test_a_missing_runtime_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    done = kvprobe(
        "container", str(MODELS), "--runtime", "podman", "--rootfs", "/:O", "--out", str(tmp_path / "o"), check=False
    )
    assert done.returncode == 2 and "'podman' is not installed" in done.stderr


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_without_a_daemon_says_so(tmp_path):
    done = kvprobe(
        "container", str(MODELS), "--runtime", "docker", "--image", "kvprobe-vllm", "--out", str(tmp_path), check=False
    )
    assert done.returncode == 2
    assert "docker info failed (is the daemon running?)" in done.stderr


@needs_podman
def test_an_absent_image_keeps_the_runtimes_message(tmp_path):
    done = kvprobe(
        "container",
        str(MODELS),
        "--runtime",
        "podman",
        "--image",
        "kvprobe-no-such-image",
        "--out",
        str(tmp_path),
        check=False,
    )
    assert done.returncode == 2
    assert "image 'kvprobe-no-such-image' is not present locally" in done.stderr
    assert "image not known" in done.stderr  # podman's own words, kept


@needs_podman
def test_a_container_that_exits_early_is_reported_with_its_own_words(tmp_path):
    done = kvprobe(
        "container",
        str(MODELS),
        "--runtime",
        "podman",
        "--rootfs",
        "/:O",
        "--memlock",
        "none",
        "--stack",
        "none",
        "--python",
        "/no/such/python",
        "--out",
        str(tmp_path),
        check=False,
    )
    assert done.returncode == 2
    assert "the container exited early" in done.stderr and "/no/such/python" in done.stderr
    assert not list(tmp_path.glob("*/*.json"))


def test_unmatched_versions_are_refused_by_name():
    native = {"software": {"kvprobe": "0.1.0", "vllm": "0.26.0", "torch": "2.11.0"}}
    inside = {"software": {"kvprobe": "0.1.0", "vllm": "0.25.1", "torch": "2.11.0"}}
    assert version_mismatch(native["software"], inside["software"]) == [
        "vllm 0.26.0 natively but 0.25.1 in the container"
    ]
    assert version_mismatch(native["software"], native["software"]) == []


def test_a_pair_with_different_settings_is_named(tmp_path):
    data = tmp_path / "results"
    shutil.copytree(DATA, data)
    for path in data.glob("*/container-*.json"):
        doc = json.loads(path.read_text())
        doc["settings_hash"] = "ffffffffffffffff"
        path.write_text(json.dumps(doc))
    (model,) = {p.parent.name for p in data.glob("*/*.json")}
    problems = check_pairs(ResultStore(data), [model])
    assert problems and "settings hash" in problems[0] and "ffffffffffffffff" in problems[0]


def test_a_pair_with_one_failed_search_is_still_compared(tmp_path):
    """The check `container --both` ends with (check_pairs), and the report, on a model whose u_min
    search failed natively (an engine configuration error, say): what both sides measured is still a
    pair, compared and flagged, not "unmatched"."""
    data = tmp_path / "results"
    shutil.copytree(DATA, data)
    for path in data.glob("*/native-*.json"):
        doc = json.loads(path.read_text())
        doc.update(status="failed", u_min=None, errors=["u_min: the engine refused its configuration"])
        path.write_text(json.dumps(doc))
    (model,) = {p.parent.name for p in data.glob("*/*.json")}
    assert check_pairs(ResultStore(data), [model]) == []
    kvprobe("report", str(data), "--out", str(tmp_path / "report"), "--format", "markdown")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "1 model(s) with matched native and container runs" in text
    assert "did not finish every search; its figures are compared where it has them" in text
    assert "no container counterpart" not in text and "no native counterpart" not in text
