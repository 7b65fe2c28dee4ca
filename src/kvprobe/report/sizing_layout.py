"""The words and table for report.sizing: a KV difference split by the engine's sizing equation."""

from __future__ import annotations

from kvprobe.report.document import Block, Paragraph, Table, strong
from kvprobe.report.sizing import SizingDecomposition
from kvprobe.units import gib

INPUT_LABELS = {
    "utilization": "gpu_memory_utilization",
    "node_total_bytes": "the NUMA node's MemTotal",
    "process_rss_bytes": "the worker's resident memory (non-KV)",
    "cgroup_limit_bytes": "a cgroup limit the engine sees",
    "total_bytes": "the device's total memory",
    "non_kv_bytes": "non-KV memory",
    "available_at_create_bytes": "MemAvailable at engine creation",
    "available_after_profile_bytes": "MemAvailable after profiling",
    "transient_peak_bytes": "torch's transient peak",
    "kv_cache_memory_bytes": "the explicit KV budget",
    "fraction": "free_gpu_memory_fraction",
    "device_total_bytes": "the device's total memory",
    "peak_bytes": "memory in use at profiling's peak",
    "temporary_kv_bytes": "the profiling run's KV cache",
    "max_gpu_total_bytes": "the max_gpu_total_bytes cap",
}


def inputs_moved_text(sizing: SizingDecomposition | None) -> str:
    """One cell: the equation's inputs that moved and the KV each move gives (GiB), with the residual."""
    if sizing is None or sizing.residual_bytes is None:
        return "-" if sizing is None else f"not decomposed ({', '.join(sizing.missing) or 'different equations'})"
    moved = [
        f"{INPUT_LABELS.get(name, name)} {gib(value, 3, sign=True)}" for name, value in sizing.contributions.items()
    ]
    return (
        "; ".join([*moved, f"residual {gib(sizing.residual_bytes, 3, sign=True)}"])
        if moved
        else (f"none moved; residual {gib(sizing.residual_bytes, 3, sign=True)}")
    )


def sizing_blocks(sizing: SizingDecomposition | None, before: str, after: str) -> list[Block]:
    """The split of the reference KV difference `after` - `before`, or why there is none."""
    if sizing is None:
        return []
    title = Paragraph.of(
        strong("By the engine's sizing equation"),
        f" ({sizing.equation or 'different equations'}; {after} minus {before}, the reference start's KV):",
    )
    if sizing.residual_bytes is None:
        lacking = f"the runs lack {', '.join(sizing.missing)}" if sizing.missing else "the two sides differ"
        return [title, Paragraph.of(f"not decomposed: {lacking}.")]
    difference = (sizing.engine_kv_after_bytes or 0.0) - (sizing.engine_kv_before_bytes or 0.0)
    rows = [(INPUT_LABELS.get(name, name), gib(value, 3, sign=True)) for name, value in sizing.contributions.items()]
    rows += [
        ("residual (interaction, block rounding, what the equation misses)", gib(sizing.residual_bytes, 3, sign=True)),
        ("the engine's mean KV difference", gib(difference, 3, sign=True)),
    ]
    still = "" if sizing.contributions else " No input of the equation moved between the two."
    note = Paragraph.of(
        f"n = {sizing.n_before} and {sizing.n_after} runs; each input's row is the KV change its move alone gives "
        "at the other inputs' reference values (engines.sizing.decompose). The largest single run's residual "
        f"(engine - equation) is {gib(sizing.largest_check_residual_bytes, 3, unit=True)}.{still}"
    )
    return [title, Table(("input", "KV change (GiB)"), tuple(rows), (False, True)), note]
