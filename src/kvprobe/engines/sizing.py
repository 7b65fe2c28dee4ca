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

from kvprobe.results.schema import EngineMemoryReport, Environment, SizingCheck, SizingEquation, TrialRecord
from kvprobe.units import GIB
from kvprobe.vocabulary import EngineName


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
    (peak - allocated): the log's "Total non KV cache memory"."""
    cudagraph_bytes: int = 0
    """The CUDA-graph estimate, where vLLM takes it from the budget (logged beside "CUDA graph memory
    profiling is enabled"; not part of "Total non KV cache memory")."""

    def predict(self) -> Prediction:
        requested = math.ceil(self.total_bytes * self.utilization)
        graphs = f" - {_gib(self.cudagraph_bytes)} CUDA graphs" if self.cudagraph_bytes else ""
        return Prediction(
            requested - self.non_kv_bytes - self.cudagraph_bytes,
            f"ceil({self.utilization} x {_gib(self.total_bytes)}) - {_gib(self.non_kv_bytes)} non-KV{graphs}",
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
    """cudaMemGetInfo's total at sizing (the log's "device total memory")."""
    peak_bytes: int
    """Peak memory during the profiling run, torch and non-torch (the log's "Peak memory")."""
    temporary_kv_bytes: int
    """The KV cache allocated for the profiling run, added back."""

    # the caps, where the configuration sets them
    bytes_per_token: int | None = None
    """KV bytes per token (the log's "kv size per token"), for the max_tokens cap."""
    max_tokens: int | None = None
    """KvCacheConfig.max_tokens: a cap in tokens; None: none."""
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


@dataclass(frozen=True)
class ExplicitInputs:
    """An explicit KV budget (kv_cache_memory_bytes): every vLLM path takes it as it is."""

    kv_cache_memory_bytes: int

    def predict(self) -> Prediction:
        return Prediction(self.kv_cache_memory_bytes, f"{_gib(self.kv_cache_memory_bytes)} explicit budget")


SIZING_MOMENT = "weights_loaded"
"""The phase sample that stands for the sizing moment, on every vLLM path (vLLM 0.32).

vLLM sizes the KV cache in the worker's determine_available_memory, called by EngineCore's
_initialize_kv_caches after the model is loaded and before any KV tensor exists:
- CPU (v1/worker/cpu_worker.py): requested = ceil(utilization x the node's MemTotal, clamped by a
  cgroup limit at the root of the cgroup mount) is fixed at worker start; at sizing, KV = requested -
  the process's RSS (psutil), read after the weights are loaded and the model warmed up.
- CUDA (v1/worker/gpu_worker.py): requested = ceil(utilization x cudaMemGetInfo total) at init; at
  sizing, KV = requested - non-KV, non-KV being what free memory fell by from init to the end of the
  profiling run, plus torch's transient peak and the CUDA-graph estimate.
The `weights_loaded` sample ("Model loading took ...") is the last one taken before the engine sized:
after it come only the warm-up or profiling run (transient) and the sizing itself. The
`kv_allocated` sample ("KV cache size: N tokens") is taken after the KV tensors were allocated, so
it holds the KV cache the equation is about, and cannot be an input to it.
"""

LOG_ROUNDING_BYTES = GIB // 200
"""vLLM prints its memory figures with format_gib: round(bytes / GiB, 2), so each is +- 0.005 GiB."""


@dataclass(frozen=True)
class _Input:
    """One input as a result holds it: its value (None: not recorded), where it was read, and the
    rounding of that source."""

    value: float | None
    source: str
    rounding: int = 0


def _logged(value: float | None, what: str) -> _Input:
    return _Input(value, f"the engine's log ({what}, two-decimal GiB)", LOG_ROUNDING_BYTES)


def _cpu_node_total(environment: Environment) -> _Input:
    """vLLM reads the first allowed CPU's NUMA node; kvprobe the first node with CPUs (one node
    on the machines measured so far); without NUMA nodes, psutil's total (MemTotal)."""
    node = next((n for n in environment.numa_nodes if n.cpus and n.mem_total_bytes is not None), None)
    if node is not None:
        return _Input(node.mem_total_bytes, f"NUMA node {node.node} MemTotal at the run's start")
    return _Input(environment.host_memory.get("MemTotal"), "MemTotal at the run's start (no NUMA node recorded)")


def _visible_cgroup_limit(environment: Environment) -> _Input:
    """vLLM reads memory.max (v2) or memory/memory.limit_in_bytes (v1) at the cgroup mount's root:
    it sees kvprobe's limit only where that cgroup is the root, as inside a container's namespace."""
    cgroup = environment.cgroup
    at_root = cgroup.path is not None and cgroup.path.rstrip("/") in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory")
    if at_root and cgroup.limit_bytes is not None:
        return _Input(cgroup.limit_bytes, "the cgroup limit at the mount's root (vLLM reads it)")
    hidden = (environment.condition.cgroup_limit_bytes if environment.condition else None) or cgroup.limit_bytes
    if hidden is not None:
        return _Input(None, f"none visible: the {hidden / GIB:.2f} GiB limit is on a cgroup below the mount's root")
    return _Input(None, "none: no cgroup limit")


def _trtllm_inputs(trial: TrialRecord) -> dict[str, _Input]:
    """TensorRT-LLM's inputs, all from its "Peak memory ..." line (older versions print no temporary KV:
    the trial then lacks it) and the explicit budget kvprobe set as max_gpu_total_bytes."""
    report = trial.memory_report
    logged_fraction = report.kv_fraction_logged
    return {
        "fraction": _Input(
            logged_fraction if logged_fraction is not None else trial.utilization,
            "the engine's log (fraction is set)" if logged_fraction is not None else "the trial's fraction",
        ),
        "device_total_bytes": _logged(report.device_total_bytes, "device total memory"),
        "peak_bytes": _logged(report.peak_bytes, "Peak memory during memory usage profiling"),
        "temporary_kv_bytes": _logged(report.temporary_kv_bytes, "temporary kv cache memory during profiling"),
        "max_gpu_total_bytes": _Input(trial.kv_cache_memory_bytes, "the trial's explicit budget"),
    }


def _path_inputs(
    trial: TrialRecord, environment: Environment, cuda_total_bytes: int | None, engine: EngineName
) -> tuple[SizingEquation, dict[str, _Input]]:
    report = trial.memory_report
    setting = _Input(trial.utilization, "the trial's gpu_memory_utilization")
    if engine == "tensorrt-llm":
        return "trtllm", _trtllm_inputs(trial)
    if trial.kv_cache_memory_bytes is not None:
        return "explicit", {"kv_cache_memory_bytes": _Input(trial.kv_cache_memory_bytes, "the trial's setting")}
    devices = environment.gpu.devices if environment.gpu.available else []
    if not devices:
        return "vllm-cpu", {
            "utilization": setting,
            "node_total_bytes": _cpu_node_total(environment),
            "process_rss_bytes": _logged(report.non_kv_bytes, "memory consumed by non-kv usages"),
            "cgroup_limit_bytes": _visible_cgroup_limit(environment),
        }
    total = (
        _Input(cuda_total_bytes, "cudaMemGetInfo total, from the worker")
        if cuda_total_bytes is not None
        else _Input(devices[0].total_bytes, "NVML's device total (CUDA's total not recorded)")
    )
    model = environment.memory_model
    if model is not None and model.gpu_memory_is_host_memory:
        phases = trial.memory.phases
        created, sized = phases.get("engine_start"), phases.get(SIZING_MOMENT)
        return "vllm-integrated", {
            "utilization": setting,
            "total_bytes": total,
            "available_at_create_bytes": _Input(
                created.host_available if created else None, "MemAvailable at engine_start"
            ),
            "available_after_profile_bytes": _Input(
                sized.host_available if sized else None, f"MemAvailable at {SIZING_MOMENT}"
            ),
            "transient_peak_bytes": _logged(report.activation_peak_bytes, "torch peak memory increase"),
            **_cudagraph_estimate(report),
        }
    inputs = {
        "utilization": setting,
        "total_bytes": total,
        "non_kv_bytes": _logged(report.non_kv_bytes, "Total non KV cache memory"),
    }
    return "vllm-cuda", {**inputs, **_cudagraph_estimate(report)}


def _cudagraph_estimate(report: EngineMemoryReport) -> dict[str, _Input]:
    """vLLM's CUDA graph estimate as an input where its log says it took one from the budget (missing
    where it did not log the figure, as Model Runner V2 does not)."""
    if not report.cudagraph_estimate_applied:
        return {}
    return {"cudagraph_bytes": _logged(report.cudagraph_estimate_bytes, "Estimated CUDA graph memory")}


_EQUATIONS: dict[SizingEquation, type] = {
    "vllm-cpu": VllmCpuInputs,
    "vllm-cuda": VllmCudaInputs,
    "vllm-integrated": VllmIntegratedInputs,
    "explicit": ExplicitInputs,
    "trtllm": TrtllmInputs,
}
_OPTIONAL = {"cgroup_limit_bytes", "max_gpu_total_bytes"}


def inputs_from(equation: SizingEquation, values: dict[str, float]) -> SizingInputs:
    """An equation's input set from recorded values (bytes whole, utilization a fraction)."""
    cls = _EQUATIONS[equation]
    typed = {
        field.name: values[field.name] if field.type == "float" else round(values[field.name])
        for field in dataclasses.fields(cls)
        if field.name in values
    }
    return cls(**typed)


def inputs_of(check: SizingCheck) -> SizingInputs | None:
    """The equation's input set a check recorded (None where an input is missing)."""
    return None if check.missing else inputs_from(check.equation, check.inputs)


def check_trial(
    trial: TrialRecord, environment: Environment, cuda_total_bytes: int | None = None, engine: EngineName = "vllm"
) -> SizingCheck | None:
    """The trial's KV beside its engine's equation; None for a trial that reported no KV."""
    engine_kv = trial.kv_cache_bytes
    if engine_kv is None:
        return None
    equation, inputs = _path_inputs(trial, environment, cuda_total_bytes, engine)
    known = {name: item.value for name, item in inputs.items() if item.value is not None}
    missing = [name for name, item in inputs.items() if item.value is None and name not in _OPTIONAL]
    by_blocks = bool(trial.num_gpu_blocks and trial.bytes_per_block)
    # blocks: vLLM floors the budget to whole blocks; otherwise the engine's figure is its log's
    engine_rounding = (trial.bytes_per_block or 0) if by_blocks else LOG_ROUNDING_BYTES
    if equation == "explicit":
        engine_rounding = (trial.bytes_per_block or 0) if by_blocks else 0
    check = SizingCheck(
        trial=trial.number,
        equation=equation,
        moment=SIZING_MOMENT if SIZING_MOMENT in trial.memory.phases else None,
        inputs=known,
        sources={name: item.source for name, item in inputs.items()},
        missing=missing,
        engine_kv_bytes=engine_kv,
        at_sizing=trial.memory.phases.get(SIZING_MOMENT),
    )
    prediction_inputs = inputs_of(check)
    if prediction_inputs is None:
        return check
    prediction = prediction_inputs.predict()
    tolerance = sum(item.rounding for item in inputs.values()) + engine_rounding
    residual = engine_kv - prediction.kv_bytes
    return check.model_copy(
        update={
            "formula": prediction.equation,
            "predicted_kv_bytes": prediction.kv_bytes,
            "residual_bytes": residual,
            "tolerance_bytes": tolerance,
            "agrees": abs(residual) <= tolerance,
        }
    )


def describe(check: SizingCheck) -> str:
    """One sentence: the prediction beside the engine's figure, and whether they agree."""
    if check.predicted_kv_bytes is None or check.residual_bytes is None:
        return f"trial {check.trial}: no prediction, the result lacks {', '.join(check.missing)}"
    verdict = (
        "agrees within the log's rounding and one block"
        if check.agrees
        else "DISAGREES beyond the log's rounding and one block"
    )
    return (
        f"trial {check.trial} ({check.equation}): predicted {_gib(check.predicted_kv_bytes)}, engine "
        f"{_gib(check.engine_kv_bytes or 0)}, residual {check.residual_bytes:+,} B "
        f"(tolerance {check.tolerance_bytes:,} B): {verdict}"
    )
