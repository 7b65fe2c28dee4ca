"""Simulation (recorded files, tests/data/machines/SOURCES.md): what kvprobe makes of a DGX Spark,
in Docker with and without a limit, and a GH200 in NUMA and CDMM mode. Detection and accounting
only; nothing here says what those machines do."""

from __future__ import annotations

import pytest

from conftest import ROOT
from kvprobe.environment.facts import collect
from kvprobe.environment.gpu import Nvml
from kvprobe.environment.recorded import RecordedNvml
from kvprobe.measure.attribution import attribute
from kvprobe.measure.options import resolve_kv_approach, resolve_prestart
from kvprobe.results.schema import EngineMemoryReport, TrialBaseline, TrialMemory, TrialRecord
from kvprobe.trial.monitor import GuardPolicy, MemorySampler
from kvprobe.units import GIB

MACHINES = ROOT / "tests" / "data" / "machines"
KINDS = {
    "dgx-spark-native": ("unified", False, None),
    "dgx-spark-docker": ("unified", True, None),
    "dgx-spark-docker-memory": ("unified", True, 100 * GIB),
    "gh200-numa": ("coherent_numa", False, None),
    "gh200-cdmm": ("coherent_cdmm", False, None),
}


def machine(name: str):
    return collect(recorded=MACHINES / name)


def sample(name: str):
    with Nvml(RecordedNvml(MACHINES / name / "nvml.json")) as nvml:
        return MemorySampler(nvml, MACHINES / name).sample()


@pytest.mark.parametrize("name", sorted(KINDS))
def test_simulation_classifies_the_memory_model_and_names_its_signal(name):
    kind, in_container, limit = KINDS[name]
    block = machine(name)
    assert block.simulated_from == name
    assert block.memory_model.kind == kind and block.memory_model.signal
    assert block.container.detected is in_container
    assert block.cgroup.limit_bytes == limit
    assert block.numa_nodes and block.numa_nodes[0].cpus


def test_simulation_gb10_device_memory_is_not_supported_and_processes_carry_no_memory():
    block = machine("dgx-spark-native")
    (device,) = block.gpu.devices
    assert device.total_bytes is None and device.unified_memory
    assert "not supported" in block.memory_model.signal
    assert device.processes == [{"pid": 4242, "used_bytes": None}]


def test_simulation_gh200_tells_numa_mode_from_cdmm():
    numa, cdmm = machine("gh200-numa"), machine("gh200-cdmm")
    assert numa.memory_model.gpu_nodes == [1] and numa.coherent_gpu_memory_mode == ""
    assert not numa.numa_nodes[1].cpus
    assert cdmm.memory_model.gpu_nodes == [] and cdmm.coherent_gpu_memory_mode == "driver"
    assert "CDMM" in cdmm.memory_model.signal
    for block in (numa, cdmm):  # HBM of its own: not one pool with the host
        assert not block.gpu.devices[0].unified_memory


@pytest.mark.parametrize("name", sorted(KINDS))
def test_simulation_guard_floor_is_pessimistic_where_gpu_memory_is_host_memory(name):
    block = machine(name)
    guard = GuardPolicy.for_environment(block)
    assert guard.host_floor_bytes == max(2 * GIB, int(0.03 * block.host_memory["MemTotal"]))
    if block.cgroup.limit_bytes:
        assert guard.cgroup_floor_bytes == int(0.03 * block.cgroup.limit_bytes)
    breach = guard.breach(sample(name))
    if name.startswith("dgx-spark"):  # MemAvailable 52 GiB looks fine; MemFree 2.77 GiB is below the floor
        assert guard.pessimistic and breach is not None and "MemFree 2.77 GiB" in breach
    else:
        assert breach is None


def _u_max_trial(name: str, engine_free: float) -> TrialRecord:
    """A passing start on the recorded machine: the engine's log figures, kvprobe's samples."""
    now = sample(name)
    return TrialRecord(
        number=1,
        search="u_max",
        utilization=0.9,
        kv_cache_memory_bytes=None,
        fill_target=None,
        outcome="ok",
        reason="",
        returncode=0,
        started_at=0.0,
        wall_s=60.0,
        teardown_s=1.0,
        baseline_restored=True,
        passed=True,
        kv_cache_bytes=40 * GIB,
        memory_report=EngineMemoryReport(
            kv_cache_bytes=40 * GIB,
            weights_bytes=14 * GIB,
            free_at_start_bytes=engine_free,
            requested_bytes=0.9 * 60 * GIB,
        ),
        memory=TrialMemory(start=now, phases={"engine_start": now, "ready": now}),
        baseline=TrialBaseline(**now.model_dump()),
    )


def test_simulation_attribution_on_gb10_names_the_view_the_budget_came_from():
    block = machine("dgx-spark-native")
    engine_free = float(block.host_memory["MemAvailable"])  # vLLM's integrated path reads psutil's available
    parts = attribute(_u_max_trial("dgx-spark-native", engine_free), block)
    assert parts.pool == "host" and parts.total_bytes == block.host_memory["MemTotal"]
    views = parts.budget_views
    assert views.closest == "MemAvailable"
    assert views.views["MemFree"] == block.host_memory["MemFree"]
    assert views.spread_bytes == pytest.approx(block.host_memory["MemAvailable"] - block.host_memory["MemFree"])


def test_simulation_attribution_in_docker_with_a_limit_shows_the_cut():
    block = machine("dgx-spark-docker-memory")
    parts = attribute(_u_max_trial("dgx-spark-docker-memory", 50 * GIB), block)
    assert parts.pool == "host"
    assert parts.parts.cgroup_cut == block.host_memory["MemTotal"] - 100 * GIB


@pytest.mark.parametrize("name", ["gh200-numa", "gh200-cdmm"])
def test_simulation_attribution_on_gh200_counts_the_gpus_own_memory(name):
    block = machine(name)
    parts = attribute(_u_max_trial(name, 90 * GIB), block)
    assert parts.pool == "gpu" and parts.total_bytes == block.gpu.devices[0].total_bytes
    if name == "gh200-numa":
        assert "node 1 MemFree" in parts.budget_views.views


@pytest.mark.parametrize("name", sorted(KINDS))
def test_simulation_prestart_and_the_kv_approach_follow_whose_memory_the_pool_is(name):
    """Where GPU memory is host memory (GB10), a waiting worker would sit in the pool measured and an
    over-budget KV cache may fail only in its fill: prestart off, kv_blocks from below. A GH200's
    HBM is the GPU's own: both on, as on any discrete GPU."""
    block = machine(name)
    unified = KINDS[name][0] == "unified"
    prestart, prestart_reason = resolve_prestart("auto", block)
    approach, approach_reason = resolve_kv_approach("auto", block)
    assert prestart is not unified and approach == ("from_below" if unified else "from_above")
    said = "unified memory" if unified else "discrete GPU"
    assert prestart_reason.startswith(said) and approach_reason.startswith(said)
