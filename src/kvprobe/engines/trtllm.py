"""The TensorRT-LLM adapter: LLM API arguments from settings, the worker command, log parsing, failure classes.

Not run against a real TensorRT-LLM here (it is not installable on this machine: PyPI serves only a
stub). Its log formats and failure texts are read from TensorRT-LLM's source
(tensorrt_llm/_torch/pyexecutor/_util.py, cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp,
tensorrt_llm/_torch/pyexecutor/weight_loader.py) and checked against public logs
(tests/data/trtllm/, each file citing its source).

`free_gpu_memory_fraction` is searched where vLLM's gpu_memory_utilization is, but it means a
fraction of FREE memory at sizing time (engines.sizing.TrtllmInputs), not of the device's total.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from kvprobe.engines.vllm import Classification, _shorten
from kvprobe.results.schema import EngineMemoryReport
from kvprobe.safe_io import child_python
from kvprobe.units import GIB
from kvprobe.vocabulary import Outcome

if TYPE_CHECKING:
    from kvprobe.config import ModelSettings

# Failure classes, most specific first; each pattern is text TensorRT-LLM's source prints.
FAILURE_PATTERNS: list[tuple[Outcome, re.Pattern]] = [
    (
        "kv-too-small",
        re.compile(
            r"exceeds upper bound \d+ for available blocks"  # the window shrunk to what the cache holds
            r"|Prompt length \(\d+\) exceeds maximum input length"
            r"|Impossible to fit in any sequence in kvCache"
            r"|max_tokens=0|primary blocks=0\b"
        ),
    ),
    (
        "oom",
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|out of memory|std::bad_alloc"
            r"|Cannot allocate memory|Failed to create cublas handle"
        ),
    ),
    ("killed", re.compile(r"exitcode=-9|exit code -9|signal 9|SIGKILL|Killed")),
]

PHASE_PATTERNS: dict[str, re.Pattern] = {
    "weights_loaded": re.compile(r"Memory used after loading model weights|Model init total"),
    "kv_allocated": re.compile(r"\[MemUsageChange\] Allocated [\d.]+ GiB for max tokens in paged KV cache"),
}

_NUM = r"(-?[\d.]+)"
# "Peak memory ..." in its versions (tensorrt_llm/_torch/pyexecutor/_util.py):
#   early:   "... (torch + non-torch): P GiB, available KV cache memory when calculating max tokens: A GiB"
#   then:    "..., fraction is set F, kv size is K"
#   then:    "..., fraction is set F, kv size is K. device total memory T GiB, , tmp kv_mem Z GiB"
#   current: "..., fraction is set F, kv size per token is K. device total memory T GiB,
#             temporary kv cache memory during profiling Z GiB"
PEAK_PATTERN = re.compile(
    r"Peak memory during memory usage profiling \(torch \+ non-torch\): " + _NUM + r" GiB, "
    r"available KV cache memory when calculating max tokens: " + _NUM + r" GiB"
    r"(?:, fraction is set " + _NUM + r", kv size (?:per token )?is (\d+)?[^.\n]*"
    r"(?:\. device total memory "
    + _NUM
    + r" GiB, (?:, tmp kv_mem |temporary kv cache memory during profiling )"
    + _NUM
    + r" GiB)?)?"
)
# C++ KV manager: "Memory usage when calculating max tokens in paged kv cache: total: T GiB, available: A GiB"
CPP_SIZING_PATTERN = re.compile(
    r"Memory usage when calculating max tokens in paged kv cache: total: " + _NUM + r" GiB, available: " + _NUM
)
ALLOCATED_PATTERN = re.compile(
    r"\[MemUsageChange\] Allocated " + _NUM + r" GiB for max tokens in paged KV cache \((\d+)\)"
)
# cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp; printed for the profiling cache and again for the final one
BLOCKS_PATTERN = re.compile(r"Number of blocks in KV cache primary pool: (\d+)")
TOKENS_PER_BLOCK_PATTERN = re.compile(r"Number of tokens per block: (\d+)")
MEMORY_PATTERNS: dict[str, re.Pattern] = {
    "weights_bytes": re.compile(r"Memory used after loading model weights \(inside torch\)[^:]*: " + _NUM + " GiB"),
    "activation_peak_bytes": re.compile(r"Memory dynamically allocated during inference[^:]*: " + _NUM + " GiB"),
    "non_torch_bytes": re.compile(r"Memory used outside torch[^:]*: " + _NUM + " GiB"),
    "prefetched_checkpoint_bytes": re.compile(r"Prefetching " + _NUM + r" ?GB checkpoint files"),
}


class TrtllmEngine:
    """Everything kvprobe knows about TensorRT-LLM, outside the worker process.
    Not run against a real TensorRT-LLM here."""

    name = "tensorrt-llm"
    phase_patterns = PHASE_PATTERNS

    def worker_command(
        self, spec_path: str, result_path: str | None = None, prepare_like: str | None = None
    ) -> list[str]:
        """The worker process; without a result path it imports, then waits for the spec to appear
        (`prepare_like` is accepted for the common surface: TensorRT-LLM has no head start to prepare)."""
        command = [*child_python(), "-m", "kvprobe.engines.trtllm_worker", spec_path]
        return [*command, result_path] if result_path else command

    def usage_context(self, settings: ModelSettings) -> str:
        """TensorRT-LLM has no usage contexts: its defaults are the LLM API's, whatever serves it."""
        return "LLM_API"

    def logged_peak_kv_usage(self, log_text: str) -> float | None:
        """TensorRT-LLM prints no periodic KV usage line kvprobe reads."""
        return None

    def worker_environment(self) -> dict[str, str]:
        # INFO carries the sizing lines parsed below (TLLM_LOG_LEVEL is TensorRT-LLM's logger level).
        return {"TLLM_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}

    def engine_args(
        self,
        settings: ModelSettings,
        utilization: float | None = None,
        *,
        kv_cache_memory_bytes: int | None = None,
        max_tokens: int | None = None,
    ) -> dict:
        """Keyword arguments of tensorrt_llm.LLM (PyTorch backend). `utilization` is
        free_gpu_memory_fraction (a fraction of free memory); `kv_cache_memory_bytes` becomes
        max_gpu_total_bytes and `max_tokens` the KV token cap: the explicit budget of a physical search."""
        kv_cache_config: dict = {}
        if settings.kv_cache_dtype != "auto":
            kv_cache_config["dtype"] = settings.kv_cache_dtype
        if utilization is not None:
            kv_cache_config["free_gpu_memory_fraction"] = utilization
        if kv_cache_memory_bytes is not None:
            kv_cache_config["max_gpu_total_bytes"] = int(kv_cache_memory_bytes)
        if max_tokens is not None:
            kv_cache_config["max_tokens"] = int(max_tokens)
        if settings.block_size is not None:
            kv_cache_config["tokens_per_block"] = settings.block_size
        args: dict = {
            "model": settings.model,
            "backend": "pytorch",
            "dtype": settings.dtype,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "max_seq_len": settings.max_model_len,
            "skip_tokenizer_init": True,
            "kv_cache_config": kv_cache_config,
            **settings.extra_engine_args,
        }
        if settings.load_format == "dummy":
            args["load_format"] = "dummy"
        if settings.max_num_seqs is not None:
            args["max_batch_size"] = settings.max_num_seqs
        return args

    def classify(self, log_text: str) -> Classification:
        """A failed start's class and the line that decided it."""
        lines = log_text.splitlines()
        for outcome, pattern in FAILURE_PATTERNS:
            match = next((line for line in reversed(lines) if pattern.search(line)), None)
            if match:
                return Classification(outcome, _shorten(match))
        last = next((line for line in reversed(lines) if "Error" in line or "[E]" in line), None)
        last = last or next((line for line in reversed(lines) if line.strip()), "no output")
        return Classification("error", _shorten(last))

    def memory_report(self, log_text: str) -> EngineMemoryReport:
        """The engine's own memory figures from its log, in bytes (None where not printed). Where a
        line appears twice (the profiling pass, then the final cache) the last is the engine's figure."""
        report: dict[str, float | int | None] = {
            key: _last_gib(pattern, log_text) for key, pattern in MEMORY_PATTERNS.items()
        }
        peaks = PEAK_PATTERN.findall(log_text)
        if peaks:
            peak, estimate, fraction, per_token, total, temporary = peaks[-1]
            report.update(
                peak_bytes=float(peak) * GIB,
                kv_estimate_bytes=float(estimate) * GIB,
                kv_fraction_logged=float(fraction) if fraction else None,
                kv_bytes_per_token=int(per_token) if per_token else None,
                device_total_bytes=float(total) * GIB if total else None,
                temporary_kv_bytes=float(temporary) * GIB if temporary else None,
            )
        sizing = CPP_SIZING_PATTERN.findall(log_text)
        if sizing:
            total, free = sizing[-1]
            report["free_at_sizing_bytes"] = float(free) * GIB
            if report.get("device_total_bytes") is None:
                report["device_total_bytes"] = float(total) * GIB
        for key, pattern in (
            ("kv_blocks_logged", BLOCKS_PATTERN),
            ("tokens_per_block_logged", TOKENS_PER_BLOCK_PATTERN),
        ):
            found = pattern.findall(log_text)
            report[key] = int(found[-1]) if found else None
        allocated = ALLOCATED_PATTERN.findall(log_text)
        if allocated:
            report["kv_cache_bytes"] = float(allocated[-1][0]) * GIB
            report["kv_cache_tokens_logged"] = int(allocated[-1][1])
        return EngineMemoryReport(**report)


def _last_gib(pattern: re.Pattern, text: str) -> float | None:
    matches = pattern.findall(text)
    return float(matches[-1]) * GIB if matches else None
