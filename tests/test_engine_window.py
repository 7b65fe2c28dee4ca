"""Real vLLM (CPU backend), natively, on a pseudo-terminal: a reference start refused for too little
KV sends the u_max search up, u_min finds where vLLM's refusals end, and the terminal shows the
run's progress as a user watching it would see it. One run serves every test here."""

from __future__ import annotations

import io
import json
import os
import re
import sys

import pytest

from conftest import load_results, needs_engine, run_in_pty, tiny_models_file
from kvprobe.output.progress import RecordConsole, print_summary
from kvprobe.results.schema import ResultDocument

pytestmark = [needs_engine, pytest.mark.engine]


@pytest.fixture(scope="module")
def window(tmp_path_factory) -> dict:
    # At 0.02 of this machine's memory (vLLM's budget: 0.02 x the node's MemTotal) the budget is less than
    # vLLM's non-KV memory.
    directory = tmp_path_factory.mktemp("window")
    models = tiny_models_file(directory, gpu_memory_utilization=0.02, utilization_range=[0.02, 0.06])
    out = directory / "out"
    command = [sys.executable, "-m", "kvprobe.cli", "measure", str(models), "--out", str(out)]
    command += ["--label", "native", "--searches", "reference,u_max,u_min"]
    command += ["--no-confirm"]  # the boundary's second start is the machinery's, tested with the stand-in
    # 2% steps: u_max starts 0.04 and 0.06, and u_min then lies between the refused reference (0.02)
    # and 0.04 without a start of its own
    command += ["--tolerance", "0.02"]
    code, shown = run_in_pty(command, dict(os.environ), timeout_s=900)
    (result,) = load_results(out)
    return {"code": code, "shown": shown, "result": result}


def test_a_reference_refused_for_too_little_kv_sends_u_max_up(window):
    result = window["result"]
    reference = next(t for t in result["trials"] if t["search"] == "reference")
    assert reference["outcome"] == "kv-too-small", reference["reason"]
    # The reference measured nothing, so the result is not complete (and the run exits 1), though u_max was found.
    assert window["code"] == 1 and result["status"] == "failed", window["shown"][-3000:]
    assert result["errors"] == [f"reference start measured nothing: kv-too-small ({reference['reason']})"]
    searched = [t for t in result["trials"] if t["search"] == "u_max"]
    assert searched and all(t["utilization"] > 0.02 for t in searched)
    assert all(t["passed"] or t["outcome"] == "kv-too-small" for t in searched)
    assert result["u_max"] == 0.06 and result["searches"]["u_max"]["censored"]
    assert result["kv_at_u_max"]["bytes"] > 0


def test_u_min_is_where_vllms_refusals_end_and_holds_one_full_request(window):
    result = window["result"]
    search = result["searches"]["u_min"]
    assert search["converged"], search
    failing = [t for t in result["trials"] if t["utilization"] == search["failing"]]
    assert failing and all(t["outcome"] == "kv-too-small" for t in failing)
    passing = next(t for t in result["trials"] if t["utilization"] == search["boundary"] and t["passed"])
    assert passing["kv_cache_tokens"] >= result["settings"]["max_model_len"]


def test_natively_the_pool_is_the_hosts_and_the_engines_memory_adds_up(window):
    # A start seconds after another's: in 2 of 7 runs on the CI VM the engine's private pages at ready
    # read 0.38 GiB lower than in the other 5 (unexplained +0.40 GiB, 1.6%); not explained yet: 2% here.
    attribution = window["result"]["attribution"]
    assert attribution["pool"] == "host" and attribution["parts"]["cgroup_cut"] == 0
    assert abs(attribution["unexplained_bytes"]) <= 0.02 * attribution["total_bytes"], attribution


def test_the_terminal_shows_each_start_its_phases_the_guard_and_the_bounded_summary(window):
    shown = window["shown"]
    assert re.search(r"start 1 of about \d+", shown) and re.search(r"start 2 of about \d+", shown), shown[-3000:]
    assert re.search(r"ETA ~\d+ (s|min) \(from 1 starts?\)", shown), shown[-3000:]
    for phase in ("importing", "weights", "profiling", "KV allocated"):
        assert f"phase {phase}" in shown, phase
    assert re.search(r"(MemAvailable|MemFree) \d+\.\d\d GiB \(guard floor \d+\.\d\d GiB\)", shown)
    # The summary row at the end, u_max shown as the bound it is, the model's name not cut to "tin…".
    assert re.search(r"tiny-llama\s.*\bfailed\b", shown), shown[-3000:]
    assert re.search(r"tiny-llama\s.*>=\s?0\.06", shown), shown[-3000:]


def test_piped_the_summary_of_this_result_is_one_json_record_with_u_max_as_a_bound(window):
    """What `measure` prints at its end when piped (the run above was on a terminal), from its result."""
    piped = io.StringIO()
    print_summary(RecordConsole("jsonl", file=piped), [ResultDocument.model_validate(window["result"])])
    records = [json.loads(text) for text in piped.getvalue().splitlines()]
    (row,) = [r for r in records if r["event"] == "row" and r["table"] == "kvprobe measure: summary"]
    assert (row["model"], row["label"], row["u_max"]) == ("tiny-llama", "native", ">=0.06"), row
    assert "…" not in piped.getvalue()
