"""KV bytes per token and weight bytes from config.json alone, against hand computation from the public
configs and against what engines measured (committed results, engine logs quoted in the issues). The
DGX Spark and GH200 pools come from SIMULATED machines (hand-written from public reports,
tests/data/machines/SOURCES.md), not recorded ones."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from kvprobe.environment.memory import read_meminfo
from kvprobe.predict import (
    MEASURED_ERROR,
    Pool,
    assess,
    kv_budget_left,
    kv_groups,
    machine_pool,
    predict,
    significant,
    weight_bytes,
)
from kvprobe.results.store import ResultStore
from kvprobe.units import GIB, parse_size


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
    from kvprobe.measure.build import kv_figure
    from kvprobe.results.schema import EngineMemoryReport
    from kvprobe.trial.judge import kv_tokens
    from synthetic import trial

    report = EngineMemoryReport(kv_cache_tokens_logged=98_184)
    record = trial(num_gpu_blocks=12_285, block_size=16, memory_report=report, passed=True)
    record.kv_cache_tokens = kv_tokens(98_184, record.num_gpu_blocks, record.block_size)
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


# --- verdicts, the pool, the command line (issue 28) and honest precision (issue 27, item 13) ------------------

H200_NVML_TOTAL = 150_754_820_096  # docs/gpu-h200/results: NVML's memory total of that H200
MACHINES = ROOT / "tests" / "data" / "machines"


def dense(name: str = "qwen2.5-72b-instruct"):
    return predict(name, config(name), dtype="bfloat16")


def test_weights_alone_beyond_the_pool_do_not_fit():
    fit = assess(dense(), int(119.6 * GIB), 0.9, 8192)
    assert fit.verdict == "does not fit" and fit.reason.startswith("weights alone (135.4 GiB) exceed the pool")
    assert fit.kv_bytes < 0 and fit.blocks == 0 and fit.tokens == 0 and fit.max_concurrency == 0


def test_bf16_72b_on_an_h200_fails_the_budget_not_the_pool():
    """Issue 27 item 14: 135.4 GiB of weights are below the H200's 140.4 GiB; what fails is 0.90 x that."""
    fit = assess(dense(), H200_NVML_TOTAL, 0.9, 8192)
    assert fit.verdict == "does not fit" and fit.reason == "weights (135.4 GiB) exceed the budget 0.90 x pool"


def test_room_for_kv_but_not_for_one_max_model_len_request():
    prediction = dense()
    one_request = 512 * prediction.bytes_per_block  # 8192 tokens in blocks of 16
    pool = int(prediction.weight_bytes + one_request // 2)  # at u = 1: half a request of KV
    fit = assess(prediction, pool, 1.0, 8192)
    assert fit.verdict == "fits without one full request" and fit.blocks_per_request == 512
    assert 0 < fit.blocks < 512 and "less than one 8,192-token request (2.5 GiB)" in fit.reason
    assert "vLLM refuses to start unless max_model_len is lowered" in fit.reason
    assert assess(prediction, pool, 1.0, 4096).verdict == "fits"  # the same KV holds a 4,096-token request


def test_fits_and_its_concurrency_is_tokens_over_max_model_len():
    prediction = dense("deepseek-r1-distill-qwen-7b")
    fit = assess(prediction, H200_NVML_TOTAL, 0.9, 8192)
    assert fit.verdict == "fits" and fit.reason == "room for at least one 8,192-token request"
    assert fit.blocks == int((0.9 * H200_NVML_TOTAL - prediction.weight_bytes) // prediction.bytes_per_block)
    assert fit.tokens == fit.blocks * 16 and fit.max_concurrency == pytest.approx(fit.blocks * 16 / 8192)


def test_an_earlier_results_other_memory_can_leave_no_kv_and_a_near_miss_is_named():
    prediction = dense("deepseek-r1-distill-qwen-7b")
    budget_left = 0.9 * H200_NVML_TOTAL - prediction.weight_bytes
    fit = assess(prediction, H200_NVML_TOTAL, 0.9, 8192, activation_and_other_bytes=budget_left + GIB)
    assert fit.verdict == "does not fit" and "after the weights and the earlier result's other memory" in fit.reason
    one_request = 512 * prediction.bytes_per_block
    just = assess(prediction, H200_NVML_TOTAL, 0.9, 8192, budget_left - one_request * 1.005)
    assert just.verdict == "fits" and "within the measured error (+3.3%) of holding none" in just.reason
    clear = assess(prediction, H200_NVML_TOTAL, 0.9, 8192, budget_left - one_request * 2)
    assert "measured error" not in clear.reason


def test_hybrid_models_show_bytes_per_token_in_a_block_and_for_long_context():
    """A block holds one KV cache group; a long request costs its full-attention layers per token."""
    gpt_oss = predict("gpt-oss-120b", config("gpt-oss-120b"))
    assert gpt_oss.hybrid and gpt_oss.bytes_per_token == 73_728  # every layer: neither figure
    assert gpt_oss.group_bytes_per_token == gpt_oss.bytes_per_block // 16 == 18 * 2 * 8 * 64 * 2
    assert gpt_oss.long_context_bytes_per_token == 18 * 2 * 8 * 64 * 2  # the 18 full-attention layers
    qwen2 = {**config("deepseek-r1-distill-qwen-7b"), "use_sliding_window": True, "sliding_window": 4096}
    qwen2["max_window_layers"] = 20  # layers 20-27 slide: groups of 8 layers
    layered = predict("qwen2-sliding", qwen2, dtype="bfloat16")
    per_layer = 2 * 4 * 128 * 2
    assert (layered.group_bytes_per_token, layered.long_context_bytes_per_token) == (8 * per_layer, 20 * per_layer)
    plain = dense("deepseek-r1-distill-qwen-7b")
    assert not plain.hybrid and plain.group_bytes_per_token == plain.long_context_bytes_per_token == 57_344


def test_counts_are_shown_to_three_significant_figures():
    assert [significant(v) for v in (1_749_904, 98_184, 213.62, 15.04, 0.4, 0)] == [
        "1,750,000",
        "98,200",
        "214",
        "15.0",
        "0.400",
        "0",
    ]


def test_the_measured_error_is_what_committed_gpu_runs_show():
    """`predict --from` each committed GPU run at its own utilization, against the engine's KV bytes: the
    figures MEASURED_ERROR states (4 decimals; bytes to the MB)."""
    single, hybrid, absolute = [], [], []
    for results in MEASURED:
        for _, doc in ResultStore(results).load_all()[0]:
            devices = doc.environment.gpu.devices if doc.environment.gpu.available else []
            reference = [t for t in doc.trials if t.search == "reference" and t.outcome == "ok"]
            if not devices or not reference or doc.memory_breakdown is None:
                continue  # CPU runs: no GPU pool
            settings = doc.settings
            block_size = next(t.block_size for t in doc.trials if t.block_size)
            prediction = predict(
                doc.model,
                json.loads(CONFIGS[settings["architecture_sha256"]].read_text()),
                settings["kv_cache_dtype"],
                settings["dtype"],
                settings["tensor_parallel_size"],
                block_size,
                settings["extra_engine_args"].get("quantization"),
            )
            report = doc.memory_breakdown
            other = (report.activation_peak_bytes or 0) + (report.non_torch_bytes or 0)
            for trial in reference:
                left = kv_budget_left(prediction, devices[0].total_bytes, trial.utilization, other)
                (hybrid if prediction.hybrid else single).append(left / trial.kv_cache_bytes - 1)
                absolute.append(left - trial.kv_cache_bytes)
    assert len(single) >= 3 and hybrid
    assert (round(min(single), 4), round(max(single), 4)) == (MEASURED_ERROR.low, MEASURED_ERROR.high)
    assert round(max(hybrid), 4) == MEASURED_ERROR.hybrid
    assert (round(min(absolute), -6), round(max(absolute), -6)) == (MEASURED_ERROR.low_bytes, MEASURED_ERROR.high_bytes)


def recorded_machine(root, nodes: dict[int, tuple[str, int]], nvml: dict):
    """A stand-in machine written here (as tests/data/machines holds real recordings): MemTotal, NUMA
    nodes as {node: (cpulist, MemTotal kB)}, and NVML's answers."""
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "meminfo").write_text("MemTotal:       32000000 kB\nMemFree:        30000000 kB\n")
    for node, (cpus, kb) in nodes.items():
        directory = root / "sys" / "devices" / "system" / "node" / f"node{node}"
        directory.mkdir(parents=True)
        (directory / "cpulist").write_text(cpus + "\n")
        (directory / "meminfo").write_text(f"Node {node} MemTotal:       {kb} kB\nNode {node} MemFree: 1000 kB\n")
    (root / "nvml.json").write_text(json.dumps({"driver_version": "580.95.05", "cuda_driver_version": 13000, **nvml}))
    return root


def test_the_default_pool_on_unified_memory_is_memtotal():
    pool = machine_pool(MACHINES / "dgx-spark-native")
    mem_total = read_meminfo(MACHINES / "dgx-spark-native" / "proc" / "meminfo")["MemTotal"]
    assert (pool.bytes, pool.kind) == (mem_total, "unified")
    assert pool.source.startswith("MemTotal of /proc/meminfo: unified memory, NVML reports NVIDIA GB10")
    assert "simulated from dgx-spark-native" in pool.source


@pytest.mark.parametrize("name", ["gh200-numa", "gh200-cdmm"])
def test_the_default_pool_of_a_gpu_with_its_own_memory_is_its_nvml_total(name):
    pool = machine_pool(MACHINES / name)
    assert pool.bytes == 102_625_181_696 and pool.kind.startswith("coherent")
    assert pool.source.startswith("GPU 0 (NVIDIA GH200 480GB) memory total from NVML")


def test_the_default_pool_of_a_discrete_gpu_and_of_the_cpu_backend(tmp_path):
    h200 = {"name": "NVIDIA H200", "memory": {"total": H200_NVML_TOTAL, "used": 0}}
    discrete = recorded_machine(tmp_path / "h200", {0: ("0-15", 32000000)}, {"devices": [h200, h200]})
    pool = machine_pool(discrete)
    assert (pool.bytes, pool.kind) == (H200_NVML_TOTAL, "discrete") and "GPU 0 of 2 (NVIDIA H200)" in pool.source
    two_nodes = {0: ("0-7", 16000000), 1: ("8-15", 16500000)}
    cpu = machine_pool(recorded_machine(tmp_path / "cpu", two_nodes, {"unavailable": "no driver"}))
    assert (cpu.bytes, cpu.kind) == (16000000 * 1024, "cpu") and "NUMA node 0 (the first node with CPUs)" in cpu.source
    flat = machine_pool(recorded_machine(tmp_path / "flat", {}, {"unavailable": "no driver"}))
    assert flat.bytes == 32000000 * 1024 and "no NUMA node listed" in flat.source


def run_predict(*args: str):
    from click.testing import CliRunner

    from kvprobe.cli import main

    return CliRunner().invoke(main, ["predict", str(ROOT / "models.yaml"), *args])


def test_a_bare_number_for_memory_is_refused_with_every_other_problem():
    done = run_predict("--memory", "119.6")
    assert done.exit_code == 2
    assert "--memory '119.6' has no unit: write it as 119.6g or 119.6GiB" in done.output
    both = run_predict("--memory", "119.6", "--from", "no-such-result.json")
    assert both.exit_code == 2 and "has no unit" in both.output and "no-such-result.json" in both.output
    assert run_predict("--memory", "119.6GiB").exit_code == 0


def test_json_holds_every_row_exact_the_verdicts_and_the_pool():
    done = run_predict("--memory", "119.6g", "--json")
    assert done.exit_code == 0, done.output
    document = json.loads(done.output)
    assert document["pool"] == {
        "bytes": parse_size("119.6g"),
        "kind": "given",
        "source": "--memory 119.6g",
        "display": "119.60 GiB",
    }
    models = {m["model"]: m for m in document["models"]}
    assert len(models) == 5 and models["qwen2.5-72b-instruct"]["verdict"] == "does not fit"
    seven = models["deepseek-r1-distill-qwen-7b"]
    assert seven["verdict"] == "fits" and seven["bytes_per_token"]["in_a_block"] == 57_344
    for key in ("budget_bytes", "kv_bytes", "blocks", "tokens", "weight_bytes", "bytes_per_block"):
        assert isinstance(seven[key], int)
    assert seven["tokens"] == seven["blocks"] * 16 and seven["display"]["tokens"] == significant(seven["tokens"])
    assert models["gpt-oss-120b"]["bytes_per_token"] == {
        "in_a_block": 36_864,
        "long_context": 36_864,
        "all_layers": 73_728,
    }
    assert document["measured_error"]["high"] == MEASURED_ERROR.high
    assert document["not_included"] == ["activation peak", "non-torch memory", "engine overheads"]


def test_without_memory_the_machines_pool_is_used_and_named(monkeypatch):
    import kvprobe.output.prediction

    spark = machine_pool(MACHINES / "dgx-spark-native")
    monkeypatch.setattr(
        kvprobe.output.prediction, "machine_pool", lambda: spark
    )  # stand-in: a simulated DGX Spark (SOURCES.md)
    done = run_predict("--only", "qwen2.5-72b-instruct-fp8")
    assert done.exit_code == 0, done.output
    assert f"a pool of {spark.bytes / GIB:.2f} GiB" in done.output
    assert "Pool: MemTotal of /proc/meminfo: unified memory" in done.output


def test_names_and_figures_are_whole_at_80_columns():
    from rich.console import Console

    from kvprobe.output.prediction import PredictedModel, print_predictions

    pool = Pool(int(119.6 * GIB), "given", "--memory 119.6g")
    shipped = ["deepseek-r1-distill-qwen-7b", "qwen2.5-72b-instruct", "gpt-oss-120b"]
    models = [*shipped, "qwen2.5-72b-instruct-fp8"]
    rows = []
    for name, quantization in [(name, None) for name in shipped] + [("qwen2.5-72b-instruct", "fp8")]:
        prediction = predict(name + ("-fp8" if quantization else ""), config(name), quantization=quantization)
        rows.append(PredictedModel(prediction, assess(prediction, pool.bytes, 0.9, 8192)))
    console = Console(width=80, force_terminal=True, color_system=None, record=True)
    print_predictions(console, rows, pool, from_result=False)
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= 80
    table_lines = [line for line in text.splitlines() if line.startswith(" ")]
    for name in models:
        assert sum(line.split()[0] == name for line in table_lines if line.split()) == 2  # in both tables
    for row in rows:
        assert significant(row.assessment.tokens) in text


def test_help_shows_defaults_units_and_an_example():
    from click.testing import CliRunner

    from kvprobe.cli import main

    text = " ".join(CliRunner().invoke(main, ["predict", "--help"]).output.split())
    assert "[default: (this machine's pool)]" in text and "[default: (each model's own)" in text
    assert "powers of 1024" in text and "kvprobe predict models.yaml --memory 119.6g" in text
