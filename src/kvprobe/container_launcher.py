"""Run `kvprobe measure` inside a container (docker or podman), with the same models and settings.

The argument list is always built as a list and run without a shell; model directories are
mounted read-only at the same paths, the results directory read-write, so native and container
results land side by side and compare by path-independent settings hashes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kvprobe.config import ModelSettings
from kvprobe.results.schema import Environment
from kvprobe.safe_io import child_python


class ContainerError(Exception):
    """The runtime is missing, its daemon is down, the image is absent, or the container failed."""


@dataclass
class ContainerSpec:
    runtime: str  # docker or podman
    image: str | None = None
    rootfs: str | None = None
    memory: str | None = None
    shm_size: str | None = "60g"
    ipc_host: bool = True  # the original study's docker flags: --ipc=host --shm-size=60g
    gpus: str | None = None  # "all", a device list, or None for no GPU flag
    memlock: str | None = "-1"  # --ulimit memlock=VALUE; None leaves the runtime's default
    stack: str | None = "67108864"  # --ulimit stack=VALUE (the study's); None leaves the runtime's default
    network: str = "none"
    oci_runtime: str | None = None  # podman --runtime (runc where crun is missing)
    python: str | None = None  # interpreter inside; default: this one for --rootfs, `kvprobe` for images
    runtime_flags: list[str] = field(default_factory=list)
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.image is None) == (self.rootfs is None):
            raise ValueError("give exactly one of --image and --rootfs")
        if self.rootfs and self.runtime != "podman":
            raise ValueError("--rootfs needs podman; docker runs images (--image)")


def default_oci_runtime(runtime: str) -> str | None:
    if runtime == "podman" and shutil.which("crun") is None and shutil.which("runc") is not None:
        return "runc"
    return None


def mounts(models: list[ModelSettings], models_file: Path, out_dir: Path, extra_ro: list[Path]) -> list[str]:
    """-v flags: each model directory and the models file read-only, the results directory writable."""
    for model in models:
        if ":" in str(Path(model.model).resolve()):
            raise ContainerError(
                f"model '{model.name}': field 'model': {model.model} contains ':', which a "
                "runtime's -v SOURCE:TARGET cannot mount; move or link it to a path without one"
            )
    for path in (models_file.resolve().parent, out_dir.resolve()):
        if ":" in str(path):
            raise ContainerError(f"{path} contains ':', which a runtime's -v SOURCE:TARGET cannot mount")
    read_only = (
        {Path(m.model).resolve() for m in models} | {models_file.resolve().parent} | {p.resolve() for p in extra_ro}
    )
    flags: list[str] = []
    for path in sorted(read_only):
        flags += ["-v", f"{path}:{path}:ro"]
    flags += ["-v", f"{out_dir.resolve()}:{out_dir.resolve()}"]
    return flags


def build_command(spec: ContainerSpec, inner: list[str], volume_flags: list[str]) -> list[str]:
    """The full runtime argument list: runtime, global flags, run flags, image or rootfs, command."""
    command = [spec.runtime]
    if spec.oci_runtime:
        command += ["--runtime", spec.oci_runtime]
    command += ["run", "--rm", "--network", spec.network, "--pull", "never"]
    if spec.name:
        command += ["--name", spec.name]
    if spec.memory:
        command += ["--memory", spec.memory]
    if spec.ipc_host:
        command += ["--ipc", "host"]
    elif spec.shm_size:
        command += ["--shm-size", spec.shm_size]
    if spec.memlock:
        command += ["--ulimit", f"memlock={spec.memlock}:{spec.memlock}"]
    if spec.stack:
        command += ["--ulimit", f"stack={spec.stack}:{spec.stack}"]
    if spec.gpus:
        command += ["--gpus", spec.gpus]
    command += ["-w", os.getcwd(), "-e", "PYTHONUNBUFFERED=1"]
    command += volume_flags + list(spec.runtime_flags)
    if spec.rootfs:
        command += ["--rootfs", spec.rootfs]
    else:
        command += [spec.image]
    return command + inner


def inner_command(spec: ContainerSpec, arguments: list[str]) -> list[str]:
    if spec.python:
        return [spec.python, "-m", "kvprobe.cli", *arguments]
    if spec.rootfs:
        return [*child_python(), "-m", "kvprobe.cli", *arguments]
    return ["kvprobe", *arguments]


def last_line(done: subprocess.CompletedProcess, default: str) -> str:
    """The last line a finished command wrote (stderr first): runtimes put their reason there."""
    said = (done.stderr or done.stdout or "").strip().splitlines()
    return said[-1] if said else default


def preflight(spec: ContainerSpec) -> None:
    """Clear errors before any measurement: runtime missing, daemon down, image absent."""
    if shutil.which(spec.runtime) is None:
        raise ContainerError(f"container runtime {spec.runtime!r} is not installed (not on PATH)")
    base = [spec.runtime] + (["--runtime", spec.oci_runtime] if spec.oci_runtime else [])
    info = subprocess.run([*base, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        hint = " (is the daemon running?)" if spec.runtime == "docker" else ""
        raise ContainerError(f"{spec.runtime} info failed{hint}: {last_line(info, f'exit {info.returncode}')}")
    if spec.image:
        found = subprocess.run(
            [spec.runtime, "image", "inspect", spec.image], capture_output=True, text=True, timeout=60
        )
        if found.returncode != 0:
            raise ContainerError(
                f"image {spec.image!r} is not present locally (build or pull it first): {last_line(found, '')}"
            )


STOP_GRACE_S = 10  # the measurement inside ends its trial (and engine) on SIGTERM within this


def stop_container(spec: ContainerSpec) -> None:
    """Stop the named container (SIGTERM, then SIGKILL after the grace period) and remove it."""
    base = [spec.runtime] + (["--runtime", spec.oci_runtime] if spec.oci_runtime else [])
    subprocess.run([*base, "stop", "-t", str(STOP_GRACE_S), spec.name], capture_output=True, timeout=120)
    subprocess.run([*base, "rm", "-f", spec.name], capture_output=True, timeout=120)


def run_in_container(spec: ContainerSpec, command: list[str]) -> subprocess.CompletedProcess:
    """Run the named container; stream its output through; keep the tail of stderr for error messages.
    Interrupted (Ctrl-C, SIGTERM as KeyboardInterrupt), it stops the container before passing it on:
    the runtime's client dying does not stop a container."""
    process = subprocess.Popen(command, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []
    assert process.stderr is not None
    try:
        for line in process.stderr:
            sys.stderr.write(line)
            tail = ([*tail, line.rstrip()])[-20:]
        process.wait()
    except BaseException:
        stop_container(spec)
        process.wait()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout="", stderr="\n".join(tail))


def probe_environment(spec: ContainerSpec, volume_flags: list[str]) -> Environment:
    """`kvprobe env --json` inside the container: its versions and the limits it sees."""
    command = build_command(spec, inner_command(spec, ["env", "--json", "--label", "container"]), volume_flags)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise ContainerError(f"the container exited early (exit {done.returncode}): {last_line(done, 'no output')}")
    try:
        return Environment.model_validate_json(done.stdout)
    except ValueError:
        raise ContainerError(f"could not read kvprobe env from the container: {done.stdout[-300:]}") from None


def version_mismatch(native: Mapping[str, str | None], inside: Mapping[str, str | None]) -> list[str]:
    """What differs between the two sides' software (Environment.software), in words (empty when matched)."""
    differences = []
    for key in ("kvprobe", "vllm", "torch"):
        a, b = native.get(key), inside.get(key)
        if a != b:
            differences.append(f"{key} {a} natively but {b} in the container")
    return differences
