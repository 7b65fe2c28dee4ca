"""Tensor-parallel bookkeeping on any number of GPUs, checked with NVML-shaped samples.

The two-GPU run itself (docs/gpu-tp2/) needs a host with two GPUs; these tests pin down what the
code does with several devices: every device must be back at its baseline, and the attribution
is per GPU.
"""

from conftest import MODELS, environment
from kvprobe.config import load_models
from kvprobe.engines import get_engine
from kvprobe.measure.attribution import attribute
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
