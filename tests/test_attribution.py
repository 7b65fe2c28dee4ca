"""Host-pool attribution with numbers shaped like a native start on a free-page-reporting VM.

The real-engine checks (within 1% natively and in a container) are in test_isolation.py and
test_engine_pair.py; this pins down the arithmetic of the unlisted kernel pages.
"""

import pytest

from conftest import environment
from kvprobe.measure.attribution import attribute
from kvprobe.results.schema import GpuProcess
from kvprobe.units import GIB, MIB
from synthetic import UNGUARDED
from synthetic import trial as make_trial


def native_trial(unlisted_before, unlisted_at_ready, available_before, available_at_ready):
    return make_trial(
        number=2,
        search="u_max",
        utilization=0.3,
        passed=True,
        kv_cache_bytes=int(4.5 * GIB),
        memory_report={"weights_bytes": 0.1 * GIB, "requested_bytes": 5.0 * GIB},
        baseline={"host_available": available_before, "host_unaccounted": unlisted_before},
        memory={
            "phases": {"ready": {"host_available": available_at_ready, "host_unaccounted": unlisted_at_ready}},
            "engine_at_ready": {"private_bytes": 5.5 * GIB, "pids": [10]},
        },
    )


ENV = environment(mem_total=24 * GIB)


def test_pages_the_vm_held_before_the_start_are_not_counted_as_other_processes():
    # 0.5 GiB freed by the previous trial sat unlisted at the baseline; the engine took them back,
    # so MemAvailable fell by 5.0 GiB while the engine holds 5.5 GiB.
    trial = native_trial(
        unlisted_before=0.7 * GIB,
        unlisted_at_ready=0.2 * GIB,
        available_before=22.0 * GIB,
        available_at_ready=17.0 * GIB,
    )
    result = attribute(trial, ENV).model_dump()
    assert result["pool"] == "host"
    assert result["parts"]["other_processes"] == 24 * GIB - 22.0 * GIB - 0.7 * GIB
    assert result["parts"]["kernel_unaccounted"] == 0.2 * GIB
    assert result["parts"]["engine_beyond_request"] == 0.5 * GIB
    assert abs(result["unexplained_bytes"]) < 1 * MIB


def test_results_without_the_unlisted_account_attribute_as_before():
    trial = native_trial(None, None, available_before=22.0 * GIB, available_at_ready=17.0 * GIB)
    result = attribute(trial, ENV).model_dump()
    assert result["parts"]["kernel_unaccounted"] == 0
    assert result["unexplained_bytes"] == -0.5 * GIB  # the VM's 0.5 GiB, unexplained without the account


def test_on_unified_memory_the_engines_cuda_pages_count_once():
    # GB10-like: CUDA allocations (NVML per process) come from host memory and sit in no meminfo list.
    trial = native_trial(
        unlisted_before=0.2 * GIB,
        unlisted_at_ready=3.2 * GIB,
        available_before=22.0 * GIB,
        available_at_ready=13.5 * GIB,
    )
    trial.memory.engine_at_ready.gpu_processes = [GpuProcess(index=0, pid=10, used_bytes=3 * GIB)]
    env = environment(mem_total=24 * GIB, devices=[(24 * GIB, True)])
    result = attribute(trial, env).model_dump()
    assert result["pool"] == "host" and result["engine_measured_bytes"] == 8.5 * GIB
    assert result["parts"]["kernel_unaccounted"] == pytest.approx(0.2 * GIB)
    assert abs(result["unexplained_bytes"]) < 1 * MIB


def test_a_discrete_gpu_node_is_attributed_per_device_like_one_machine():
    """A Ray node with an 80 GiB card: its pool is device 0, the trial's part is NVML's per process."""
    from kvprobe.measure.attribution import attribute_node
    from kvprobe.results.schema import ClusterNode, NodeTrial

    node = NodeTrial.model_validate(
        {
            "node_id": "n1",
            "hostname": "gpu-host",
            "baseline": {"host_available": 100 * GIB, "gpu_used_devices": [1 * GIB]},
            "memory": {"phases": {"ready": {"host_available": 90 * GIB, "gpu_used_devices": [75 * GIB]}}},
            "engine_at_ready": {
                "private_bytes": 3 * GIB,
                "pids": [7],
                "gpu_processes": [GpuProcess(index=0, pid=7, used_bytes=74 * GIB)],
            },
        }
    )
    host = environment(128 * GIB, [(80 * GIB, False)])
    facts = ClusterNode(node_id="n1", address="10.0.0.2", environment=host, guard=UNGUARDED)
    attribution = attribute_node(node, facts)
    assert attribution.pool == "gpu" and attribution.total_bytes == 80 * GIB
    assert attribution.parts.engine == 74 * GIB  # the host pages of its processes are not this pool's
    assert attribution.parts.other_processes == 1 * GIB and attribution.parts.free_at_ready == 5 * GIB
    assert attribution.unexplained_bytes == 0
