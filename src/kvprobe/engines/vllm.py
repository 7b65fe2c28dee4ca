"""The vLLM adapter: engine arguments from settings, the worker command, log parsing, failure classes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvprobe.results.schema import EngineMemoryReport
from kvprobe.safe_io import child_python
from kvprobe.units import GIB
from kvprobe.vocabulary import Outcome

if TYPE_CHECKING:
    from kvprobe.config import ModelSettings

# Failure classes, most specific first. Each pattern is a text vLLM (CUDA or CPU build) prints.
FAILURE_PATTERNS: list[tuple[Outcome, re.Pattern]] = [
    # vLLM's config classes are pydantic dataclasses: a refused setting is a ValidationError whose
    # "Value error, ..." line says why (e.g. max_num_batched_tokens below max_num_seqs).
    # Settings the config accepts but an attention backend refuses when the KV cache is laid out
    # (v1/worker/utils.py: "No common block size for 7 (CPU_ATTN: [MultipleOf(32)])" in 0.32).
    (
        "config-error",
        re.compile(
            r"validation errors? for \w*Config|\bValue error, "
            r"|No common block size for|Block size must be a multiple of"
        ),
    ),
    (
        "kv-too-small",
        re.compile(
            r"No available memory for the cache blocks"
            r"|To serve at least one request with the model'?s max seq len"
            r"|larger than the available KV cache memory"
            r"|is larger than the maximum number of tokens that can be stored in KV cache"
            r"|Insufficient memory for KV cache"
            r"|less than requested memory for kv \(-",
        ),
    ),
    (
        "startup-check",
        re.compile(
            r"on startup is less than desired (?:GPU|CPU) memory utilization"
            r"|on kv cache allocation is less than requested memory for kv"
        ),
    ),
    (
        "oom",
        re.compile(
            r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory|std::bad_alloc"
            r"|can't allocate memory|Cannot allocate memory|MemoryError"
        ),
    ),
    (
        "killed",
        re.compile(r"died unexpectedly|exitcode=-9|exit code -9|signal 9|SIGKILL|Killed"),
    ),
]

# Log lines that tell where an engine start is, for the phase samples.
PHASE_PATTERNS: dict[str, re.Pattern] = {
    "weights_loaded": re.compile(r"Model loading took|Loading weights took|Initializing model took"),
    "kv_allocated": re.compile(r"KV cache size: [\d,]+ tokens"),
}

_NUM = r"(-?[\d.]+)"
MEMORY_PATTERNS: dict[str, re.Pattern] = {
    "weights_gib": re.compile(r"Model loading took " + _NUM + r" ?GiB"),
    "kv_cache_gib": re.compile(r"Available KV cache memory: " + _NUM + r" ?GiB"),
    "non_kv_gib": re.compile(r"Total non KV cache memory: " + _NUM + r" ?GiB"),
    "activation_peak_gib": re.compile(r"torch peak memory increase: " + _NUM + r" ?GiB"),
    "non_torch_gib": re.compile(r"non-torch (?:forward increase )?memory(?: increase)?:? " + _NUM + r" ?GiB"),
    "free_at_start_gib": re.compile(r"(?:Initial free memory:? |Free memory on device \S+ \()" + _NUM),
    "requested_gib": re.compile(r"Requested memory: [\d.]+ \(util\), " + _NUM + r" ?GiB"),
    "cpu_kv_cache_gib": re.compile(r"(?:Auto|Explicitly) set \(" + _NUM + r"/"),
    "budget_total_gib": re.compile(r"(?:Auto|Explicitly) set \([\d.]+/" + _NUM + r"\) GiB"),
    "cpu_requested_gib": re.compile(r"with " + _NUM + r" GiB requested memory for the worker"),
    "cpu_non_kv_gib": re.compile(r"" + _NUM + r" GiB memory was consumed by non-kv usages"),
    "available_gib": re.compile(r"Available memory on node \d+ \(" + _NUM + r"/"),
    "startup_total_gib": re.compile(
        r"(?:Available memory on node \d+|Free memory on device \S+) \([\d.]+/" + _NUM + r" GiB\)"
    ),
}
# vLLM says whether it took its CUDA graph estimate from the KV budget
# (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS, on by default; vllm/v1/worker/gpu_worker.py); the
# older model runner also logs the estimate's figure (gpu_model_runner.py), Model Runner V2 does not.
CUDAGRAPH_ESTIMATE_PATTERN = re.compile(r"Estimated CUDA graph memory: " + _NUM + r" ?GiB total")
CUDAGRAPH_ESTIMATE_APPLIED = {
    "CUDA graph memory profiling is enabled": True,
    "CUDA graph memory profiling is disabled": False,
}
KV_USAGE_PATTERN = re.compile(r"KV cache usage: ([\d.]+)%")
KV_TOKENS_PATTERN = re.compile(r"KV cache size: ([\d,]+) tokens")
MAX_CONCURRENCY_PATTERN = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")


@dataclass(frozen=True)
class Classification:
    outcome: Outcome
    reason: str


WRAPPED = "See root cause above"
EXCEPTION_LINE = re.compile(r"\b[A-Za-z_][\w.]*(?:Error|Exception): \S")


class VllmEngine:
    """Everything kvprobe knows about vLLM, outside the worker process."""

    name = "vllm"
    phase_patterns = PHASE_PATTERNS

    def worker_command(
        self, spec_path: str, result_path: str | None = None, prepare_like: str | None = None
    ) -> list[str]:
        """The worker process; without a result path it imports (and prepares like the trial whose
        spec is `prepare_like`), then waits for the spec to appear."""
        command = [*child_python(), "-m", "kvprobe.engines.vllm_worker", spec_path]
        if result_path:
            return [*command, result_path]
        return [*command, *(["--prepare-like", prepare_like] if prepare_like else [])]

    def worker_environment(self) -> dict[str, str]:
        # DEBUG logs carry the memory profile (free at start, non-KV memory, activation peak).
        # FlashInfer's sampler JIT-compiles for minutes on first use (seen on the H100 host).
        return {"VLLM_LOGGING_LEVEL": "DEBUG", "VLLM_USE_FLASHINFER_SAMPLER": "0", "PYTHONUNBUFFERED": "1"}

    def usage_context(self, settings: ModelSettings) -> str:
        """vLLM's UsageContext name whose defaults the engine takes (see ModelSettings.engine_defaults)."""
        return {"serve": "OPENAI_API_SERVER", "offline": "LLM_CLASS"}[settings.engine_defaults]

    def engine_args(
        self,
        settings: ModelSettings,
        utilization: float | None = None,
        *,
        kv_cache_memory_bytes: int | None = None,
    ) -> dict:
        args = {
            "model": settings.model,
            "load_format": settings.load_format,
            "dtype": settings.dtype,
            "kv_cache_dtype": settings.kv_cache_dtype,
            "max_model_len": settings.max_model_len,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "enforce_eager": settings.enforce_eager,
            "skip_tokenizer_init": True,
            **settings.extra_engine_args,
        }
        for key in ("block_size", "max_num_seqs"):
            if getattr(settings, key) is not None:
                args[key] = getattr(settings, key)
        if utilization is not None:
            args["gpu_memory_utilization"] = utilization
        if kv_cache_memory_bytes is not None:
            args["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
        return args

    def classify(self, log_text: str) -> Classification:
        """A failed start's class and the line that decided it."""
        for outcome, pattern in FAILURE_PATTERNS:
            match = None
            for line in reversed(log_text.splitlines()):
                if pattern.search(line):
                    match = line
                    break
            if match:
                return Classification(outcome, _shorten(match))
        lines = log_text.splitlines()
        # vLLM re-raises a failed engine core as "... See root cause above.": the cause is the line to show
        causes = (line for line in reversed(lines) if EXCEPTION_LINE.search(line) and WRAPPED not in line)
        last = next(causes, None) or next((line for line in reversed(lines) if "Error" in line), None)
        if last is None:
            last = next((line for line in reversed(lines) if line.strip()), "no output")
        return Classification("error", _shorten(last))

    def logged_peak_kv_usage(self, log_text: str) -> float | None:
        """The highest KV cache usage vLLM's stat logger printed (every few seconds: a sample, not the peak)."""
        usages = [float(value) / 100 for value in KV_USAGE_PATTERN.findall(log_text)]
        return max(usages) if usages else None

    def memory_report(self, log_text: str) -> EngineMemoryReport:
        """The engine's own memory figures from its log, in bytes (None where not printed)."""
        report: dict[str, float | None] = {}
        for key, pattern in MEMORY_PATTERNS.items():
            matches = pattern.findall(log_text)
            report[key.removesuffix("_gib") + "_bytes"] = float(matches[-1]) * GIB if matches else None
        tokens = KV_TOKENS_PATTERN.findall(log_text)
        report["kv_cache_tokens_logged"] = int(tokens[-1].replace(",", "")) if tokens else None
        concurrency = MAX_CONCURRENCY_PATTERN.findall(log_text)
        report["max_concurrency_logged"] = float(concurrency[-1][1]) if concurrency else None
        applied = next((said for line, said in CUDAGRAPH_ESTIMATE_APPLIED.items() if line in log_text), None)
        estimates = CUDAGRAPH_ESTIMATE_PATTERN.findall(log_text) if applied else []
        report["cudagraph_estimate_applied"] = applied
        report["cudagraph_estimate_bytes"] = float(estimates[-1]) * GIB if estimates else None
        return EngineMemoryReport(**_normalise_backends(report))


def _normalise_backends(report: dict) -> dict:
    """One vocabulary for both builds: the CPU build names its figures differently."""
    merged = dict(report)
    if merged.get("kv_cache_bytes") is None:
        merged["kv_cache_bytes"] = merged.get("cpu_kv_cache_bytes")
    if merged.get("requested_bytes") is None:
        merged["requested_bytes"] = merged.get("cpu_requested_bytes")
    if merged.get("non_kv_bytes") is None:
        merged["non_kv_bytes"] = merged.get("cpu_non_kv_bytes")
    if merged.get("budget_total_bytes") is None:
        merged["budget_total_bytes"] = merged.get("startup_total_bytes")
    for key in ("cpu_kv_cache_bytes", "cpu_requested_bytes", "cpu_non_kv_bytes", "startup_total_bytes"):
        merged.pop(key, None)
    return merged


def _shorten(line: str, limit: int = 400) -> str:
    line = line.strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."
