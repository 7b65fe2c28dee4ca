"""The original DGX Spark study's table as a labelled external source: kvprobe's statistics reproduce
the study's published means, and the check against the configs is plain arithmetic."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, kvprobe
from kvprobe.config import load_models
from kvprobe.predict import predict
from kvprobe.report.external import STUDY_MODELS, load_benchmark_spark, summarise_external
from kvprobe.units import GIB

STUDY = ROOT / "docs" / "external" / "benchmark-spark" / "all_benchmark_results.json"
PUBLISHED = {"deepseek": (44.31, 16.57), "gpt120b": (43.19, 23.65), "qwen72b": (44.71, 26.72)}  # GiB, the study's


def summary():
    models = {m.name: m for m in load_models(ROOT / "models.yaml")}
    predictions = {}
    for study_name, name in STUDY_MODELS.items():
        config = json.loads((ROOT / "configs" / name / "config.json").read_text())
        predictions[study_name] = predict(name, config, models[name].kv_cache_dtype, models[name].dtype)
    return summarise_external(load_benchmark_spark(STUDY), predictions)


def test_the_study_means_are_reproduced():
    by_model = {m.model: m for m in summary().models}
    for model, (native, container) in PUBLISHED.items():
        kv = by_model[model].metrics["kv_cache_bytes"]
        assert round(kv.native.mean / GIB, 2) == native and round(kv.container.mean / GIB, 2) == container
        assert kv.welch.verdict == "tested" and kv.native.sd > 0


def test_the_check_is_weights_plus_kv_against_the_reported_peak():
    for model in summary().models:
        check = model.check
        assert check.weights_plus_kv_bytes == pytest.approx(check.predicted_weight_bytes + check.kv_native_bytes)
        assert check.room_left_by_peak_bytes == pytest.approx(check.peak_native_bytes - check.weights_plus_kv_bytes)
    by_model = {m.model: m.check for m in summary().models}
    assert by_model["deepseek"].room_left_by_peak_bytes > 0
    assert by_model["qwen72b"].weights_fit_the_machine is False  # bf16 72B: 135 GiB of weights


def test_the_report_shows_the_source_labelled_beside_kvprobes_results(tmp_path):
    study = str(STUDY)
    kvprobe(
        "report",
        str(ROOT / "tests" / "data" / "results"),
        "--out",
        str(tmp_path),
        "--format",
        "markdown",
        "--external",
        study,
        "--models",
        str(ROOT / "models.yaml"),
    )
    text = (tmp_path / "report.md").read_text()
    assert "## External source: benchmark-spark" in text and "Not kvprobe measurements" in text
    assert "TensorRT-LLM" in text and "GB10" in text
    assert text.index("## tiny-llama") < text.index("## External source")
