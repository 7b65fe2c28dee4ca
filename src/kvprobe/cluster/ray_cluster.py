"""The probe's handle on an existing Ray cluster: one kvprobe agent on every alive node.

The agents are ordinary (not detached) actors owned by the probe: Ray ends them when the probe
ends, however it ends. The engine's own Ray workers belong to the engine's driver, which is the
trial's process group on the probe's machine; a trial's teardown ends that group first, then asks
every agent to end what is left on its node and to wait for its memory.
"""

from __future__ import annotations

import socket
import threading

from kvprobe.cluster.agent import NodeAgent
from kvprobe.errors import InputError
from kvprobe.results.schema import ClusterNode, ClusterRecord, Environment, GuardSettings, NodeTrial

CONNECT_TIMEOUT_S = 60.0


class ClusterError(InputError):
    """The cluster cannot be reached or used; the message says why."""


class RayCluster:
    """Agents on every alive node of the cluster at `address`, for one run."""

    def __init__(self, address: str, guard: bool, floor_bytes: int | None, interval_s: float = 0.1):
        try:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        except ImportError:
            raise ClusterError("--ray-address needs Ray in this environment (pip install 'kvprobe[ray]')") from None
        self.ray = ray
        self.address = address
        self._connect(address)
        here = ray.get_runtime_context().get_node_id()
        self._nodes = [n for n in ray.nodes() if n.get("Alive")]
        agent_actor = ray.remote(num_cpus=0, max_restarts=0)(NodeAgent)
        self.agents = {
            node["NodeID"]: agent_actor.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(node["NodeID"], node["NodeID"] == here, guard, floor_bytes, interval_s)
            for node in self._nodes
        }
        self.probe_node = here
        described = self._all("describe")
        self.record = ClusterRecord(
            address=address,
            ray_version=ray.__version__,
            nodes=[
                ClusterNode(
                    node_id=node["NodeID"],
                    address=node.get("NodeManagerAddress") or socket.gethostname(),
                    cpus=node.get("Resources", {}).get("CPU"),
                    gpus=node.get("Resources", {}).get("GPU"),
                    probe_node=node["NodeID"] == here,
                    environment=Environment.model_validate(described[node["NodeID"]]["environment"]),
                    guard=GuardSettings.model_validate(described[node["NodeID"]]["guard"]),
                    ray_memory_monitor_refresh_ms=described[node["NodeID"]]["memory_monitor_refresh_ms"],
                )
                for node in self._nodes
            ],
        )

    def _connect(self, address: str) -> None:
        """ray.init, given CONNECT_TIMEOUT_S: Ray's client retries a GCS it cannot reach for as long
        as it runs (seen when the cluster gave an address this machine does not reach)."""
        failure: list[Exception] = []

        def connect() -> None:
            try:
                self.ray.init(address=address, namespace="kvprobe", log_to_driver=False, configure_logging=False)
            except Exception as exc:  # ConnectionError, or Ray's own when the address is not a cluster
                failure.append(exc)

        attempt = threading.Thread(target=connect, daemon=True)
        attempt.start()
        attempt.join(CONNECT_TIMEOUT_S)
        if attempt.is_alive():
            raise ClusterError(
                f"--ray-address {address}: no answer from the cluster within {CONNECT_TIMEOUT_S:g} s (Ray's "
                "client keeps retrying the address the cluster gave for itself; can this machine reach it?)"
            )
        if failure:
            raise ClusterError(f"--ray-address {address}: cannot connect: {failure[0]}")

    def _all(self, method: str, *args) -> dict:
        """Call `method` on every agent at once; node id -> its answer."""
        calls = {node: getattr(agent, method).remote(*args) for node, agent in self.agents.items()}
        return dict(zip(calls, self.ray.get(list(calls.values())), strict=True))

    def begin(self, tag: str) -> None:
        self._all("begin", tag)

    def breach(self) -> str | None:
        """The first node whose guard fired during this trial, and why; None while all are fine."""
        for node, said in self._all("poll").items():
            if said:
                return f"node {self.hostname(node)}: {said}"
        return None

    def mark(self, phase: str) -> None:
        """Every node takes its sample of `phase` (at `ready`: with the trial's processes there)."""
        self._all("mark", phase)

    def end(self, settle_timeout_s: float, tolerance_bytes: int) -> list[NodeTrial]:
        done = self._all("end", settle_timeout_s, tolerance_bytes)
        return [NodeTrial.model_validate(done[node["NodeID"]]) for node in self._nodes]

    def sweep(self, prefix: str) -> dict[str, int]:
        """End what a killed earlier run (`prefix`: its run id) left on any node; node -> processes ended."""
        return {self.hostname(node): ended for node, ended in self._all("sweep", prefix).items() if ended}

    def hostname(self, node_id: str) -> str:
        """How messages name a node: its address and the start of its Ray id (nodes may share a host)."""
        node = next((n for n in self.record.nodes if n.node_id == node_id), None)
        return f"{node.address} ({node_id[:8]})" if node else node_id[:8]

    def close(self) -> None:
        for agent in self.agents.values():
            # Ray types what ActorClass.remote() returns as the handle or the class (for editors'
            # sake); it is the handle.
            self.ray.kill(agent)  # type: ignore[arg-type]
        self.ray.shutdown()
