"""A two-node Ray cluster on this machine, for the multi-node tests (Ray's own cluster_utils).

    python tests/ray_cluster.py STATE.json [--squeeze-b BYTES]

Starts a head node (a) and a second node (b), each with one CPU; with --squeeze-b, node b's
raylet and everything it starts live in a memory cgroup of BYTES (a small node beside a big one).
Writes STATE.json ({"address", "a", "b", "cgroup"}) once both nodes are up, then waits; on
SIGTERM it shuts the cluster down and removes the cgroup.

Run it, and every process that joins it, with LOOPBACK_ONLY in the environment: Ray then gives
every node and client 127.0.0.1 instead of the machine's own address, so no traffic leaves lo.
"""

from __future__ import annotations

import json
import os
import signal
import sys
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


def main(state_path: str, squeeze_b: int | None) -> None:
    args = {"num_cpus": 1, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**args, "resources": {"node_a": 1}})
    node_b = cluster.add_node(**args, resources={"node_b": 1})
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
    squeeze = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--squeeze-b" else None
    main(sys.argv[1], squeeze)
