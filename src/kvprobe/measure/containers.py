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
from pathlib import Path

from kvprobe.config import ModelSettings
from kvprobe.environment.gpu import CUDA_VISIBLE_DEVICES
from kvprobe.errors import InputError
from kvprobe.measure.request import kvprobe_command
from kvprobe.results.schema import ContainerSettings, Environment


class ContainerError(InputError):
    """The runtime is missing, its daemon is down, the image is absent, or the container failed."""


def isolation_problems(settings: ContainerSettings) -> list[tuple[str, str]]:
    """Contradictions between the isolation fields, as (field, sentence) pairs."""
    given = settings.model_fields_set
    problems = []
    if settings.ipc is not None and "ipc_host" in given and settings.ipc_host != (settings.ipc == "host"):
        problems.append(("ipc", f"ipc: {settings.ipc} contradicts ipc_host: {str(settings.ipc_host).lower()}"))
    if settings.cgroup == "disabled":
        if settings.runtime == "docker":
            problems.append(("cgroup", "docker always makes a cgroup of its own; cgroup: disabled needs podman"))
        if settings.memory:
            problems.append(("memory", "a memory limit needs a cgroup of its own (cgroup: own), not cgroup: disabled"))
        if settings.oci_runtime == "runc":  # podman's own refusal, said before anything starts
            problems.append(("cgroup", "podman runs a container without a cgroup only with crun, not runc"))
        if settings.pid == "host":
            problems.append(("pid", "podman runs a container without a cgroup only in a PID namespace of its own"))
        for field in ("cgroupns", "cgroup_parent"):
            if getattr(settings, field) is not None:
                problems.append((field, "with cgroup: disabled there is no cgroup of its own to place or name"))
    return problems


# Runtime flags that break what kvprobe relies on: its container's name (the interrupt stops it by
# name), --rm (no container left behind), running in the foreground, its own command.
REFUSED_FLAGS = {
    "--name": "kvprobe names the container itself, so that an interrupt stops the right one",
    "--rm": "kvprobe removes the container itself (--rm=false would leave it behind)",
    "--detach": "kvprobe follows the container in the foreground",
    "-d": "kvprobe follows the container in the foreground",
    "--entrypoint": "kvprobe runs its own command in the container",
    "--restart": "a container kvprobe stops must stay stopped",
}
# Runtime flags that widen what the container may touch: allowed, said before anything starts, and
# recorded with the container's command line in every result.
WIDENING_FLAGS = {
    "--privileged": "every device and capability of the host",
    "-v": "a host path mounted inside",
    "--volume": "a host path mounted inside",
    "--mount": "a host path mounted inside",
    "--pid": "another PID namespace (the host's: every process of the host)",
    "--cap-add": "added capabilities",
    "--device": "a host device",
    "--security-opt": "a changed security profile",
    "--userns": "another user namespace",
}


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0]


def refused_runtime_flags(flags: list[str]) -> list[tuple[str, str]]:
    """(flag, why) for each runtime flag kvprobe refuses, from the command line or an experiment file."""
    return [(flag, REFUSED_FLAGS[_flag_name(flag)]) for flag in flags if _flag_name(flag) in REFUSED_FLAGS]


def runtime_flag_problems(flags: list[str]) -> list[str]:
    """--runtime-flag values kvprobe refuses, one sentence each."""
    return [f"--runtime-flag {flag}: refused: {why}" for flag, why in refused_runtime_flags(flags)]


def runtime_flag_warnings(flags: list[str]) -> list[str]:
    """--runtime-flag values that widen what the container may touch, one sentence each."""
    return [
        f"--runtime-flag {flag}: the container may touch {WIDENING_FLAGS[_flag_name(flag)]}"
        for flag in flags
        if _flag_name(flag) in WIDENING_FLAGS
    ]


def settings_problems(settings: ContainerSettings) -> list[str]:
    """What makes these container settings unusable, one sentence each."""
    problems = runtime_flag_problems(settings.runtime_flags)
    if (settings.image is None) == (settings.rootfs is None):
        problems.append("give exactly one of --image and --rootfs")
    if settings.rootfs and settings.runtime != "podman":
        problems.append("--rootfs needs podman; docker runs images (--image)")
    return problems + [f"{field}: {sentence}" for field, sentence in isolation_problems(settings)]


def isolation_flags(settings: ContainerSettings) -> list[str]:
    """The run flags of the isolation fields (none for a field left to the runtime's default)."""
    flags = ["--network", settings.network]
    if settings.pid is not None:
        flags += ["--pid", settings.pid]
    if settings.cgroup == "disabled":
        flags += ["--cgroups", "disabled"]
    if settings.cgroupns is not None:
        flags += ["--cgroupns", settings.cgroupns]
    if settings.cgroup_parent is not None:
        flags += ["--cgroup-parent", settings.cgroup_parent]
    if settings.seccomp == "unconfined":
        flags += ["--security-opt", "seccomp=unconfined"]
    if settings.privileged:
        flags.append("--privileged")
    if settings.memory:
        flags += ["--memory", settings.memory]
    if settings.ipc_host:
        flags += ["--ipc", "host"]
    elif _limit(settings.shm_size):
        flags += ["--shm-size", settings.shm_size]
    return flags


def _limit(value: str | None) -> str | None:
    """A ulimit or size flag's value; 'none' (or nothing) leaves the runtime's default."""
    return None if value in (None, "", "none") else value


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


def runtime_base(settings: ContainerSettings) -> list[str]:
    """The runtime and its global flags, for run, info, stop and rm alike."""
    return [settings.runtime] + (["--runtime", settings.oci_runtime] if settings.oci_runtime else [])


def resolve_gpus(settings: ContainerSettings, devices_seen: int) -> ContainerSettings:
    """`gpus: auto` decided: all when NVML sees a GPU, else no GPU flag."""
    if settings.gpus != "auto":
        return settings
    return settings.model_copy(update={"gpus": "all" if devices_seen else "none"})


def build_command(
    settings: ContainerSettings, inner: list[str], volume_flags: list[str], name: str | None = None
) -> list[str]:
    """The full runtime argument list: runtime, global flags, run flags, image or rootfs, command."""
    command = [*runtime_base(settings), "run", "--rm", "--pull", "never"]
    if name:
        command += ["--name", name]
    command += isolation_flags(settings)
    for ulimit in ("memlock", "stack"):
        value = _limit(getattr(settings, ulimit))
        if value:
            command += ["--ulimit", f"{ulimit}={value}:{value}"]
    gpus = _limit(settings.gpus)
    if gpus and gpus != "auto":
        command += ["--gpus", gpus]
    command += ["-w", os.getcwd(), "-e", "PYTHONUNBUFFERED=1"]
    if gpus == "all" and CUDA_VISIBLE_DEVICES in os.environ:  # with every GPU inside, the same ones as outside
        command += ["-e", f"{CUDA_VISIBLE_DEVICES}={os.environ[CUDA_VISIBLE_DEVICES]}"]
    command += volume_flags + list(settings.runtime_flags)
    command += ["--rootfs", settings.rootfs] if settings.rootfs else [str(settings.image)]
    return command + inner


def kvprobe_inside(settings: ContainerSettings) -> list[str]:
    """How kvprobe is run inside: the given interpreter, this one on a --rootfs of this machine, or
    the image's `kvprobe` entry point."""
    if settings.python:
        return kvprobe_command(settings.python)
    if settings.rootfs:
        return kvprobe_command()
    return ["kvprobe"]


def last_line(done: subprocess.CompletedProcess, default: str) -> str:
    """The last line a finished command wrote (stderr first): runtimes put their reason there."""
    said = (done.stderr or done.stdout or "").strip().splitlines()
    return said[-1] if said else default


def preflight(spec: ContainerSettings) -> None:
    """Clear errors before any measurement: runtime missing, daemon down, image absent."""
    if shutil.which(spec.runtime) is None:
        raise ContainerError(f"container runtime {spec.runtime!r} is not installed (not on PATH)")
    base = runtime_base(spec)
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


def stop_container(spec: ContainerSettings, name: str) -> None:
    """Stop the named container (SIGTERM, then SIGKILL after the grace period) and remove it."""
    base = runtime_base(spec)
    subprocess.run([*base, "stop", "-t", str(STOP_GRACE_S), name], capture_output=True, timeout=120)
    subprocess.run([*base, "rm", "-f", name], capture_output=True, timeout=120)


def run_in_container(spec: ContainerSettings, name: str, command: list[str]) -> subprocess.CompletedProcess:
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
        stop_container(spec, name)
        process.wait()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout="", stderr="\n".join(tail))


def environment_of(command: list[str], where: str, fail: type[Exception]) -> Environment:
    """The environment block `kvprobe env --json` (the end of `command`) prints from `where` (inside
    a container, in a chroot): its versions and the limits it sees; `fail` raised with why not."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise fail(f"kvprobe {where} exited early (exit {done.returncode}): {last_line(done, 'no output')}")
    try:
        return Environment.model_validate_json(done.stdout)
    except ValueError:
        raise fail(f"could not read kvprobe env {where}: {done.stdout[-300:]}") from None


def probe_environment(spec: ContainerSettings, volume_flags: list[str]) -> Environment:
    """`kvprobe env --json` inside the container: its versions and the limits it sees."""
    command = build_command(spec, [*kvprobe_inside(spec), "env", "--json", "--label", "container"], volume_flags)
    return environment_of(command, "in the container", ContainerError)


def version_mismatch(native: Mapping[str, str | None], inside: Mapping[str, str | None]) -> list[str]:
    """What differs between the two sides' software (Environment.software), in words (empty when matched)."""
    differences = []
    for key in ("kvprobe", "vllm", "torch"):
        a, b = native.get(key), inside.get(key)
        if a != b:
            differences.append(f"{key} {a} natively but {b} in the container")
    return differences
