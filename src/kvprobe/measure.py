"""The measurement scheduler: for one model and repeat, run the searches through isolated trials.

Data flows one way: settings -> trials (via TrialRunner) -> searches (pure) -> one result document.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from kvprobe import environment
from kvprobe.config import ModelSettings
from kvprobe.engines.vllm import VllmEngine
from kvprobe.engines.vllm_worker import fill_request_count
from kvprobe.results.attribution import attribute
from kvprobe.results.schema import SCHEMA_VERSION, TrialRecord
from kvprobe.results.store import Journal, trial_key
from kvprobe.search import SearchResult, find_boundary
from kvprobe.trial.runner import TrialRequest, TrialRunner

SEARCHES = ("reference", "u_max", "u_min", "kv_blocks")
ABOVE_WINDOW = ("startup-check", "oom", "killed", "guard")  # refused for asking too much memory
BELOW_WINDOW = ("kv-too-small",)  # refused for too little KV cache
U_MAX_FAILURES = ABOVE_WINDOW + ("error",)
U_MIN_FAILURES = BELOW_WINDOW
THROUGHPUT_WORKLOAD = {"requests": 16, "prompt_len": 64, "output_len": 64}


class OutsideWindow(Exception):
    """A start was refused on the far side of the utilization window from the boundary searched."""


@dataclass
class MeasureOptions:
    """Everything about how a model is measured that does not change its capacity."""

    label: str = "native"
    repeats: int = 1
    tolerance: float = 0.01
    utilization_range: Optional[tuple[float, float]] = None  # overrides each model's range
    searches: tuple[str, ...] = SEARCHES
    fill_target: float = 0.95
    throughput: bool = False
    cooldown_s: float = 0.0
    max_gpu_temp_c: Optional[int] = None
    drop_caches: bool = False
    strategy: str = "bracketed"  # or "bisection": ignore the engine's memory report when searching
    retries: int = 1  # a timed-out trial is tried again this often before it counts as a failure
    extra: dict = field(default_factory=dict)  # recorded as-is (e.g. the container command line)


class Progress(Protocol):
    def trial_started(self, model: str, search: str, value: str) -> None: ...
    def trial_finished(self, model: str, record: TrialRecord, replayed: bool) -> None: ...


class ModelMeasurement:
    """One model, one repeat: the trials it ran and what the searches made of them."""

    def __init__(self, settings: ModelSettings, repeat: int, runner: TrialRunner, engine: VllmEngine,
                 journal: Journal, options: MeasureOptions, progress: Progress, next_number: Callable[[], int]):
        self.settings = settings
        self.repeat = repeat
        self.runner = runner
        self.engine = engine
        self.journal = journal
        self.options = options
        self.progress = progress
        self.next_number = next_number
        self.trials: list[TrialRecord] = []
        self.replayed = 0

    # --- trials ------------------------------------------------------------------------------
    def trial(self, search: str, utilization: Optional[float] = None, kv_bytes: Optional[int] = None,
              fill: Optional[float] = None, throughput: Optional[dict] = None,
              overrides: Optional[dict] = None) -> TrialRecord:
        record = None
        for attempt in range(1 + self.options.retries):
            key = trial_key(self.settings.name, self.repeat, search, utilization, kv_bytes, fill, bool(throughput)) + f"#{attempt}"
            record = self.journal.get(key)
            replayed = record is not None
            if record is None:
                self._prepare()
                value = f"u={utilization}" if utilization is not None else f"kv={kv_bytes / (1 << 30):.2f} GiB"
                self.progress.trial_started(self.settings.name, search, value)
                request = TrialRequest(
                    number=self.next_number(), search=search,
                    engine_args={**self.engine.engine_args(self.settings, utilization, kv_bytes), **(overrides or {})},
                    usage_context=self.engine.usage_context(self.settings),
                    utilization=utilization, kv_cache_memory_bytes=kv_bytes, fill_target=fill, throughput=throughput,
                )
                record = self.runner.run(request)
                self.journal.append(key, record)
            else:
                self.replayed += 1
            self.trials.append(record)
            self.progress.trial_finished(self.settings.name, record, replayed)
            if record.outcome != "timeout":
                break
        return record

    def _prepare(self) -> None:
        """Cool-down, GPU temperature and page cache, before every engine start."""
        if self.trials and self.options.cooldown_s:
            time.sleep(self.options.cooldown_s)
        if self.options.max_gpu_temp_c is not None:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                temperature = self.runner.nvml.temperature_c()
                if temperature is None or temperature <= self.options.max_gpu_temp_c:
                    break
                time.sleep(5)
        if self.options.drop_caches:
            drop_page_cache()

    # --- searches ----------------------------------------------------------------------------
    def utilization_trials(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.utilization is not None and t.kv_cache_memory_bytes is None]

    def ok_trials(self) -> list[TrialRecord]:
        return [t for t in self.utilization_trials() if t.passed]

    def known_utilizations(self, failures: tuple[str, ...]) -> list[tuple[float, bool]]:
        """Earlier starts as search evidence: passes, and the failures that bound this search.

        A start refused for too little KV says nothing about u_max, and one refused for too much
        memory says nothing about u_min.
        """
        return [(t.utilization, t.passed) for t in self.utilization_trials() if t.passed or t.outcome in failures]

    def run_reference(self) -> TrialRecord:
        return self.trial("reference", utilization=self.settings.gpu_memory_utilization)

    def search_u_max(self, lo: float, hi: float) -> SearchResult:
        start = self.settings.gpu_memory_utilization if self.options.strategy == "bracketed" else None
        return self._utilization_search("u_max", lo, hi, lambda: start, self._predictor(lambda: predict_u_max(self.trials)))

    def search_u_min(self, lo: float, hi: float) -> SearchResult:
        def start() -> Optional[float]:
            bracketed = self.options.strategy == "bracketed"
            return min((t.utilization for t in self.ok_trials()), default=None) if bracketed else None

        predict = self._predictor(lambda: predict_u_min(self.ok_trials(), self.settings.max_model_len))
        return self._utilization_search("u_min", lo, hi, start, predict, passing_below=False)

    def _utilization_search(self, search: str, lo: float, hi: float, start: Callable[[], Optional[float]],
                            predict: Optional[Callable[[], Optional[float]]], passing_below: bool = True) -> SearchResult:
        """find_boundary over [lo, hi] narrowed past every start refused on the far side of the window.

        A start refused for too little KV lies below u_max, not above it (and one refused for too
        much memory lies above u_min): it moves the search range, it is not the boundary. When the
        search meets such a refusal it starts again on the narrower range, reusing every start so far.
        """
        far_side, failures = (BELOW_WINDOW, U_MAX_FAILURES) if passing_below else (ABOVE_WINDOW, U_MIN_FAILURES)
        tolerance = self.options.tolerance

        def probe(u: float) -> bool:
            trial = self.trial(search, utilization=round(u, 6))
            if trial.outcome in far_side:
                raise OutsideWindow(trial.utilization)
            return trial.passed

        while True:
            refused = [t.utilization for t in self.utilization_trials() if t.outcome in far_side]
            if passing_below:
                lo = round(max([lo] + [u + tolerance for u in refused]), 10)
            else:
                hi = round(min([hi] + [u - tolerance for u in refused]), 10)
            if not lo < hi:
                return SearchResult(passing=None, failing=None, tolerance=tolerance)
            first = start()
            try:
                return find_boundary(
                    probe, lo, hi, tolerance, passing_below=passing_below,
                    start=first if first is not None and lo <= first <= hi else None,
                    predict=predict, known=self.known_utilizations(failures),
                )
            except OutsideWindow:
                continue

    def search_kv_blocks(self, at_u_max: TrialRecord, hi_fraction: float) -> Optional[SearchResult]:
        """Largest explicit KV budget (in blocks) that starts and survives the fill test."""
        geometry = block_geometry(at_u_max)
        if geometry is None:
            return None
        bytes_per_block, blocks_at_u_max = geometry
        free_for_engine = engine_free_memory(at_u_max)
        need = math.ceil(self.settings.max_model_len / at_u_max.block_size)
        hi = max(blocks_at_u_max + 1, int(free_for_engine * hi_fraction / bytes_per_block)) if free_for_engine else blocks_at_u_max * 2
        total = budget_total(at_u_max) or free_for_engine or bytes_per_block * hi
        tolerance = max(1, round(self.options.tolerance * total / bytes_per_block))
        non_kv = at_u_max.memory_report.get("non_kv_bytes")
        predicted = (free_for_engine - non_kv) / bytes_per_block if free_for_engine and non_kv is not None else None

        def probe(blocks: float) -> bool:
            # The fill needs every request in flight at once; more sequences than the model's
            # setting only add non-KV memory, so the capacity found is, if anything, conservative.
            requests = fill_request_count(int(blocks), at_u_max.block_size, self.settings.max_model_len)
            overrides = {"max_num_seqs": max(self.settings.max_num_seqs or 0, requests)}
            return self.trial("kv_blocks", kv_bytes=int(blocks) * bytes_per_block, fill=self.options.fill_target,
                              overrides=overrides).passed

        return find_boundary(
            probe, need, hi, tolerance, start=blocks_at_u_max, integer=True,
            predict=self._predictor(lambda: predicted) if predicted else None,
        )

    def _predictor(self, predict: Callable[[], Optional[float]]) -> Optional[Callable[[], Optional[float]]]:
        return predict if self.options.strategy == "bracketed" else None


# --- predictions from the engine's memory report (pure functions of trial records) ---------------

def budget_total(trial: TrialRecord) -> Optional[float]:
    """The memory total the engine multiplies gpu_memory_utilization by."""
    report = trial.memory_report
    if report.get("budget_total_bytes"):
        return report["budget_total_bytes"]
    if report.get("requested_bytes") and trial.utilization:
        return report["requested_bytes"] / trial.utilization
    cuda = (trial.worker or {}).get("cuda") or {}
    return cuda.get("total_bytes")


def engine_free_memory(trial: TrialRecord) -> Optional[float]:
    """Memory the engine's budget could have used at its start-up check in this trial."""
    return trial.memory_report.get("free_at_start_bytes") or free_at_check(trial)


def block_geometry(trial: TrialRecord) -> Optional[tuple[int, int]]:
    if not trial.num_gpu_blocks or not trial.kv_cache_bytes:
        return None
    return int(trial.kv_cache_bytes // trial.num_gpu_blocks), trial.num_gpu_blocks


def predict_u_max(trials: list[TrialRecord]) -> Optional[float]:
    """The utilization whose request just fits the memory free when the engine checks it.

    A refused start names that memory exactly (vLLM's start-up check message), so the latest
    refusal wins. Otherwise a passing start estimates it: CUDA's free memory at start from the
    engine's log, or on host memory what was left when weights had loaded (the check runs then).
    """
    for trial in reversed(trials):
        if trial.outcome == "startup-check" and trial.utilization is not None:
            report = trial.memory_report
            free = report.get("available_bytes") or report.get("free_at_start_bytes")
            total = report.get("budget_total_bytes")
            if free and total:
                return free / total
    for trial in trials:
        if not trial.passed or trial.utilization is None or trial.kv_cache_memory_bytes is not None:
            continue
        total = budget_total(trial)
        free = engine_free_memory(trial)
        if total and free:
            return free / total
    return None


def free_at_check(trial: TrialRecord) -> Optional[float]:
    """Host memory free when the engine checked it: sampled once weights had loaded, plus the weights."""
    loaded = (trial.memory or {}).get("phases", {}).get("weights_loaded")
    if not loaded:
        return None
    weights = trial.memory_report.get("weights_bytes") or 0.0
    if loaded.get("cgroup_usage") is not None and loaded.get("cgroup_limit") is not None:
        return loaded["cgroup_limit"] - loaded["cgroup_usage"] + weights
    return loaded["host_available"] + weights


def predict_u_min(ok: list[TrialRecord], max_model_len: int) -> Optional[float]:
    """KV grows with utilization at slope `total`; find where it just holds one full request."""
    usable = [t for t in ok if block_geometry(t) and budget_total(t)]
    if not usable:
        return None
    lowest = min(usable, key=lambda t: t.utilization)
    bytes_per_block, _ = block_geometry(lowest)
    need = math.ceil(max_model_len / lowest.block_size) * bytes_per_block
    return lowest.utilization - (lowest.kv_cache_bytes - need) / budget_total(lowest)


def drop_page_cache() -> None:
    """Write back and drop the page cache (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as handle:
        handle.write("3\n")


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)


# --- the result document ---------------------------------------------------------------------

def kv_summary(trial: Optional[TrialRecord], max_model_len: int) -> Optional[dict]:
    if trial is None or not trial.passed:
        return None
    tokens = trial.kv_cache_tokens
    return {
        "trial": trial.number,
        "utilization": trial.utilization,
        "kv_cache_memory_bytes": trial.kv_cache_memory_bytes,
        "num_blocks": trial.num_gpu_blocks,
        "block_size": trial.block_size,
        "tokens": tokens,
        "bytes": trial.kv_cache_bytes,
        "tokens_logged": trial.memory_report.get("kv_cache_tokens_logged"),
        "max_concurrency": tokens / max_model_len if tokens else None,
        "fill": (trial.worker or {}).get("fill"),
    }


def search_summary(result: Optional[SearchResult], trials: list[TrialRecord], name: str) -> Optional[dict]:
    if result is None:
        return None
    return {
        "boundary": result.passing,
        "failing": result.failing,
        "tolerance": result.tolerance,
        "converged": result.converged,
        "censored": result.censored,
        "non_monotone": result.non_monotone,
        "engine_starts": sum(1 for t in trials if t.search == name),
        "trials": [t.number for t in trials if t.search == name],
    }


def find_trial(trials: list[TrialRecord], **match) -> Optional[TrialRecord]:
    """The last passing trial whose fields equal `match`."""
    for trial in reversed(trials):
        if trial.passed and all(getattr(trial, k) == v for k, v in match.items()):
            return trial
    return None


def measure_model(measurement: ModelMeasurement, run_id: str, env_block: dict) -> dict:
    """Run the chosen searches for one model and repeat; return its result document."""
    settings, options = measurement.settings, measurement.options
    lo, hi = options.utilization_range or settings.utilization_range
    started = time.time()
    searches: dict[str, Optional[dict]] = {}
    errors: list[str] = []

    reference = measurement.run_reference() if "reference" in options.searches else None
    if reference is not None and reference.outcome == "error":
        errors.append(f"reference start failed: {reference.reason}")

    u_max_result = None
    if "u_max" in options.searches and not errors:
        u_max_result = measurement.search_u_max(lo, hi)
        searches["u_max"] = search_summary(u_max_result, measurement.trials, "u_max")
        if u_max_result.passing is None:
            errors.append(f"no utilization in [{lo}, {hi}] started the engine")
    at_u_max = find_trial(measurement.trials, utilization=u_max_result.passing, kv_cache_memory_bytes=None) if u_max_result and u_max_result.passing else None

    if "u_min" in options.searches and not errors:
        u_min_result = measurement.search_u_min(lo, hi)
        searches["u_min"] = search_summary(u_min_result, measurement.trials, "u_min")

    kv_result = None
    if "kv_blocks" in options.searches and at_u_max is not None:
        kv_result = measurement.search_kv_blocks(at_u_max, hi)
        searches["kv_blocks"] = search_summary(kv_result, measurement.trials, "kv_blocks")
    physical = None
    if kv_result is not None and kv_result.passing is not None:
        bytes_per_block, _ = block_geometry(at_u_max)
        physical = kv_summary(
            find_trial(measurement.trials, search="kv_blocks", kv_cache_memory_bytes=int(kv_result.passing) * bytes_per_block),
            settings.max_model_len,
        )

    throughput = None
    if options.throughput and at_u_max is not None:
        record = measurement.trial("throughput", utilization=at_u_max.utilization, throughput=THROUGHPUT_WORKLOAD)
        throughput = (record.worker or {}).get("throughput") if record.passed else {"error": record.reason}

    worker_versions = next((t.worker.get("versions") for t in measurement.trials if t.worker.get("versions")), {})
    cuda_view = next((t.worker.get("cuda") for t in measurement.trials if t.worker.get("cuda")), None)
    document = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "repeat": measurement.repeat,
        "label": options.label,
        "model": settings.name,
        "model_path": settings.model,
        "settings": settings.capacity_settings(),
        "settings_hash": settings.settings_hash(),
        "started_at": started,
        "finished_at": time.time(),
        "versions": {
            "kvprobe": env_block["software"]["kvprobe"],
            "vllm": worker_versions.get("vllm") or env_block["software"]["vllm"],
            "torch": worker_versions.get("torch") or env_block["software"]["torch"],
            "cuda_runtime": worker_versions.get("cuda_runtime"),
        },
        "device": device_name(env_block, cuda_view),
        "environment": env_block,
        "options": {
            "tolerance": options.tolerance,
            "utilization_range": [lo, hi],
            "fill_target": options.fill_target,
            "drop_caches": options.drop_caches,
            "cooldown_s": options.cooldown_s,
            "guard": measurement.runner.limits.guard.to_dict(),
            "searches": list(options.searches),
            "strategy": options.strategy,
            **options.extra,
        },
        "reference": kv_summary(reference, settings.max_model_len) if reference else None,
        "reference_outcome": None if reference is None else {"outcome": reference.outcome, "reason": reference.reason},
        "searches": searches,
        "u_max": u_max_result.passing if u_max_result else None,
        "u_min": (searches.get("u_min") or {}).get("boundary"),
        "kv_at_u_max": kv_summary(at_u_max, settings.max_model_len),
        "physical_capacity": physical,
        "memory_breakdown": at_u_max.memory_report if at_u_max else None,
        "memory_phases": at_u_max.memory if at_u_max else None,
        "attribution": attribute(at_u_max, env_block) if at_u_max else None,
        "throughput": throughput,
        "cuda_view": cuda_view,
        "engine_starts": sum(1 for t in measurement.trials),
        "probe_rss_bytes": environment.probe_rss(),
        "replayed_trials": measurement.replayed,
        "trials": [t.to_dict() for t in measurement.trials],
        "status": "failed" if errors else "complete",
        "errors": errors,
    }
    return document


def device_name(env_block: dict, cuda_view: Optional[dict]) -> str:
    gpu = env_block.get("gpu", {})
    if gpu.get("available") and gpu.get("devices"):
        names = [d["name"] for d in gpu["devices"]]
        return f"{len(names)}x {names[0]}" if len(names) > 1 else names[0]
    if cuda_view and cuda_view.get("device_name"):
        return cuda_view["device_name"]
    return f"CPU: {env_block['software'].get('cpu_model') or 'unknown'}"
