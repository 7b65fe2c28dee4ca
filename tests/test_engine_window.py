"""Real vLLM (CPU backend): a reference start refused for too little KV sends the u_max search up."""

from __future__ import annotations

import json

import pytest

from conftest import kvprobe, load_results, needs_engine, tiny_models_file

pytestmark = [needs_engine, pytest.mark.engine]


def test_a_reference_refused_for_too_little_kv_sends_u_max_up(tmp_path):
    # At 0.02 of this machine's 17 GiB node vLLM's budget (0.34 GiB) is less than its non-KV memory.
    models = tiny_models_file(tmp_path, gpu_memory_utilization=0.02, utilization_range=[0.02, 0.06])
    out = tmp_path / "out"
    command = ("measure", str(models), "--out", str(out), "--label", "native", "--searches", "reference,u_max")
    command += ("--no-confirm",)  # the boundary's second start is the machinery's, tested with the stand-in
    done = kvprobe(*command, check=False)
    (result,) = load_results(out)
    reference = next(t for t in result["trials"] if t["search"] == "reference")
    assert reference["outcome"] == "kv-too-small", reference["reason"]
    # The reference measured nothing, so the result is not complete (and the run exits 1), though u_max was found.
    assert done.returncode == 1 and result["status"] == "failed"
    assert result["errors"] == [f"reference start measured nothing: kv-too-small ({reference['reason']})"]
    searched = [t for t in result["trials"] if t["search"] == "u_max"]
    assert searched and all(t["utilization"] > 0.02 for t in searched)
    assert all(t["passed"] or t["outcome"] == "kv-too-small" for t in searched)
    assert result["u_max"] == 0.06 and result["searches"]["u_max"]["censored"]
    assert result["kv_at_u_max"]["bytes"] > 0
    # Moved here from the resume test in test_isolation.py (that one now replays recorded starts):
    # natively the pool is the host's, with no cgroup cut, and the real engine's memory adds up.
    # A start seconds after another's: in 2 of 7 runs on the CI VM the engine's private pages at ready
    # read 0.38 GiB lower than in the other 5 (unexplained +0.40 GiB, 1.6%); not explained yet: 2% here.
    attribution = result["attribution"]
    assert attribution["pool"] == "host" and attribution["parts"]["cgroup_cut"] == 0
    assert abs(attribution["unexplained_bytes"]) <= 0.02 * attribution["total_bytes"], attribution
    # Piped (not a terminal), the summary is one JSON Lines record per result, not a table cut to "tin…".
    records = [json.loads(text) for text in done.stdout.splitlines()]
    (row,) = [r for r in records if r["event"] == "row" and r["table"] == "kvprobe measure: summary"]
    assert (row["model"], row["label"], row["u_max"]) == ("tiny-llama", "native", ">=0.06"), row
    assert "…" not in done.stdout
