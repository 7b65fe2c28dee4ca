"""An isolation ladder's report, from synthetic results: each rung against the one before, the
step that costs the KV named on top, a waterfall whose bars are the steps, and a missing rung said."""

from __future__ import annotations

import pytest

from conftest import ROOT
from kvprobe.report.charts import LadderWaterfall, alt_text, chart_specs, draw
from kvprobe.report.conditions import analyse_experiments, costliest_step
from kvprobe.report.conditions_layout import ladder_answer
from kvprobe.report.sizing_layout import inputs_moved_text
from kvprobe.report.summary import build_report
from kvprobe.report.writers import render_report
from kvprobe.results.schema import ResultDocument
from kvprobe.results.store import ResultStore
from kvprobe.units import MIB
from synthetic import BLOCK_BYTES, experiment_documents

# Rungs in ladder order; the synthetic reference KV (blocks): native 700, cache 700, hidden 70, container 35.
RUNGS = ["native", "cache", "hidden", "container"]


def ladder_documents(rungs: list[str] = RUNGS) -> list[ResultDocument]:
    docs = [d for d in experiment_documents() if d.condition in rungs]
    return [
        d.model_copy(update={"experiment": d.experiment.model_copy(update={"ladder": True, "conditions": RUNGS})})
        for d in docs
    ]


def test_each_rung_is_held_against_the_rung_before_it():
    (model,) = analyse_experiments(ladder_documents())
    assert [(s.previous, s.name) for s in model.ladder] == [
        ("native", "cache"),
        ("cache", "hidden"),
        ("hidden", "container"),
    ]
    steps = {s.name: s.changes["kv_reference_bytes"] for s in model.ladder}
    assert steps["cache"].evidence == "not_significant"
    assert steps["hidden"].evidence == "changed" and steps["hidden"].change == pytest.approx(-630 * BLOCK_BYTES)
    assert steps["container"].change == pytest.approx(-35 * BLOCK_BYTES)
    # against the baseline, container is the whole loss; against the rung before, only its own step
    whole = next(v for v in model.verdicts if v.name == "container").changes["kv_reference_bytes"]
    assert whole.change == pytest.approx(-665 * BLOCK_BYTES)


def test_the_costliest_step_is_named_with_its_interval():
    (model,) = analyse_experiments(ladder_documents())
    step, metric, _ = costliest_step(model)
    assert (step.name, metric) == ("hidden", "kv_reference_bytes")
    sentence = ladder_answer(model)
    assert sentence.startswith(
        "Isolation ladder demo, demo-model: the step that costs the KV cache is hidden (after cache)"
    )
    assert "95% CI [" in sentence and "-89.7%" in sentence


def test_a_ladder_whose_steps_show_nothing_says_so():
    (model,) = analyse_experiments(ladder_documents(["native", "cache"]))
    assert costliest_step(model) is None
    assert "no step from native to cache lowered the KV cache by more than its runs vary" in ladder_answer(model)
    assert model.unmeasured == ["hidden", "container"]


def test_a_missing_rung_is_listed_and_the_next_step_skips_it():
    (model,) = analyse_experiments(ladder_documents(["native", "cache", "container"]))
    assert model.unmeasured == ["hidden"]
    assert [(s.previous, s.name) for s in model.ladder] == [("native", "cache"), ("cache", "container")]
    text = render_report(build_report(ladder_documents(["native", "cache", "container"])), ["markdown"])["report.md"]
    assert "Rungs with no complete run here (missing, not zero): hidden" in text.decode()


def test_the_report_reads_as_a_ladder_with_a_waterfall():
    summary = build_report(ladder_documents())
    (waterfall,) = [s for s in chart_specs(summary) if isinstance(s, LadderWaterfall)]
    assert waterfall.baseline == "native" and [s.rung for s in waterfall.steps] == ["cache", "hidden", "container"]
    assert [s.shown for s in waterfall.steps] == [False, True, True]
    hidden = waterfall.steps[1]
    assert (
        hidden.change_low < hidden.level - waterfall.steps[0].level < hidden.change_high
    )  # the whisker holds the step
    assert "hidden" in alt_text(waterfall) and set(draw(waterfall)) == {
        "conditions_1_ladder.png",
        "conditions_1_ladder.svg",
    }
    text = render_report(summary, ["markdown", "charts"])["report.md"].decode()
    first_screen = text.split("## ")[0] + text.split("## ")[1][:400]
    assert "the step that costs the KV cache is hidden (after cache)" in first_screen
    assert "### The ladder, step by step" in text and "conditions_1_ladder.png" in text
    assert "| 2 | hidden |" in text


def test_an_experiment_that_is_not_a_ladder_has_no_steps():
    (model,) = analyse_experiments(experiment_documents())
    assert model.ladder == [] and not any(
        isinstance(s, LadderWaterfall) for s in chart_specs(build_report(experiment_documents()))
    )


def test_each_step_says_which_input_of_the_engines_equation_it_moved():
    """The committed sizing-cpu runs (native, then a cgroup limit vLLM's CPU backend cannot see) read as a
    two-rung ladder: the step moves no input the equation reads, and its residual is what is left."""
    loaded, problems = ResultStore(ROOT / "docs" / "experiments" / "sizing-cpu-2026-11-30" / "results").load_all()
    assert not problems
    docs = [d.model_copy(update={"experiment": d.experiment.model_copy(update={"ladder": True})}) for _, d in loaded]
    (model,) = analyse_experiments(docs)
    (step,) = model.ladder
    assert (step.previous, step.name, step.sizing.equation) == ("native", "hidden-limit", "vllm-cpu")
    assert step.sizing.residual_bytes is not None and abs(step.sizing.residual_bytes) < 4 * MIB
    cell = inputs_moved_text(step.sizing)
    assert cell == "none moved; residual +0.000", cell
