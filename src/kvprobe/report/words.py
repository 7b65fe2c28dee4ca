"""The report's words, in one place: units, metric titles, attribution parts, verdicts, boundaries.

Every layout, chart and writer takes its titles and verdict words from here, so a metric reads the
same in the pair report, the experiment report, the charts and the CSV header.
"""

from __future__ import annotations

from kvprobe.report.compare import Evidence, Unit
from kvprobe.report.stats import Verdict
from kvprobe.results.schema import BoundaryKind

TAGS = ("vllm", "kv-cache", "containers")  # a report's Hugo tags
CSV_UNITS: dict[Unit, str] = {
    "GiB": "bytes",  # stored in bytes, shown in GiB
    "tokens": "tokens",
    "blocks": "blocks",
    "bytes": "bytes",
    "fraction": "fraction",
    "requests": "requests",
    "tok/s": "tokens/s",
    "percent": "%",
}
TITLES = {
    "kv_reference_bytes": "KV cache at gpu_memory_utilization (GiB)",
    "kv_reference_blocks": "KV blocks at gpu_memory_utilization",
    "kv_reference_tokens": "KV tokens at gpu_memory_utilization",
    "reference_engine_total_bytes": "memory total the engine multiplied it by (its log, GiB)",
    "u_max": "u_max (largest utilization that starts)",
    "u_min": "u_min (smallest that holds one max_model_len request)",
    "kv_u_max_bytes": "KV cache at u_max (GiB)",
    "kv_u_max_blocks": "KV blocks at u_max",
    "kv_u_max_tokens": "KV tokens at u_max",
    "max_concurrency": "max concurrency at max_model_len",
    "physical_kv_bytes": "physical KV capacity: largest budget that passed the fill (GiB)",
    "physical_kv_blocks": "physical KV capacity: largest budget that passed the fill (blocks)",
    "physical_kv_failing_blocks": "physical KV capacity: smallest budget above it that failed (blocks)",
    "physical_kv_gap_percent": "physical KV bracket: gap from passing to failing (%)",
    "peak_host_in_use_bytes": (
        "host memory in use at peak, u_max start (MemTotal - lowest of MemAvailable + unlisted free pages, GiB)"
    ),
    "peak_host_in_use_by_available_bytes": (
        "host memory in use at peak, u_max start (MemTotal - lowest MemAvailable alone, GiB)"
    ),
    "peak_cgroup_usage_bytes": "cgroup memory usage at peak, u_max start (GiB)",
    "peak_gpu_used_bytes": "GPU memory used at peak, u_max start (NVML, GiB)",
    "throughput_tokens_per_s": "decode throughput (tokens/s)",
    "bytes_per_block": "KV bytes per block, measured (engine's config)",
    "predicted_bytes_per_block": "KV bytes per block, predicted from config.json",
    "weights_logged_bytes": "weights, the engine's log (GiB)",
    "predicted_weight_bytes": "weights, predicted from config.json (GiB)",
}
SHORT_TITLES = {
    "kv_reference_bytes": "KV at gpu_memory_utilization",
    "reference_engine_total_bytes": "engine's memory total there (its log)",
    "u_max": "u_max",
    "kv_u_max_bytes": "KV at u_max",
    "physical_kv_bytes": "physical KV",
    "throughput_tokens_per_s": "throughput (tokens/s)",
}
PART_LABELS = {
    "kv_cache": "KV cache",
    "weights": "weights",
    "activation_peak": "activation peak",
    "non_torch": "non-torch",
    "other_engine": "other engine (budget)",
    "other_processes": "other processes",
    "page_cache": "page cache (cgroup)",
    "engine_beyond_request": "engine beyond its request",
    "cgroup_cut": "cut by cgroup limit",
    "kernel_unaccounted": "kernel, in no meminfo account",
    "free_at_ready": "free at ready",
}
BOUNDARY_TEXT: dict[BoundaryKind, str] = {
    "engine-refused": "engine refused",
    "engine-oom": "engine out of memory",
    "killed": "killed by a signal",
    "guard": "kvprobe's guard",
    "top-of-range": "none (top of range: a lower bound)",
    "other": "other failure",
}
GRAPHS_ROW = "CUDA graphs"
GRAPHS_TEXT = {  # by enforce_eager
    False: "captured (as vllm serve starts)",
    True: "off (enforce_eager; vllm serve captures them, which can lower u_max)",
}
VERDICT_TEXT: dict[Verdict, str] = {
    "tested": "Welch's t-test",
    "identical": "identical in every repeat",
    "no_variance": "no variance to test (each side repeated its own value)",
    "too_few": "n too small for a test",
}
EVIDENCE_TEXT: dict[Evidence, str] = {
    "changed": "changed",
    "no_change": "no change",
    "not_significant": "not significant",
    "too_few": "too few runs to test",
    "below_bound": "below the reference's lower bound",
    "bound": "not compared: a lower bound (u_max at the top of its range)",
    "unlike_boundaries": "not compared: u_max set by different things",
    "missing": "not measured",
}
BOUND_NOTE = ">= is a lower bound: the u_max search passed at the top of its range"
