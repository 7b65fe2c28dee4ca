"""`kvprobe env` as a readable table."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kvprobe.results.schema import Environment, GpuReport
from kvprobe.units import gib


def gpu_rows(gpu: GpuReport) -> list[tuple[str, str]]:
    """The GPU facts; where CUDA_VISIBLE_DEVICES is set or hides a device, which NVML device each of
    the engine's GPUs is."""
    if not gpu.available:
        return [("GPU", gpu.reason or "none")]
    rows = [("GPU driver", f"{gpu.driver_version} (CUDA {gpu.cuda_driver_version})")]
    if gpu.cuda_visible_devices is not None or gpu.not_visible:
        mapped = ", ".join(f"GPU {d.index} = NVML {d.nvml_index} ({d.uuid})" for d in gpu.devices) or "no device"
        hidden = ", ".join(map(str, gpu.not_visible)) or "none"
        note = f"; {gpu.visibility_note}" if gpu.visibility_note else ""
        said = f"{gpu.cuda_visible_devices!r}: {mapped}; NVML devices not visible: {hidden}{note}"
        rows.append(("CUDA_VISIBLE_DEVICES", said))
    rows += [
        (
            f"GPU {device.index}",
            f"{device.name}: total {gib(device.total_bytes, unit=True)}, used "
            f"{gib(device.used_bytes, unit=True)}; unified memory: {device.unified_memory} "
            f"({device.unified_memory_signal})",
        )
        for device in gpu.devices
    ]
    return rows


def print_environment(console: Console, block: Environment) -> None:
    title = "kvprobe env" + (f" (SIMULATED: recorded machine {block.simulated_from})" if block.simulated_from else "")
    table = Table(title=escape(title), show_header=False)
    table.add_column("fact")
    table.add_column("value")

    def row(fact: str, value: str) -> None:
        table.add_row(escape(fact), escape(value))

    container = block.container
    row("container", f"{'yes' if container.detected else 'no'} ({container.runtime}, score {container.score})")
    evidence = {k: v for k, v in container.evidence.items() if v not in (False, None, [], "")}
    row("evidence", ", ".join(f"{k}={v}" for k, v in evidence.items()))
    cgroup = block.cgroup
    row("cgroup", f"{cgroup.version} {cgroup.path or ''}")
    row(
        "cgroup memory",
        f"limit {gib(cgroup.limit_bytes, unit=True)}, usage {gib(cgroup.usage_bytes, unit=True)}, "
        f"headroom {gib(cgroup.headroom_bytes(), unit=True)}, peak {gib(cgroup.peak_bytes, unit=True)}",
    )
    if cgroup.stat:
        row("cgroup memory.stat", ", ".join(f"{k} {gib(v, unit=True)}" for k, v in cgroup.stat.items()))
    row("host memory", ", ".join(f"{k} {gib(v, unit=True)}" for k, v in block.host_memory.items()))
    if block.free_page_reporting:
        row(
            "free-page reporting",
            "yes (virtio-balloon): freed pages reach MemAvailable late, kvprobe counts them apart",
        )
    if block.simulated_from is None:  # a recorded machine has no live process to ask
        row("/dev/shm", gib(block.shm_bytes, unit=True))
        memlock = block.memlock_limit_bytes
        row("memlock limit", "unlimited" if memlock is None else gib(memlock, unit=True))
    for fact, value in gpu_rows(block.gpu):
        row(fact, value)
    model = block.memory_model
    if model is not None:
        row("memory model", f"{model.kind}: {model.signal}")
    if block.coherent_gpu_memory_mode is not None:
        row("driver CoherentGPUMemoryMode", repr(block.coherent_gpu_memory_mode))
    for node in block.numa_nodes:
        row(
            f"NUMA node {node.node}",
            f"MemTotal {gib(node.mem_total_bytes, unit=True)}, MemFree {gib(node.mem_free_bytes, unit=True)}, "
            f"CPUs {node.cpus or 'none'}",
        )
    for key, version in block.software.items():
        row(key, str(version))
    for warning in block.warnings:
        table.add_row("[yellow]warning[/]", escape(warning))
    console.print(table)
