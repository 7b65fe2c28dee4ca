"""The physical-capacity search's engine settings, and a search that meets an engine's refusal.

A model with little KV per token needs many full-length requests at once to fill its cache; the fill
raises max_num_seqs to that many, and vLLM refuses a max_num_seqs above max_num_batched_tokens (its
own SchedulerConfig check). The settings are checked here by vLLM's own config code; the searches'
reaction to a refused configuration by a stand-in engine (RefusingEngine) that refuses the way vLLM
does, with vLLM's own words.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from rich.console import Console

from conftest import MODELS, kvprobe, load_results, needs_engine, tiny_models_file
from kvprobe.config import load_models
from kvprobe.engines import get_engine
from kvprobe.measure.build import build_document
from kvprobe.measure.executors import JournaledExecutor
from kvprobe.measure.model import ModelSearches, fill_scheduler_overrides
from kvprobe.measure.options import MeasureOptions
from kvprobe.output.progress import TrialProgress
from kvprobe.report.pairing import group_results
from kvprobe.results.schema import TrialRecord, WorkerResult
from kvprobe.results.store import Journal
from kvprobe.units import MIB
from synthetic import UNGUARDED, documents

# vLLM 0.32 (CPU build), EngineArgs(max_num_seqs=36485).create_engine_config(), as it printed it.
REFUSAL_LOG = """\
(MainProcess pid=8963) INFO 11-30 14:36:39 [scheduler.py:307] Chunked prefill is enabled with max_num_batched_tokens=2048.
pydantic_core._pydantic_core.ValidationError: 1 validation error for SchedulerConfig
  Value error, max_num_batched_tokens (2048) must be greater than or equal to max_num_seqs (36485). [type=value_error, input_value=ArgsKwargs((), {'runner_t..., 'stream_interval': 1}), input_type=ArgsKwargs]
    For further information visit https://errors.pydantic.dev/2.14/v/value_error
"""


def test_the_fill_raises_the_batched_token_limit_with_its_sequences():
    assert fill_scheduler_overrides(36485, None, 2048) == {"max_num_seqs": 36485, "max_num_batched_tokens": 36485}
    assert fill_scheduler_overrides(100, 256, 2048) == {"max_num_seqs": 256}
    assert fill_scheduler_overrides(3000, None, None) == {"max_num_seqs": 3000}


CHECK = """
import json, sys
from vllm.engine.arg_utils import EngineArgs
args = json.loads(sys.argv[1])
try:
    config = EngineArgs(**args).create_engine_config()
    print(json.dumps([config.scheduler_config.max_num_seqs, config.scheduler_config.max_num_batched_tokens]))
except Exception as exc:
    print(json.dumps(str(exc)))
"""


@needs_engine
def test_vllm_accepts_the_fill_settings_it_refused_before(tmp_path):
    """The settings the kv_blocks trial gives vLLM for 36,485 requests, through vLLM's own config check
    (no engine start): refused without the batched-token limit, accepted with it."""
    (settings,) = load_models(MODELS, only=["tiny-llama"])
    args = get_engine().engine_args(settings, kv_cache_memory_bytes=64 * MIB)

    def check(overrides: dict):
        done = subprocess.run(
            [sys.executable, "-c", CHECK, json.dumps({**args, **overrides})],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    before = check({"max_num_seqs": 36485})
    assert "must be greater than or equal to max_num_seqs (36485)" in before
    assert check(fill_scheduler_overrides(36485, settings.max_num_seqs, 2048)) == [36485, 36485]


def test_a_refused_configuration_is_its_own_outcome_with_vllms_reason():
    said = get_engine().classify(REFUSAL_LOG)
    assert said.outcome == "config-error"
    assert said.reason.startswith("Value error, max_num_batched_tokens (2048) must be greater")


class RefusingEngine:
    """A stand-in engine: passes utilization starts up to 0.7 and refuses every explicit KV budget
    the way vLLM refused the fill's settings (outcome and reason as its classifier reads REFUSAL_LOG)."""

    def __init__(self):
        self.started: list[str] = []

    def run(self, request) -> TrialRecord:
        self.started.append(request.search)
        refused = request.kv_cache_memory_bytes is not None
        ok = not refused and request.utilization <= 0.7
        said = get_engine().classify(REFUSAL_LOG) if refused else None
        blocks = int(request.utilization * 1000) if ok else None
        return TrialRecord(
            **request.recorded(),
            outcome="ok" if ok else (said.outcome if said else "startup-check"),
            reason=said.reason if said else "",
            returncode=0 if ok else 1,
            started_at=0.0,
            wall_s=1.0,
            teardown_s=0.0,
            baseline_restored=True,
            passed=ok,
            num_gpu_blocks=blocks,
            block_size=16,
            bytes_per_block=MIB if ok else None,
            kv_cache_bytes=blocks * MIB if ok else None,
            worker=WorkerResult(max_num_seqs=256, max_num_batched_tokens=2048) if ok else WorkerResult(),
        )


def test_a_search_that_meets_a_refused_configuration_stops_with_one_sentence(tmp_path):
    """Before, each refusal read as "does not fit": the budget was halved six times down to 0 GiB."""
    (settings,) = load_models(MODELS, only=["tiny-llama"])
    options = MeasureOptions(
        tolerance=0.01, utilization_range=(0.05, 0.99), searches=("reference", "u_max", "kv_blocks")
    )
    engine = RefusingEngine()
    executor = JournaledExecutor(
        Journal(tmp_path / "journal.jsonl"), engine, TrialProgress(Console(file=io.StringIO()))
    )
    found = ModelSearches(settings, 1, executor, get_engine(), options, UNGUARDED).run()
    assert engine.started.count("kv_blocks") == 1
    (error,) = found.errors
    assert error.startswith(
        "kv_blocks: the engine refused the settings it was given (the models file's and kvprobe's); the searches stopped"
    )
    assert "max_num_batched_tokens (2048) must be greater than or equal to max_num_seqs" in error
    doc = build_document(found, settings, options, UNGUARDED, documents()[0].environment, "run", 1, 0.0, replayed=0)
    assert doc.status == "failed" and doc.u_max is not None and doc.kv_at_u_max is not None


def test_a_run_whose_later_search_failed_is_still_compared_for_what_it_measured():
    """`container --both` said "no native counterpart" when one side's physical search had failed."""
    native, container = documents()[0], documents()[-1]
    assert (native.label, container.label) == ("native", "container")
    failed = native.model_copy(
        update={"status": "failed", "errors": ["physical KV capacity: no budget passed"], "physical_capacity": None}
    )
    groups, problems = group_results([failed, container])
    assert problems == []
    (group,) = groups
    assert group.matched and group.runs["native"] == [failed]
    empty = failed.model_copy(update={"reference": None, "kv_at_u_max": None})
    groups, problems = group_results([empty, container])
    assert not any(g.matched for g in groups)
    assert any("incomplete" in p for p in problems)


@pytest.mark.parametrize("outcome", ["guard", "timeout", "killed"])
def test_a_reference_start_that_measured_nothing_fails_the_result(tmp_path, outcome):
    """A reference start ended by the guard, the timeout or a kill gave status complete and exit 0."""

    class EndedEngine(RefusingEngine):
        def run(self, request) -> TrialRecord:
            record = super().run(request)
            if request.search == "reference":
                return record.model_copy(update={"outcome": outcome, "passed": False, "num_gpu_blocks": None})
            return record

    (settings,) = load_models(MODELS, only=["tiny-llama"])
    options = MeasureOptions(tolerance=0.01, utilization_range=(0.05, 0.99), searches=("reference",))
    executor = JournaledExecutor(
        Journal(tmp_path / "journal.jsonl"), EndedEngine(), TrialProgress(Console(file=io.StringIO()))
    )
    found = ModelSearches(settings, 1, executor, get_engine(), options, UNGUARDED).run()
    assert found.errors == [f"reference start measured nothing: {outcome}"]


# vLLM 0.32 (CPU build), a start with block_size 7, as its worker printed it (the config accepted it).
BLOCK_SIZE_LOG = """\
(Worker pid=2820) ERROR 11-30 18:16:25 [v1/executor/multiproc_executor.py:1063] ValueError: No common block size for 7 (CPU_ATTN: [MultipleOf(32)]).
(EngineCore pid=2807) ERROR 11-30 18:16:28 [v1/executor/multiproc_executor.py:315] Worker proc VllmWorker-0 died unexpectedly (exit code: None), shutting down executor.
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""


def test_a_block_size_the_attention_backend_refuses_is_a_configuration_error():
    """It read as "killed" (the worker's exit line) and sent the u_max search down to its floor."""
    said = get_engine().classify(BLOCK_SIZE_LOG)
    assert said.outcome == "config-error" and "No common block size for 7" in said.reason


@needs_engine
@pytest.mark.engine
def test_block_size_7_stops_the_searches_after_one_start_with_vllms_reason(tmp_path):
    """The issue's case on the real CPU engine: one start, vLLM's reason, exit 1, no search steered."""
    models = tiny_models_file(tmp_path, block_size=7)
    out = tmp_path / "out"
    done = kvprobe("measure", str(models), "--out", str(out), "--searches", "reference,u_max", check=False)
    (result,) = load_results(out)
    (trial,) = result["trials"]
    assert trial["search"] == "reference" and trial["outcome"] == "config-error", trial["reason"]
    assert "No common block size for 7" in trial["reason"]
    assert done.returncode == 1 and result["status"] == "failed" and result["u_max"] is None
    assert any(
        "the engine refused the settings it was given (the models file's and kvprobe's)" in error
        for error in result["errors"]
    ), result
