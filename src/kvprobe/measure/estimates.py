"""Where a boundary should lie, estimated from earlier trials' memory reports (pure functions).

The bracketed searches try these estimates first and one tolerance step across them.
"""

from __future__ import annotations

import math

from kvprobe.results.schema import GuardSettings, TrialRecord
from kvprobe.trial.monitor import GuardPolicy


def budget_total(trial: TrialRecord) -> float | None:
    """The memory total the engine multiplies gpu_memory_utilization by."""
    report = trial.memory_report
    if report.budget_total_bytes:
        return report.budget_total_bytes
    if report.requested_bytes and trial.utilization:
        return report.requested_bytes / trial.utilization
    cuda = trial.worker.cuda
    return cuda.total_bytes if cuda else None


def free_at_check(trial: TrialRecord) -> float | None:
    """Host memory free when the engine checked it: sampled once weights had loaded, plus the weights."""
    loaded = trial.memory.phases.get("weights_loaded")
    if loaded is None:
        return None
    weights = trial.memory_report.weights_bytes or 0.0
    if loaded.cgroup_headroom is not None:
        return loaded.cgroup_headroom + weights
    if loaded.host_available is None:
        return None
    return loaded.host_available + weights


def engine_free_memory(trial: TrialRecord) -> float | None:
    """Memory the engine's budget could have used at its start-up check in this trial."""
    return trial.memory_report.free_at_start_bytes or free_at_check(trial)


def block_geometry(trial: TrialRecord) -> tuple[int, int] | None:
    """(bytes per block, blocks) of a passing trial: exact where the engine said its bytes per block,
    else derived from its two-decimal GiB log (and then a few blocks off)."""
    if not trial.num_gpu_blocks or not trial.kv_cache_bytes:
        return None
    if trial.bytes_per_block:
        return trial.bytes_per_block, trial.num_gpu_blocks
    return int(trial.kv_cache_bytes // trial.num_gpu_blocks), trial.num_gpu_blocks


def predict_u_max(trials: list[TrialRecord]) -> float | None:
    """The utilization whose request just fits the memory free when the engine checks it.

    A refused start names that memory exactly (vLLM's start-up check message), so the latest
    refusal wins. Otherwise a passing start estimates it: CUDA's free memory at start from the
    engine's log, or on host memory what was left when weights had loaded (the check runs then).
    """
    for trial in reversed(trials):
        if trial.outcome == "startup-check" and trial.utilization is not None:
            report = trial.memory_report
            free = report.available_bytes or report.free_at_start_bytes
            total = report.budget_total_bytes
            if free and total:
                return free / total
    for trial in trials:
        if not trial.passed or not trial.is_utilization_start:
            continue
        total = budget_total(trial)
        free = engine_free_memory(trial)
        if total and free:
            return free / total
    return None


def predict_u_min(ok: list[TrialRecord], max_model_len: int) -> float | None:
    """KV grows with utilization at slope `total`; find where it just holds one full request."""
    # (utilization, tokens per block, KV bytes, bytes per block, budget total) of each trial that has them all
    usable: list[tuple[float, int, int, int, float]] = []
    for trial in ok:
        geometry, total = block_geometry(trial), budget_total(trial)
        if geometry and total and trial.utilization is not None and trial.block_size and trial.kv_cache_bytes:
            usable.append((trial.utilization, trial.block_size, trial.kv_cache_bytes, geometry[0], total))
    if not usable:
        return None
    utilization, block_size, kv_cache_bytes, bytes_per_block, total = min(usable, key=lambda entry: entry[0])
    need = math.ceil(max_model_len / block_size) * bytes_per_block
    return utilization - (kv_cache_bytes - need) / total


def spare_at_ready(trial: TrialRecord, guard: GuardSettings) -> float | None:
    """Memory the pool still had when the engine was ready, above the guard's floors: the smallest
    margin of the figures the guard watches (the cgroup's headroom where a limit applies; the host
    figure it acts on, `GuardPolicy.host_view`). With the guard off its floors count as 0, and the
    margin runs to the memory's end."""
    ready = trial.memory.phases.get("ready")
    if ready is None:
        return None
    margins = []
    if ready.cgroup_headroom is not None:
        margins.append(ready.cgroup_headroom - (guard.cgroup_floor_bytes or 0))
    _, host = GuardPolicy(guard.host_floor_bytes, guard.cgroup_floor_bytes, guard.pessimistic).host_view(ready)
    if host is not None:
        margins.append(host - (guard.host_floor_bytes or 0))
    return min(margins) if margins else None


def predict_kv_blocks(at_u_max: TrialRecord, guard: GuardSettings) -> float | None:
    """Blocks an explicit KV budget can hold.

    Where the engine said what was free at its start (CUDA), that memory less the non-KV memory.
    On vLLM's CPU backend, which says nothing of the kind and keeps its KV cache in host memory, the
    KV cache the u_max start allocated plus what the pool still had above the guard's floors once
    it was ready: the non-KV memory is then already in use, and subtracting the engine's non-KV
    figure again (its worker's whole resident set) would count it twice. A GPU start whose free
    memory was not read gets no guess.
    """
    geometry = block_geometry(at_u_max)
    if geometry is None:
        return None
    bytes_per_block = geometry[0]
    free_at_start = at_u_max.memory_report.free_at_start_bytes
    if free_at_start is None and at_u_max.worker.cuda is None:
        spare = spare_at_ready(at_u_max, guard)
        if spare is None or not at_u_max.kv_cache_bytes:
            return None
        return (at_u_max.kv_cache_bytes + spare) / bytes_per_block
    non_kv = at_u_max.memory_report.non_kv_bytes
    if not free_at_start or non_kv is None:
        return None
    return (free_at_start - non_kv) / bytes_per_block
