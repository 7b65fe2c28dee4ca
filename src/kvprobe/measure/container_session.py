"""`kvprobe container`: the same request measured inside a container (and, with `both`, natively first:
on the host, or with `native_side: image` in a chroot of the same image, measure/chroot.py).

The container runs `kvprobe measure --request JSON` with the request's container part removed and
how it was started recorded; versions are compared before anything is measured, and an interrupt
stops the container before kvprobe exits (a runtime's client dying does not stop a container).
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from kvprobe.environment.facts import collect
from kvprobe.environment.gpu import Nvml
from kvprobe.errors import InputError, RunFailed
from kvprobe.measure.chroot import ChrootSide, image_of
from kvprobe.measure.containers import (
    build_command,
    default_oci_runtime,
    kvprobe_inside,
    last_line,
    mounts,
    preflight,
    probe_environment,
    resolve_gpus,
    run_in_container,
    runtime_flag_warnings,
    settings_problems,
    version_mismatch,
)
from kvprobe.measure.request import MeasureRequest
from kvprobe.measure.session import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, run_measure
from kvprobe.results.schema import ContainerLimits, ContainerRun, ContainerSettings, Environment


def ready_settings(settings: ContainerSettings) -> ContainerSettings:
    """The container settings checked, with what depends on this machine decided (GPUs, OCI runtime)."""
    if settings.oci_runtime is None:
        settings = settings.model_copy(update={"oci_runtime": default_oci_runtime(settings.runtime)})
    problems = settings_problems(settings)
    if problems:
        raise InputError("\n".join(problems))
    if settings.gpus == "auto":
        with Nvml() as nvml:
            settings = resolve_gpus(settings, nvml.device_count())
    return settings


def run_container(request: MeasureRequest, console: Console) -> int:
    """Measure the request in its container (natively first with `both`); the worst exit code."""
    assert request.container is not None
    settings = ready_settings(request.container)
    for warning in runtime_flag_warnings(settings.runtime_flags):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    out_dir = Path(request.out_dir).resolve()
    request = request.model_copy(update={"out_dir": str(out_dir), "container": settings})
    models = request.models()
    out_dir.mkdir(parents=True, exist_ok=True)
    volume_flags = mounts(models, Path(request.models_source), out_dir, [])
    preflight(settings)
    native = request.model_copy(update={"container": None, "both": False, "label": "native"})
    from_image = ChrootSide(native, image_of(settings)) if request.both and settings.native_side == "image" else None
    inside = probe_environment(settings, volume_flags)
    if settings.native_side == "host":
        differences = version_mismatch(collect("native").software, inside.software)
        if differences:
            raise RunFailed(f"refusing an unmatched pair: {'; '.join(differences)}")
    limits = _limits(inside)
    console.print(f"container sees: memory limit {limits.memory_limit_bytes}, /dev/shm {limits.shm_bytes}")

    status = EXIT_OK
    if request.both:
        console.rule("native" if from_image is None else "native, from the image")
        status = run_measure(native, console) if from_image is None else from_image.run(console, inside.software)
        if status == EXIT_INTERRUPTED:
            console.print("[yellow]interrupted during the native half: the container half was not started[/]")
            return EXIT_INTERRUPTED
    return max(status, _container_half(console, request, volume_flags, limits))


def _limits(inside: Environment) -> ContainerLimits:
    return ContainerLimits(
        memory_limit_bytes=inside.cgroup.limit_bytes,
        shm_bytes=inside.shm_bytes,
        memlock_limit_bytes=inside.memlock_limit_bytes,
        cgroup_version=inside.cgroup.version,
    )


def _container_half(console: Console, request: MeasureRequest, volume_flags: list[str], limits: ContainerLimits) -> int:
    """The request measured in a named container; an interrupt stops the container before kvprobe exits."""
    settings = request.container
    assert settings is not None
    console.rule("container")
    name = f"kvprobe-measure-{os.getpid()}"
    inner = request.model_copy(update={"container": None, "both": False, "label": "container"})
    command = build_command(settings, [*kvprobe_inside(settings), *inner.arguments()], volume_flags, name)
    started_by = ContainerRun(command=command, runtime=settings.runtime, limits=limits)
    inner = inner.model_copy(update={"started_by": started_by})
    console.print("[dim]" + escape(" ".join(command)) + "[/]", highlight=False, soft_wrap=True)
    command = build_command(settings, [*kvprobe_inside(settings), *inner.arguments()], volume_flags, name)
    try:
        done = run_in_container(settings, name, command)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted[/]: stopped and removed container {name}; finished trials are "
            f"journaled, continue with --resume --out {escape(request.out_dir)}",
            highlight=False,
        )
        return EXIT_INTERRUPTED
    if done.returncode not in (EXIT_OK, EXIT_FAILED):
        raise RunFailed(f"the container run failed (exit {done.returncode}): {last_line(done, '')}")
    return done.returncode
