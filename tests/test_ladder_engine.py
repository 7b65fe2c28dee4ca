"""Native from the image with the real CPU engine (two engine starts, the reference search only):
`kvprobe container --both --native-from-image` on this machine's own tree (podman --rootfs /:O, and a
chroot of / bound without its submounts), beside the plain native run of the same tree that
`kvprobe container --both` makes (conftest's pair_run, same models file settings).

The chroot's result records how its side was made (rootfs, each mount and its source, the GPU driver
note), its versions equal the container's, and its KV equals the plain native run's within the
spread this machine's CPU backend shows between starts (it sizes from memory that moves a little).

Inside the tree the interpreter is this one, with this checkout's sources first: a two-line shell
stand-in for an image's installed kvprobe (the tree's own installation may be another checkout's).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONTAINER_UTILIZATION, ROOT, needs_engine, needs_podman, tiny_models_file

pytestmark = [needs_engine, needs_podman, pytest.mark.engine, pytest.mark.container]
BLOCK_SPREAD = 0.01  # of the KV: two native starts at one setting here gave 813 and 817 blocks (0.5%)


def results(out: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(out.glob("*/*.json")):
        document = json.loads(path.read_text())
        side = document["options"]["container"]
        found["chroot" if side and side["runtime"] == "chroot" else document["label"]] = document
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pair_run) -> dict[str, dict]:
    directory = tmp_path_factory.mktemp("from-image")
    models = tiny_models_file(directory, gpu_memory_utilization=CONTAINER_UTILIZATION)  # as pair_run's
    python = directory / "python"
    python.write_text(f'#!/bin/sh\n[ "$1" = "-I" ] && shift\nPYTHONPATH={ROOT / "src"} exec {sys.executable} -P "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # absolute: the chroot starts in /
    base = [sys.executable, "-m", "kvprobe.cli"]
    pair = [*base, "container", str(models), "--runtime", "podman", "--rootfs", "/:O", "--python", str(python)]
    pair += ["--memlock", "none", "--stack", "none", "--both", "--native-from-image"]
    pair += ["--searches", "reference", "--out", str(directory / "pair")]
    done = subprocess.run(pair, capture_output=True, text=True, timeout=1200, cwd=directory, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {**results(directory / "pair"), "plain": pair_run["native"], "dir": directory}


def test_the_chroot_result_records_its_rootfs_and_every_mount(runs):
    side = runs["chroot"]["options"]["container"]
    assert runs["chroot"]["label"] == "native" and side["runtime"] == "chroot"
    assert side["rootfs"].endswith("/host-root") and side["mounts"][0] == {"source": "/", "target": "/", "kind": "bind"}
    by_target = {m["target"]: m for m in side["mounts"]}
    assert {by_target[t]["kind"] for t in ("/proc", "/sys", "/dev")} == {"rbind"}
    out = str(runs["dir"] / "pair")
    assert by_target[out] == {"source": out, "target": out, "kind": "bind"}
    model_dir = runs["chroot"]["model_path"]
    assert by_target[model_dir]["kind"] == "bind-ro"
    assert side["gpu_driver"] == "no GPU seen by NVML here: no driver files mounted"
    assert side["image"] is None and side["command"][:2] == ["chroot", side["rootfs"]]


def test_its_versions_equal_the_container_sides(runs):
    assert runs["chroot"]["versions"] == runs["container"]["versions"]
    native, inside = (runs[side]["environment"]["software"] for side in ("chroot", "container"))
    assert native.pop("hostname") != inside.pop("hostname")  # the container's own UTS namespace
    assert native == inside


def logged_budget_total(document: dict) -> int:
    """The memory total vLLM multiplied the reference's utilization by (its log: the node's MemTotal)."""
    trial = next(t for t in document["trials"] if t["search"] == "reference")
    return trial["memory_report"]["budget_total_bytes"]


def test_it_measures_the_kv_of_a_plain_native_run_of_the_same_tree(runs):
    chroot, plain = runs["chroot"]["reference"], runs["plain"]["reference"]
    assert chroot["utilization"] == plain["utilization"] and chroot["block_size"] == plain["block_size"]
    # The plain run is pair_run's, minutes away: this VM's MemTotal, which vLLM's CPU budget multiplies,
    # can move between the two, so what the budget itself moved is taken out.
    moved = chroot["utilization"] * (logged_budget_total(runs["chroot"]) - logged_budget_total(runs["plain"]))
    difference = chroot["bytes"] - plain["bytes"] - moved
    assert abs(difference) <= BLOCK_SPREAD * plain["bytes"], (chroot, plain, moved)
    assert runs["plain"]["options"]["container"] is None
