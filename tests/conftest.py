"""Shared fixtures. Real-engine measurements run once per session and are shared by many tests."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models.yaml"
CONTAINER_MEMORY = "4g"  # vLLM sizes the CPU KV budget from this limit
CONTAINER_UTILIZATION = 0.3  # the container fixtures' reference (see container_command)


def have_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def have_podman() -> bool:
    return shutil.which("podman") is not None and shutil.which("runc") is not None


needs_engine = pytest.mark.skipif(not have_vllm() and not os.environ.get("CI"), reason="vLLM is not installed")
needs_podman = pytest.mark.skipif(not have_podman() and not os.environ.get("CI"), reason="podman/runc not installed")


def kvprobe(*args: str, timeout: float = 3600, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "kvprobe.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


def podman_base(memory: str = CONTAINER_MEMORY) -> list[str]:
    """A podman run on the machine's own root (same venv inside), as kvprobe container builds it."""
    return [
        "podman",
        "--runtime",
        "runc",
        "run",
        "--rm",
        "--network",
        "none",
        "--memory",
        memory,
        "--shm-size",
        "1g",
        "-v",
        f"{ROOT}:{ROOT}:ro",
        "-w",
        str(ROOT),
    ]


def load_results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/*.json"))]


def tiny_models_file(directory: Path, **changes) -> Path:
    """models.yaml's tiny model with some settings changed, written to `directory`."""
    shipped = yaml.safe_load(MODELS.read_text())
    (entry,) = [m for m in shipped["models"] if m["name"] == "tiny-llama"]
    entry = {**entry, "model": str(ROOT / entry["model"]), **changes}
    path = directory / "models.yaml"
    path.write_text(yaml.safe_dump({"defaults": shipped["defaults"], "models": [entry]}))
    return path


def measure_command(out: Path, *extra: str) -> list[str]:
    """`kvprobe measure` of the shipped tiny model into `out`."""
    return [
        sys.executable,
        "-m",
        "kvprobe.cli",
        "measure",
        str(MODELS),
        "--only",
        "tiny-llama",
        "--out",
        str(out),
        *extra,
    ]


def container_command(out: Path, *extra: str) -> list[str]:
    """`kvprobe container` of the tiny model in a 4 GiB podman container, on the machine's own root."""
    # At the shipped 0.2, 4 GiB leave 0.8 GiB of budget, and vLLM's CPU non-KV memory (the worker's
    # RSS) can take all of it: the container fixtures use 0.3.
    models_dir = out.with_name(out.name + "-models")  # not inside `out`: that is mounted read-write
    models_dir.mkdir(exist_ok=True)
    models = tiny_models_file(models_dir, gpu_memory_utilization=CONTAINER_UTILIZATION)
    # A private 1 GiB /dev/shm and the runtime's stack limit: this machine's root may not raise rlimits
    # in a container, and the tests check what a private /dev/shm looks like from inside.
    runtime = ["--runtime", "podman", "--rootfs", "/:O", "--memory", CONTAINER_MEMORY, "--shm-size", "1g"]
    runtime += ["--ipc-private", "--stack", "none"]
    return [
        sys.executable,
        "-m",
        "kvprobe.cli",
        "container",
        str(models),
        *runtime,
        "--memlock",
        "none",
        "--only",
        "tiny-llama",
        "--out",
        str(out),
        *extra,
    ]


def run_container(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return kvprobe(*container_command(out, *extra)[3:], timeout=2400)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def run_in_pty(command: list[str], env: dict[str, str], timeout_s: float = 300) -> tuple[int, str]:
    """`command` on a pseudo-terminal 200 columns wide; its exit code and everything it showed."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    env = {**env, "COLUMNS": "200", "LINES": "50", "TERM": "xterm-256color"}
    process = subprocess.Popen(
        command, stdin=follower, stdout=follower, stderr=follower, cwd=ROOT, env=env, start_new_session=True
    )
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process has ended
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:  # past the limit: end kvprobe and whatever engine it started
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def wait_until(condition, timeout_s: float = 300, message: str = "timed out waiting") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.5)


@pytest.fixture(scope="session")
def pair_run(tmp_path_factory) -> dict:
    """`kvprobe container --both`: the reference start natively and in a 4 GiB podman container."""
    out = tmp_path_factory.mktemp("pair")
    done = run_container(out, "--both", "--searches", "reference")
    by_label = {doc["label"]: doc for doc in load_results(out)}
    return {"out": out, "stdout": done.stdout, "native": by_label.get("native"), "container": by_label.get("container")}


@pytest.fixture(scope="session")
def container_search(tmp_path_factory) -> dict:
    """u_max and the physical capacity in a 4 GiB podman container, over the whole utilization range
    (2% steps: each physical-capacity trial fills about 2.5 GiB of KV cache, some 20 s on two cores).
    u_min, where vLLM's refusals end, is test_engine_window.py's (natively, in a run it serves anyway)."""
    out = tmp_path_factory.mktemp("container")
    run_container(out, "--range", "0.05:0.99", "--tolerance", "0.02", "--searches", "reference,u_max,kv_blocks")
    (doc,) = load_results(out)
    return doc


def environment(mem_total: int, devices: list[tuple[int, bool]] = ()):
    """This machine's environment block with its memory and GPUs replaced (total bytes, unified)."""
    from kvprobe.environment.facts import collect
    from kvprobe.environment.gpu import GpuInfo, GpuReport

    gpus = GpuReport(
        available=bool(devices),
        devices=[
            GpuInfo(index, f"GPU {index}", total, 0, unified, "test") for index, (total, unified) in enumerate(devices)
        ],
    )
    block = collect()
    return block.model_copy(update={"host_memory": {**block.host_memory, "MemTotal": mem_total}, "gpu": gpus})
