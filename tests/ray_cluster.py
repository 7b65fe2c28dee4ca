"""A two-node Ray cluster on this machine, for the multi-node tests (Ray's own cluster_utils).

    python tests/ray_cluster.py STATE.json [--squeeze-b BYTES] [--one-gpu-each] [--memory-monitor-off]

Starts a head node (a) and a second node (b), each with one CPU; with --squeeze-b, node b's
raylet and everything it starts live in a memory cgroup of BYTES (a small node beside a big one).
--one-gpu-each gives node a GPU 0 and node b GPU 1 (each raylet's CUDA_VISIBLE_DEVICES): two
linked single-GPU machines, as two DGX Sparks are, on one two-GPU host. Each raylet then also gets
its own VLLM_HOST_IP (127.0.0.1, 127.0.0.2; run the probe with VLLM_HOST_IP=127.0.0.1): vLLM's Ray
executor refuses two nodes behind one address ("Every node should have a unique IP address"). --memory-monitor-off sets
RAY_memory_monitor_refresh_ms=0 for both raylets, as NVIDIA's two-Spark playbook does.
Writes STATE.json ({"address", "a", "b", "cgroup"}) once both nodes are up, then waits; on
SIGTERM it shuts the cluster down and removes the cgroup.

Run it, and every process that joins it, with LOOPBACK_ONLY in the environment: Ray then gives
every node and client 127.0.0.1 instead of the machine's own address, so no traffic leaves lo.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path

from ray.cluster_utils import Cluster

from kvprobe.experiment.cgroup import CellCgroup

LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's switch for one-machine clusters


def descendants(root: int) -> list[int]:
    """`root` and every process below it (by parent pid)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def node_args(gpu: int | None, memory_monitor_off: bool) -> dict:
    """One node's Ray parameters: one CPU, and `gpu` alone where given."""
    env_vars = {"RAY_memory_monitor_refresh_ms": "0"} if memory_monitor_off else {}
    if gpu is not None:
        env_vars.update(CUDA_VISIBLE_DEVICES=str(gpu), VLLM_HOST_IP=f"127.0.0.{gpu + 1}")
    gpus = {"num_gpus": 1} if gpu is not None else {}
    return {"num_cpus": 1, "include_dashboard": False, "env_vars": env_vars, **gpus}


def main(state_path: str, squeeze_b: int | None, one_gpu_each: bool, memory_monitor_off: bool) -> None:
    a = node_args(0 if one_gpu_each else None, memory_monitor_off)
    b = node_args(1 if one_gpu_each else None, memory_monitor_off)
    cluster = Cluster(initialize_head=True, head_node_args={**a, "resources": {"node_a": 1}})
    node_b = cluster.add_node(**b, resources={"node_b": 1})
    cluster.wait_for_nodes()
    cgroup = None
    if squeeze_b:
        cgroup = CellCgroup(f"kvprobe-ray-node-b-{os.getpid()}", squeeze_b)
        cgroup.create()
        for pid in descendants(node_b.all_processes["raylet"][0].process.pid):
            (cgroup.path / "cgroup.procs").write_text(f"{pid}\n")
    state = {
        "address": cluster.address,
        "a": cluster.head_node.node_id,
        "b": node_b.node_id,
        "cgroup": str(cgroup.path) if cgroup else None,
        "pid": os.getpid(),
    }
    Path(state_path + ".tmp").write_text(json.dumps(state))
    os.replace(state_path + ".tmp", state_path)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    cluster.shutdown()
    if cgroup is not None:
        cgroup.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state")
    parser.add_argument("--squeeze-b", type=int)
    parser.add_argument("--one-gpu-each", action="store_true")
    parser.add_argument("--memory-monitor-off", action="store_true")
    given = parser.parse_args()
    main(given.state, given.squeeze_b, given.one_gpu_each, given.memory_monitor_off)
