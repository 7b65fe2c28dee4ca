"""The isolation ladder, checked inside each rung with real podman and a real chroot (no engine).

Each rung of experiments/ladder-cpu.yaml runs tests/ladder_probe.py where kvprobe would run its
measurement: natively, in the chroot kvprobe makes (measure/chroot.py), and in each container as
kvprobe builds its command. Each rung must change exactly the isolation it names: the namespaces
that differ from native (by /proc/self/ns inode), the cgroup path, the memory limit, /dev/shm's size
and the seccomp mode. Then the image side: a tiny image made here offline (`podman import` of a
tarball) is exported once per digest, and the chroot's mounts are in place during a run and gone after.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT, needs_podman, tiny_models_file
from kvprobe.config import load_models
from kvprobe.experiment.spec import load_experiment
from kvprobe.measure.chroot import data_mounts, image_root, inside_command, mounted
from kvprobe.measure.container_session import ready_settings
from kvprobe.measure.containers import build_command
from kvprobe.results.schema import NativeFromImage

pytestmark = [needs_podman, pytest.mark.container]
PROBE = ROOT / "tests" / "ladder_probe.py"
GIB = 1 << 30


def probe(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (command, done.stderr[-2000:])
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def rungs(tmp_path_factory) -> dict[str, dict]:
    """Every rung's view from inside, by condition name, in the ladder's order."""
    directory = tmp_path_factory.mktemp("ladder")
    experiment = load_experiment(ROOT / "experiments" / "ladder-cpu.yaml")
    cache = directory / "cache"
    (directory / "out").mkdir()
    seen: dict[str, dict] = {}
    for condition in experiment.conditions:
        if condition.native_from_image is not None:
            spec = condition.native_from_image.model_copy(update={"rootfs_cache": str(cache), "python": None})
            root = image_root(spec)
            models = load_models(tiny_models_file(directory))
            with mounted(root, data_mounts(models, directory / "models.yaml", directory / "out", [])):
                chrooted = [*inside_command(spec, root.rootfs)[:2], sys.executable, "-I", str(PROBE), str(root.rootfs)]
                seen[condition.name] = probe(chrooted)
            seen[condition.name]["rootfs"] = str(root.rootfs)
        elif condition.container is not None:
            settings = ready_settings(condition.container)
            seen[condition.name] = probe(build_command(settings, [sys.executable, "-I", str(PROBE)], []))
        else:
            seen[condition.name] = probe([sys.executable, "-I", str(PROBE)])
    return seen


def differs(rungs: dict[str, dict], name: str) -> set[str]:
    """The namespaces of rung `name` that are not native's."""
    native = rungs["native"]["ns"]
    return {ns for ns, inode in rungs[name]["ns"].items() if inode != native[ns]}


def test_the_ladder_names_its_rungs_in_order(rungs):
    assert list(rungs) == [
        "native",
        "native-from-image",
        "shared",
        "private-ipc",
        "memory-limit",
        "study-flags",
    ]


def test_the_chroot_changes_the_root_and_nothing_else(rungs):
    chroot, native = rungs["native-from-image"], rungs["native"]
    assert differs(rungs, "native-from-image") == set()
    assert chroot["cgroup"] == native["cgroup"] and chroot["shm_bytes"] == native["shm_bytes"]
    assert chroot["seccomp"] == native["seccomp"] and chroot["memory_limit"] == native["memory_limit"]
    # inside, the bound tree's own mount point is an empty directory: the root is that tree, not /'s mounts
    assert chroot["entries"] == {chroot["rootfs"]: 0}


def test_shared_keeps_the_hosts_network_ipc_and_pid_and_has_its_own_cgroup(rungs):
    shared, native = rungs["shared"], rungs["native"]
    assert differs(rungs, "shared") == {"mnt", "uts"}
    assert shared["cgroup"] != native["cgroup"] and "libpod" in shared["cgroup"]
    assert shared["memory_limit"] == native["memory_limit"]  # its own cgroup, without a limit
    assert shared["seccomp"] == "0" and shared["shm_bytes"] == native["shm_bytes"]


def test_each_further_rung_adds_only_its_own_feature(rungs):
    native = rungs["native"]
    private = rungs["private-ipc"]
    assert differs(rungs, "private-ipc") == {"mnt", "uts", "ipc"}
    assert private["shm_bytes"] == 60 * GIB and private["memory_limit"] == native["memory_limit"]

    limited = rungs["memory-limit"]
    assert differs(rungs, "memory-limit") == {"mnt", "uts", "ipc"}
    assert int(limited["memory_limit"]) == 8 * GIB and limited["shm_bytes"] == 60 * GIB
    assert all(rungs[name]["seccomp"] == "0" for name in ("private-ipc", "memory-limit"))


def test_the_study_flags_keep_the_hosts_ipc_and_the_runtimes_defaults(rungs):
    study, native = rungs["study-flags"], rungs["native"]
    assert differs(rungs, "study-flags") == {"mnt", "uts", "pid", "net"}
    assert study["shm_bytes"] == native["shm_bytes"] and study["memory_limit"] == native["memory_limit"]
    assert study["seccomp"] == "2" and study["cgroup"] != native["cgroup"]


def test_an_image_is_exported_once_per_digest_and_the_mounts_last_the_run(tmp_path):
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        body = b"kvprobe ladder test\n"
        info = tarfile.TarInfo("etc/kvprobe-marker")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    tarball = tmp_path / "tree.tar"
    tarball.write_bytes(archive.getvalue())
    tag = "localhost/kvprobe-ladder-test:latest"
    subprocess.run(["podman", "import", str(tarball), tag], check=True, capture_output=True)
    try:
        spec = NativeFromImage(runtime="podman", image=tag, rootfs_cache=str(tmp_path / "cache"))
        root = image_root(spec)
        digest = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert root.digest == digest and root.rootfs.name == digest.removeprefix("sha256:")
        assert (root.rootfs / "etc" / "kvprobe-marker").read_text() == "kvprobe ladder test\n"
        marker = root.rootfs.with_name(root.rootfs.name + ".done")
        stamp = marker.stat().st_mtime_ns
        assert image_root(spec) == root and marker.stat().st_mtime_ns == stamp  # cached: not exported again

        out = tmp_path / "out"
        out.mkdir()
        models = load_models(tiny_models_file(tmp_path))
        planned = data_mounts(models, tmp_path / "models.yaml", out, [])
        with mounted(root, planned):
            table = Path("/proc/self/mountinfo").read_text()
            for mount in planned:
                assert f" {root.rootfs}{mount.target} " in table
            assert (root.rootfs / "proc" / "self").exists()
        assert str(root.rootfs) not in Path("/proc/self/mountinfo").read_text()
        assert [m.target for m in planned[:3]] == ["/proc", "/sys", "/dev"]
        assert planned[-1].kind == "bind" and all(m.kind == "bind-ro" for m in planned[3:-1])
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
