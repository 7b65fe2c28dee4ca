"""A stand-in for a multi-node engine on Ray, for the agent tests (vLLM's CPU backend cannot place
ranks on Ray: see docs/multinode.md): a driver with one memory-holding actor per node, placed and
tagged the way vLLM's Ray executor places and (through kvprobe) tags its workers.

    python tests/ray_workload.py ADDRESS TAG '{"NODE_ID": BYTES, ...}' ['{"NODE_ID": [STEP, UNTIL]}']

Prints READY once every actor holds its bytes; then the growing actors add STEP bytes every
0.1 s until they hold UNTIL. Runs until killed.
"""

from __future__ import annotations

import json
import sys
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from kvprobe.worker_protocol import TRIAL_TAG


@ray.remote(num_cpus=0, max_restarts=0)
class Holder:
    def __init__(self) -> None:
        self.blocks: list[bytearray] = []

    def hold(self, size: int) -> int:
        self.blocks.append(bytearray(b"\x01") * size)  # every page written: resident, not promised
        return sum(len(b) for b in self.blocks)

    def grow(self, step: int, until: int) -> None:
        while sum(len(b) for b in self.blocks) < until:
            self.hold(step)
            time.sleep(0.1)


def main(address: str, tag: str, holds: dict[str, int], grows: dict[str, list[int]]) -> None:
    ray.init(address=address, runtime_env={"env_vars": {TRIAL_TAG: tag}}, log_to_driver=False)
    holders = {
        node: Holder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        for node in holds
    }
    ray.get([holders[node].hold.remote(size) for node, size in holds.items()])
    print("READY", flush=True)
    for node, (step, until) in grows.items():
        holders[node].grow.remote(step, until)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
