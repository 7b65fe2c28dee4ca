"""The "why" section from synthetic experiment results: changes, shares of the explained loss,
and words only where the data show a change."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, kvprobe
from kvprobe.report.compare import compare
from kvprobe.report.conditions import analyse_experiments
from kvprobe.report.formatting import change_text
from kvprobe.report.summary import build_report
from kvprobe.report.writers import render_report
from kvprobe.results.store import ResultStore
from synthetic import BLOCK_BYTES, experiment_documents


@pytest.fixture(scope="module")
def experiment():
    (model,) = analyse_experiments(experiment_documents())
    return model


def test_conditions_come_in_the_experiment_files_order_with_the_baseline_first(experiment):
    assert [c.name for c in experiment.conditions] == ["native", "container", "hidden", "cache"]
    assert [v.name for v in experiment.verdicts] == ["container", "hidden", "cache"]
    assert all(c.n == 3 for c in experiment.conditions)


def test_changes_are_exact_from_blocks(experiment):
    hidden = next(v for v in experiment.verdicts if v.name == "hidden")
    change = hidden.changes["kv_reference_bytes"]
    assert change.evidence == "changed"
    assert change.change == pytest.approx((70 - 700) * BLOCK_BYTES)
    assert change.change_percent == pytest.approx(100 * (72 / 702 - 1))


def test_the_share_of_the_explained_loss(experiment):
    verdicts = {v.name: v for v in experiment.verdicts}
    assert verdicts["hidden"].share_of_loss["kv_reference_bytes"] == pytest.approx(630 / 665)
    cache = verdicts["cache"].changes["kv_reference_bytes"]
    assert cache.evidence == "not_significant" and cache.welch.p_value == pytest.approx(1.0)
    assert verdicts["cache"].share_of_loss["kv_reference_bytes"] is None  # no share of a change not shown
    assert verdicts["container"].share_of_loss == {}  # the loss itself is not held against itself


def test_the_report_states_the_verdicts_in_words(tmp_path):
    summary = build_report(experiment_documents())
    files = render_report(summary, ["markdown", "charts"])
    text = files["report.md"].decode()
    assert "## Why: experiment demo, demo-model" in text
    assert "**hidden**: changed KV at gpu_memory_utilization" in text
    assert "it reproduces 95% of the change in KV at gpu_memory_utilization that container shows" in text
    assert "**cache**: no significant change in any metric compared" in text
    assert "conditions_1_kv_cache.svg" in files and "conditions_1_memory.svg" in files
    (pair,) = summary.models  # the conditions named native and container also form the classic pair
    assert pair.n == {"native": 3, "container": 3}  # and hidden and cache, labelled native, are not mixed in


def test_an_experiment_report_leads_with_its_answer_and_the_conditions_chart():
    text = render_report(build_report(experiment_documents()), ["markdown", "charts"])["report.md"].decode()
    title, answer, chart, caption, pair_heading = [b for b in text.split("\n\n") if b.strip()][:5]
    assert title == "# KV cache: what each condition changes"
    assert answer.startswith("**Experiment demo, demo-model: container moves the KV at gpu_memory_utilization")
    assert chart.startswith("![KV cache per condition") and "(conditions_1_kv_cache.png)" in chart
    assert "against the baseline native" in caption
    assert pair_heading == "## Native and container"  # the pair is one comparison of several, below


def test_conditions_without_results_are_named_in_the_answer_not_called_absent():
    baseline_only = [d for d in experiment_documents() if d.condition == "native"]
    text = render_report(build_report(baseline_only), ["markdown"])["report.md"].decode()
    assert "no result of container, hidden, cache, so nothing is compared with the baseline native" in text
    assert "0 model(s) with matched" not in text  # an experiment without a pair prints no pair count


def test_no_variance_is_no_test_statistic():
    """Each side repeating its own value exactly is a difference without a test: no p-value, no interval."""

    def constant(docs, blocks):
        return [
            d.model_copy(
                update={
                    "reference": d.reference.model_copy(update={"num_blocks": blocks, "bytes": blocks * BLOCK_BYTES})
                }
            )
            for d in docs
        ]

    made = experiment_documents()
    native = constant([d for d in made if d.condition == "native"], 700)
    hidden = constant([d for d in made if d.condition == "hidden"], 70)
    change = compare(native, hidden, "kv_reference_bytes")
    assert change.evidence == "changed" and change.welch.verdict == "no_variance"
    assert change.welch.p_value is None and change.welch.ci95_low is None
    assert change.change == (70 - 700) * BLOCK_BYTES
    assert "p =" not in change_text(change, "GiB") and "95% CI" not in change_text(change, "GiB")


def test_results_from_several_directories_are_merged(tmp_path):
    for index, doc in enumerate(experiment_documents()):
        store = ResultStore(tmp_path / f"host-{index % 2}")
        store.write_result(store.result_path(doc.model, doc.condition, doc.run_id, doc.repeat), doc)
    out = tmp_path / "report"
    kvprobe("report", str(tmp_path / "host-0"), str(tmp_path / "host-1"), "--out", str(out), "--format", "json")
    (experiment,) = json.loads((out / "summary.json").read_text())["experiments"]
    assert [c["n"] for c in experiment["conditions"]] == [3, 3, 3, 3]


def test_a_change_below_a_baseline_that_is_only_a_bound_is_shown_as_a_bound():
    def changed(doc):
        if doc.condition == "native":  # the baseline passed at the top of its range: u_max >= 0.9 only
            search = doc.searches["u_max"].model_copy(update={"censored": True})
            return doc.model_copy(update={"searches": {**doc.searches, "u_max": search}})
        return doc.model_copy(update={"u_max": 0.5}) if doc.condition == "hidden" else doc

    censored = [changed(doc) for doc in experiment_documents()]
    (model,) = analyse_experiments(censored)
    changes = {v.name: v.changes["u_max"] for v in model.verdicts}
    assert changes["hidden"].evidence == "below_bound" and changes["hidden"].change == pytest.approx(-0.4)
    assert changes["hidden"].welch is None  # no test statistic without two real samples
    assert changes["cache"].evidence == "bound"  # 0.9 is not below the bound 0.9: nothing can be said
    text = render_report(build_report(censored), ["markdown"])["report.md"].decode()
    assert "at most -0.400 (every run below the reference's lower bound; no test)" in text


def test_the_committed_experiment_says_which_boundary_and_keeps_every_run():
    """docs/experiments/cpu-2026-11-26: u_max set by kvprobe's guard in most cells and by vLLM's own check
    under container-limit; guard and engine boundaries are not compared as alike; every run is in runs.csv."""
    loaded, problems = ResultStore(ROOT / "docs" / "experiments" / "cpu-2026-11-26" / "results").load_all()
    assert problems == []
    summary = build_report([doc for _, doc in loaded])
    (model,) = summary.experiments
    kinds = {c.name: c.boundary for c in model.conditions}
    assert kinds["container-limit"] == ["engine-refused"] and kinds["page-cache"] == ["guard"]
    assert kinds["native"] == ["guard", "top-of-range"]
    verdicts = {v.name: v.changes["u_max"] for v in model.verdicts}
    assert verdicts["container-limit"].evidence == "unlike_boundaries" and verdicts["container-limit"].welch is None
    # native's exact repeats (2 and 3, guard) are compared with page-cache's guard boundaries; repeat 1 is left out
    assert verdicts["page-cache"].compared and verdicts["page-cache"].left_out == 1
    csv_text = render_report(summary, ["csv"])["runs.csv"].decode()
    lines = csv_text.splitlines()
    assert len(lines) == 1 + 21 and "u_max_lower_bound" in lines[0] and "u_max [fraction]" in lines[0]


def test_the_committed_experiment_shows_its_odd_cell_and_the_drift_over_repeats():
    """Issue: native repeat 1 alone read a 21.09 GiB node total (23.54 in the other cells: the VM's
    balloon) and blocks rise with the repeat number in every condition: both are shown, and the
    verdicts that include the odd cell say so."""
    loaded, problems = ResultStore(ROOT / "docs" / "experiments" / "cpu-2026-11-26" / "results").load_all()
    assert not problems
    (model,) = analyse_experiments([d for _, d in loaded])
    (odd,) = model.odd_cells
    assert (odd.condition, odd.repeat) == ("native", 1)
    assert round(odd.engine_total_bytes / 2**30, 2) == 21.09 and round(odd.usual_total_bytes / 2**30, 2) == 23.54
    slopes = [c.trend.slope_bytes_per_repeat for c in model.conditions if c.trend is not None]
    assert len(slopes) == 6 and all(slope > 0 for slope in slopes)
    text = render_report(build_report([d for _, d in loaded]), ["markdown"])["report.md"].decode()
    assert "In every condition the KV moves the same way with the repeat number" in text
    assert "native repeat 1: 21.09 GiB where the usual total is 23.54 GiB" in text
    assert "whose engine multiplied another memory total: see above" in text


def test_an_exact_line_is_no_test_and_two_repeats_are_too_few():
    made = experiment_documents()
    (model,) = analyse_experiments(made)
    native = next(c for c in model.conditions if c.name == "native")
    assert native.trend.n == 3 and native.trend.slope_bytes_per_repeat == BLOCK_BYTES  # blocks 701, 702, 703
    assert native.trend.ci95_bytes == (BLOCK_BYTES, BLOCK_BYTES)
    (two,) = analyse_experiments([d for d in made if d.repeat < 3])
    assert all(c.trend.ci95_bytes is None and c.trend.p_value is None for c in two.conditions)


def test_cells_that_wrote_no_result_are_listed_from_the_experiments_manifest(tmp_path):
    """A cell that did not produce a result is missing, not zero: the report lists it with the reason
    experiment.json gives, and says when the experiment run has not finished."""
    store = ResultStore(tmp_path / "out")
    for made in experiment_documents():
        doc = made.model_copy(
            update={"experiment": made.experiment.model_copy(update={"run_id": "20261130T000000-abcd"})}
        )
        store.write_result(store.result_path(doc.model, doc.condition, doc.run_id, doc.repeat), doc)
    manifest = {
        "run_id": "20261130T000000-abcd",
        "status": "running",
        "identity": {},
        "done": {"native/r1": 0},
        "unfinished": {"cache/r4": "exit 1, no result for demo-model"},
    }
    (tmp_path / "out" / "experiment.json").write_text(json.dumps(manifest))
    done = kvprobe("report", str(tmp_path / "out"), "--format", "markdown", "--out", str(tmp_path / "report"))
    text = (tmp_path / "report" / "report.md").read_text()
    assert "**Cells without a result** (missing, not zero): cache/r4: exit 1, no result for demo-model" in text, (
        done.stdout
    )
    assert "experiment run 20261130T000000-abcd has not finished" in text
    other = {**manifest, "run_id": "20261129T000000-0000"}  # another run's manifest says nothing of these results
    (tmp_path / "out" / "experiment.json").write_text(json.dumps(other))
    kvprobe("report", str(tmp_path / "out"), "--format", "markdown", "--out", str(tmp_path / "report2"))
    assert "Cells without a result" not in (tmp_path / "report2" / "report.md").read_text()
