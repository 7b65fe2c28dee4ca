"""The utilization searches around a window with two edges, driven by a deterministic stand-in
for the engine: below 0.30 a start is refused for too little KV, above 0.70 for too much memory.

The real-engine counterpart is test_engine_window.py.
"""

import io

import pytest
from rich.console import Console

from conftest import MODELS
from kvprobe.config import load_models
from kvprobe.engines import get_engine
from kvprobe.measure.executors import JournaledExecutor
from kvprobe.measure.model import ModelSearches
from kvprobe.measure.options import MeasureOptions
from kvprobe.output.progress import TrialProgress
from kvprobe.results.schema import EngineMemoryReport, TrialRecord
from kvprobe.results.store import Journal
from kvprobe.units import GIB, MIB
from synthetic import UNGUARDED

LOW_EDGE, HIGH_EDGE = 0.30, 0.70


class WindowEngine:
    """Answers a start like vLLM would, from the utilization alone."""

    def __init__(self):
        self.started: list[float] = []

    def run(self, request) -> TrialRecord:
        u = request.utilization
        self.started.append(u)
        outcome = "kv-too-small" if u < LOW_EDGE - 1e-9 else "startup-check" if u > HIGH_EDGE + 1e-9 else "ok"
        return TrialRecord(
            number=request.number,
            search=request.search,
            utilization=u,
            kv_cache_memory_bytes=None,
            fill_target=None,
            outcome=outcome,
            reason=outcome,
            returncode=0 if outcome == "ok" else 1,
            started_at=0.0,
            wall_s=1.0,
            teardown_s=0.0,
            baseline_restored=True,
            passed=outcome == "ok",
        )


def measurement(tmp_path, reference: float, strategy: str = "bracketed"):
    (settings,) = load_models(MODELS, only=["tiny-llama"])
    settings = settings.model_copy(update={"gpu_memory_utilization": reference})
    engine = WindowEngine()
    options = MeasureOptions(tolerance=0.02, strategy=strategy)
    executor = JournaledExecutor(
        Journal(tmp_path / "journal.jsonl"), engine, TrialProgress(Console(file=io.StringIO()))
    )
    return ModelSearches(settings, 1, executor, get_engine(), options, UNGUARDED), engine


@pytest.mark.parametrize("strategy", ["bracketed", "bisection"])
def test_a_reference_refused_for_too_little_kv_moves_the_u_max_search_above_it(tmp_path, strategy):
    probe, engine = measurement(tmp_path, reference=0.10, strategy=strategy)
    assert probe.run_reference().outcome == "kv-too-small"
    result = probe.search_u_max(0.05, 0.99)
    assert result.passing == pytest.approx(HIGH_EDGE) and result.converged
    assert all(u > 0.10 for u in engine.started[1:])  # nothing below the refused reference


def test_a_refusal_for_too_little_kv_met_during_the_search_narrows_it_again(tmp_path):
    probe, engine = measurement(tmp_path, reference=0.50, strategy="bisection")
    result = probe.search_u_max(0.05, 0.45)  # the first midpoint, 0.24, is refused for too little KV
    assert engine.started[0] < LOW_EDGE
    assert result.passing == pytest.approx(0.45) and result.censored  # the window reaches past the range
    assert len(engine.started) == len(set(engine.started))  # no start repeated after a restart


def test_a_start_refused_for_too_much_memory_moves_the_u_min_search_below_it(tmp_path):
    probe, engine = measurement(tmp_path, reference=0.90)
    assert probe.run_reference().outcome == "startup-check"
    result = probe.search_u_min(0.05, 0.99)
    assert result.passing == pytest.approx(LOW_EDGE) and result.converged
    assert all(u < 0.90 for u in engine.started[1:])


def test_a_window_below_the_range_ends_without_a_boundary(tmp_path):
    probe, _ = measurement(tmp_path, reference=0.90)
    probe.run_reference()
    assert probe.search_u_max(0.75, 0.99).passing is None


class Thermometer:
    """NVML-shaped temperatures, one reading a call."""

    def __init__(self, readings):
        self.readings = list(readings)

    def temperature_c(self):
        return self.readings.pop(0)


def test_each_real_start_waits_for_the_cooldown_and_a_cool_gpu():
    from kvprobe.measure.executors import PreparedExecutor
    from kvprobe.trial.executor import TrialRequest

    engine, slept = WindowEngine(), []
    prepared = PreparedExecutor(
        engine, cooldown_s=30, max_gpu_temp_c=60, nvml=Thermometer([75, 61, 60, 55]), sleep=slept.append
    )
    for u in (0.4, 0.5):
        prepared.run(TrialRequest(number=1, search="manual", engine_args={}, utilization=u))
    assert engine.started == [0.4, 0.5]
    assert slept == [5, 5, 30]  # two 5 s waits for the GPU to cool, then the cooldown before the second start


class DiscreteGpuEngine:
    """An 80 GiB discrete GPU with 16 GiB outside the KV cache: a start passes from u = 0.22 (1 GiB
    of KV) to 0.98, an explicit budget up to CAPACITY bytes; each budget that passes would have run
    its fill test."""

    TOTAL, NON_KV, FREE, BYTES_PER_BLOCK = 80 * GIB, 16 * GIB, 79 * GIB, 2 * MIB
    CAPACITY = 62 * GIB + 950 * MIB  # the prediction (free - non-KV = 63 GiB) is 50 MiB high

    def __init__(self):
        self.fills = 0

    def run(self, request) -> TrialRecord:
        if request.kv_cache_memory_bytes is not None:
            kv = request.kv_cache_memory_bytes
            outcome = "ok" if kv <= self.CAPACITY else "oom"
            self.fills += outcome == "ok"
        else:
            kv = request.utilization * self.TOTAL - self.NON_KV
            too_much = request.utilization > 0.98 + 1e-9
            outcome = "oom" if too_much else "kv-too-small" if kv < GIB else "ok"
        ok = outcome == "ok"
        blocks = int(kv // self.BYTES_PER_BLOCK)
        report = EngineMemoryReport(
            free_at_start_bytes=self.FREE, non_kv_bytes=self.NON_KV, budget_total_bytes=self.TOTAL
        )
        return TrialRecord(
            **request.recorded(),
            outcome=outcome,
            reason=outcome,
            returncode=0 if ok else 1,
            started_at=0.0,
            wall_s=1.0,
            teardown_s=0.0,
            baseline_restored=True,
            passed=ok,
            num_gpu_blocks=blocks if ok else None,
            block_size=16,
            bytes_per_block=self.BYTES_PER_BLOCK if ok else None,
            kv_cache_bytes=blocks * self.BYTES_PER_BLOCK if ok else None,
            memory_report=report,
        )


def test_where_failures_are_cheap_the_kv_search_pays_for_one_fill(tmp_path):
    """A discrete GPU: a budget that does not fit fails at its allocation, one that fits runs the
    fill test (a minute or more). From above, the same capacity is found with one passing start."""
    found = {}
    for approach in ("from_below", "from_above"):
        (settings,) = load_models(MODELS, only=["tiny-llama"])
        settings = settings.model_copy(update={"gpu_memory_utilization": 0.9})
        engine = DiscreteGpuEngine()
        options = MeasureOptions(tolerance=0.01, utilization_range=(0.05, 1.0), kv_approach=approach, confirm=False)
        progress = TrialProgress(Console(file=io.StringIO()))
        executor = JournaledExecutor(Journal(tmp_path / f"{approach}.jsonl"), engine, progress)
        result = ModelSearches(settings, 1, executor, get_engine(), options, UNGUARDED).run()
        found[approach] = (result.physical.num_gpu_blocks, engine.fills)
    (below_blocks, below_fills), (above_blocks, above_fills) = found["from_below"], found["from_above"]
    assert above_blocks == below_blocks
    assert above_blocks * DiscreteGpuEngine.BYTES_PER_BLOCK <= DiscreteGpuEngine.CAPACITY
    assert (above_fills, below_fills) == (1, 2)
