"""Tables measured by someone else, brought into a report as a clearly labelled external source.

An external source is not a kvprobe result: other engine, other machine, its own definitions of
"KV cache" and "peak". kvprobe only summarises its numbers with the same statistics, names where
they come from, and checks them against what the models' configs imply (kvprobe.predict).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from kvprobe.predict import Prediction
from kvprobe.report.stats import Summary, WelchResult, summarise, welch_t_test
from kvprobe.units import GIB
from kvprobe.vocabulary import LABELS, Label


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExternalRun(Model):
    model: str
    label: Label
    kv_cache_bytes: float
    peak_memory_bytes: float
    output_tokens_per_s: float | None = None


class ExternalSource(Model):
    """Where the numbers come from, in words a reader can check."""

    name: str
    origin: str = Field(description="Repository, path and commit, and the license.")
    engine: str
    machine: str
    memory_bytes: float = Field(description="The memory of the machine the source measured on.")
    runs: list[ExternalRun]


class ExternalMetric(Model):
    native: Summary
    container: Summary
    lost: float | None
    lost_percent: float | None
    welch: WelchResult


class WeightCheck(Model):
    """The source's own figures beside what the model's config implies: weights + KV against the peak."""

    predicted_weight_bytes: float
    kv_native_bytes: float
    peak_native_bytes: float
    weights_plus_kv_bytes: float
    room_left_by_peak_bytes: float = Field(description="peak - weights - KV (negative: the figures cannot all hold).")
    weights_fit_the_machine: bool


class ExternalModel(Model):
    model: str
    n: dict[Label, int]
    metrics: dict[str, ExternalMetric]
    check: WeightCheck | None


class ExternalSummary(Model):
    source: ExternalSource
    models: list[ExternalModel]


def load_benchmark_spark(path: Path) -> ExternalSource:
    """The original DGX Spark study's `all_benchmark_results.json` (GiB figures, per run)."""
    data = json.loads(Path(path).read_text())
    runs = [
        ExternalRun(
            model=model,
            label=label,
            kv_cache_bytes=run["kv_cache"] * GIB,
            peak_memory_bytes=run["peak_memory"] * GIB,
            output_tokens_per_s=run.get("output_throughput"),
        )
        for model, sides in data["models"].items()
        for label, group in sides.items()
        for run in group
        if run.get("exit_code") == 0
    ]
    return ExternalSource(
        name="benchmark-spark (the original DGX Spark study)",
        origin="brandonrc/benchmark-spark, analysis/all_benchmark_results.json, commit f465b5f, MIT License",
        engine="TensorRT-LLM trtllm-bench, KV cache fraction 0.9",
        machine="one NVIDIA GB10 (DGX Spark), 119.6 GiB unified memory",
        memory_bytes=119.6 * GIB,
        runs=runs,
    )


# The study's model names and the shipped models that are the same models.
STUDY_MODELS = {"deepseek": "deepseek-r1-distill-qwen-7b", "gpt120b": "gpt-oss-120b", "qwen72b": "qwen2.5-72b-instruct"}

FIGURES = {
    "kv_cache_bytes": "kv_cache_bytes",
    "peak_memory_bytes": "peak_memory_bytes",
    "output_tokens_per_s": "output_tokens_per_s",
}


def summarise_external(source: ExternalSource, predictions: dict[str, Prediction]) -> ExternalSummary:
    """Each model's figures per side with kvprobe's statistics; `predictions` maps the source's model
    names to what kvprobe.predict says of the same model."""
    models = []
    for model in sorted({run.model for run in source.runs}):
        sides = {label: [r for r in source.runs if r.model == model and r.label == label] for label in LABELS}
        metrics = {}
        for figure in FIGURES:
            native = [getattr(r, figure) for r in sides["native"] if getattr(r, figure) is not None]
            container = [getattr(r, figure) for r in sides["container"] if getattr(r, figure) is not None]
            a, b = summarise(native), summarise(container)
            lost = a.mean - b.mean if a.mean is not None and b.mean is not None else None
            metrics[figure] = ExternalMetric(
                native=a,
                container=b,
                lost=lost,
                lost_percent=100 * lost / a.mean if lost is not None and a.mean else None,
                welch=welch_t_test(native, container),
            )
        check = None
        if model in predictions and metrics["kv_cache_bytes"].native.mean is not None:
            weights = predictions[model].weight_bytes
            kv, peak = metrics["kv_cache_bytes"].native.mean, metrics["peak_memory_bytes"].native.mean
            check = WeightCheck(
                predicted_weight_bytes=weights,
                kv_native_bytes=kv,
                peak_native_bytes=peak,
                weights_plus_kv_bytes=weights + kv,
                room_left_by_peak_bytes=peak - weights - kv,
                weights_fit_the_machine=weights < source.memory_bytes,
            )
        models.append(
            ExternalModel(model=model, n={label: len(sides[label]) for label in LABELS}, metrics=metrics, check=check)
        )
    return ExternalSummary(source=source, models=models)
