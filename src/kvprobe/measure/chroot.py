"""Native from the image: `kvprobe measure` in a chroot of a container image's root filesystem.

The process stays in the host's namespaces and cgroup; only its root directory is the image's. So
the native side runs the image's own kvprobe, engine and libraries, and its versions equal the
container side's by construction (the original study's native side, made reproducible).

- The image's root filesystem is exported once per image digest (`RUNTIME create` + `RUNTIME export`,
  unpacked by tar) into the cache directory, and reused; a directory tree (`rootfs`) is used as it is.
- The host's /proc, /sys and /dev (with /dev/shm and /dev/pts) are bound inside recursively, made
  slaves so nothing propagates back; the results directory, the models file's directory and every
  model's directory are bound at the same paths (the models read-only).
- Where NVML sees a GPU, the driver is made visible as the NVIDIA container toolkit does it:
  `nvidia-container-cli list` names the driver's files, each is bound at its own path, and the
  image's ldconfig runs. Without a GPU nothing is bound, and the record says so.
- The mounts live in the host's mount namespace for the run and are removed after it (and, from a
  run that was killed, before the next one). Root is required; it is checked before anything starts.

Every result records how its side was made (`ContainerRun` with runtime `chroot`): the image, its
digest, the rootfs and each mount with its source.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from kvprobe.config import ModelSettings, load_models
from kvprobe.environment.gpu import Nvml
from kvprobe.errors import InputError, RunFailed
from kvprobe.measure.containers import ContainerError, environment_of, last_line, version_mismatch
from kvprobe.measure.request import MeasureRequest, kvprobe_command
from kvprobe.results.schema import (
    ContainerLimits,
    ContainerRun,
    ContainerSettings,
    Environment,
    Mount,
    NativeFromImage,
)

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
HOST_TREES = ("/proc", "/sys", "/dev")  # bound recursively: /dev brings /dev/shm and /dev/pts along
DONE = ".done"  # beside an exported rootfs: the export finished (its content is the image and digest)


HOST_ROOT = "host-root"  # under the cache: where rootfs "/" (this machine's own tree) is bound


@dataclass(frozen=True)
class ImageRoot:
    """A root filesystem to chroot into, and where it came from (image None: a directory as given;
    `bound_from`: a tree bound at `rootfs` for the run, without its submounts, e.g. the host's /)."""

    rootfs: Path
    image: str | None = None
    digest: str | None = None
    bound_from: str | None = None


def require_root() -> None:
    if os.geteuid() != 0:
        raise InputError("native from the image needs root (chroot and bind mounts): run kvprobe as root")


def image_digest(runtime: str, image: str) -> str:
    """The image's ID as the runtime names it (ContainerError when the runtime or the image is missing)."""
    if shutil.which(runtime) is None:
        raise ContainerError(f"container runtime {runtime!r} is not installed (not on PATH)")
    done = subprocess.run(
        [runtime, "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise ContainerError(f"image {image!r} is not present locally (build or pull it first): {last_line(done, '')}")
    return done.stdout.strip().splitlines()[0]


def _export(runtime: str, image: str, target: Path) -> None:
    """Unpack the image's root filesystem into `target` (a fresh directory)."""
    name = f"kvprobe-export-{os.getpid()}"
    created = subprocess.run(
        [runtime, "create", "--pull", "never", "--name", name, image, "true"], capture_output=True, text=True
    )
    if created.returncode != 0:
        raise ContainerError(f"{runtime} create {image} failed: {last_line(created, '')}")
    try:
        export = subprocess.Popen([runtime, "export", name], stdout=subprocess.PIPE)
        unpack = subprocess.run(
            ["tar", "-x", "--numeric-owner", "-C", str(target)], stdin=export.stdout, capture_output=True, text=True
        )
        assert export.stdout is not None
        export.stdout.close()
        if export.wait() != 0 or unpack.returncode != 0:
            raise RunFailed(f"exporting {image}'s root filesystem failed: {last_line(unpack, 'export failed')}")
    finally:
        subprocess.run([runtime, "rm", "-f", name], capture_output=True)


def image_root(spec: NativeFromImage) -> ImageRoot:
    """The root filesystem of the spec: its directory, or the image's, exported once per digest."""
    if spec.rootfs is not None:
        rootfs = Path(spec.rootfs).resolve()
        if not rootfs.is_dir():
            raise InputError(f"native_from_image: rootfs {rootfs} is not a directory")
        if rootfs == Path("/"):  # podman's --rootfs /:O counterpart: this machine's tree, as a tree of its own
            return ImageRoot(Path(spec.rootfs_cache) / HOST_ROOT, bound_from="/")
        return ImageRoot(rootfs)
    assert spec.image is not None
    digest = image_digest(spec.runtime, spec.image)
    cache = Path(spec.rootfs_cache)
    rootfs = cache / digest.removeprefix("sha256:")
    marker = rootfs.with_name(rootfs.name + DONE)
    if not marker.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = rootfs.with_name(rootfs.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        _export(spec.runtime, spec.image, partial)
        shutil.rmtree(rootfs, ignore_errors=True)
        partial.rename(rootfs)
        marker.write_text(f"{spec.image}\n{digest}\n")
    return ImageRoot(rootfs, spec.image, digest)


def data_mounts(models: list[ModelSettings], models_file: Path, out_dir: Path, extra_ro: list[Path]) -> list[Mount]:
    """The host's trees, then the results directory (writable) and the model directories (read-only)."""
    found = [Mount(source=tree, target=tree, kind="rbind") for tree in HOST_TREES]
    read_only = {Path(m.model).resolve() for m in models} | {models_file.resolve().parent}
    read_only |= {p.resolve() for p in extra_ro}
    found += [Mount(source=str(p), target=str(p), kind="bind-ro") for p in sorted(read_only)]
    return [*found, Mount(source=str(out_dir.resolve()), target=str(out_dir.resolve()), kind="bind")]


def gpu_driver_mounts(devices_seen: int) -> tuple[list[Mount], str]:
    """The driver's files to bind (as the NVIDIA container toolkit lists them), and how, in words."""
    if devices_seen == 0:
        return [], "no GPU seen by NVML here: no driver files mounted"
    if shutil.which("nvidia-container-cli") is None:
        raise InputError(
            "a GPU is here but nvidia-container-cli is not (the NVIDIA container toolkit): it names the driver "
            "files the chroot needs; install the toolkit"
        )
    listed = subprocess.run(["nvidia-container-cli", "list"], capture_output=True, text=True, timeout=120)
    if listed.returncode != 0:
        raise RunFailed(f"nvidia-container-cli list failed: {last_line(listed, '')}")
    files = [line.strip() for line in listed.stdout.splitlines() if line.strip().startswith("/")]
    outside_dev = [path for path in files if not path.startswith("/dev/")]  # /dev is bound whole
    mounts = [Mount(source=path, target=path, kind="bind-ro") for path in outside_dev]
    return mounts, f"nvidia-container-cli list: {len(files)} files ({len(outside_dev)} bound, /dev whole); ldconfig run"


def _mounted_under(rootfs: Path) -> list[str]:
    """Mount points at or under `rootfs` now (a killed run's leftovers), deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(rootfs) or point.startswith(str(rootfs) + "/"):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _unmount_all(rootfs: Path) -> None:
    for point in _mounted_under(rootfs):
        subprocess.run(["umount", "-R", "-l", point], capture_output=True)


def _mount_point(rootfs: Path, mount: Mount) -> Path:
    """The mount's target inside the tree, made if missing (before any read-only bind covers it)."""
    target = rootfs / mount.target.lstrip("/")
    if Path(mount.source).is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
    return target


def _bind(source: str, target: Path, kind: str) -> None:
    steps = [["mount", "--rbind" if kind == "rbind" else "--bind", source, str(target)]]
    steps.append(["mount", "--make-rslave", str(target)])  # nothing unmounted inside reaches the host
    if kind == "bind-ro":
        steps.append(["mount", "-o", "remount,bind,ro", str(target)])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise RunFailed(f"{' '.join(step)} failed: {last_line(done, '')}")


@contextmanager
def mounted(root: ImageRoot, mounts: list[Mount]) -> Iterator[None]:
    """The mounts in place for the block, one run at a time per rootfs; removed after (and before)."""
    lock_path = root.rootfs.with_name(root.rootfs.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _unmount_all(root.rootfs)
        try:
            if root.bound_from is not None:
                root.rootfs.mkdir(exist_ok=True)
                _bind(root.bound_from, root.rootfs, "bind")
            targets = [_mount_point(root.rootfs, mount) for mount in mounts]
            for mount, target in zip(mounts, targets, strict=True):
                _bind(mount.source, target, mount.kind)
            yield
        finally:
            _unmount_all(root.rootfs)


def inside_command(spec: NativeFromImage, rootfs: Path) -> list[str]:
    """How kvprobe is started in the chroot: the given Python, this one in a tree given as a directory
    (this machine's, or a copy), or the image's `kvprobe` entry point."""
    if spec.python:
        return ["chroot", str(rootfs), *kvprobe_command(spec.python)]
    return ["chroot", str(rootfs), *(kvprobe_command() if spec.rootfs else ["kvprobe"])]


def probe(spec: NativeFromImage, rootfs: Path) -> Environment:
    """`kvprobe env --json` in the chroot: the versions and limits the native side will have."""
    command = [*inside_command(spec, rootfs), "env", "--json", "--label", "native"]
    return environment_of(command, f"in the chroot of {rootfs}", RunFailed)


class ChrootSide:
    """One native side from an image: prepared (exported, mounts planned), then `run` within `mounted`."""

    def __init__(self, request: MeasureRequest, spec: NativeFromImage):
        require_root()
        self.spec = spec
        out_dir = Path(request.out_dir).resolve()
        assert request.models_file is not None, "a native side from an image measures a models file"
        models_file = Path(request.models_file).resolve()
        self.request = request.model_copy(update={"out_dir": str(out_dir), "models_file": str(models_file)})
        models = load_models(models_file, list(request.only) or None)
        weights = request.condition.weights_dir if request.condition and request.condition.weights_dir else None
        extra = [Path(weights.split("{model}")[0]).resolve()] if weights else []
        with Nvml() as nvml:
            self.gpu_mounts, self.gpu_driver = gpu_driver_mounts(nvml.device_count())
        out_dir.mkdir(parents=True, exist_ok=True)
        self.root = image_root(spec)
        self.mounts = data_mounts(models, models_file, out_dir, extra) + self.gpu_mounts

    def record(self, command: list[str], inside: Environment) -> ContainerRun:
        limits = ContainerLimits(
            memory_limit_bytes=inside.cgroup.limit_bytes,
            shm_bytes=inside.shm_bytes,
            memlock_limit_bytes=inside.memlock_limit_bytes,
            cgroup_version=inside.cgroup.version,
        )
        tree = [Mount(source=self.root.bound_from, target="/", kind="bind")] if self.root.bound_from else []
        return ContainerRun(
            command=command,
            runtime="chroot",
            limits=limits,
            image=self.root.image,
            image_digest=self.root.digest,
            rootfs=str(self.root.rootfs),
            mounts=tree + self.mounts,
            gpu_driver=self.gpu_driver,
        )

    def run(self, console: Console, same_software_as: Mapping[str, str | None] | None = None) -> int:
        """Measure the request in the chroot (mounts in place meanwhile); its exit code. With
        `same_software_as` (the container side's versions), an unmatched pair is refused first."""
        with mounted(self.root, self.mounts):
            if self.gpu_mounts:  # the driver's libraries into the image's linker cache, as the toolkit does
                subprocess.run(["chroot", str(self.root.rootfs), "ldconfig"], capture_output=True)
            inside = probe(self.spec, self.root.rootfs)
            differences = version_mismatch(inside.software, same_software_as) if same_software_as is not None else []
            if differences:
                raise RunFailed(f"refusing an unmatched pair: {'; '.join(differences)}")
            base = inside_command(self.spec, self.root.rootfs)
            shown = [*base, "measure", "--request", "..."]
            inner = self.request.model_copy(update={"label": "native", "started_by": self.record(shown, inside)})
            console.print("[dim]" + escape(" ".join(shown)) + "[/]", highlight=False, soft_wrap=True)
            child = subprocess.Popen([*base, *inner.arguments()])
            try:
                code = child.wait()
            except KeyboardInterrupt:
                child.send_signal(signal.SIGTERM)
                child.wait()
                return EXIT_INTERRUPTED
        if code not in (EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED):
            raise RunFailed(f"the measurement in the chroot of {self.root.rootfs} failed (exit {code})")
        return code


def run_native_from_image(request: MeasureRequest, spec: NativeFromImage, console: Console) -> int:
    """`kvprobe measure` of the request in a chroot of the spec's image (or tree)."""
    return ChrootSide(request, spec).run(console)


def image_of(settings: ContainerSettings) -> NativeFromImage:
    """The native side from a container's own image (or --rootfs tree, without podman's :O suffix)."""
    rootfs = settings.rootfs.rsplit(":", 1)[0] if settings.rootfs and ":" in settings.rootfs else settings.rootfs
    return NativeFromImage(runtime=settings.runtime, image=settings.image, rootfs=rootfs, python=settings.python)
