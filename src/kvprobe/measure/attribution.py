"""Where the memory went at u_max: parts that add up to the physical total, remainder shown as such."""

from __future__ import annotations

import math

from kvprobe.results.schema import (
    Attribution,
    AttributionParts,
    BudgetViews,
    ClusterNode,
    EngineAtReady,
    Environment,
    MemorySample,
    NodeAttribution,
    NodeParts,
    NodeTrial,
    RankAttribution,
    TrialBaseline,
    TrialRecord,
)
from kvprobe.vocabulary import Pool


def _physical_total(environment: Environment) -> tuple[float, Pool]:
    """The size of the memory pool the KV cache lives in (the engine's GPU 0, or host memory)."""
    if environment.kv_pool == "gpu" and environment.gpu.devices[0].total_bytes:
        return float(environment.gpu.devices[0].total_bytes), "gpu"
    return float(environment.host_memory["MemTotal"]), "host"


def _device(sample: MemorySample, index: int = 0) -> float | None:
    """NVML's used memory of the engine's device `index` in one sample (the sum where not split)."""
    if sample.gpu_used_devices:
        return sample.gpu_used_devices[index] if index < len(sample.gpu_used_devices) else None
    return sample.gpu_used if index == 0 else None


def _engine_gpu_bytes(at_ready: EngineAtReady | None, index: int = 0) -> float | None:
    """NVML's per-process use of the engine's device `index` by its processes at ready."""
    at_ready = at_ready or EngineAtReady()
    used = [
        p.used_bytes for p in at_ready.gpu_processes if p.pid in at_ready.pids and p.used_bytes and p.index == index
    ]
    return math.fsum(used) if used else None


def engine_measured(trial: TrialRecord, pool: Pool) -> float | None:
    """The engine's memory measured per process at ready: NVML per-process use on a GPU; on the host
    its private (anonymous and shared-memory) pages by PSS, since its libraries' file pages are page
    cache, plus NVML's per-process use where GPU memory is host memory (unified machines)."""
    if pool == "gpu":
        return _engine_gpu_bytes(trial.memory.engine_at_ready)
    at_ready = trial.memory.engine_at_ready
    if at_ready is None or not at_ready.private_bytes:
        return None
    return float(at_ready.private_bytes) + (_engine_gpu_bytes(at_ready) or 0.0)


def memory_views(sample: MemorySample) -> dict[str, float]:
    """Every view of free memory one sample holds, by name (an engine's budget comes from one of them)."""
    views = {"MemAvailable": sample.host_available, "MemFree": sample.host_free}
    views["cgroup headroom"] = sample.cgroup_headroom
    views |= {f"node {node} MemFree": free for node, free in (sample.node_free or {}).items()}
    views["CUDA free (end of trial)"] = sample.cuda_free
    return {name: float(value) for name, value in views.items() if value is not None}


def device_views(sample: MemorySample, environment: Environment) -> dict[str, float]:
    """NVML's free memory of each of the engine's devices in one sample (total minus used)."""
    views = {}
    for device in environment.gpu.devices:
        used = _device(sample, device.index)
        if device.total_bytes and used is not None:
            views[f"NVML free, device {device.index}"] = float(device.total_bytes - used)
    return views


def budget_views(trial: TrialRecord, environment: Environment) -> BudgetViews | None:
    """Which view the engine's free memory at its start check matches, and how far the views spread
    at that moment (they disagree on unified memory: vLLM #48140, llamastash #80). Where the pool is a
    GPU's own memory the engine's figure is a device's, so NVML's free memory per device is among the
    views; on a discrete GPU only those (and CUDA's), never host memory."""
    report = trial.memory_report
    engine_free = report.free_at_start_bytes or report.available_bytes
    phases = trial.memory.phases
    at_check = phases.get("engine_start") or trial.memory.start
    if engine_free is None or at_check is None:
        return None
    discrete = environment.memory_model is not None and environment.memory_model.kind == "discrete"
    # Coherent GPUs (GH200) keep the host's views beside their devices': HBM may be a NUMA node.
    views = {} if discrete else memory_views(at_check)
    if environment.kv_pool == "gpu":
        views |= device_views(at_check, environment)
        if at_check.cuda_free is not None:
            views["CUDA free (end of trial)"] = float(at_check.cuda_free)
    done = phases.get("done")
    if done is not None and done.cuda_free is not None:
        views["CUDA free (end of trial)"] = float(done.cuda_free)
    if not views:
        return None
    closest = min(views, key=lambda name: abs(views[name] - engine_free))
    return BudgetViews(
        engine_free_bytes=float(engine_free),
        views=views,
        closest=closest,
        spread_bytes=max(views.values()) - min(views.values()),
    )


def _pool_accounts(
    pool: Pool,
    total: float,
    baseline: TrialBaseline,
    ready: MemorySample,
    at_ready: EngineAtReady | None,
    engine_gpu: float | None,
    index: int = 0,
) -> dict[str, float]:
    """The accounts of one pool besides the engine's own: other_processes, page_cache, cgroup_cut,
    kernel_unaccounted and free_at_ready (see attribute); on a GPU, of the engine's device `index`."""
    limit = baseline.cgroup_limit
    names = ("other_processes", "page_cache", "cgroup_cut", "kernel_unaccounted", "free_at_ready")
    accounts = dict.fromkeys(names, 0.0)
    if pool == "gpu":  # the engine's device `index` (attribute_ranks goes through every rank's)
        accounts["other_processes"] = float(_device(baseline, index) or 0)
        used_at_ready = _device(ready, index)
        accounts["free_at_ready"] = total - float(used_at_ready) if used_at_ready is not None else 0.0
    elif limit is not None and limit < total:
        accounts["cgroup_cut"] = total - limit
        # charged to the cgroup once the engine ran
        accounts["page_cache"] = float((at_ready or EngineAtReady()).cgroup_file_bytes or 0)
        usage, file = float(baseline.cgroup_usage or 0), float(baseline.cgroup_file_bytes or 0)
        accounts["other_processes"] = max(0.0, usage - file)
        accounts["free_at_ready"] = float(ready.cgroup_headroom or 0.0)
    else:  # MemAvailable omits the kernel's unlisted pages; they are counted apart, as they change during a trial
        unaccounted_before = float(baseline.host_unaccounted or 0)
        # On unified memory the driver's pages behind CUDA allocations are unlisted too, and NVML
        # already counts them in the engine (not verified on GB10/GH200 hardware yet).
        accounts["kernel_unaccounted"] = float(ready.host_unaccounted or 0) - (engine_gpu or 0.0)
        available = float(baseline.host_available or total)
        accounts["other_processes"] = max(0.0, total - available - unaccounted_before)
        accounts["free_at_ready"] = float(ready.host_available or 0.0)
    return accounts


def attribute(trial: TrialRecord, environment: Environment) -> Attribution | None:
    """Split the memory pool at the u_max start into parts, each measured or reported on its own.

    From the engine's log (its own accounting of what it requested): kv_cache, weights,
    activation_peak, non_torch, other_engine. Measured by kvprobe: engine_beyond_request (the
    engine's processes, by private PSS or NVML, minus what it requested; negative when part of the
    request is not resident), other_processes (in use before the start), page_cache (file pages
    charged to a cgroup at ready), cgroup_cut (what a cgroup limit puts out of reach),
    kernel_unaccounted (host pool: pages in no meminfo account at ready, see
    environment.memory.kernel_unaccounted) and free_at_ready. `unexplained` is what these
    independent accounts leave over; a large value means they disagree, and it is reported, not hidden.
    """
    report = trial.memory_report
    kv = trial.kv_cache_bytes
    if kv is None:
        return None
    total, pool = _physical_total(environment)
    baseline = trial.baseline
    phases = trial.memory.phases
    ready = phases.get("ready") or phases.get("kv_allocated") or MemorySample()
    at_ready = trial.memory.engine_at_ready

    weights = float(report.weights_bytes or 0.0)
    activation = float(report.activation_peak_bytes or 0.0)
    non_torch = float(report.non_torch_bytes or 0.0)
    requested = report.requested_bytes
    if requested is None:
        requested = kv + (report.non_kv_bytes or 0.0)
    requested = float(requested)
    other_engine = max(0.0, requested - kv - weights - activation - non_torch)
    measured = engine_measured(trial, pool)
    beyond = measured - requested if measured is not None else 0.0

    measured_by_kvprobe = {
        "engine_beyond_request": beyond,
        **_pool_accounts(pool, total, baseline, ready, at_ready, _engine_gpu_bytes(at_ready)),
    }
    from_engine_log = {
        "weights": weights,
        "activation_peak": activation,
        "non_torch": non_torch,
        "other_engine": other_engine,
    }
    parts = AttributionParts(kv_cache=float(kv), **from_engine_log, **measured_by_kvprobe)
    explained = math.fsum(parts.model_dump().values())
    ranks = attribute_ranks(trial, environment, from_engine_log, requested) if pool == "gpu" else []
    return Attribution(
        budget_views=budget_views(trial, environment),
        ranks=ranks,
        limiting_rank=min(ranks, key=_kv_room).index if len(ranks) > 1 else None,
        pool=pool,
        total_bytes=total,
        utilization=trial.utilization,
        engine_measured_bytes=measured,
        engine_requested_bytes=requested,
        parts=parts,
        unexplained_bytes=total - explained,
        unexplained_fraction=(total - explained) / total if total else None,
    )


def _kv_room(rank: RankAttribution) -> float:
    return rank.kv_room_bytes if rank.kv_room_bytes is not None else float("inf")


def attribute_ranks(
    trial: TrialRecord, environment: Environment, from_engine_log: dict[str, float], requested: float
) -> list[RankAttribution]:
    """Every device of the engine at ready, each split like the pool (see attribute).

    The engine's log gives one rank's split (tensor-parallel ranks hold equal weight shares and the
    same number of KV blocks), applied to every rank; what each rank holds is measured apart (NVML
    per process and per device), so a rank that holds more shows as its engine_beyond_request. Its
    KV room is utilization x its total minus what it holds besides the KV cache: vLLM sizes the KV
    cache by the least room of any rank, so the rank with least room is the one that limits it.
    """
    kv = float(trial.kv_cache_bytes or 0)
    ready = trial.memory.phases.get("ready") or trial.memory.phases.get("kv_allocated") or MemorySample()
    at_ready = trial.memory.engine_at_ready
    ranks = []
    for device in environment.gpu.devices:
        if not device.total_bytes:
            continue
        total = float(device.total_bytes)
        measured = _engine_gpu_bytes(at_ready, device.index)
        accounts = _pool_accounts("gpu", total, trial.baseline, ready, at_ready, measured, device.index)
        beyond = measured - requested if measured is not None else 0.0
        parts = AttributionParts(kv_cache=kv, **from_engine_log, engine_beyond_request=beyond, **accounts)
        room = trial.utilization * total - (measured - kv) if measured is not None and trial.utilization else None
        ranks.append(
            RankAttribution(
                index=device.index,
                nvml_index=device.nvml_index,
                total_bytes=total,
                engine_measured_bytes=measured,
                parts=parts,
                unexplained_bytes=total - math.fsum(parts.model_dump().values()),
                kv_room_bytes=room,
            )
        )
    return ranks


def attribute_node(node: NodeTrial, facts: ClusterNode) -> NodeAttribution | None:
    """One Ray node's pool at ready, from what its agent measured there. The engine's log splits
    its request for the whole engine, not per node, so here the engine is one measured part."""
    ready = node.memory.phases.get("ready")
    at_ready = node.engine_at_ready
    if ready is None or at_ready is None:
        return None
    engine_gpu = _engine_gpu_bytes(at_ready) or 0.0
    total, pool = _physical_total(facts.environment)
    host = pool == "host"
    limit = node.baseline.cgroup_limit
    shares_host_pool = host and not (limit is not None and limit < total)  # a cgroup keeps other nodes out
    parts = NodeParts(
        engine=engine_gpu + (float(at_ready.private_bytes or 0) if host else 0.0),
        other_nodes_same_host=node.same_host_other_nodes_bytes if shares_host_pool else 0.0,
        **_pool_accounts(pool, total, node.baseline, ready, at_ready, engine_gpu or None),
    )
    explained = math.fsum(parts.model_dump().values())
    return NodeAttribution(
        node_id=node.node_id,
        hostname=node.hostname,
        pool=pool,
        total_bytes=total,
        process_titles=node.process_titles,
        parts=parts,
        unexplained_bytes=total - explained,
        unexplained_fraction=(total - explained) / total if total else None,
    )


def attribute_nodes(trial: TrialRecord, environment: Environment) -> list[NodeAttribution]:
    """Every node's attribution at this trial (multi-node runs; empty on one machine)."""
    if environment.cluster is None:
        return []
    facts = {node.node_id: node for node in environment.cluster.nodes}
    found = (attribute_node(node, facts[node.node_id]) for node in trial.nodes if node.node_id in facts)
    return [attribution for attribution in found if attribution is not None]
