"""How a trial ended, judged from what was observed (trial.judge): each rule on its own."""

from __future__ import annotations

import pytest

from kvprobe.engines.vllm import Classification
from kvprobe.results.schema import EngineMemoryReport, FillResult, WorkerResult
from kvprobe.trial.judge import Observed, judge

STARTED = WorkerResult(num_gpu_blocks=100, block_size=16, bytes_per_block=1024)
NOTHING_SAID = Classification("error", "no output")


def seen(**changes) -> Observed:
    fields = {
        "verdict": None,
        "returncode": 0,
        "worker": STARTED,
        "said": NOTHING_SAID,
        "fill_target": None,
        "kv_cache_memory_bytes": None,
        "memory_report": EngineMemoryReport(),
    }
    return Observed(**{**fields, **changes})


def test_a_start_that_came_up_passes_with_its_figures_from_blocks():
    judged = judge(seen())
    assert (judged.outcome, judged.passed) == ("ok", True)
    assert (judged.kv_cache_bytes, judged.kv_cache_tokens) == (100 * 1024, 1600)


def test_the_probes_own_verdict_wins():
    judged = judge(seen(verdict=("guard", "host memory below the floor")))
    assert (judged.outcome, judged.reason, judged.passed) == ("guard", "host memory below the floor", False)
    assert judged.kv_cache_bytes is None


@pytest.mark.parametrize(
    ("said", "outcome"),
    [(Classification("oom", "CUDA out of memory"), "oom"), (NOTHING_SAID, "killed")],
)
def test_a_signalled_worker_is_killed_unless_the_engine_said_why(said, outcome):
    judged = judge(seen(returncode=-9, worker=WorkerResult(), said=said))
    assert judged.outcome == outcome and not judged.passed


def test_a_failed_start_takes_the_engines_class():
    said = Classification("config-error", "Value error, max_num_batched_tokens (2048) ...")
    judged = judge(seen(returncode=1, worker=WorkerResult(), said=said))
    assert (judged.outcome, judged.reason) == ("config-error", said.reason)


def test_a_fill_short_of_its_target_is_ok_but_does_not_pass():
    worker = STARTED.model_copy(
        update={
            "fill": FillResult(
                requests=1,
                prompt_len=1,
                output_len=1,
                capacity_tokens=1,
                reachable_fraction=1.0,
                seconds=1.0,
                peak_kv_usage=0.5,
                peak_running=1,
            )
        }
    )
    judged = judge(seen(worker=worker, fill_target=0.95))
    assert judged.outcome == "ok" and not judged.passed and "below the 95% target" in judged.reason


def test_a_trial_asked_for_a_fill_that_ran_none_does_not_pass():
    """TensorRT-LLM's worker has no fill test: its physical-capacity trials passed as "started"."""
    judged = judge(seen(fill_target=0.95))
    assert judged.outcome == "ok" and not judged.passed and judged.reason.startswith("no fill test ran")
    assert judge(seen()).passed  # without a fill target, a start that came up passes


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"largest_sample_gap_s": 7.5}, "no memory sample for 7.5 s"),
        ({"worker": STARTED.model_copy(update={"ready_gate_expired": True})}, "stopped waiting for the probe"),
    ],
)
def test_a_start_the_probe_could_not_watch_is_stalled_not_ok(changes, says):
    """A probe stopped for over a minute recorded such a trial `ok` with collapsed phases."""
    judged = judge(seen(**changes))
    assert judged.outcome == "stalled" and not judged.passed and says in judged.reason
