"""Each trial's KV beside its engine's sizing equation (engines.sizing.check_trial), the inputs the
sampler records for it (Shmem, NVML free per device), and the "why" a report draws from it
(report.sizing). Built on the committed CPU experiment's results (vLLM 0.32, CPU backend); the
integrated-GPU and CUDA paths on those CPU trials placed in a SIMULATED machine (the hand-written
tests/data/machines/dgx-spark-native, tests/data/machines/SOURCES.md) with a made-up CUDA total."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from conftest import ROOT
from kvprobe.engines.sizing import LOG_ROUNDING_BYTES, SIZING_MOMENT, check_trial, describe
from kvprobe.environment.gpu import Nvml
from kvprobe.report.sizing import all_checks, decompose_runs, run_check
from kvprobe.report.sizing_layout import sizing_blocks
from kvprobe.results.schema import CgroupMemory, ResultDocument
from kvprobe.results.store import ResultStore, trial_log
from kvprobe.trial.monitor import MemorySampler

EXPERIMENT = ROOT / "docs" / "experiments" / "cpu-2026-11-26" / "results"


@pytest.fixture(scope="module")
def runs() -> dict[str, list[ResultDocument]]:
    loaded, problems = ResultStore(EXPERIMENT).load_all()
    assert not problems
    grouped: dict[str, list[ResultDocument]] = {}
    for _, doc in loaded:
        grouped.setdefault(doc.condition, []).append(doc)
    return grouped


def reference_trial(doc: ResultDocument):
    assert doc.reference is not None
    return next(t for t in doc.trials if t.number == doc.reference.trial)


def native(runs, repeat: int) -> ResultDocument:
    return next(doc for doc in runs["native"] if doc.repeat == repeat)


def test_cpu_check_is_ceil_utilization_times_node_total_less_the_logged_resident_memory(runs):
    doc = native(runs, 2)
    trial = reference_trial(doc)
    check = check_trial(trial, doc.environment)
    assert check is not None and check.equation == "vllm-cpu" and not check.missing
    total = doc.environment.host_memory["MemTotal"]
    rss = round(trial.memory_report.non_kv_bytes)
    assert check.inputs["utilization"] == trial.utilization
    assert check.predicted_kv_bytes == math.ceil(total * trial.utilization) - rss
    assert check.engine_kv_bytes == trial.num_gpu_blocks * trial.bytes_per_block
    assert check.residual_bytes == check.engine_kv_bytes - check.predicted_kv_bytes
    # two-decimal GiB on the resident memory, and vLLM floors the budget to whole blocks
    assert check.tolerance_bytes == LOG_ROUNDING_BYTES + trial.bytes_per_block
    assert check.agrees is True and "agrees" in describe(check)
    assert check.moment == SIZING_MOMENT and check.at_sizing == trial.memory.phases[SIZING_MOMENT]


def test_the_first_native_cell_disagrees_because_the_engine_read_a_smaller_node_total(runs):
    """Recorded in the experiment's README: vLLM's log gave the node 21.09 GiB in that cell, while
    MemTotal read 23.54 GiB when the run started (the VM's balloon): the check must not agree."""
    doc = native(runs, 1)
    check = run_check(doc)
    engine_total = doc.reference and reference_trial(doc).memory_report.budget_total_bytes
    assert engine_total == pytest.approx(21.09 * 2**30)
    assert check.agrees is False
    expected = 0.5 * (engine_total - doc.environment.host_memory["MemTotal"])
    assert check.residual_bytes == pytest.approx(expected, abs=check.tolerance_bytes + 0.005 * 2**30)


def test_a_hidden_cgroup_limit_is_not_an_input_and_the_source_says_why(runs):
    doc = runs["hidden-cgroup"][0]
    check = next(c for c in all_checks(doc) if c.predicted_kv_bytes is not None)
    assert "cgroup_limit_bytes" not in check.inputs
    assert check.sources["cgroup_limit_bytes"].startswith("none visible: the 8.00 GiB limit")


def test_a_limit_at_the_cgroup_root_clamps_the_total_as_vllm_reads_it(runs):
    doc = native(runs, 2)
    limit = 8 * 1024**3
    seen = doc.environment.model_copy(
        update={"cgroup": CgroupMemory(version="v2", path="/sys/fs/cgroup", limit_bytes=limit)}
    )
    trial = reference_trial(doc)
    check = check_trial(trial, seen)
    assert check.inputs["cgroup_limit_bytes"] == limit
    assert check.predicted_kv_bytes == math.ceil(limit * trial.utilization) - round(trial.memory_report.non_kv_bytes)
    assert check.agrees is False and "DISAGREES" in describe(check)


def test_a_residual_beyond_the_rounding_is_called_a_disagreement(runs):
    doc = native(runs, 2)
    trial = reference_trial(doc)
    off = trial.memory_report.model_copy(update={"non_kv_bytes": trial.memory_report.non_kv_bytes + 2**30})
    check = check_trial(trial.model_copy(update={"memory_report": off}), doc.environment)
    assert check.residual_bytes == pytest.approx(2**30 + check_trial(trial, doc.environment).residual_bytes, abs=1)
    assert check.agrees is False


def test_a_result_without_the_logged_inputs_names_what_it_lacks(runs):
    doc = native(runs, 2)
    trial = reference_trial(doc)
    bare = trial.model_copy(update={"memory_report": trial.memory_report.model_copy(update={"non_kv_bytes": None})})
    check = check_trial(bare, doc.environment)
    assert check.missing == ["process_rss_bytes"] and check.predicted_kv_bytes is None and check.agrees is None
    assert "lacks process_rss_bytes" in describe(check)


def test_an_explicit_budget_is_its_own_prediction(runs):
    doc = native(runs, 2)
    trial = reference_trial(doc)
    explicit = trial.model_copy(update={"kv_cache_memory_bytes": trial.kv_cache_bytes})
    check = check_trial(explicit, doc.environment)
    assert check.equation == "explicit" and check.residual_bytes == 0


def test_a_trial_without_kv_has_no_check(runs):
    doc = native(runs, 2)
    assert check_trial(reference_trial(doc).model_copy(update={"kv_cache_bytes": None}), doc.environment) is None


def test_old_results_get_their_checks_computed_and_recorded_ones_are_used_as_they_are(runs):
    doc = native(runs, 2)
    assert not doc.sizing_checks  # made before the checks were recorded
    computed = run_check(doc)
    assert computed is not None and computed.trial == doc.reference.trial
    marked = computed.model_copy(update={"formula": "recorded"})
    assert run_check(doc.model_copy(update={"sizing_checks": [marked]})).formula == "recorded"


def test_decomposition_sums_to_the_engine_difference_and_a_container_limit_is_seen(runs):
    """In podman's cgroup namespace the 8 GiB limit is at the mount's root: vLLM clamps its total."""
    split = decompose_runs(runs["native"], runs["container-limit"])
    assert split is not None and split.equation == "vllm-cpu" and split.n_before == 3
    difference = split.engine_kv_after_bytes - split.engine_kv_before_bytes
    assert sum(split.contributions.values()) + split.residual_bytes == pytest.approx(difference)
    assert split.contributions["cgroup_limit_bytes"] == pytest.approx(0.5 * (8 * 2**30 - 23.54 * 2**30), rel=0.01)
    held = decompose_runs(runs["native"], runs["hold-memory"])  # 8 GiB held by a helper: no input of vLLM's
    assert held is not None and "cgroup_limit_bytes" not in held.contributions
    rendered = sizing_blocks(split, "native", "container-limit")
    assert "By the engine's sizing equation" in rendered[0].spans[0].text
    assert rendered[1].rows[-1][0] == "the engine's mean KV difference"


def test_no_decomposition_without_checks_on_both_sides(runs):
    assert decompose_runs(runs["native"], []) is None
    assert sizing_blocks(None, "native", "x") == []


class _Memory(SimpleNamespace):
    pass


class _FreeNvml:
    """A stand-in for pynvml with one discrete device (used and free), for the sampler only."""

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetMemoryInfo(self, handle):
        return _Memory(total=80, used=30, free=50)


def test_sampler_records_shmem_and_device_free(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text(
        "MemTotal: 1000 kB\nMemFree: 400 kB\nMemAvailable: 600 kB\nCached: 300 kB\nShmem: 120 kB\n"
    )
    with Nvml(_FreeNvml()) as nvml:
        sample = MemorySampler(nvml, tmp_path).sample()
    assert sample.shmem == 120 * 1024 and sample.host_free == 400 * 1024
    assert sample.device_free == [50] and sample.gpu_used == 30


def test_cuda_check_on_the_committed_h100_run_uses_cudas_total_and_the_logged_non_kv():
    loaded, _ = ResultStore(ROOT / "docs" / "gpu-h100" / "results").load_all()
    doc = next(d for _, d in loaded if d.condition == "native")
    check = run_check(doc)
    trial = reference_trial(doc)
    assert check.equation == "vllm-cuda" and check.sources["total_bytes"].startswith("cudaMemGetInfo")
    expected = math.ceil(doc.cuda_view.total_bytes * trial.utilization) - round(trial.memory_report.non_kv_bytes)
    assert check.predicted_kv_bytes == expected and check.agrees is True
    assert check.at_sizing is not None and check.at_sizing.shmem is None  # recorded before Shmem was


def test_an_integrated_gpu_takes_memavailable_from_the_phase_samples_and_names_what_it_lacks(runs):
    from kvprobe.environment.facts import collect

    spark = collect(recorded=ROOT / "tests" / "data" / "machines" / "dgx-spark-native")
    doc = native(runs, 2)
    trial = reference_trial(doc)
    check = check_trial(trial, spark, cuda_total_bytes=128 * 2**30)
    assert check.equation == "vllm-integrated"
    assert check.inputs["available_at_create_bytes"] == trial.memory.phases["engine_start"].host_available
    assert check.inputs["available_after_profile_bytes"] == trial.memory.phases[SIZING_MOMENT].host_available
    assert check.missing == ["transient_peak_bytes"]  # the CPU build's log prints no torch peak


GRAPHS = ROOT / "docs" / "gpu-graphs"


@pytest.mark.parametrize(
    ("results", "estimate_gib"),
    [("results-gpt-oss", 0.66), ("results-qwen72b-fp8", None)],
    ids=["gpt-oss-older-runner-estimate-applied", "72b-model-runner-v2-no-estimate"],
)
def test_vllms_cuda_graph_estimate_is_read_where_it_took_it_from_the_budget(results, estimate_gib):
    """Real vLLM 0.26 logs (H200, docs/gpu-graphs/): GPT-OSS-120B with CUDA graphs (vLLM's older model
    runner) logged its graph estimate beside "CUDA graph memory profiling is enabled" and took it from
    the KV budget, which its "Total non KV cache memory" leaves out; the 72B with graphs (Model Runner
    V2, which in 0.26 made no estimate) logged neither line."""
    from kvprobe.engines.vllm import VllmEngine

    loaded, _ = ResultStore(GRAPHS / results).load_all()
    (doc,) = [d for _, d in loaded if not d.settings["enforce_eager"]]
    for trial in (t for t in doc.trials if t.kv_cache_bytes):
        log = trial_log(GRAPHS / results, trial.log_path)
        assert log is not None
        report = VllmEngine().memory_report(log)
        assert report.non_kv_bytes == trial.memory_report.non_kv_bytes
        reread = trial.model_copy(update={"memory_report": report})
        check = check_trial(reread, doc.environment, doc.cuda_view.total_bytes)
        if estimate_gib is None:
            assert report.cudagraph_estimate_applied is None and "cudagraph_bytes" not in check.inputs
        else:
            assert report.cudagraph_estimate_bytes == estimate_gib * (1 << 30)
            assert check.inputs["cudagraph_bytes"] == report.cudagraph_estimate_bytes
            without = check_trial(trial, doc.environment, doc.cuda_view.total_bytes)  # as recorded: no estimate
            assert without.agrees is False and without.residual_bytes < -0.6 * (1 << 30)
        assert check.agrees is True, (check.residual_bytes, check.tolerance_bytes)


def test_an_estimate_applied_without_its_figure_is_a_missing_input_not_a_disagreement():
    """Model Runner V2 (vLLM 0.32, vllm/v1/worker/gpu/cudagraph_utils.py) takes its CUDA graph estimate
    from the budget and says so, without logging the figure: the check names the input it lacks.
    The log is a STAND-IN: the two lines vLLM's gpu_worker.py writes, with the committed H200 run's
    figures; no vLLM 0.32 GPU run was made here."""
    from kvprobe.engines.vllm import VllmEngine

    loaded, _ = ResultStore(GRAPHS / "results-qwen72b-fp8").load_all()
    (doc,) = [d for _, d in loaded if not d.settings["enforce_eager"]]
    trial = next(t for t in doc.trials if t.kv_cache_bytes)
    log = trial_log(GRAPHS / "results-qwen72b-fp8", trial.log_path)
    assert log is not None
    said = log + (
        "INFO [gpu_worker.py] CUDA graph memory profiling is enabled (default since v0.21.0). The current "
        "--gpu-memory-utilization=0.9000 is equivalent to --gpu-memory-utilization=0.8953 without CUDA graph "
        "memory profiling.\n"
    )
    report = VllmEngine().memory_report(said)
    assert report.cudagraph_estimate_applied is True and report.cudagraph_estimate_bytes is None
    check = check_trial(trial.model_copy(update={"memory_report": report}), doc.environment, doc.cuda_view.total_bytes)
    assert check.missing == ["cudagraph_bytes"] and check.agrees is None and check.predicted_kv_bytes is None
