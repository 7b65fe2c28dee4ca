"""The original DGX Spark study, read against the equation its engine sized the KV cache with.

The study measured TensorRT-LLM (`trtllm-bench`, C++ engine path) on one GB10, not vLLM, and not with
kvprobe. Its per-run figures are GiB with two decimals. TensorRT-LLM sizes its KV cache as a fraction
of *free* device memory, KV = f x (total - in use), f = `free_gpu_memory_fraction` (default 0.9). This
module fits that equation to every run, decomposes the container's loss by it, and lays out the order
of the runs, the trend within each side and the labels' throughput. All arithmetic is exact
(`Fraction` of the study's decimal figures, in bytes); only the layout rounds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Literal

from kvprobe.config import load_models
from kvprobe.errors import InputError
from kvprobe.predict import Prediction, predict
from kvprobe.report.stats import Summary, least_squares, linear_trend, summarise
from kvprobe.units import GIB
from kvprobe.vocabulary import LABELS, Label

ENGINE_FRACTION = Fraction(9, 10)
"""TensorRT-LLM's `free_gpu_memory_fraction` default, and the fraction the study states it used."""

FIGURE_STEP = Fraction(1, 100) * GIB
"""The study gives KV and peak to 0.01 GiB: each figure is off by up to half of this."""

STATED_TOTAL_BYTES = Fraction("119.64") * GIB
"""The GB10's memory as the study states it (its VERSIONS.md: 119.64 GB unified)."""

LossScope = Literal["all runs", "completed series only"]
TrendScope = Literal["completed series", "all runs in time order"]

# The study's model names and the shipped models that are the same models.
STUDY_MODELS = {"deepseek": "deepseek-r1-distill-qwen-7b", "gpt120b": "gpt-oss-120b", "qwen72b": "qwen2.5-72b-instruct"}


@dataclass(frozen=True)
class StudyRun:
    """One run of the study, as its JSON gives it; bytes are exact multiples of its 0.01 GiB figures."""

    model: str  # the study's label ("deepseek", "gpt120b", "qwen72b")
    model_id: str  # the Hugging Face name the study's runner recorded for the label
    label: Label
    iteration: int  # the runner's counter: 1 again means the runner started its series again
    timestamp: str  # the runner's start time, YYYYMMDD_HHMMSS, the study machine's clock
    in_use_bytes: Fraction  # the study's "peak_memory": memory in use when the KV cache was sized
    kv_bytes: Fraction  # the study's "kv_cache"
    output_tokens_per_s: float | None
    restarted: bool = False  # run before the side's last series began (a series the runner abandoned)


@dataclass(frozen=True)
class ExternalSource:
    """Where the numbers come from, in words a reader can check."""

    name: str
    origin: str  # repository, path and commit, and the license
    engine: str
    machine: str
    runs: tuple[StudyRun, ...]  # in the order they ran


def _mark_restarts(runs: list[StudyRun]) -> list[StudyRun]:
    """Runs of one model and side, time-ordered: those before the last iteration-1 run are restarts."""
    starts = [i for i, run in enumerate(runs) if run.iteration == 1]
    last_start = starts[-1] if starts else 0
    return [replace(run, restarted=True) if i < last_start else run for i, run in enumerate(runs)]


def load_benchmark_spark(path: Path) -> ExternalSource:
    """The study's `all_benchmark_results.json`; decimals read exactly, runs that exited non-zero left out."""
    data = json.loads(Path(path).read_text(), parse_float=Fraction)
    runs: list[StudyRun] = []
    for model, sides in data["models"].items():
        for label in LABELS:
            finished = [run for run in sides.get(label, []) if run.get("exit_code") == 0]
            group = sorted(finished, key=lambda run: str(run["timestamp"]))
            runs += _mark_restarts(
                [
                    StudyRun(
                        model=model,
                        model_id=str(run["model_id"]),
                        label=label,
                        iteration=int(run["iteration"]),
                        timestamp=str(run["timestamp"]),
                        in_use_bytes=Fraction(run["peak_memory"]) * GIB,
                        kv_bytes=Fraction(run["kv_cache"]) * GIB,
                        output_tokens_per_s=_optional_float(run.get("output_throughput")),
                    )
                    for run in group
                ]
            )
    return ExternalSource(
        name="benchmark-spark (the original DGX Spark study)",
        origin="brandonrc/benchmark-spark, analysis/all_benchmark_results.json, commit f465b5f, MIT License",
        engine="TensorRT-LLM trtllm-bench (C++ engine path), free_gpu_memory_fraction 0.9",
        machine="one NVIDIA GB10 (DGX Spark), unified memory, 119.64 GB as the study states it",
        runs=tuple(sorted(runs, key=lambda run: run.timestamp)),
    )


def _optional_float(value: Fraction | int | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class SizingFit:
    """KV = f x (T - in use), fitted by least squares over every run."""

    fraction: Fraction  # fitted f
    total_bytes: Fraction  # fitted T
    residual_bytes: tuple[Fraction, ...]  # per run, in `source.runs` order: KV - f x (T - in use)
    sum_at_engine_fraction: Summary  # in use + KV / 0.9 over the runs (bytes): T with f fixed at 0.9
    rounding_bound_bytes: Fraction  # the largest residual rounding to 0.01 GiB alone allows at f = 0.9

    @property
    def max_abs_residual_bytes(self) -> Fraction:
        return max(abs(r) for r in self.residual_bytes)


def fit_sizing(runs: Sequence[StudyRun]) -> SizingFit:
    slope, intercept, _ = least_squares([r.in_use_bytes for r in runs], [r.kv_bytes for r in runs])
    fraction = -slope
    total = intercept / fraction
    return SizingFit(
        fraction=fraction,
        total_bytes=total,
        residual_bytes=tuple(r.kv_bytes - fraction * (total - r.in_use_bytes) for r in runs),
        sum_at_engine_fraction=summarise([float(r.in_use_bytes + r.kv_bytes / ENGINE_FRACTION) for r in runs]),
        rounding_bound_bytes=FIGURE_STEP / 2 * (1 + ENGINE_FRACTION),
    )


@dataclass(frozen=True)
class LossByEquation:
    """One model's container loss beside what the equation says it must be: 0.9 x the extra in use."""

    model: str
    scope: LossScope
    n: dict[Label, int]
    kv_mean_bytes: dict[Label, Fraction]
    in_use_mean_bytes: dict[Label, Fraction]

    @property
    def kv_lost_bytes(self) -> Fraction:
        return self.kv_mean_bytes["native"] - self.kv_mean_bytes["container"]

    @property
    def extra_in_use_bytes(self) -> Fraction:
        return self.in_use_mean_bytes["container"] - self.in_use_mean_bytes["native"]

    @property
    def explained_bytes(self) -> Fraction:
        return ENGINE_FRACTION * self.extra_in_use_bytes

    @property
    def residual_bytes(self) -> Fraction:
        return self.kv_lost_bytes - self.explained_bytes


def _mean(values: Sequence[Fraction]) -> Fraction:
    return sum(values, Fraction(0)) / len(values)


def loss_by_equation(model: str, runs: Sequence[StudyRun], scope: LossScope) -> LossByEquation:
    sides = {label: [r for r in runs if r.label == label] for label in LABELS}
    return LossByEquation(
        model=model,
        scope=scope,
        n={label: len(sides[label]) for label in LABELS},
        kv_mean_bytes={label: _mean([r.kv_bytes for r in sides[label]]) for label in LABELS},
        in_use_mean_bytes={label: _mean([r.in_use_bytes for r in sides[label]]) for label in LABELS},
    )


@dataclass(frozen=True)
class Trend:
    """KV against run position within one side's series: least-squares slope, its standard error and t-test.

    The test's null hypothesis, no trend, is the exchangeability a test between sides would assume."""

    model: str
    label: Label
    scope: TrendScope
    n: int
    first_kv_bytes: Fraction
    last_kv_bytes: Fraction
    slope_bytes_per_run: Fraction
    slope_se_bytes: float | None  # None below three runs
    ci95_bytes: tuple[float, float] | None
    p_value: float | None


def trend(model: str, label: Label, runs: Sequence[StudyRun], scope: TrendScope) -> Trend:
    kv = [r.kv_bytes for r in runs]
    fit = linear_trend(kv)
    return Trend(model, label, scope, fit.n, kv[0], kv[-1], fit.slope, fit.se, fit.ci95, fit.p_value)


@dataclass(frozen=True)
class LabelCheck:
    """A label against what its model would need: the weights its config implies must be in memory
    before the engine sizes its KV cache, so the memory in use then cannot be smaller."""

    model: str
    model_id: str
    throughput: Summary  # output tokens/s over all its runs
    predicted_weight_bytes: float | None  # kvprobe predict from the shipped config; None when not given
    smallest_in_use_bytes: Fraction

    @property
    def weights_fit_in_use(self) -> bool | None:
        if self.predicted_weight_bytes is None:
            return None
        return self.predicted_weight_bytes <= self.smallest_in_use_bytes


@dataclass(frozen=True)
class ExternalSummary:
    source: ExternalSource
    fit: SizingFit
    losses: tuple[LossByEquation, ...]
    trends: tuple[Trend, ...]
    labels: tuple[LabelCheck, ...]

    @property
    def restarted_runs(self) -> tuple[StudyRun, ...]:
        return tuple(run for run in self.source.runs if run.restarted)


def summarise_external(source: ExternalSource, predictions: dict[str, Prediction]) -> ExternalSummary:
    """The study read against its engine's equation; `predictions` maps the study's model names to
    what kvprobe.predict says of the model each label names (for the label check)."""
    losses: list[LossByEquation] = []
    trends: list[Trend] = []
    labels: list[LabelCheck] = []
    models = sorted({run.model for run in source.runs})
    for model in models:
        runs = [run for run in source.runs if run.model == model]
        completed = [run for run in runs if not run.restarted]
        losses.append(loss_by_equation(model, runs, "all runs"))
        if completed != runs:
            losses.append(loss_by_equation(model, completed, "completed series only"))
        for label in LABELS:
            side = [run for run in runs if run.label == label]
            trends.append(trend(model, label, [run for run in side if not run.restarted], "completed series"))
            if any(run.restarted for run in side):
                trends.append(trend(model, label, side, "all runs in time order"))
        labels.append(
            LabelCheck(
                model=model,
                model_id=runs[0].model_id,
                throughput=summarise([run.output_tokens_per_s for run in runs]),
                predicted_weight_bytes=predictions[model].weight_bytes if model in predictions else None,
                smallest_in_use_bytes=min(run.in_use_bytes for run in runs),
            )
        )
    return ExternalSummary(source, fit_sizing(source.runs), tuple(losses), tuple(trends), tuple(labels))


def external_from_files(path: str, models_file: str | None) -> ExternalSummary:
    """The study's table summarised, checked against the configs of the matching shipped models
    (`kvprobe report --external`); InputError where either file cannot be used."""
    try:
        source = load_benchmark_spark(Path(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--external {path}: not the study's results file ({exc})") from None
    models = {m.name: m for m in load_models(models_file)} if models_file else {}
    predictions = {}
    for study_name, name in STUDY_MODELS.items():
        if name in models:
            settings = models[name]
            predictions[study_name] = predict(name, settings.hf_config(), settings.kv_cache_dtype, settings.dtype)
    return summarise_external(source, predictions)
