"""Tensor-parallel bookkeeping on any number of GPUs, checked with NVML-shaped samples and the
recorded two-H200 machine (tests/data/machines/h200-x2: a simulation, hand-written).

The two-GPU run itself (docs/gpu-tp2/) needs a host with two GPUs; these tests pin down what the
code does with several devices: every device must be back at its baseline, the devices are those
CUDA_VISIBLE_DEVICES leaves the engine, and the attribution covers every rank, each adding up.
"""

import pytest

from conftest import MODELS, ROOT, environment
from kvprobe.config import load_models
from kvprobe.engines import get_engine
from kvprobe.environment.facts import collect
from kvprobe.environment.gpu import Nvml, visible_devices
from kvprobe.environment.recorded import RecordedNvml
from kvprobe.measure.attribution import attribute
from kvprobe.measure.build import device_name
from kvprobe.measure.options import resolve_prestart
from kvprobe.results.schema import MemorySample
from kvprobe.trial.runner import TrialLimits, TrialRunner
from kvprobe.units import GIB
from synthetic import trial as make_trial


def sample(devices):
    return MemorySample(
        t=0.0,
        host_available=100 * GIB,
        page_cache=0,
        cgroup_usage=None,
        cgroup_limit=None,
        gpu_used=sum(devices),
        gpu_used_devices=devices,
    )


class Replay:
    def __init__(self, samples):
        self.samples = list(samples)

    def sample(self):
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]


def runner_with(samples, tmp_path, settle_timeout_s=5.0):
    runner = TrialRunner(get_engine(), tmp_path, TrialLimits(settle_timeout_s=settle_timeout_s))
    runner.sampler = Replay(samples)
    return runner


def test_teardown_waits_for_every_gpu(tmp_path):
    baseline = sample([1 * GIB, 1 * GIB])
    runner = runner_with(
        [sample([1 * GIB, 40 * GIB]), sample([1 * GIB, 2 * GIB]), sample([1 * GIB, 1 * GIB])], tmp_path
    )
    assert runner._settle(baseline) is True
    assert runner.sampler.samples == [sample([1 * GIB, 1 * GIB])]  # it read until the second GPU was back


def test_a_gpu_that_never_comes_back_fails_the_baseline_check(tmp_path):
    runner = runner_with([sample([1 * GIB, 30 * GIB])], tmp_path, settle_timeout_s=0.5)
    assert runner._settle(sample([1 * GIB, 1 * GIB])) is False


def test_tensor_parallel_size_reaches_the_engine():
    (settings,) = load_models(MODELS, only=["deepseek-r1-distill-qwen-7b"])
    settings = settings.model_copy(update={"tensor_parallel_size": 2})
    assert get_engine().engine_args(settings, 0.9)["tensor_parallel_size"] == 2


def test_attribution_is_per_gpu():
    trial = make_trial(
        number=1,
        search="u_max",
        utilization=0.9,
        passed=True,
        kv_cache_bytes=int(60 * GIB),
        memory_report={
            "weights_bytes": 7 * GIB,
            "requested_bytes": 72 * GIB,
            "activation_peak_bytes": 1 * GIB,
            "non_torch_bytes": 0.5 * GIB,
        },
        baseline={"gpu_used": 1 * GIB, "gpu_used_devices": [0.5 * GIB, 0.5 * GIB]},
        memory={
            "phases": {"ready": {"gpu_used": 158 * GIB, "gpu_used_devices": [79 * GIB, 79 * GIB]}},
            "engine_at_ready": {
                "pids": [10, 11],
                "gpu_processes": [
                    {"index": 0, "pid": 10, "used_bytes": 78 * GIB},
                    {"index": 1, "pid": 11, "used_bytes": 78 * GIB},
                ],
            },
        },
    )
    env = environment(mem_total=512 * GIB, devices=[(80 * GIB, False)] * 2)
    result = attribute(trial, env).model_dump()
    assert result["pool"] == "gpu" and result["total_bytes"] == 80 * GIB
    assert result["parts"]["other_processes"] == 0.5 * GIB
    assert result["parts"]["free_at_ready"] == 1 * GIB
    assert result["engine_measured_bytes"] == 78 * GIB  # the rank on GPU 0, not both ranks together
    assert result["parts"]["engine_beyond_request"] == 6 * GIB


H200_X2 = ROOT / "tests" / "data" / "machines" / "h200-x2"
UUIDS = ["GPU-0a1b2c3d-0000-4000-8000-000000000000", "GPU-9f8e7d6c-1111-4000-8000-111111111111"]
H200 = 150754820096  # 143,771 MiB


@pytest.mark.parametrize(
    ("variable", "chosen", "note"),
    [
        (None, [0, 1], False),
        ("1", [1], False),
        ("1,0", [1, 0], False),
        (" 0 , 1", [0, 1], False),
        ("GPU-9f8e", [1], False),
        (f"{UUIDS[1]},0", [1, 0], False),
        ("", [], True),
        ("0,7,1", [0], True),  # CUDA stops at the first entry that names no device
        ("1,1", [1], True),
        ("GPU-", [], True),  # a prefix of both UUIDs names neither
        ("MIG-0a1b", [], True),
        ("-1", [], True),
    ],
)
def test_cuda_visible_devices_is_read_as_cuda_reads_it(variable, chosen, note):
    found, why = visible_devices(variable, UUIDS)
    assert found == chosen
    assert (why is not None) is note


def test_the_environment_lists_the_engines_devices_and_records_the_variable():
    block = collect(recorded=H200_X2, visible="1")
    (device,) = block.gpu.devices
    assert (device.index, device.nvml_index, device.uuid) == (0, 1, UUIDS[1])
    assert device.used_bytes == 4861198336  # NVML device 1's, not device 0's
    assert block.gpu.cuda_visible_devices == "1" and block.gpu.not_visible == [0]
    assert device_name(block, None) == "NVIDIA H200"  # not "2x"


def test_the_uuid_form_maps_to_the_same_device():
    by_uuid = collect(recorded=H200_X2, visible="GPU-9f8e7d6c").gpu
    assert [(d.index, d.nvml_index) for d in by_uuid.devices] == [(0, 1)]


def test_unset_lists_every_device_in_nvml_order():
    gpus = collect(recorded=H200_X2).gpu
    assert gpus.cuda_visible_devices is None and gpus.not_visible == []
    assert [(d.index, d.nvml_index) for d in gpus.devices] == [(0, 0), (1, 1)]


def test_samples_and_processes_read_the_engines_devices_in_its_order():
    with Nvml(RecordedNvml(H200_X2 / "nvml.json"), visible="1,0") as nvml:
        assert nvml.used_bytes() == [4861198336, 566231040]
        assert nvml.processes() == [{"index": 0, "pid": 5151, "used_bytes": 4294967296}]  # cuda:0 is NVML 1


def test_a_ray_agent_watches_every_device_whatever_the_variable(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # what Ray may give an actor without GPUs
    with Nvml(RecordedNvml(H200_X2 / "nvml.json"), visible=None) as nvml:
        assert nvml.device_count() == 2


def test_a_recorded_machine_ignores_this_machines_variable(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with Nvml(RecordedNvml(H200_X2 / "nvml.json")) as nvml:
        assert nvml.visible == [0, 1]


def tp2_trial(used_at_ready, engine_per_device, baseline_devices, utilization=0.9):
    return make_trial(
        number=1,
        search="u_max",
        utilization=utilization,
        passed=True,
        kv_cache_bytes=int(100 * GIB),
        memory_report={
            "weights_bytes": 7.5 * GIB,
            "requested_bytes": 120 * GIB,
            "activation_peak_bytes": 1 * GIB,
            "non_torch_bytes": 0.5 * GIB,
            "free_at_start_bytes": 139 * GIB,
        },
        baseline={"gpu_used": sum(baseline_devices), "gpu_used_devices": baseline_devices},
        memory={
            "start": {"gpu_used": sum(baseline_devices), "gpu_used_devices": baseline_devices, "host_available": 9e11},
            "phases": {"ready": {"gpu_used": sum(used_at_ready), "gpu_used_devices": used_at_ready}},
            "engine_at_ready": {
                "pids": [10, 11],
                "gpu_processes": [
                    {"index": index, "pid": 10 + index, "used_bytes": used}
                    for index, used in enumerate(engine_per_device)
                ],
            },
        },
    )


def test_every_rank_is_attributed_and_adds_up():
    block = collect(recorded=H200_X2)
    engine = [121 * GIB, 121 * GIB]
    baseline = [0.5 * GIB, 4.5 * GIB]
    ready = [b + e for b, e in zip(baseline, engine, strict=True)]
    result = attribute(tp2_trial(ready, engine, baseline), block)
    assert [rank.index for rank in result.ranks] == [0, 1]
    for rank, other in zip(result.ranks, baseline, strict=True):
        assert rank.total_bytes == H200
        assert rank.engine_measured_bytes == 121 * GIB
        assert rank.parts.other_processes == other
        assert rank.parts.engine_beyond_request == 1 * GIB
        assert rank.parts.free_at_ready == H200 - other - 121 * GIB
        # the engine's log split (kv, weights, activation, non-torch, other) plus what was
        # measured apart leaves nothing over when the accounts agree
        assert rank.unexplained_bytes == pytest.approx(0.0, abs=1)
    assert result.limiting_rank == 0  # equal use: the first of the least room


def test_the_rank_that_holds_more_limits_the_kv():
    block = collect(recorded=H200_X2)
    engine = [121 * GIB, 124 * GIB]  # rank 1 holds 3 GiB more besides the same KV cache
    baseline = [0.5 * GIB, 0.5 * GIB]
    ready = [b + e for b, e in zip(baseline, engine, strict=True)]
    result = attribute(tp2_trial(ready, engine, baseline), block)
    first, second = result.ranks
    assert second.kv_room_bytes == pytest.approx(first.kv_room_bytes - 3 * GIB)
    assert result.limiting_rank == 1
    assert second.parts.engine_beyond_request - first.parts.engine_beyond_request == 3 * GIB


def test_the_discrete_budget_view_is_each_devices_nvml_free_memory():
    block = collect(recorded=H200_X2)
    baseline = [0.5 * GIB, 4.5 * GIB]
    views = attribute(tp2_trial(baseline, [1, 1], baseline), block).budget_views
    assert views.views == {"NVML free, device 0": H200 - 0.5 * GIB, "NVML free, device 1": H200 - 4.5 * GIB}
    assert "MemAvailable" not in views.views and "MemFree" not in views.views
    # the logged 139 GiB is rank 0's: nearer device 0's 139.9 GiB free than device 1's 135.9 GiB
    assert views.closest == "NVML free, device 0"
    assert views.spread_bytes == 4 * GIB


def test_prestart_is_off_with_tensor_parallelism_even_when_forced():
    block = collect(recorded=H200_X2)
    assert resolve_prestart("auto", block, ranks=1)[0] is True
    for choice in ("auto", "on"):
        use, reason = resolve_prestart(choice, block, ranks=2)
        assert use is False and "flashinfer.comm" in reason and "2 ranks" in reason


def test_kvprobe_env_says_which_nvml_device_the_engine_sees():
    from rich.console import Console

    from kvprobe.output.environment import print_environment

    console = Console(record=True, width=400)
    print_environment(console, collect(recorded=H200_X2, visible="GPU-9f8e7d6c"))
    text = console.export_text()
    assert f"'GPU-9f8e7d6c': GPU 0 = NVML 1 ({UUIDS[1]}); NVML devices not visible: 0" in text
