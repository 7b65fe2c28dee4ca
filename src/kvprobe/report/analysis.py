"""From result documents to the report's numbers: per model, native against container, with statistics.

Nothing here starts an engine or formats output; the writers only read what `build_report` returns.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from kvprobe.report.pairing import LABELS, Group, group_results
from kvprobe.report.stats import summarise, welch_t_test

GIB = 1 << 30


def _get(doc: dict, *path) -> Optional[float]:
    value = doc
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _peak_memory(doc: dict) -> Optional[float]:
    phases = doc.get("memory_phases") or {}
    lowest = phases.get("lowest_host_released") or phases.get("lowest_host_available")  # older results lack the first
    return phases.get("peak_gpu_used") or phases.get("peak_cgroup_usage") or (
        None if lowest is None else doc["environment"]["host_memory"]["MemTotal"] - lowest
    )


# name -> (unit, extractor). Units: "GiB" values are stored in bytes and shown in GiB.
METRICS: dict[str, tuple[str, Callable[[dict], Optional[float]]]] = {
    "kv_reference_bytes": ("GiB", lambda d: _get(d, "reference", "bytes")),
    "kv_reference_tokens": ("tokens", lambda d: _get(d, "reference", "tokens")),
    "u_max": ("", lambda d: d.get("u_max")),
    "u_min": ("", lambda d: d.get("u_min")),
    "kv_u_max_bytes": ("GiB", lambda d: _get(d, "kv_at_u_max", "bytes")),
    "kv_u_max_blocks": ("blocks", lambda d: _get(d, "kv_at_u_max", "num_blocks")),
    "kv_u_max_tokens": ("tokens", lambda d: _get(d, "kv_at_u_max", "tokens")),
    "max_concurrency": ("x", lambda d: _get(d, "kv_at_u_max", "max_concurrency")),
    "physical_kv_bytes": ("GiB", lambda d: _get(d, "physical_capacity", "bytes")),
    "physical_kv_tokens": ("tokens", lambda d: _get(d, "physical_capacity", "tokens")),
    "peak_memory_bytes": ("GiB", _peak_memory),
    "throughput_tokens_per_s": ("tok/s", lambda d: _get(d, "throughput", "tokens_per_s")),
}

# The capacity the blog post compares: KV at the matched serving utilization, then at u_max.
COMPARED = ("kv_reference_bytes", "kv_u_max_bytes", "physical_kv_bytes", "u_max", "throughput_tokens_per_s")


def _compare(native: list[float], container: list[float]) -> dict:
    a, b = summarise(native), summarise(container)
    if a.mean is None or b.mean is None:
        return {"available": False}
    lost = a.mean - b.mean
    return {
        "available": True,
        "native_mean": a.mean,
        "container_mean": b.mean,
        "lost": lost,
        "lost_percent": 100.0 * lost / a.mean if a.mean else None,
        "ratio_native_over_container": a.mean / b.mean if b.mean else None,
        "welch": welch_t_test(native, container).to_dict(),
    }


def _mean_attribution(docs: list[dict]) -> Optional[dict]:
    blocks = [d["attribution"] for d in docs if d.get("attribution")]
    if not blocks:
        return None
    parts = sorted({k for b in blocks for k in b["parts"]})
    return {
        "pool": blocks[0]["pool"],
        "total_bytes": sum(b["total_bytes"] for b in blocks) / len(blocks),
        "parts": {k: sum(b["parts"].get(k, 0.0) for b in blocks) / len(blocks) for k in parts},
        "unexplained_bytes": sum(b["unexplained_bytes"] for b in blocks) / len(blocks),
    }


def _advice(model: str, stats: dict, attribution: dict) -> list[str]:
    """Statements derived only from the measurements of this model."""
    advice = []
    container = stats.get("container", {})
    kv_max = container.get("kv_u_max_bytes", {}).get("mean")
    physical = container.get("physical_kv_bytes", {}).get("mean")
    if kv_max and physical and physical > 1.05 * kv_max:
        advice.append(
            f"In the container, a fill test passed with {physical / GIB:.2f} GiB of KV cache where vLLM allocated "
            f"{kv_max / GIB:.2f} GiB at u_max: start vLLM with --kv-cache-memory-bytes {int(physical)} to recover "
            f"{(physical - kv_max) / GIB:.2f} GiB ({100 * (physical / kv_max - 1):.0f}% more KV)."
        )
    native_kv = stats.get("native", {}).get("kv_reference_bytes", {}).get("mean")
    container_kv = container.get("kv_reference_bytes", {}).get("mean")
    inside = attribution.get("container") or {}
    parts = inside.get("parts", {})
    if native_kv and container_kv and native_kv > container_kv and parts.get("cgroup_cut", 0) > 0:
        advice.append(
            f"The container's memory limit puts {parts['cgroup_cut'] / GIB:.2f} GiB of host memory out of reach; "
            f"vLLM multiplies gpu_memory_utilization by the limit, so the same setting gives "
            f"{container_kv / GIB:.2f} GiB of KV instead of {native_kv / GIB:.2f} GiB."
        )
    if parts.get("page_cache", 0) > 0.5 * GIB:
        advice.append(
            f"{parts['page_cache'] / GIB:.2f} GiB of page cache was charged to the container's cgroup at start; "
            f"it counts against the limit until reclaimed (kvprobe measure --drop-caches shows the difference)."
        )
    native_u, container_u = stats.get("native", {}).get("u_max", {}).get("mean"), container.get("u_max", {}).get("mean")
    if native_u and container_u and container_u < native_u - 0.015:
        advice.append(f"u_max drops from {native_u:.2f} natively to {container_u:.2f} in the container.")
    return advice


def _caption(docs: list[dict]) -> dict:
    doc = docs[0]
    env = doc["environment"]
    return {
        "device": doc.get("device"),
        "vllm": doc["versions"].get("vllm"),
        "torch": doc["versions"].get("torch"),
        "kvprobe": doc["versions"].get("kvprobe"),
        "host_memory_bytes": env["host_memory"]["MemTotal"],
        "host": env["software"].get("cpu_model"),
        "kernel": env["software"].get("kernel"),
    }


def analyse_group(group: Group) -> dict:
    stats: dict[str, dict] = {}
    for label in LABELS:
        stats[label] = {name: summarise([extract(d) for d in group.runs[label]]).to_dict()
                        for name, (_, extract) in METRICS.items()}
    comparisons = {
        name: _compare([v for v in (METRICS[name][1](d) for d in group.runs["native"]) if v is not None],
                       [v for v in (METRICS[name][1](d) for d in group.runs["container"]) if v is not None])
        for name in COMPARED
    }
    attribution = {label: _mean_attribution(group.runs[label]) for label in LABELS}
    where = None
    if attribution["native"] and attribution["container"]:
        where = {k: attribution["container"]["parts"].get(k, 0.0) - attribution["native"]["parts"].get(k, 0.0)
                 for k in attribution["container"]["parts"]}
    container_runs = group.runs["container"]
    return {
        "model": group.model,
        "settings_hash": group.settings_hash,
        "settings": group.runs["native"][0]["settings"],
        "versions": {"kvprobe": group.kvprobe, "vllm": group.vllm},
        "n": {label: len(group.runs[label]) for label in LABELS},
        "u_max_censored": {label: any(((d.get("searches") or {}).get("u_max") or {}).get("censored") for d in group.runs[label])
                           for label in LABELS},
        "stats": stats,
        "comparison": comparisons,
        "attribution": attribution,
        "attribution_difference": where,
        "advice": _advice(group.model, stats, attribution),
        "container": (container_runs[0].get("options") or {}).get("container"),
        "caption": {label: _caption(group.runs[label]) for label in LABELS},
        "runs": {label: [_run_row(d) for d in group.runs[label]] for label in LABELS},
    }


def _run_row(doc: dict) -> dict:
    row = {"model": doc["model"], "label": doc["label"], "run_id": doc["run_id"], "repeat": doc["repeat"],
           "settings_hash": doc["settings_hash"], "device": doc.get("device"), "engine_starts": doc.get("engine_starts")}
    for name, (_, extract) in METRICS.items():
        row[name] = extract(doc)
    return row


def build_report(documents: Iterable[dict]) -> dict:
    documents = list(documents)
    groups, problems = group_results(documents)
    matched = [analyse_group(g) for g in groups if g.matched]
    return {
        "models": matched,
        "unmatched": problems,
        "metrics": {name: unit for name, (unit, _) in METRICS.items()},
        "documents": len(documents),
    }
