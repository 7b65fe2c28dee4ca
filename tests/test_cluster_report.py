"""The multi-node report on the committed two-node Ray run of two H200s (docs/multinode/h200x2-*):
each node measured on its own GPU, Ray's memory-monitor setting recorded, and the node that limits
the KV named; and the limiting-node rule on figures where one node holds more."""

from __future__ import annotations

from conftest import ROOT
from kvprobe.report.cluster import cluster_runs, limiting_node
from kvprobe.report.cluster_layout import cluster_blocks
from kvprobe.report.markdown import MarkdownWriter
from kvprobe.results.schema import NodeAttribution, NodeParts
from kvprobe.results.store import ResultStore

RUN = ROOT / "docs/multinode/h200x2-2026-11-30/results"
GIB = 1 << 30


def test_the_committed_ray_run_watches_each_nodes_own_gpu_and_names_the_limiting_node():
    loaded, problems = ResultStore(RUN).load_all()
    assert problems == []
    ((_, doc),) = loaded
    nodes = doc.environment.cluster.nodes
    assert sorted(node.environment.gpu.devices[0].nvml_index for node in nodes) == [0, 1]
    assert all(len(node.environment.gpu.devices) == 1 for node in nodes)  # each raylet's one GPU
    assert [node.ray_memory_monitor_refresh_ms for node in nodes] == ["0", "0"]
    assert doc.u_max == 0.98 and doc.kv_at_u_max.num_blocks == 131_779  # as at TP 2 without Ray
    (run,) = cluster_runs([doc])
    assert run.limiting_node is not None and run.limiting_tie  # both ranks hold the same to the byte
    for attribution in doc.node_attribution:
        assert attribution.pool == "gpu" and abs(attribution.unexplained_fraction) < 0.001
    text = "\n".join(MarkdownWriter().block(block) for block in cluster_blocks([run]))
    assert "The node that limits the KV:" in text and "first of equals" in text


def node(name: str, free_gib: float) -> NodeAttribution:
    return NodeAttribution(
        node_id=name,
        hostname="h",
        pool="gpu",
        total_bytes=140 * GIB,
        process_titles=[],
        parts=NodeParts(free_at_ready=free_gib * GIB),
        unexplained_bytes=0.0,
        unexplained_fraction=0.0,
    )


def test_the_node_with_the_least_left_at_ready_limits():
    assert limiting_node([node("a", 3.0), node("b", 0.5)]) == ("b", False)
    assert limiting_node([node("a", 0.5), node("b", 0.5)]) == ("a", True)
    assert limiting_node([node("a", 0.5)]) == (None, False)
