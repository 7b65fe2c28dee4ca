"""Environment facts from real files: cgroup v1 (this machine), v2 (files in a real v2 mount's format),
container detection outside and inside a real podman container, NVML degrading cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, needs_podman, podman_base
from kvprobe.environment.container_detection import detect_container, label_disagreement
from kvprobe.environment.facts import collect
from kvprobe.environment.gpu import classify_unified
from kvprobe.environment.memory import (
    detect_cgroup_version,
    free_page_reporting,
    kernel_unaccounted,
    read_cgroup_memory,
    read_meminfo,
)
from kvprobe.results.schema import MemorySample
from kvprobe.trial.monitor import GuardPolicy
from kvprobe.units import GIB, MIB

# memory.stat as a cgroup v2 kernel (6.x) writes it, abridged to the keys kvprobe reads and a few around them.
V2_MEMORY_STAT = """anon 1610612736
file 536870912
kernel 41943040
kernel_stack 1114112
pagetables 6291456
sec_pagetables 0
percpu 720
sock 0
vmalloc 8192
shmem 16777216
zswap 0
file_mapped 104857600
file_dirty 0
active_anon 1577058304
inactive_file 402653184
slab 25165824
"""


def make_v2(root: Path, inside: str, limit: str) -> Path:
    (root / "sys/fs/cgroup").mkdir(parents=True)
    base = root / "sys/fs/cgroup"
    (base / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    group = base / inside.lstrip("/")
    group.mkdir(parents=True, exist_ok=True)
    (group / "memory.max").write_text(limit + "\n")
    (group / "memory.current").write_text("2214592512\n")
    (group / "memory.peak").write_text("3221225472\n")
    (group / "memory.stat").write_text(V2_MEMORY_STAT)
    proc = root / "proc/self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(f"0::{inside}\n")
    return root


def test_cgroup_v2_with_a_limit(tmp_path):
    root = make_v2(tmp_path, "/system.slice/docker-0123.scope", "17179869184")
    memory = read_cgroup_memory(root / "sys/fs/cgroup", root / "proc/self/cgroup")
    assert memory.version == "v2"
    assert memory.limit_bytes == 16 * GIB
    assert memory.usage_bytes == 2214592512 and memory.peak_bytes == 3 * GIB
    assert memory.stat == {"anon": 1610612736, "file": 536870912, "shmem": 16777216, "kernel": 41943040}
    assert memory.headroom_bytes() == 16 * GIB - 2214592512


def test_cgroup_v2_unlimited_inside_a_private_namespace(tmp_path):
    root = make_v2(tmp_path, "/", "max")
    memory = read_cgroup_memory(root / "sys/fs/cgroup", root / "proc/self/cgroup")
    assert memory.version == "v2" and memory.limit_bytes is None and memory.headroom_bytes() is None


def test_cgroup_v1_on_this_machine():
    root = Path("/sys/fs/cgroup")
    if detect_cgroup_version(root) not in ("v1", "hybrid"):
        pytest.skip("this machine is not cgroup v1")
    memory = read_cgroup_memory()
    assert memory.usage_bytes and memory.usage_bytes > 0
    assert {"anon", "file"} <= set(memory.stat)
    assert Path(memory.path).is_dir()


def test_meminfo_is_in_bytes():
    info = read_meminfo()
    assert info["MemTotal"] > 1 * GIB and 0 < info["MemAvailable"] <= info["MemTotal"]


HOLDER = """
import sys
block = bytearray(1 << 30)
block[::4096] = b"x" * len(block[::4096])  # touched: resident
print("held", flush=True)
sys.stdin.readline()
"""


def test_unlisted_kernel_pages_exclude_a_process_and_take_back_what_it_freed():
    def released() -> int:
        info = read_meminfo()
        return info["MemAvailable"] + kernel_unaccounted(info)

    before = released()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    holding = released()
    holder.communicate("\n", timeout=30)
    after = released()
    assert before - holding >= 0.95 * GIB  # the process's pages are listed (AnonPages), in neither account
    # Freed pages are back at once in MemAvailable or, on a free-page-reporting VM, unlisted until
    # the hypervisor returns them; either way no process holds them.
    assert after >= before - 128 * MIB, (before, after)


def test_free_page_reporting_is_read_from_the_balloons_negotiated_features(tmp_path):
    # Device and feature files as this CI machine's Firecracker VM exposes them.
    balloon, disk = tmp_path / "virtio0", tmp_path / "virtio1"
    balloon.mkdir(), disk.mkdir()
    (balloon / "device").write_text("0x0005\n")
    (balloon / "features").write_text("0110010100000000000000000000000010000000\n")
    (disk / "device").write_text("0x0002\n")
    (disk / "features").write_text("0010011001100100000000000000000100100000\n")
    assert free_page_reporting(tmp_path)
    (balloon / "features").write_text("0110000100000000000000000000000010000000\n")
    assert not free_page_reporting(tmp_path)
    assert not free_page_reporting(tmp_path / "absent")


def test_container_evidence_is_weighed_not_a_single_file(tmp_path):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("12:memory:/\n0::/\n")
    (tmp_path / ".dockerenv").write_text("")
    facts = detect_container(tmp_path, environ={})
    assert not facts.detected and facts.evidence["/.dockerenv"]  # a stray /.dockerenv alone is not enough
    (tmp_path / "run").mkdir()
    (tmp_path / "run/.containerenv").write_text("")
    facts = detect_container(tmp_path, environ={})
    assert facts.detected and facts.runtime == "podman"
    (tmp_path / "run/.containerenv").unlink()
    (tmp_path / "proc/self/cgroup").write_text("0::/kubepods/burstable/pod1234/abcd\n")
    facts = detect_container(tmp_path, environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert facts.detected and facts.runtime == "containerd/kubernetes"


def test_this_machine_is_native_and_the_label_disagreement_warns():
    block = collect("container").model_dump(mode="json")
    assert block["container"]["detected"] is False
    assert block["warnings"] == [label_disagreement("container", detect_container())]
    assert block["software"]["kvprobe"]


@needs_podman
@pytest.mark.container
def test_inside_a_real_podman_container_the_limit_and_runtime_are_seen():
    done = subprocess.run(
        [
            *podman_base("3g"),
            "--rootfs",
            "/:O",
            str(ROOT / ".venv/bin/python"),
            "-m",
            "kvprobe.cli",
            "env",
            "--json",
            "--label",
            "container",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    block = json.loads(done.stdout)
    assert block["container"]["detected"] and block["container"]["runtime"] == "podman"
    assert block["container"]["evidence"]["/run/.containerenv"]
    assert block["cgroup"]["limit_bytes"] == 3 * GIB
    assert block["shm_bytes"] == GIB
    assert block["warnings"] == []


@pytest.mark.parametrize(
    "name,total,host,unified",
    [
        ("NVIDIA H100 80GB HBM3", 85520809984, 135 * GIB, False),
        ("NVIDIA GB10", None, 128 * GIB, True),
        # GH200's HBM is its own (coherent, not one pool): environment.memory_model tells its modes apart
        ("NVIDIA GH200 480GB", 102 * GIB, 480 * GIB, False),
        ("Some Future SoC", 119 * GIB, 120 * GIB, True),
    ],
)
def test_unified_memory_is_told_from_a_discrete_card(name, total, host, unified):
    decided, signal = classify_unified(name, total, host)
    assert decided is unified and signal


def sample(available, usage=None, limit=None):
    return MemorySample(
        t=0.0, host_available=available, page_cache=0, cgroup_usage=usage, cgroup_limit=limit, gpu_used=None
    )


def test_guard_floors():
    policy = GuardPolicy.default(host_total=128 * GIB, cgroup_limit=4 * GIB)
    assert policy.host_floor_bytes == int(0.03 * 128 * GIB)
    assert policy.cgroup_floor_bytes == max(128 * MIB, int(0.03 * 4 * GIB))
    assert policy.breach(sample(10 * GIB)) is None
    assert "host MemAvailable" in policy.breach(sample(3 * GIB))
    assert "cgroup headroom" in policy.breach(sample(10 * GIB, usage=4 * GIB - 64 * MIB, limit=4 * GIB))
    small = GuardPolicy.default(host_total=24 * GIB, cgroup_limit=None)
    assert small.host_floor_bytes == 2 * GIB and small.cgroup_floor_bytes is None
    assert GuardPolicy.disabled().breach(sample(0)) is None


def test_the_h100_hosts_kvprobe_env_says_discrete_with_the_grace_fields_filled():
    """`kvprobe env --json` on the GPU test host (docs/environments/h100-host-2026-11-26.json)."""
    from kvprobe.results.schema import Environment

    block = Environment.model_validate_json((ROOT / "docs/environments/h100-host-2026-11-26.json").read_text())
    assert block.memory_model.kind == "discrete" and block.memory_model.signal
    assert block.gpu.devices[0].name.startswith("NVIDIA H100") and not block.gpu.devices[0].unified_memory
    assert block.numa_nodes and all(n.mem_total_bytes and n.cpus for n in block.numa_nodes)
    assert block.coherent_gpu_memory_mode == ""  # the driver exposes the parameter, unset
