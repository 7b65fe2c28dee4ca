"""The TensorRT-LLM adapter: its log parser on public log excerpts (tests/data/trtllm, each citing its
source), its LLM API arguments, its failure classes, the worker's protocol against a recorded-engine
STAND-IN (tests/data/trtllm/stand_in: not TensorRT-LLM), and `measure` refusing a models file whose
engine is not installed. Not run against a real TensorRT-LLM here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kvprobe.cli import main
from kvprobe.config import load_models
from kvprobe.engines import engine_unavailable, get_engine
from kvprobe.engines.sizing import TrtllmInputs, check_trial, describe
from kvprobe.engines.trtllm import TrtllmEngine
from kvprobe.engines.vllm import Classification
from kvprobe.measure.request import MeasureRequest, SearchSettings
from kvprobe.results.schema import WorkerResult
from kvprobe.trial.judge import Observed, judge
from kvprobe.units import GIB
from synthetic import documents
from synthetic import trial as synthetic_trial

DATA = Path(__file__).parent / "data" / "trtllm"
SRC = Path(__file__).parents[1] / "src"


def log(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.log")))
def test_each_fixture_cites_its_source(name):
    first = log(name).splitlines()[0]
    assert first.startswith("# Source: github.com/") and "TensorRT-LLM" in first


def test_peak_line_of_1_1_0rc3_on_a_dgx_spark():
    report = TrtllmEngine().memory_report(log("trtllm-1.1.0rc3-dgx-spark.log"))
    assert report.peak_bytes == 113.65 * GIB
    assert report.kv_estimate_bytes == 5.95 * GIB
    assert report.kv_fraction_logged == 0.8999999761581421
    assert report.kv_bytes_per_token == 73728
    assert report.device_total_bytes == 119.70 * GIB
    assert report.temporary_kv_bytes == 0.56 * GIB
    # the last allocation is the final cache, not the profiling pass's 0.56 GiB
    assert report.kv_cache_bytes == 5.95 * GIB
    assert report.kv_cache_tokens_logged == 86720
    assert report.weights_bytes == 63.52 * GIB
    assert report.activation_peak_bytes == 0.85 * GIB
    assert report.non_torch_bytes == 49.28 * GIB


def test_its_equation_reproduces_its_kv_within_the_log_rounding():
    report = TrtllmEngine().memory_report(log("trtllm-1.1.0rc3-dgx-spark.log"))
    inputs = TrtllmInputs(
        report.kv_fraction_logged,
        int(report.device_total_bytes),
        int(report.peak_bytes),
        int(report.temporary_kv_bytes),
    )
    # three inputs each printed to 0.005 GiB, times the fraction, plus the output's own 0.005 GiB
    bound = (3 * 0.005 * 0.9 + 0.005) * GIB
    assert abs(inputs.predict().kv_bytes - report.kv_cache_bytes) <= bound


def test_allocation_lines_of_1_2_0rc1_and_0_20_0():
    assert TrtllmEngine().memory_report(log("trtllm-1.2.0rc1-issue-8961.log")).kv_cache_tokens_logged == 8256
    report = TrtllmEngine().memory_report(log("trtllm-0.20.0-issue-6294-first-comment.log"))
    assert report.kv_cache_bytes == 52.51 * GIB
    assert report.kv_cache_tokens_logged == 860320
    assert report.peak_bytes is None  # no peak line in that excerpt: nothing invented


def test_the_older_prefetch_line_gives_no_size():
    report = TrtllmEngine().memory_report(log("trtllm-0.20.0-issue-6294.log"))
    assert report.prefetched_checkpoint_bytes is None
    assert report.kv_cache_bytes is None


def test_cpp_sizing_line():
    report = TrtllmEngine().memory_report(log("trtllm-issue-4275-cpp.log"))
    assert report.free_at_sizing_bytes == 17.83 * GIB
    assert report.device_total_bytes == 31.84 * GIB
    assert report.kv_cache_bytes == 16.05 * GIB


# The other versions of the peak line, built from the format strings in TensorRT-LLM's
# tensorrt_llm/_torch/pyexecutor/_util.py (no public log of them was found): constructed, not recorded.
CONSTRUCTED_PEAK_LINES = {
    "early": "Peak memory during memory usage profiling (torch + non-torch): 20.00 GiB, "
    "available KV cache memory when calculating max tokens: 50.40 GiB",
    "fraction": "Peak memory during memory usage profiling (torch + non-torch): 20.00 GiB, "
    "available KV cache memory when calculating max tokens: 50.40 GiB, fraction is set 0.9, kv size is 131072",
    "current": "Peak memory during memory usage profiling (torch + non-torch): 20.00 GiB, "
    "available KV cache memory when calculating max tokens: 50.40 GiB, fraction is set 0.9, kv size per token "
    "is 131072. device total memory 76.00 GiB, temporary kv cache memory during profiling 0.00 GiB",
}


@pytest.mark.parametrize("variant", CONSTRUCTED_PEAK_LINES)
def test_peak_line_versions_from_the_source_format_strings(variant):
    report = TrtllmEngine().memory_report(CONSTRUCTED_PEAK_LINES[variant])
    assert (report.peak_bytes, report.kv_estimate_bytes) == (20 * GIB, 50.40 * GIB)
    assert report.kv_bytes_per_token == (None if variant == "early" else 131072)
    assert report.device_total_bytes == (76 * GIB if variant == "current" else None)


def test_prefetch_line_from_the_weight_loader_format():
    # weight_loader.py: f"Prefetching {prefetch_size / (1024**3):.2f}GB checkpoint files." (constructed)
    report = TrtllmEngine().memory_report("[TRT-LLM] [I] Prefetching 15.26GB checkpoint files.")
    assert report.prefetched_checkpoint_bytes == 15.26 * GIB


def test_failure_classes():
    engine = TrtllmEngine()
    spark = log("trtllm-1.1.0rc3-dgx-spark.log")
    assert engine.classify(spark).outcome == "kv-too-small"  # the window shrunk to what the cache holds
    oom = "RuntimeError: [TensorRT-LLM][ERROR] CUDA runtime error in ::cudaMalloc(ptr, n): out of memory"
    assert engine.classify(oom).outcome == "oom"
    assert engine.classify("ValueError: something else\n").outcome == "error"


def test_engine_args_put_the_fraction_of_free_memory_in_kv_cache_config(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n- name: a\n  engine: tensorrt-llm\n  model: {model}\n  load_format: dummy\n  max_model_len: 4096\n"
        "  extra_engine_args: {enable_chunked_prefill: true}\n"
    )
    settings = load_models(models)[0]
    args = get_engine(settings.engine).engine_args(settings, 0.85, kv_cache_memory_bytes=GIB, max_tokens=8192)
    assert args["backend"] == "pytorch" and args["max_seq_len"] == 4096 and args["load_format"] == "dummy"
    assert args["kv_cache_config"] == {"free_gpu_memory_fraction": 0.85, "max_gpu_total_bytes": GIB, "max_tokens": 8192}
    assert args["enable_chunked_prefill"] is True
    vllm_like = settings.model_copy(update={"engine": "vllm"})
    assert settings.settings_hash() != vllm_like.settings_hash()


def run_stand_in(tmp_path: Path, recorded_log: str = "trtllm-1.1.0rc3-dgx-spark.log"):
    """Runs trtllm_worker with tests/data/trtllm/stand_in first on the path: a STAND-IN that records
    the arguments and prints a recorded public log; it is not TensorRT-LLM."""
    spec, result, recorded = tmp_path / "spec.json", tmp_path / "result.json", tmp_path / "args.json"
    args = {"model": "m", "backend": "pytorch", "kv_cache_config": {"free_gpu_memory_fraction": 0.9}}
    spec.write_text(json.dumps({"engine_args": args, "workload": {"generate_tokens": 4}}))
    env = {
        **os.environ,
        "PYTHONPATH": f"{DATA / 'stand_in'}{os.pathsep}{SRC}",
        "STAND_IN_ARGS": str(recorded),
        "STAND_IN_LOG": recorded_log,
    }
    run = subprocess.run(
        [sys.executable, "-m", "kvprobe.engines.trtllm_worker", str(spec), str(result)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run, result, recorded


def test_worker_protocol_against_the_recorded_engine_stand_in(tmp_path):
    run, result, recorded = run_stand_in(tmp_path)
    phases = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("KVPROBE_PHASE")]
    assert phases == ["import", "engine_start", "ready", "generated", "done"]
    assert json.loads(recorded.read_text())["kv_cache_config"] == {"free_gpu_memory_fraction": 0.9}
    written = json.loads(result.read_text())
    assert written["versions"]["tensorrt_llm"] == "stand-in"
    assert TrtllmEngine().memory_report(run.stdout).kv_cache_tokens_logged == 86720


def test_the_worker_never_writes_its_result_through_a_planted_link(tmp_path):
    """The result's temporary file was opened by path: a link planted at it (as root) was written
    through. Both workers write it with worker_protocol.write_result."""
    victim = tmp_path / "victim.txt"
    victim.write_text("outside\n")
    (tmp_path / "result.json.tmp").symlink_to(victim)
    _, result, _ = run_stand_in(tmp_path)
    assert victim.read_text() == "outside\n"
    assert json.loads(result.read_text())["versions"]["tensorrt_llm"] == "stand-in"


def test_a_start_is_judged_by_the_block_count_its_log_prints(tmp_path):
    """TensorRT-LLM's LLM API hands no block count to its caller: the trial takes the one its C++ KV
    manager prints (0.19-era excerpt, issue #4275), through the stand-in worker, its result file as the
    runner reads it, and the judge."""
    run, result, _ = run_stand_in(tmp_path, "trtllm-issue-4275-cpp.log")
    report = TrtllmEngine().memory_report(run.stdout)
    assert (report.kv_blocks_logged, report.tokens_per_block_logged) == (8219, 32)
    seen = Observed(
        verdict=None,
        returncode=0,
        worker=WorkerResult.model_validate_json(result.read_bytes()),
        said=TrtllmEngine().classify(run.stdout),
        fill_target=None,
        kv_cache_memory_bytes=None,
        memory_report=report,
    )
    judged = judge(seen)
    assert (judged.outcome, judged.passed, judged.num_gpu_blocks, judged.block_size) == ("ok", True, 8219, 32)
    assert judged.kv_cache_tokens == 8219 * 32  # its "(263008)" of the allocation line
    assert judged.bytes_per_block is None and judged.kv_cache_bytes == round(16.05 * GIB)  # no per-token size printed


def test_bytes_per_block_from_the_size_per_token_it_prints():
    report = (
        TrtllmEngine()
        .memory_report(log("trtllm-1.1.0rc3-dgx-spark.log"))
        .model_copy(
            update={"kv_blocks_logged": 2710, "tokens_per_block_logged": 32}  # 86720 tokens / 32 (not in the excerpt)
        )
    )
    seen = Observed(None, 0, WorkerResult(), Classification("error", ""), None, None, report)
    judged = judge(seen)
    assert judged.bytes_per_block == 73728 * 32 and judged.kv_cache_bytes == 86720 * 73728


def test_its_equation_checks_a_trial_of_the_recorded_log():
    """check_trial chooses TensorRT-LLM's equation by the model's engine, from the log's own inputs."""
    report = TrtllmEngine().memory_report(log("trtllm-1.1.0rc3-dgx-spark.log"))
    trial = synthetic_trial(memory_report=report, kv_cache_bytes=int(report.kv_cache_bytes), num_gpu_blocks=None)
    check = check_trial(trial, documents()[0].environment, engine="tensorrt-llm")
    assert check.equation == "trtllm" and not check.missing
    assert check.formula.startswith("0.8999999761581421 x (")
    assert check.agrees, describe(check)
    as_vllm = check_trial(trial, documents()[0].environment)
    assert as_vllm.equation != "trtllm"


def test_the_physical_search_is_refused_for_tensorrt_llm_until_its_worker_fills(tmp_path, monkeypatch):
    """Its worker runs no fill test, so a kv_blocks trial could not vouch for a capacity. TensorRT-LLM is
    not installed here: `engine_unavailable` is patched to say it is (a stand-in for an installed one)."""
    from kvprobe.measure import session

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n- name: a\n  engine: tensorrt-llm\n  model: {model}\n  load_format: dummy\n  max_model_len: 64\n"
    )
    monkeypatch.setattr(session, "engine_unavailable", lambda engine: None)
    request = MeasureRequest(models_file=str(models), search=SearchSettings(searches=("reference", "kv_blocks")))
    (problem,) = session.engine_problems(request, request.models())
    assert "model 'a': field 'engine': the physical-capacity search (kv_blocks) needs a fill test" in problem
    fine = MeasureRequest(models_file=str(models), search=SearchSettings(searches=("reference", "u_max")))
    assert session.engine_problems(fine, fine.models()) == []


def test_measure_refuses_an_engine_that_is_not_installed(tmp_path):
    assert engine_unavailable("tensorrt-llm") is not None, "this test needs a machine without TensorRT-LLM"
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n- name: a\n  engine: tensorrt-llm\n  model: {model}\n  load_format: dummy\n  max_model_len: 64\n"
    )
    outcome = CliRunner().invoke(main, ["measure", str(models)])
    assert outcome.exit_code == 2
    problems = [line for line in outcome.output.splitlines() if line.strip()]
    assert len(problems) == 1
    assert "model 'a': field 'engine': TensorRT-LLM (engine: tensorrt-llm) is not installed" in problems[0]
    assert "nvcr.io/nvidia/tensorrt-llm/release" in problems[0]
