"""The report's multi-node section: per run, the engine's totals, then every node beside them."""

from __future__ import annotations

from kvprobe.report.cluster import ClusterRun
from kvprobe.report.document import Block, BulletList, Heading, Paragraph, Table, code, strong
from kvprobe.units import gib

NODE_PART_LABELS = {
    "engine": "the trial's processes here",
    "other_processes": "other processes",
    "other_nodes_same_host": "other Ray nodes on this host (the trial's)",
    "page_cache": "page cache (cgroup)",
    "cgroup_cut": "cut by cgroup limit",
    "kernel_unaccounted": "kernel, in no meminfo account",
    "free_at_ready": "free at ready",
}


def _node_name(node_id: str, address: str, probe: bool) -> str:
    return f"{address} ({node_id[:8]}){', probe' if probe else ''}"


def _totals(run: ClusterRun) -> Paragraph:
    kv = "-" if run.kv_at_u_max_bytes is None else f"{gib(run.kv_at_u_max_bytes)} GiB"
    u_max = "-" if run.u_max is None else f"{run.u_max:.2f}"
    return Paragraph.of(
        strong("Engine totals:"),
        f" {run.starts} start(s), u_max {u_max}, KV at u_max {kv}; Ray cluster ",
        code(run.ray_address),
        f", {len(run.nodes)} node(s).",
    )


def _nodes_table(run: ClusterRun) -> Table:
    rows = tuple(
        (
            _node_name(node.node_id, node.address, node.probe_node),
            gib(node.mem_total_bytes),
            "-" if node.cgroup_limit_bytes is None else gib(node.cgroup_limit_bytes),
            str(len(node.guard_fired)),
            str(node.leftovers_ended),
            "yes" if node.memory_restored else "NO",
        )
        for node in run.nodes
    )
    header = ("node", "memory (GiB)", "cgroup limit (GiB)", "guard fired", "leftovers ended", "memory back")
    return Table(header, rows, (False, True, True, True, True, False))


def _attribution_table(run: ClusterRun) -> Table:
    """Parts per node, and their sum over the nodes beside them."""
    addresses = {node.node_id: node.address for node in run.nodes}
    names = [_node_name(a.node_id, addresses.get(a.node_id, a.hostname), False) for a in run.attribution]
    rows = []
    for part, text in NODE_PART_LABELS.items():
        values = [getattr(a.parts, part) for a in run.attribution]
        if any(values):
            rows.append((text, *(gib(v) for v in values), gib(sum(values))))
    unexplained = [a.unexplained_bytes for a in run.attribution]
    rows.append(("unexplained", *(gib(v, sign=True) for v in unexplained), gib(sum(unexplained), sign=True)))
    totals = [a.total_bytes for a in run.attribution]
    rows.append(("pool total", *(gib(v) for v in totals), gib(sum(totals))))
    header = ("part (GiB)", *names, "all nodes")
    return Table(header, tuple(rows), (False, *[True] * (len(names) + 1)))


def cluster_blocks(runs: list[ClusterRun]) -> list[Block]:
    blocks: list[Block] = []
    if runs:
        blocks.append(Heading(2, "Multi-node runs"))
    for run in runs:
        blocks += [Heading(3, run.where), _totals(run), _nodes_table(run)]
        fired = [f"{node.address} ({node.node_id[:8]}): {reason}" for node in run.nodes for reason in node.guard_fired]
        if fired:
            blocks += [Paragraph.of(strong("Guard:")), BulletList(tuple(Paragraph.of(text) for text in fired))]
        if run.failures:
            failed = (Paragraph.of(f"{count} x ", code(reason)) for reason, count in run.failures.items())
            blocks += [Paragraph.of(strong("Failed starts:")), BulletList(tuple(failed))]
        if run.attribution:
            blocks += [
                Paragraph.of(strong("Where each node's memory went"), " at u_max (pools on one host overlap):"),
                _attribution_table(run),
            ]
        if run.limiting_node:
            blocks.append(_limiting(run))
    return blocks


def _limiting(run: ClusterRun) -> Paragraph:
    (node,) = [n for n in run.nodes if n.node_id == run.limiting_node]
    (parts,) = [a.parts for a in run.attribution if a.node_id == run.limiting_node]
    tie = " Every node had as little to the MiB, so it is the first of equals." if run.limiting_tie else ""
    return Paragraph.of(
        strong("The node that limits the KV:"),
        f" {_node_name(node.node_id, node.address, node.probe_node)}, with the least memory free at ready"
        f" ({gib(parts.free_at_ready)} GiB): every rank gets the same KV, so a larger budget fails there first.{tie}",
    )
