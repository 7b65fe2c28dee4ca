"""Where the memory went at u_max: parts that add up to the physical total, remainder shown as such."""

from __future__ import annotations

from typing import Optional

from kvprobe.results.schema import TrialRecord


def _physical_total(trial: TrialRecord, env_block: dict) -> tuple[float, str]:
    """The memory pool the KV cache lives in: one discrete GPU's memory, else host memory."""
    gpu = env_block.get("gpu", {})
    devices = [d for d in gpu.get("devices", []) if d.get("total_bytes")]
    if devices and not any(d.get("unified_memory") for d in devices):
        return float(devices[0]["total_bytes"]), "gpu"
    return float(env_block["host_memory"]["MemTotal"]), "host"


def _first_device(sample: dict) -> Optional[float]:
    devices = sample.get("gpu_used_devices")
    return devices[0] if devices else sample.get("gpu_used")


def attribute(trial: TrialRecord, env_block: dict, frontend_bytes: float = 0.0) -> Optional[dict]:
    """Split the memory pool at the u_max start into independently measured parts.

    Engine parts (its own log): kv_cache, weights, activation_peak, non_torch, other_engine (the
    rest of what it requested). Measured parts: other_processes and page_cache (in use before
    the start), engine_outside_budget (frontend processes), cgroup_cut (memory a cgroup limit
    puts out of reach), free_at_ready (still free once the engine was ready). Nothing is
    derived as a remainder except `unexplained`, so it shows where the accounts disagree.
    """
    report = trial.memory_report
    kv = trial.kv_cache_bytes
    if kv is None:
        return None
    total, pool = _physical_total(trial, env_block)
    baseline = trial.baseline or {}
    phases = (trial.memory or {}).get("phases", {})
    ready = phases.get("ready") or phases.get("kv_allocated") or {}
    limit = baseline.get("cgroup_limit")

    weights = float(report.get("weights_bytes") or 0.0)
    activation = float(report.get("activation_peak_bytes") or 0.0)
    non_torch = float(report.get("non_torch_bytes") or 0.0)
    requested = report.get("requested_bytes")
    if requested is None and report.get("non_kv_bytes") is not None:
        requested = report["non_kv_bytes"] + kv
    other_engine = max(0.0, float(requested) - kv - weights - activation - non_torch) if requested else 0.0

    cgroup_cut = page_cache = outside = 0.0
    if pool == "gpu":  # per GPU: with tensor parallelism every rank holds its share, device 0 stands for all
        other_processes = float(_first_device(baseline) or 0)
        used_at_ready = _first_device(ready)
        free_at_ready = total - float(used_at_ready) if used_at_ready is not None else 0.0
    elif limit is not None and limit < total:
        cgroup_cut = total - limit
        page_cache = float(((env_block.get("cgroup") or {}).get("stat") or {}).get("file", 0))
        other_processes = max(0.0, float(baseline.get("cgroup_usage") or 0) - page_cache)
        outside = frontend_bytes
        free_at_ready = float(ready["cgroup_limit"] - ready["cgroup_usage"]) if ready.get("cgroup_usage") is not None else 0.0
    else:
        other_processes = max(0.0, total - float(baseline.get("host_available") or total))
        outside = frontend_bytes
        free_at_ready = float(ready.get("host_available") or 0.0)
    parts = {
        "kv_cache": float(kv),
        "weights": weights,
        "activation_peak": activation,
        "non_torch": non_torch,
        "other_engine": other_engine,
        "other_processes": other_processes,
        "page_cache": page_cache,
        "engine_outside_budget": outside,
        "cgroup_cut": cgroup_cut,
        "free_at_ready": free_at_ready,
    }
    explained = sum(parts.values())
    return {
        "pool": pool,
        "total_bytes": total,
        "utilization": trial.utilization,
        "parts": parts,
        "unexplained_bytes": total - explained,
        "unexplained_fraction": (total - explained) / total if total else None,
    }
