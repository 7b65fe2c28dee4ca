"""CUDA graphs against eager mode (docs/gpu-graphs/, two H200s): the report says for every model
whether the engine captured CUDA graphs, as `vllm serve` does, in the table and in the CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import kvprobe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "gpu-graphs" / "results"
GRAPHS, EAGER = "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-qwen-7b-eager"


def results(model: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"lane-*/{model}/*.json"))]


def test_the_committed_runs_differ_only_in_cuda_graphs():
    graphs, eager = results(GRAPHS), results(EAGER)
    assert len(graphs) == len(eager) == 2  # one repeat a lane
    assert {d["settings"]["enforce_eager"] for d in graphs} == {False}
    assert {d["settings"]["enforce_eager"] for d in eager} == {True}
    strip = {"enforce_eager"}
    assert {json.dumps({k: v for k, v in d["settings"].items() if k not in strip}) for d in graphs + eager} == {
        json.dumps({k: v for k, v in graphs[0]["settings"].items() if k not in strip})
    }
    # graph capture's memory comes out of the same budget: u_max one step lower, and fewer blocks there
    assert {d["u_max"] for d in graphs} == {0.98} and {d["u_max"] for d in eager} == {0.99}
    assert max(d["kv_at_u_max"]["num_blocks"] for d in graphs) < min(d["kv_at_u_max"]["num_blocks"] for d in eager)


def test_the_report_says_whether_cuda_graphs_were_captured(tmp_path):
    kvprobe("report", str(RESULTS), "--out", str(tmp_path), "--format", "markdown,csv")
    text = (tmp_path / "report.md").read_text()
    # one condition only: the answer says there is nothing to compare, not that nothing moved
    assert f"**Experiment eager-vs-graphs, {GRAPHS}: the baseline native is its only condition" in text
    graphs_section = text.split(f"## {GRAPHS} ")[1].split("\n## ")[0]
    eager_section = text.split(f"## {EAGER} ")[1].split("\n## ")[0]
    assert "| CUDA graphs | captured (as vllm serve starts) |" in graphs_section
    assert "| CUDA graphs | off (enforce_eager; vllm serve captures them" in eager_section
    with open(tmp_path / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["model"], r["enforce_eager"]) for r in rows} == {(GRAPHS, "False"), (EAGER, "True")}
