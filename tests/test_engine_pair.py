"""Real vLLM (CPU backend), natively and in a 4 GiB podman container, through `kvprobe container`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import CONTAINER_MEMORY, ROOT, needs_engine, needs_podman, podman_base

pytestmark = [needs_engine, needs_podman, pytest.mark.engine, pytest.mark.container]
GIB = 1 << 30


def logged_tokens(trial: dict) -> int:
    text = Path(trial["log_path"]).read_text()
    return int(re.findall(r"KV cache size: ([\d,]+) tokens", text)[-1].replace(",", ""))


def test_both_results_present_matched_and_labelled(pair_run):
    native, container = pair_run["native"], pair_run["container"]
    assert native and container, pair_run["stdout"][-2000:]
    assert native["status"] == container["status"] == "complete"
    assert native["settings_hash"] == container["settings_hash"]
    assert native["versions"]["vllm"] == container["versions"]["vllm"]
    assert native["versions"]["kvprobe"] == container["versions"]["kvprobe"]
    assert native["environment"]["container"]["detected"] is False
    inside = container["environment"]
    assert inside["container"]["detected"] and inside["container"]["runtime"] == "podman"
    assert inside["cgroup"]["limit_bytes"] == 4 * GIB
    recorded = container["options"]["container"]
    assert recorded["runtime"] == "podman" and "--memory" in recorded["command"]
    assert recorded["limits"]["memory_limit_bytes"] == 4 * GIB


def test_container_loses_what_its_limit_implies_at_the_same_utilization(pair_run):
    native, container = pair_run["native"], pair_run["container"]
    u = native["settings"]["gpu_memory_utilization"]
    assert container["reference"]["utilization"] == native["reference"]["utilization"] == u
    native_trial = next(t for t in native["trials"] if t["search"] == "reference")
    inside_trial = next(t for t in container["trials"] if t["search"] == "reference")
    # Inside, vLLM multiplies u by the cgroup limit instead of the host's memory.
    assert inside_trial["memory_report"]["budget_total_bytes"] == pytest.approx(4 * GIB, rel=0.01)
    implied = u * (native_trial["memory_report"]["budget_total_bytes"] - 4 * GIB)
    lost = native["reference"]["bytes"] - container["reference"]["bytes"]
    # Both sides pay the same non-KV memory, so the loss is the budget difference (+- 0.1 GiB).
    assert lost == pytest.approx(implied, abs=0.1 * GIB)
    assert container["reference"]["tokens"] == logged_tokens(inside_trial)
    assert native["reference"]["tokens"] == logged_tokens(native_trial)


def test_reported_kv_tokens_equal_the_engines_logged_kv_size(container_search):
    ok = [t for t in container_search["trials"] if t["outcome"] == "ok"]
    assert len(ok) >= 3
    for trial in ok:
        assert trial["kv_cache_tokens"] == logged_tokens(trial), trial["log_path"]
    assert container_search["kv_at_u_max"]["tokens"] == container_search["kv_at_u_max"]["tokens_logged"]


def test_u_max_agrees_with_direct_engine_starts_in_the_same_container(container_search):
    """A plain vLLM start (no kvprobe) at u_max works, and two steps above it fails.

    kvprobe's own process shares the container's limit, so a direct start may still pass one step
    above u_max; the probe weighs less than one tolerance step, so never two (checked here too).
    """
    u_max = container_search["u_max"]
    search = container_search["searches"]["u_max"]
    assert search["converged"] and not search["censored"], search
    tolerance = search["tolerance"]
    limit = container_search["environment"]["cgroup"]["limit_bytes"]
    assert container_search["probe_rss_bytes"] < tolerance * limit
    settings = container_search["settings"]
    outcomes, said = {}, {}
    for u in (u_max, round(u_max + 2 * tolerance, 4)):
        done = subprocess.run(
            [
                *podman_base(CONTAINER_MEMORY),
                "--rootfs",
                "/:O",
                str(ROOT / ".venv/bin/python"),
                "tests/direct_start.py",
                container_search["model_path"],
                str(u),
                str(settings["max_model_len"]),
                settings["dtype"],
                str(settings["max_num_seqs"]),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        outcomes[u] = done.returncode == 0 and "DIRECT_START_OK" in done.stdout
        said[u] = (done.stdout + done.stderr)[-1500:]
    assert outcomes[u_max] is True, f"a direct start at kvprobe's u_max failed:\n{said[u_max]}"
    assert outcomes[round(u_max + 2 * tolerance, 4)] is False, "a direct start two steps above u_max succeeded"


def test_bracketed_search_needs_few_engine_starts(container_search):
    # Not a timing: the count of engine starts is deterministic for a given memory report.
    assert container_search["searches"]["u_max"]["engine_starts"] <= 4


def test_kv_block_search_finds_fill_tested_capacity(container_search):
    physical = container_search["physical_capacity"]
    assert physical is not None, container_search["searches"].get("kv_blocks")
    assert physical["fill"]["peak_kv_usage"] >= 0.95
    assert physical["fill"]["stopped_full"]  # requests over-committed by 5%: some wait once it is full
    kv_trials = [t for t in container_search["trials"] if t["search"] == "kv_blocks"]
    assert all(t["kv_cache_memory_bytes"] for t in kv_trials)
    search = container_search["searches"]["kv_blocks"]
    assert search["engine_starts"] == len(
        [t for t in kv_trials if not t["confirmation"]]
    )  # the search, not its confirmation
    assert search["converged"] or search["censored"]
    if search["failing"] is not None:
        assert any(not t["passed"] for t in kv_trials)


def test_phase_samples_show_memory_rising_after_kv_allocation(pair_run):
    trial = next(t for t in pair_run["native"]["trials"] if t["search"] == "reference")
    phases = trial["memory"]["phases"]
    assert {"weights_loaded", "kv_allocated", "ready"} <= set(phases)

    def released(sample: dict) -> int:  # pages freed earlier may sit unlisted on this VM; the engine reuses them
        return sample["host_available"] + sample["host_unaccounted"]

    dropped = released(phases["weights_loaded"]) - released(phases["ready"])
    assert dropped >= 0.8 * trial["kv_cache_bytes"], (dropped, trial["kv_cache_bytes"])
    assert trial["memory"]["rate_hz"] >= 5


def test_attribution_in_the_container_adds_up_within_one_percent(container_search):
    attribution = container_search["attribution"]
    assert attribution["parts"]["kv_cache"] == container_search["kv_at_u_max"]["bytes"]
    assert attribution["parts"]["cgroup_cut"] == attribution["total_bytes"] - 4 * GIB
    assert attribution["engine_measured_bytes"] > attribution["parts"]["kv_cache"]
    assert abs(attribution["unexplained_bytes"]) <= 0.01 * attribution["total_bytes"], attribution


def test_every_trial_ended_with_its_group_gone_and_memory_back(pair_run, container_search):
    for doc in (pair_run["native"], pair_run["container"], container_search):
        for trial in doc["trials"]:
            assert trial["baseline_restored"], (trial["number"], trial["search"])


def tiny_bytes_per_block(block_size: int) -> int:
    """K and V x layers x KV heads x head_dim x 4 bytes (float32), from the shipped config.json."""
    config = json.loads((ROOT / "configs" / "tiny-llama" / "config.json").read_text())
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * config["head_dim"] * 4 * block_size


def test_kv_bytes_are_exact_blocks_times_bytes_per_block(pair_run, container_search):
    for doc in (pair_run["native"], pair_run["container"], container_search):
        for trial in (t for t in doc["trials"] if t["passed"]):
            assert trial["bytes_per_block"] == tiny_bytes_per_block(trial["block_size"])
            assert trial["kv_cache_bytes"] == trial["num_gpu_blocks"] * trial["bytes_per_block"]
            # vLLM logs its KV budget with two decimals and allocates whole blocks within it
            logged = trial["memory_report"]["kv_cache_bytes"]
            assert abs(trial["kv_cache_bytes"] - logged) <= 0.005 * GIB + trial["bytes_per_block"], trial["number"]
        figure = doc["reference"]
        assert figure["bytes"] == figure["num_blocks"] * figure["bytes_per_block"]
        assert doc["prediction"]["bytes_per_block"] == figure["bytes_per_block"]  # config.json said the same
        assert abs(figure["bytes"] - figure["bytes_logged"]) <= 0.005 * GIB + figure["bytes_per_block"]


def test_the_kv_block_grid_is_exact_and_the_fill_is_checked_by_vllms_own_log(container_search):
    kv_trials = [t for t in container_search["trials"] if t["search"] == "kv_blocks"]
    for trial in kv_trials:
        # every budget asked for is whole blocks, and vLLM allocated exactly those blocks
        assert trial["kv_cache_memory_bytes"] % tiny_bytes_per_block(128) == 0
        if trial["outcome"] == "ok":
            assert trial["num_gpu_blocks"] * trial["bytes_per_block"] == trial["kv_cache_memory_bytes"]
    fill = container_search["physical_capacity"]["fill"]
    assert fill["peak_kv_usage_logged"] is not None
    assert fill["peak_kv_usage_logged"] <= fill["peak_kv_usage"] + 0.001  # a sampled log line is at most the peak


def test_each_converged_boundary_was_started_again(container_search):
    for name in ("u_max", "kv_blocks"):
        search = container_search["searches"][name]
        confirmations = [t for t in container_search["trials"] if t["search"] == name and t["confirmation"]]
        if search["converged"]:
            assert len(confirmations) == 1 and search["confirmed"] is not None
            assert search["engine_starts"] == len(search["trials"]) - 1
