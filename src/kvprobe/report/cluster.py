"""The report's numbers for multi-node runs: per run, the engine's totals and every node beside them.

One entry per result document that measured on a Ray cluster (`environment.cluster`). Nodes are
reported as their agents measured them; nothing is averaged across runs, since a cluster's nodes
and their placement may differ from one run to the next.
"""

from __future__ import annotations

from pydantic import Field

from kvprobe.report.compare import Model
from kvprobe.results.schema import NodeAttribution, ResultDocument


class NodeSummary(Model):
    """One node over all trials of one run."""

    node_id: str
    address: str
    probe_node: bool
    mem_total_bytes: int
    cgroup_limit_bytes: int | None
    guard_fired: list[str] = Field(default_factory=list, description="Each trial's breach on this node, if any.")
    leftovers_ended: int = Field(description="Trial processes still alive after their driver ended, summed.")
    memory_restored: bool = Field(description="After every trial, this node's memory came back to its baseline.")


class ClusterRun(Model):
    """One multi-node run: the engine's totals, then its nodes."""

    where: str
    ray_address: str
    starts: int
    failures: dict[str, int] = Field(description="The reason of every failed start, with how many failed so.")
    u_max: float | None
    kv_at_u_max_bytes: int | None
    nodes: list[NodeSummary]
    attribution: list[NodeAttribution] = Field(description="Per node at the u_max start.")
    limiting_node: str | None = Field(
        None, description="The node with the least memory free at ready at u_max: where more KV fails first."
    )
    limiting_tie: bool = Field(False, description="Every node had as little free, to the MiB: a first of equals.")


TIE_BYTES = 1 << 20


def limiting_node(attribution: list[NodeAttribution]) -> tuple[str | None, bool]:
    """The node whose pool had the least memory free at the u_max start, and whether every node had
    as little to the MiB. The engine gives every rank the same KV, so the node with the least left
    is the one where a larger budget fails first."""
    if len(attribution) < 2:
        return None, False
    free = [node.parts.free_at_ready for node in attribution]
    least = min(range(len(free)), key=free.__getitem__)
    return attribution[least].node_id, max(free) - free[least] < TIE_BYTES


def cluster_runs(documents: list[ResultDocument]) -> list[ClusterRun]:
    runs = []
    for doc in documents:
        cluster = doc.environment.cluster
        if cluster is None:
            continue
        failures: dict[str, int] = {}
        for trial in doc.trials:
            if trial.outcome != "ok":
                failures[trial.reason] = failures.get(trial.reason, 0) + 1
        per_node: dict[str, list] = {node.node_id: [] for node in cluster.nodes}
        for trial in doc.trials:
            for node_trial in trial.nodes:
                per_node.setdefault(node_trial.node_id, []).append(node_trial)
        nodes = [
            NodeSummary(
                node_id=node.node_id,
                address=node.address,
                probe_node=node.probe_node,
                mem_total_bytes=node.environment.host_memory["MemTotal"],
                cgroup_limit_bytes=node.environment.cgroup.limit_bytes,
                guard_fired=[n.guard_breach for n in per_node[node.node_id] if n.guard_breach],
                leftovers_ended=sum(n.leftovers_ended for n in per_node[node.node_id]),
                memory_restored=all(n.baseline_restored for n in per_node[node.node_id]),
            )
            for node in cluster.nodes
        ]
        limiting, tie = limiting_node(doc.node_attribution)
        runs.append(
            ClusterRun(
                where=doc.where(),
                ray_address=cluster.address,
                starts=doc.engine_starts,
                failures=failures,
                u_max=doc.u_max,
                kv_at_u_max_bytes=doc.kv_at_u_max.bytes if doc.kv_at_u_max else None,
                nodes=nodes,
                attribution=doc.node_attribution,
                limiting_node=limiting,
                limiting_tie=tie,
            )
        )
    return runs
