"""The original DGX Spark study (TensorRT-LLM on a GB10) read against its engine's sizing equation:
every run's KV is 0.9 of the memory free when the engine sized it, the container's loss is 0.9 x the
extra memory in use then, the runs' order and restarts are found from the data, and the committed page
is what scripts/make_docs.py makes of the committed copy of the study's raw data."""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import replace
from fractions import Fraction

import pytest

from conftest import ROOT, kvprobe
from kvprobe.config import load_models
from kvprobe.predict import predict
from kvprobe.report.external import (
    STUDY_MODELS,
    ExternalSource,
    fit_sizing,
    load_benchmark_spark,
    summarise_external,
    trend,
)
from kvprobe.report.stats import t_quantile
from kvprobe.units import GIB

STUDY = ROOT / "docs" / "external" / "benchmark-spark" / "all_benchmark_results.json"  # the study's file, unchanged
PAGE = ROOT / "docs" / "external" / "benchmark-spark" / "report.md"
PUBLISHED = {"deepseek": (44.31, 16.57), "gpt120b": (43.19, 23.65), "qwen72b": (44.71, 26.72)}  # GiB, the study's
TOLERANCE_GIB = Fraction(1, 100)


def summary():
    models = {m.name: m for m in load_models(ROOT / "models.yaml")}
    predictions = {}
    for study_name, name in STUDY_MODELS.items():
        config = json.loads((ROOT / "configs" / name / "config.json").read_text())
        predictions[study_name] = predict(name, config, models[name].kv_cache_dtype, models[name].dtype)
    return summarise_external(load_benchmark_spark(STUDY), predictions)


def raw_runs() -> list[dict]:
    """The study's runs read straight from its JSON, apart from kvprobe's loader."""
    data = json.loads(STUDY.read_text(), parse_float=Fraction)
    return [run for sides in data["models"].values() for group in sides.values() for run in group]


def test_every_run_is_kv_equals_0_9_of_total_less_in_use():
    runs = raw_runs()
    assert len(runs) == 63
    fraction = Fraction(9, 10)
    total = sum(run["peak_memory"] + run["kv_cache"] / fraction for run in runs) / len(runs)  # GiB, exact
    assert abs(total - Fraction("119.708")) < Fraction(1, 1000)
    residuals = [run["kv_cache"] - fraction * (total - run["peak_memory"]) for run in runs]
    assert max(abs(r) for r in residuals) < TOLERANCE_GIB


def test_the_fit_finds_the_engine_fraction_and_one_total():
    fit = summary().fit
    assert len(fit.residual_bytes) == 63
    assert abs(fit.fraction - Fraction(9, 10)) < Fraction(1, 10_000)
    assert abs(fit.total_bytes / GIB - Fraction("119.708")) < Fraction(1, 1000)
    assert fit.max_abs_residual_bytes < TOLERANCE_GIB * GIB
    assert fit.max_abs_residual_bytes <= fit.rounding_bound_bytes  # within what two-decimal figures allow
    assert fit.sum_at_engine_fraction.sd / GIB < 0.005


def test_a_run_off_the_equation_shows_in_its_residual():
    runs = list(load_benchmark_spark(STUDY).runs)
    runs[30] = replace(runs[30], kv_bytes=runs[30].kv_bytes + Fraction(5, 100) * GIB)
    fit = fit_sizing(runs)
    assert fit.max_abs_residual_bytes > TOLERANCE_GIB * GIB
    assert max(range(len(runs)), key=lambda i: abs(fit.residual_bytes[i])) == 30


def test_the_study_means_are_reproduced_and_the_loss_is_0_9_of_the_extra_in_use():
    losses = {(loss.model, loss.scope): loss for loss in summary().losses}
    for model, (native, container) in PUBLISHED.items():
        loss = losses[(model, "all runs")]
        assert round(float(loss.kv_mean_bytes["native"] / GIB), 2) == native
        assert round(float(loss.kv_mean_bytes["container"] / GIB), 2) == container
        assert loss.kv_lost_bytes == loss.explained_bytes + loss.residual_bytes
        assert loss.explained_bytes == Fraction(9, 10) * loss.extra_in_use_bytes
        assert abs(loss.residual_bytes) < TOLERANCE_GIB * GIB
        assert 17 * GIB < loss.kv_lost_bytes < 28 * GIB
    assert losses[("gpt120b", "completed series only")].n == {"native": 10, "container": 10}
    assert ("deepseek", "completed series only") not in losses


def test_the_order_of_runs_and_the_abandoned_series_come_from_the_data():
    source = load_benchmark_spark(STUDY)
    assert [r.timestamp for r in source.runs] == sorted(r.timestamp for r in source.runs)
    for model in PUBLISHED:
        native = [r.timestamp for r in source.runs if r.model == model and r.label == "native"]
        container = [r.timestamp for r in source.runs if r.model == model and r.label == "container"]
        assert max(native) < min(container)
    restarted = [(r.model, r.label, r.timestamp) for r in source.runs if r.restarted]
    assert restarted == [
        ("gpt120b", "native", "20251108_195154"),
        ("gpt120b", "native", "20251108_201941"),
        ("gpt120b", "native", "20251108_203930"),
    ]


def test_the_trend_is_least_squares_with_its_standard_error():
    runs = [r for r in load_benchmark_spark(STUDY).runs if r.model == "qwen72b" and r.label == "container"]
    kv = [float(r.kv_bytes / GIB) for r in runs]
    n = len(kv)
    mean_x, mean_y = (n - 1) / 2, sum(kv) / n
    sxx = sum((i - mean_x) ** 2 for i in range(n))
    slope = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(kv)) / sxx
    squared = sum((y - mean_y - slope * (i - mean_x)) ** 2 for i, y in enumerate(kv))
    se = math.sqrt(squared / (n - 2) / sxx)
    found = trend("qwen72b", "container", runs, "completed series")
    assert float(found.slope_bytes_per_run) / GIB == pytest.approx(slope)
    assert found.slope_se_bytes / GIB == pytest.approx(se)
    low, high = found.ci95_bytes
    assert (high - low) / 2 / GIB == pytest.approx(t_quantile(0.975, n - 2) * se)
    assert found.p_value < 0.05 and found.first_kv_bytes < found.last_kv_bytes  # 15.10 -> 29.05 GiB
    flat = [replace(r, kv_bytes=Fraction(44) * GIB) for r in runs]
    assert trend("qwen72b", "container", flat, "completed series").slope_bytes_per_run == 0


def test_the_labels_throughput_and_weights():
    labels = {item.model: item for item in summary().labels}
    means = [item.throughput.mean for item in labels.values()]
    assert max(means) - min(means) < 1.0  # tokens/s: a 7B, a 72B and a 120B MoE alike
    assert labels["qwen72b"].weights_fit_in_use is False  # bf16 72B: 135 GiB of weights, ~70 GiB in use
    assert labels["deepseek"].weights_fit_in_use is True


def test_the_committed_page_is_what_make_docs_makes():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "scripts" / "make_docs.py")
    make_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_docs)
    assert make_docs.external_report() == PAGE.read_bytes()
    page = PAGE.read_text()
    assert "cannot all hold" not in page and "Welch" in page  # named only as the test it does not give
    assert "TensorRT-LLM" in page and "not vLLM" in page


def test_the_report_shows_the_source_labelled_beside_kvprobes_results(tmp_path):
    kvprobe(
        "report",
        str(ROOT / "tests" / "data" / "results"),
        "--out",
        str(tmp_path),
        "--format",
        "markdown",
        "--external",
        str(STUDY),
        "--models",
        str(ROOT / "models.yaml"),
    )
    text = (tmp_path / "report.md").read_text()
    assert "## External source: benchmark-spark" in text and "Not kvprobe measurements" in text
    assert "TensorRT-LLM" in text and "GB10" in text and "0.9 x the extra memory in use" in text
    assert text.index("## tiny-llama") < text.index("## External source")


def test_a_source_without_predictions_leaves_the_weights_unknown():
    source: ExternalSource = load_benchmark_spark(STUDY)
    labels = summarise_external(source, {}).labels
    assert all(item.predicted_weight_bytes is None and item.weights_fit_in_use is None for item in labels)
