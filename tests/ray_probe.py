"""The probe's side of one multi-node trial, driven as TrialRunner drives it, around the stand-in
workload (tests/ray_workload.py) instead of vLLM, whose CPU backend cannot run on Ray nodes.

    python tests/ray_probe.py STATE.json TRIALS_DIR SCENARIO OUT.json

STATE.json: tests/ray_cluster.py's. TRIALS_DIR: .trials/RUN_ID, as a measure run lays it out.
SCENARIO:
  hold     512 MiB on node a, 256 MiB on node b; ready; teardown. OUT: the nodes' trials and attribution.
  squeeze  64 MiB on a; b grows 32 MiB every 0.1 s toward 2.9 GiB (its cgroup holds 3 GiB); the probe
           polls the agents' guards (floor 512 MiB) and tears down when one fires. OUT: as hold + breach.
  kill     as hold, then waits to be SIGKILLed (OUT: written before waiting).
  resume   what `kvprobe measure --resume` does first: end stale trial groups, sweep every node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kvprobe.cluster.ray_cluster import RayCluster
from kvprobe.measure.attribution import attribute_node
from kvprobe.trial.process_group import terminate
from kvprobe.trial.runner import RUNNING_MARKER, end_stale_groups
from kvprobe.units import GIB, MIB
from kvprobe.worker_protocol import TRIAL_TAG

HERE = Path(__file__).parent


def start_workload(state: dict, tag: str, holds: dict, grows: dict | None = None) -> subprocess.Popen:
    """The driver, in its own session like a trial's worker, tagged like one."""
    command = [sys.executable, str(HERE / "ray_workload.py"), state["address"], tag, json.dumps(holds)]
    driver = subprocess.Popen(
        [*command, json.dumps(grows or {})],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, TRIAL_TAG: tag},
    )
    line = driver.stdout.readline()
    assert line.strip() == "READY", f"the workload did not start: {line!r}"
    return driver


def trial(state: dict, trials_dir: Path, scenario: str) -> dict:
    floor = 512 * MIB if scenario == "squeeze" else None
    cluster = RayCluster(state["address"], guard=True, floor_bytes=floor)
    tag = f"{trials_dir.name}/1"
    cluster.begin(tag)
    if scenario == "squeeze":
        growing = {state["b"]: [32 * MIB, int(2.9 * GIB)]}
        driver = start_workload(state, tag, {state["a"]: 64 * MIB, state["b"]: 64 * MIB}, growing)
    else:
        driver = start_workload(state, tag, {state["a"]: 512 * MIB, state["b"]: 256 * MIB})
    cluster.mark("ready")
    out: dict = {"tag": tag, "cluster": cluster.record.model_dump(mode="json"), "driver": driver.pid}
    if scenario == "kill":
        (trials_dir / RUNNING_MARKER).write_text(json.dumps({"pid": driver.pid, "started_at": time.time()}))
        return out
    if scenario == "squeeze":
        deadline = time.monotonic() + 120
        while (breach := cluster.breach()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        out["breach"] = breach
    terminate(driver.pid)
    driver.wait()
    nodes = cluster.end(settle_timeout_s=60, tolerance_bytes=512 * MIB)
    facts = {node.node_id: node for node in cluster.record.nodes}
    out["nodes"] = [node.model_dump(mode="json") for node in nodes]
    out["attribution"] = [
        attribution.model_dump(mode="json")
        for attribution in (attribute_node(node, facts[node.node_id]) for node in nodes)
        if attribution
    ]
    cluster.close()
    return out


def resume(state: dict, trials_dir: Path) -> dict:
    ended = end_stale_groups(trials_dir.parent)
    cluster = RayCluster(state["address"], guard=True, floor_bytes=None)
    swept = cluster.sweep(trials_dir.name)
    cluster.close()
    return {"groups_ended": ended, "swept": swept}


def main(state_path: str, trials_dir: str, scenario: str, out_path: str) -> None:
    state = json.loads(Path(state_path).read_text())
    directory = Path(trials_dir)
    directory.mkdir(parents=True, exist_ok=True)
    out = resume(state, directory) if scenario == "resume" else trial(state, directory, scenario)
    Path(out_path).write_text(json.dumps(out))
    if scenario == "kill":
        print("HOLDING", flush=True)
        while True:
            time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
