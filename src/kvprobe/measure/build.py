"""From what one model's searches found to its result document."""

from __future__ import annotations

import time

from kvprobe.config import ModelSettings
from kvprobe.engines.sizing import check_trial
from kvprobe.environment.facts import probe_rss
from kvprobe.measure.attribution import attribute, attribute_nodes
from kvprobe.measure.model import ModelFindings
from kvprobe.measure.options import MeasureOptions
from kvprobe.predict import predict
from kvprobe.results.schema import (
    CudaView,
    Environment,
    GuardSettings,
    KvFigure,
    KvPrediction,
    ResultDocument,
    SearchSummary,
    SizingCheck,
    SoftwareVersions,
    StartOutcome,
    ThroughputResult,
    TrialRecord,
)
from kvprobe.search import SearchResult
from kvprobe.vocabulary import EngineName


def kv_figure(trial: TrialRecord | None, max_model_len: int) -> KvFigure | None:
    if trial is None or not trial.passed:
        return None
    tokens = trial.kv_cache_tokens
    return KvFigure(
        trial=trial.number,
        utilization=trial.utilization,
        kv_cache_memory_bytes=trial.kv_cache_memory_bytes,
        num_blocks=trial.num_gpu_blocks,
        block_size=trial.block_size,
        tokens=tokens,
        bytes=trial.kv_cache_bytes,
        bytes_per_block=trial.bytes_per_block,
        bytes_logged=trial.memory_report.kv_cache_bytes,
        tokens_logged=trial.memory_report.kv_cache_tokens_logged,
        max_concurrency=tokens / max_model_len if tokens else None,
        fill=trial.worker.fill,
    )


def search_summary(result: SearchResult, trials: list[TrialRecord], name: str) -> SearchSummary:
    mine = [t.number for t in trials if t.search == name]
    searching = sum(1 for t in trials if t.search == name and not t.confirmation)
    same = ("failing", "tolerance", "converged", "censored", "non_monotone", "confirmed")
    outcomes: dict[float, set[bool]] = {}
    for trial in trials:
        if trial.search == name:
            setting = trial.utilization if trial.is_utilization_start else trial.kv_cache_memory_bytes
            if setting is not None:
                outcomes.setdefault(setting, set()).add(trial.passed)
    flipped = sorted(setting for setting, seen in outcomes.items() if seen == {True, False})
    return SearchSummary(
        boundary=result.passing,
        engine_starts=searching,
        trials=mine,
        flipped=flipped,
        **{name: getattr(result, name) for name in same},
    )


def device_name(environment: Environment, cuda_view: CudaView | None) -> str:
    devices = environment.gpu.devices if environment.gpu.available else []
    if devices:
        return f"{len(devices)}x {devices[0].name}" if len(devices) > 1 else devices[0].name
    if cuda_view and cuda_view.device_name:
        return cuda_view.device_name
    return f"CPU: {environment.software.get('cpu_model') or 'unknown'}"


def _throughput(record: TrialRecord | None) -> ThroughputResult | None:
    if record is None:
        return None
    return record.worker.throughput if record.passed else ThroughputResult(error=record.reason)


def kv_prediction(settings: ModelSettings, block_size: int | None) -> KvPrediction | None:
    """config.json's implied KV layout and weights (None where the config does not say enough)."""
    try:
        config = settings.hf_config()
        implied = predict(
            settings.name,
            config,
            settings.kv_cache_dtype,
            settings.dtype,
            settings.tensor_parallel_size,
            block_size or 16,
            settings.extra_engine_args.get("quantization"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return KvPrediction(
        bytes_per_token=implied.bytes_per_token,
        bytes_per_block=implied.bytes_per_block if block_size else None,
        weight_bytes=implied.weight_bytes,
        attention=implied.attention,
    )


def sizing_checks(
    trials: list[TrialRecord], environment: Environment, cuda_view: CudaView | None, engine: EngineName
) -> list[SizingCheck]:
    """Every trial that reported KV, beside its engine's sizing equation (engines.sizing)."""
    total = cuda_view.total_bytes if cuda_view else None
    checks = (check_trial(trial, environment, total, engine) for trial in trials)
    return [check for check in checks if check is not None]


def build_document(
    found: ModelFindings,
    settings: ModelSettings,
    options: MeasureOptions,
    guard: GuardSettings,
    environment: Environment,
    run_id: str,
    repeat: int,
    started_at: float,
    replayed: int,
) -> ResultDocument:
    """The result document of one model and repeat."""
    trials = found.trials
    worker_versions = next((t.worker.versions for t in trials if t.worker.versions.vllm), SoftwareVersions())
    cuda_view = next((t.worker.cuda for t in trials if t.worker.cuda), None)
    at_u_max = found.at_u_max
    u_max, u_min = found.searches.get("u_max"), found.searches.get("u_min")
    return ResultDocument(
        run_id=run_id,
        repeat=repeat,
        label=options.label,
        condition=options.condition_name,
        experiment=options.experiment,
        model=settings.name,
        model_path=settings.model,
        settings=settings.capacity_settings(),
        settings_hash=settings.settings_hash(),
        started_at=started_at,
        finished_at=time.time(),
        versions=SoftwareVersions(
            kvprobe=environment.software["kvprobe"],
            vllm=worker_versions.vllm or environment.software["vllm"],
            torch=worker_versions.torch or environment.software["torch"],
            cuda_runtime=worker_versions.cuda_runtime,
        ),
        device=device_name(environment, cuda_view),
        environment=environment.model_copy(update={"condition": options.condition}),
        options=options.record(found.utilization_range, guard),
        reference=kv_figure(found.reference, settings.max_model_len),
        reference_outcome=None
        if found.reference is None
        else StartOutcome(outcome=found.reference.outcome, reason=found.reference.reason),
        searches={name: search_summary(result, trials, name) for name, result in found.searches.items()},
        u_max=u_max.passing if u_max else None,
        u_min=u_min.passing if u_min else None,
        kv_at_u_max=kv_figure(at_u_max, settings.max_model_len),
        physical_capacity=kv_figure(found.physical, settings.max_model_len),
        memory_breakdown=at_u_max.memory_report if at_u_max else None,
        memory_phases=at_u_max.memory if at_u_max else None,
        attribution=attribute(at_u_max, environment) if at_u_max else None,
        node_attribution=attribute_nodes(at_u_max, environment) if at_u_max else [],
        prediction=kv_prediction(settings, next((t.block_size for t in trials if t.block_size), None)),
        throughput=_throughput(found.throughput),
        cuda_view=cuda_view,
        engine_starts=len(trials),
        probe_rss_bytes=probe_rss(),
        replayed_trials=replayed,
        trials=trials,
        sizing_checks=sizing_checks(
            trials, environment.model_copy(update={"condition": options.condition}), cuda_view, settings.engine
        ),
        status="failed" if found.errors else "complete",
        errors=found.errors,
    )
