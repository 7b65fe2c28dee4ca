"""`kvprobe env` as a readable table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

GIB = 1 << 30


def _gib(value) -> str:
    return "-" if value is None else f"{value / GIB:.2f} GiB"


def print_environment(console: Console, block: dict) -> None:
    table = Table(title="kvprobe env", show_header=False)
    table.add_column("fact")
    table.add_column("value")
    container = block["container"]
    table.add_row("container", f"{'yes' if container['detected'] else 'no'} ({container['runtime']}, score {container['score']})")
    evidence = {k: v for k, v in container["evidence"].items() if v not in (False, None, [], "")}
    table.add_row("evidence", ", ".join(f"{k}={v}" for k, v in evidence.items()))
    cgroup = block["cgroup"]
    table.add_row("cgroup", f"{cgroup['version']} {cgroup.get('path') or ''}")
    table.add_row("cgroup memory", f"limit {_gib(cgroup.get('limit_bytes'))}, usage {_gib(cgroup.get('usage_bytes'))}, "
                  f"peak {_gib(cgroup.get('peak_bytes'))}")
    if cgroup.get("stat"):
        table.add_row("cgroup memory.stat", ", ".join(f"{k} {_gib(v)}" for k, v in cgroup["stat"].items()))
    memory = block["host_memory"]
    table.add_row("host memory", ", ".join(f"{k} {_gib(v)}" for k, v in memory.items()))
    if block.get("free_page_reporting"):
        table.add_row("free-page reporting", "yes (virtio-balloon): freed pages reach MemAvailable late, kvprobe counts them apart")
    table.add_row("/dev/shm", _gib(block.get("shm_bytes")))
    table.add_row("memlock limit", "unlimited" if block.get("memlock_limit_bytes") is None else _gib(block["memlock_limit_bytes"]))
    gpu = block["gpu"]
    if not gpu["available"]:
        table.add_row("GPU", gpu.get("reason") or "none")
    else:
        table.add_row("GPU driver", f"{gpu['driver_version']} (CUDA {gpu['cuda_driver_version']})")
        for device in gpu["devices"]:
            table.add_row(f"GPU {device['index']}", f"{device['name']}: total {_gib(device['total_bytes'])}, used "
                          f"{_gib(device['used_bytes'])}; unified memory: {device['unified_memory']} "
                          f"({device['unified_memory_signal']})")
    for key, value in block["software"].items():
        table.add_row(key, str(value))
    for warning in block.get("warnings", []):
        table.add_row("[yellow]warning[/]", warning)
    console.print(table)
