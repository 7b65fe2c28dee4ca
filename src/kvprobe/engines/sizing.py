"""Each engine's own KV-cache sizing equation, as pure functions of the inputs it reads at sizing time.

One frozen dataclass of inputs (bytes) per engine path and `predict(inputs)` returning the KV bytes
the engine's arithmetic gives and the equation written out. `decompose(before, after)` splits the
difference between two input sets into each input's contribution plus a residual.

The arithmetic is read from the engines' source, not measured here:
- vLLM CUDA and integrated GPUs: vllm/v1/worker/gpu_worker.py (determine_available_memory),
  vllm/v1/worker/utils.py (request_memory), vllm/utils/mem_utils.py (MemorySnapshot.measure and
  memory_profiling; on an integrated GPU free memory is psutil's MemAvailable, vLLM PR #35356).
- vLLM CPU: vllm/v1/worker/cpu_worker.py and vllm/utils/cpu_resource_utils.py (get_memory_node_info).
- TensorRT-LLM PyTorch backend: tensorrt_llm/_torch/pyexecutor/_util.py (KvCacheCreator:
  configure_kv_cache_capacity, _cal_max_memory). Not run against a real TensorRT-LLM here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol

from kvprobe.units import GIB


@dataclass(frozen=True)
class Prediction:
    """The KV bytes an engine's equation gives, and the equation with its numbers."""

    kv_bytes: int
    equation: str


def _gib(value: float) -> str:
    return f"{value / GIB:.3f} GiB"


@dataclass(frozen=True)
class VllmCudaInputs:
    """vLLM on a discrete GPU: KV = ceil(utilization x total) - non-KV."""

    utilization: float
    """gpu_memory_utilization."""
    total_bytes: int
    """Device total memory (cudaMemGetInfo total) at start."""
    non_kv_bytes: int
    """Free memory consumed from engine creation to the end of profiling, plus torch's transient peak
    (peak - allocated), plus the CUDA-graph estimate where vLLM applies it."""

    def predict(self) -> Prediction:
        requested = math.ceil(self.total_bytes * self.utilization)
        return Prediction(
            requested - self.non_kv_bytes,
            f"ceil({self.utilization} x {_gib(self.total_bytes)}) - {_gib(self.non_kv_bytes)} non-KV",
        )


@dataclass(frozen=True)
class VllmIntegratedInputs:
    """vLLM on an integrated GPU (GB10, Jetson, GH200 per PR #35356): free memory is MemAvailable, so
    the memory consumed while loading and profiling is a drop in MemAvailable, the host's included."""

    utilization: float
    total_bytes: int
    """cudaMemGetInfo total at start."""
    available_at_create_bytes: int
    """MemAvailable (psutil) when the engine was created."""
    available_after_profile_bytes: int
    """MemAvailable after the profiling run."""
    transient_peak_bytes: int
    """torch peak - torch allocated after profiling."""
    cudagraph_bytes: int = 0
    """The CUDA-graph estimate, where VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS applies it."""

    def predict(self) -> Prediction:
        requested = math.ceil(self.total_bytes * self.utilization)
        consumed = self.available_at_create_bytes - self.available_after_profile_bytes
        kv = requested - consumed - self.transient_peak_bytes - self.cudagraph_bytes
        return Prediction(
            kv,
            f"ceil({self.utilization} x {_gib(self.total_bytes)}) - (MemAvailable "
            f"{_gib(self.available_at_create_bytes)} - {_gib(self.available_after_profile_bytes)}) - "
            f"{_gib(self.transient_peak_bytes)} transient peak - {_gib(self.cudagraph_bytes)} CUDA graphs",
        )


@dataclass(frozen=True)
class VllmCpuInputs:
    """vLLM's CPU backend: the NUMA node's memory x utilization, minus the worker's resident memory.
    The node total is clamped to a cgroup limit only where vLLM can see one below it."""

    utilization: float
    node_total_bytes: int
    """MemTotal of the worker's NUMA node (/sys/devices/system/node/nodeN/meminfo)."""
    process_rss_bytes: int
    """The worker's resident set size at sizing (vLLM: 'consumed by non-kv usages')."""
    cgroup_limit_bytes: int | None = None
    """memory.max as vLLM reads it; None where it sees none (e.g. a sub-cgroup without its namespace)."""

    def predict(self) -> Prediction:
        total = self.node_total_bytes
        if self.cgroup_limit_bytes is not None and self.cgroup_limit_bytes < total:
            total = self.cgroup_limit_bytes
        requested = math.ceil(total * self.utilization)
        clamp = " (cgroup limit)" if total != self.node_total_bytes else ""
        return Prediction(
            requested - self.process_rss_bytes,
            f"ceil({self.utilization} x {_gib(total)}{clamp}) - {_gib(self.process_rss_bytes)} resident",
        )


@dataclass(frozen=True)
class TrtllmInputs:
    """TensorRT-LLM's PyTorch backend (KvCacheCreator): KV = fraction x (total - peak + temporary KV),
    then capped by max_tokens x bytes per token and by max_gpu_total_bytes.

    `peak` is torch's peak plus everything else in use on the device (cudaMemGetInfo total - free -
    torch current), so total - peak = cudaMemGetInfo free - torch's transient peak: the fraction is
    a fraction of FREE memory, and memory others hold (on a GB10, where free tracks MemFree, the page
    cache) lowers the KV through `peak`. Not run against a real TensorRT-LLM here.
    """

    fraction: float
    """free_gpu_memory_fraction (the engine holds it as float32: 0.9 prints as 0.8999999761581421)."""
    device_total_bytes: int
    peak_bytes: int
    temporary_kv_bytes: int
    """The KV cache allocated for the profiling run, added back."""
    bytes_per_token: int | None = None
    max_tokens: int | None = None
    max_gpu_total_bytes: int | None = None
    """0 or None: no cap (as in KvCacheConfig)."""

    def predict(self) -> Prediction:
        free_part = self.device_total_bytes - self.peak_bytes + self.temporary_kv_bytes
        kv = int(free_part * self.fraction)
        equation = (
            f"{self.fraction} x ({_gib(self.device_total_bytes)} total - {_gib(self.peak_bytes)} peak + "
            f"{_gib(self.temporary_kv_bytes)} temporary KV)"
        )
        if self.max_tokens is not None and self.bytes_per_token:
            kv = min(kv, self.max_tokens * self.bytes_per_token)
            equation = f"min({equation}, {self.max_tokens} max_tokens x {self.bytes_per_token} B)"
        if self.max_gpu_total_bytes:
            kv = min(kv, self.max_gpu_total_bytes)
            equation = f"min({equation}, {_gib(self.max_gpu_total_bytes)} max_gpu_total_bytes)"
        return Prediction(kv, equation)


class SizingInputs(Protocol):
    def predict(self) -> Prediction: ...


@dataclass(frozen=True)
class Decomposition:
    """A KV difference between two input sets, split by input.

    Each contribution is the change in predicted KV when that one input alone moves from its `before`
    to its `after` value. Where the equation is a sum of terms each holding one input (vLLM's non-KV,
    MemAvailable and resident terms; TensorRT-LLM's total, peak and temporary KV at a fixed fraction)
    the contributions are exact and the residual is 0. Inputs that multiply each other (utilization x
    total, fraction x free) or a cap that switches leave their interaction in the residual.
    """

    kv_before: int
    kv_after: int
    contributions: dict[str, int]
    residual: int


def decompose(before: SizingInputs, after: SizingInputs) -> Decomposition:
    """Split predict(after) - predict(before) into each input's one-at-a-time contribution."""
    if type(before) is not type(after) or not dataclasses.is_dataclass(before):
        raise TypeError("decompose needs two input sets of the same equation")
    kv_before, kv_after = before.predict().kv_bytes, after.predict().kv_bytes
    contributions: dict[str, int] = {}
    for field in dataclasses.fields(before):
        old, new = getattr(before, field.name), getattr(after, field.name)
        if old != new:
            moved = dataclasses.replace(before, **{field.name: new})  # type: ignore[type-var]
            contributions[field.name] = moved.predict().kv_bytes - kv_before
    residual = kv_after - kv_before - sum(contributions.values())
    return Decomposition(kv_before, kv_after, contributions, residual)
