"""KV bytes per token and weight bytes from config.json alone, against hand computation from the public
configs and against what engines measured (committed results, engine logs quoted in the issues)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from kvprobe.predict import kv_groups, predict, weight_bytes
from kvprobe.results.store import ResultStore
from kvprobe.units import GIB


def config(name: str) -> dict:
    return json.loads((ROOT / "configs" / name / "config.json").read_text())


def test_dense_tiny_llama():
    # 8 layers x K and V x 4 KV heads x head_dim 128 x 4 bytes (float32)
    assert predict("t", config("tiny-llama"), dtype="float32").bytes_per_token == 8 * 2 * 4 * 128 * 4


# Every committed results directory, found by its run manifest (docs/benchmarks/raw/ and results-* too).
MEASURED = sorted({p.parent for p in ROOT.glob("docs/**/.kvprobe-run-*.json")})
# Results name their model's config by its SHA-256 (the directory they ran from may be elsewhere).
CONFIGS = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in ROOT.glob("configs/*/config.json")}


@pytest.mark.parametrize("results", MEASURED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_measured_model_has_the_bytes_per_block_and_weights_its_config_predicts(results):
    """Every committed result with the engine's own bytes per block (CPU and GPU): the prediction from
    config.json alone equals it in every trial, and the weights are within 2% of the engine's log."""
    loaded, problems = ResultStore(results).load_all()
    assert loaded and not problems
    checked = 0
    for _, doc in loaded:
        settings = doc.settings
        per_block = {t.bytes_per_block for t in doc.trials if t.bytes_per_block}
        if not per_block:
            continue  # schema 1: the engine's bytes per block were not recorded
        block_size = next(t.block_size for t in doc.trials if t.block_size)
        quantization = settings["extra_engine_args"].get("quantization")
        prediction = predict(
            doc.model,
            json.loads(CONFIGS[settings["architecture_sha256"]].read_text()),
            settings["kv_cache_dtype"],
            settings["dtype"],
            settings["tensor_parallel_size"],
            block_size,
            quantization,
        )
        assert per_block == {prediction.bytes_per_block}, doc.where()
        logged = {t.memory_report.weights_bytes for t in doc.trials if t.memory_report.weights_bytes}
        for weights in logged:
            assert prediction.weight_bytes == pytest.approx(weights, rel=0.02), doc.where()
        checked += 1
    started = any(t.outcome == "ok" for _, doc in loaded for t in doc.trials)  # the multi-node CPU run never did
    assert checked or not started or "gpu-h100" in str(results)  # H100 results of kvprobe 0.1: no bytes per block


def test_mqa_mla_and_fp8():
    mqa = {"num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 1, "hidden_size": 2048}
    assert kv_groups(mqa, dtype="bfloat16")[0].bytes_per_token_per_layer == 2 * 1 * 128 * 2
    assert kv_groups(mqa, kv_cache_dtype="fp8", dtype="bfloat16")[0].bytes_per_token_per_layer == 2 * 1 * 128 * 1
    mla = {
        "num_hidden_layers": 2,
        "num_attention_heads": 16,
        "hidden_size": 2048,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
    }
    (group,) = kv_groups(mla, dtype="bfloat16")
    assert group.kind == "mla" and group.bytes_per_token_per_layer == (512 + 64) * 2  # one latent, no K/V pair


def test_tensor_parallelism_splits_kv_heads_and_replicates_when_there_are_fewer():
    qwen = config("qwen2.5-72b-instruct")  # 8 KV heads
    assert kv_groups(qwen, dtype="bfloat16", tensor_parallel_size=2)[0].bytes_per_token_per_layer == 2 * 4 * 128 * 2
    assert kv_groups(qwen, dtype="bfloat16", tensor_parallel_size=16)[0].bytes_per_token_per_layer == 2 * 1 * 128 * 2


def test_gpt_oss_alternates_full_and_sliding_window_layers():
    groups = kv_groups(config("gpt-oss-120b"), dtype="bfloat16")
    assert [(g.kind, g.layers, g.window) for g in groups] == [("full", 18, None), ("sliding", 18, 128)]
    assert all(g.bytes_per_token_per_layer == 2 * 8 * 64 * 2 for g in groups)


@pytest.mark.parametrize(
    "name,dtype,quantization,measured_gib",
    [
        ("deepseek-r1-distill-qwen-7b", "bfloat16", None, 14.32),  # vLLM's "Model loading took", H200 logs
        ("gpt-oss-120b", "bfloat16", None, 61.12),  # MXFP4 experts, issue 16's H100 start
        ("qwen2.5-72b-instruct", "bfloat16", "fp8", 70.15),  # online fp8, docs/gpu (H200) and issue 16 (H100)
    ],
)
def test_weight_bytes_within_two_percent_of_what_vllm_loaded(name, dtype, quantization, measured_gib):
    assert weight_bytes(config(name), dtype, quantization) / GIB == pytest.approx(measured_gib, rel=0.02)


def test_kvprobe_predict_on_the_shipped_models_file():
    done = subprocess.run(
        [sys.executable, "-m", "kvprobe.cli", "predict", str(ROOT / "models.yaml"), "--memory", "119.6g"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split(" | ")[0]: line for line in done.stdout.splitlines() if line.startswith("model ")}
    assert "bytes per token in a block 57,344" in lines["model deepseek-r1-distill-qwen-7b"]
    assert "KV left GiB -27.8 " in lines["model qwen2.5-72b-instruct"]  # bf16 72B does not fit 119.6 GiB
    assert "verdict does not fit | why weights alone (135.4 GiB) exceed the pool" in lines["model qwen2.5-72b-instruct"]
    assert "Not included: activation peak, non-torch memory" in done.stdout
    assert "Pool: --memory 119.6g." in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) > 200  # piped: one record a line, never hard-wrapped


def test_gpt_oss_blocks_span_one_attention_group_and_tokens_follow_the_groups():
    """GPT-OSS-120B on the H100 (vLLM 0.26, issue 16): 12,285 blocks of 16, logged as 98,184 tokens
    and 6.75 GiB. A block holds one group's 18 layers, so blocks x 16 (196,560) counts tokens twice."""
    from kvprobe.predict import blocks_per_request, page_layers

    config = json.loads((ROOT / "configs" / "gpt-oss-120b" / "config.json").read_text())
    assert page_layers(kv_groups(config)) == 18
    per_block = predict("gpt-oss-120b", config).bytes_per_block
    assert per_block == 18 * 2 * 8 * 64 * 2 * 16  # layers x K,V x KV heads x head dim x bf16 x block
    assert f"{12_285 * per_block / GIB:.2f}" == "6.75"
    # full group: 8192/16 = 512 blocks; sliding group: min(127 + 8192, 8192)/16 + 1 = 513
    assert blocks_per_request(kv_groups(config), 16, 8192, 8192) == 1025
    assert predict("gpt-oss-120b", config).tokens(12_285 * per_block, 8192) == 98_184


def test_a_result_takes_the_engines_token_count_not_blocks_times_block_size():
    from kvprobe.results.build import kv_figure
    from kvprobe.results.schema import EngineMemoryReport
    from kvprobe.trial.runner import kv_tokens
    from synthetic import trial

    report = EngineMemoryReport(kv_cache_tokens_logged=98_184)
    record = trial(num_gpu_blocks=12_285, block_size=16, memory_report=report, passed=True)
    record.kv_cache_tokens = kv_tokens(record)
    figure = kv_figure(record, 8192)
    assert figure.tokens == 98_184
    assert figure.max_concurrency == pytest.approx(98_184 / 8192)


def test_a_fill_sizes_gpt_oss_requests_by_what_each_holds_once_prefilled():
    """On the H100 a fill sized by vLLM's worst-case 1,025 blocks a request reached 57-89%; a prefilled
    request holds 512 full-attention blocks and 9 of the 128-token window (docs/gpu/h100-gpt-oss-120b)."""
    from kvprobe.predict import blocks_held_per_request

    groups = kv_groups(config("gpt-oss-120b"), dtype="bfloat16")
    assert blocks_held_per_request(groups, 16, 8192) == 512 + 9
    dense = kv_groups(config("deepseek-r1-distill-qwen-7b"), dtype="bfloat16")
    assert blocks_held_per_request(dense, 16, 8192) == 512
    peaks = {}
    for folder in ("results-before-fill-fix", "results"):
        loaded, _ = ResultStore(ROOT / "docs" / "gpu" / "h100-gpt-oss-120b" / folder).load_all()
        fills = [t.worker.fill for _, doc in loaded for t in doc.trials if t.worker.fill]
        peaks[folder] = max(f.peak_kv_usage for f in fills)
    assert peaks["results-before-fill-fix"] < 0.9
    assert peaks["results"] >= 0.95


def test_a_fill_stops_once_the_cache_has_stayed_full():
    """The H100's fill kept decoding for about 10 s of its 41 after vLLM logged 99.4% KV usage
    (docs/benchmarks/raw/h100-search/2-prestart-off, trial 8): it now stops once the usage has
    reached the target, requests still wait for blocks, and no new peak came for SATURATED_STEPS."""
    from kvprobe.engines.vllm_worker import SATURATED_STEPS, KVUsageWatch

    watch = KVUsageWatch()
    for step in range(150):  # prefill: one more request's blocks each step, the rest waiting
        watch.record(0.9 * step / 150, step, 150 - step)
        assert not watch.stayed_full(0.95)
    for _ in range(SATURATED_STEPS - 1):  # full: decoding, a preemption now and then
        watch.record(0.98, 146, 5)
    assert not watch.stayed_full(0.95)
    watch.record(0.99, 146, 5)
    assert not watch.stayed_full(0.95)  # a new peak starts the count again
    for _ in range(SATURATED_STEPS):
        watch.record(0.97, 145, 6)
    assert watch.stayed_full(0.95) and watch.peak_usage == 0.99 and watch.peak_running == 149
    assert not watch.stayed_full(0.995)  # below the target it runs to the end, as before

    nobody_waits = KVUsageWatch()  # every request in: the cache is not what limits them
    for _ in range(SATURATED_STEPS + 5):
        nobody_waits.record(0.97, 30, 0)
    assert not nobody_waits.stayed_full(0.95)
