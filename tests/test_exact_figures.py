"""Nothing kvprobe publishes overstates: exact bytes, boundaries that are what they say, bounds shown
as bounds, no test statistic without variance. Deterministic stand-ins for the engine; the real
engine's side of each is in test_engine_pair.py and test_report.py."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

import synthetic
from conftest import MODELS
from kvprobe.config import load_models
from kvprobe.engines import get_engine
from kvprobe.measure.build import build_document
from kvprobe.measure.executors import JournaledExecutor
from kvprobe.measure.model import ModelSearches
from kvprobe.measure.options import MeasureOptions
from kvprobe.output.progress import TrialProgress
from kvprobe.report.stats import welch_t_test
from kvprobe.report.summary import build_report
from kvprobe.report.writers import render_report
from kvprobe.results.schema import TrialRecord
from kvprobe.results.store import Journal
from kvprobe.trial.judge import kv_bytes
from kvprobe.units import GIB, MIB
from synthetic import UNGUARDED, documents

BYTES_PER_BLOCK = 4 * MIB
FLOOR, WALL = 0.30, 0.70


class WallEngine:
    """Starts pass between FLOOR and WALL; `flaky` settings pass the first time only."""

    def __init__(self, flaky: tuple[float, ...] = ()):
        self.flaky = set(flaky)
        self.started: list[float] = []

    def run(self, request) -> TrialRecord:
        u = request.utilization
        self.started.append(u)
        ok = FLOOR - 1e-9 <= u <= WALL + 1e-9 and not (u in self.flaky and self.started.count(u) > 1)
        outcome = "ok" if ok else ("kv-too-small" if u < FLOOR else "startup-check")
        blocks = int(u * 1000) if ok else None
        return TrialRecord(
            **request.recorded(),
            outcome=outcome,
            reason=outcome,
            returncode=0,
            started_at=0.0,
            wall_s=1.0,
            teardown_s=0.0,
            baseline_restored=True,
            passed=ok,
            num_gpu_blocks=blocks,
            block_size=16,
            bytes_per_block=BYTES_PER_BLOCK if ok else None,
            kv_cache_bytes=blocks * BYTES_PER_BLOCK if ok else None,
        )


def searches(tmp_path, engine, tolerance, reference=0.5):
    (settings,) = load_models(MODELS, only=["tiny-llama"])
    settings = settings.model_copy(update={"gpu_memory_utilization": reference})
    options = MeasureOptions(tolerance=tolerance, utilization_range=(0.05, 0.99), searches=("reference", "u_max"))
    progress = TrialProgress(Console(file=io.StringIO()))
    executor = JournaledExecutor(Journal(tmp_path / "journal.jsonl"), engine, progress)
    return ModelSearches(settings, 1, executor, get_engine(), options, UNGUARDED), settings, options


def document(tmp_path, engine, tolerance):
    search, settings, options = searches(tmp_path, engine, tolerance)
    found = search.run()
    environment = documents()[0].environment
    return build_document(found, settings, options, UNGUARDED, environment, "run", 1, 0.0, replayed=0)


def test_an_odd_tolerance_keeps_the_u_max_trial_and_every_figure(tmp_path):
    """0.1 re-rounded the search's 0.6099939 to 0.609994, lost the u_max trial and still said complete."""
    doc = document(tmp_path, WallEngine(), tolerance=0.0033333)
    assert doc.u_max is not None and abs(doc.u_max - WALL) <= 0.0033333
    assert doc.kv_at_u_max is not None and doc.kv_at_u_max.utilization == doc.u_max
    assert doc.attribution is not None
    assert doc.status == "complete" and doc.errors == []


def test_a_boundary_is_started_again_and_a_flip_is_reported_as_unstable(tmp_path):
    steady = document(tmp_path / "steady", WallEngine(), tolerance=0.01)
    assert steady.searches["u_max"].confirmed is True and not steady.searches["u_max"].unstable
    confirmations = [t for t in steady.trials if t.confirmation]
    assert [t.utilization for t in confirmations] == [steady.u_max]
    assert steady.searches["u_max"].engine_starts == len(steady.searches["u_max"].trials) - 1

    flaky = document(tmp_path / "flaky", WallEngine(flaky=(0.7,)), tolerance=0.01)
    search = flaky.searches["u_max"]
    assert search.confirmed is False and search.unstable and search.flipped == [0.7]
    native = [flaky.model_copy(update={"repeat": r}) for r in (1, 2, 3)]
    container = [d.model_copy(update={"label": "container", "condition": "container"}) for d in native]
    markdown = render_report(build_report(native + container), ["markdown"])["report.md"].decode()
    assert "native u_max: the same setting 0.7 both passed and failed" in markdown


def test_kv_bytes_are_blocks_times_bytes_per_block_not_the_logged_gib():
    # vLLM's log said "2.78 GiB"
    trial = synthetic.trial(
        num_gpu_blocks=712, bytes_per_block=BYTES_PER_BLOCK, memory_report={"kv_cache_bytes": 2.78 * GIB}
    )
    figure = kv_bytes(trial.num_gpu_blocks, trial.bytes_per_block, None, trial.memory_report.kv_cache_bytes)
    assert figure == 712 * BYTES_PER_BLOCK == 2986344448
    assert figure != int(2.78 * GIB)


def test_ratios_come_from_blocks_not_rounded_gib():
    """The 0.1 sample said 19.86x from 2.78 and 0.14 GiB; its blocks, 712 and 35, say 20.34x."""
    native, container = documents()[0], documents()[3]
    logged = {"native": (712, 2.78 * GIB), "container": (35, 0.14 * GIB)}
    docs = []
    for doc, label in ((native, "native"), (container, "container")):
        blocks, gib = logged[label]
        reference = doc.reference.model_copy(update={"num_blocks": blocks, "bytes": int(gib), "bytes_per_block": None})
        docs += [doc.model_copy(update={"reference": reference, "repeat": r}) for r in (1, 2)]
    comparison = build_report(docs).models[0].comparison["kv_reference_bytes"]
    assert 1 / comparison.ratio == pytest.approx(712 / 35)  # native / container; native is the reference
    assert -comparison.change_percent == pytest.approx(100 * (712 - 35) / 712)
    assert comparison.exact is False  # the bytes themselves came from the log: said so beside the loss


def test_a_censored_side_is_a_bound_in_every_format():
    native = []
    for doc in documents()[:3]:
        search = doc.searches["u_max"].model_copy(update={"censored": True, "failing": None, "converged": False})
        native.append(doc.model_copy(update={"searches": {**doc.searches, "u_max": search}}))
    summary = build_report(native + documents()[3:])
    model = summary.models[0]
    for metric in ("u_max", "kv_u_max_bytes"):
        # the container's every run lies below native's lower bound: a loss of at least that much, no test
        assert model.comparison[metric].evidence == "below_bound" and not model.comparison[metric].compared
        assert model.comparison[metric].welch is None
    files = render_report(summary, ["markdown", "html", "json", "csv"])
    markdown = files["report.md"].decode()
    assert "| u_max (largest utilization that starts) | >= 0.900" in markdown
    assert "| KV cache at u_max (GiB) | >= 15.70" in markdown
    assert "| KV at u_max | at least 13.61 GiB (every run below the reference's lower bound; no test)" in markdown
    assert "u_max drops" not in markdown  # no finding from a bound
    assert "&gt;= 15.70" in files["report.html"].decode()
    assert json.loads(files["summary.json"])["models"][0]["bounds"]["native"][:2] == ["u_max", "kv_u_max_bytes"]


@pytest.mark.parametrize(
    "native,container,verdict",
    [
        ([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], "no_variance"),
        ([2.0, 2.0, 2.0], [2.0, 2.0, 2.0], "identical"),
        ([2.0], [1.0, 1.1], "too_few"),
        ([2.0, 2.1, 1.9], [1.0, 1.1, 0.9], "tested"),
    ],
)
def test_no_test_statistic_without_variance(native, container, verdict):
    result = welch_t_test(native, container)
    assert result.verdict == verdict
    assert (result.p_value is not None) == (verdict == "tested")
    assert result.t is None or abs(result.t) != float("inf")


def test_the_report_says_why_there_is_no_p_value():
    docs = documents()  # every native repeat has u_max 0.90, every container one 0.69
    markdown = render_report(build_report(docs), ["markdown"])["report.md"].decode()
    assert "| u_max | 0.210 | 23.3% | 1.30x | no variance to test (each side repeated its own value) |" in markdown
