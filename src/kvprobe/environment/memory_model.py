"""Which memory model a machine has, from NUMA nodes, the NVIDIA driver and NVML, with the deciding
signal named.

    cpu             no GPU: the KV cache lives in host memory (vLLM's CPU backend)
    discrete        a GPU with its own memory, apart from the host's (an H100 on PCIe or SXM)
    unified         one pool for CPU and GPU (GB10 / DGX Spark): NVML cannot report device memory
    coherent_numa   GPU memory reachable coherently and onlined by the kernel as a CPU-less NUMA
                    node (GH200 / GB200 in the driver's default NUMA mode)
    coherent_cdmm   the same hardware with CDMM (driver R580+): the driver keeps GPU memory from the OS

Sources: GB10's NVML answers "Not Supported" for device memory (NVIDIA DGX Spark known issues;
nvitop PR #208); non-CDMM Grace machines expose each GPU's HBM as a NUMA node without CPUs (vLLM
PR #39361); CDMM keeps it out of the NUMA nodes (TensorRT-LLM PR #9166); the driver names its mode
in /proc/driver/nvidia/params as CoherentGPUMemoryMode.
"""

from __future__ import annotations

import re
from pathlib import Path

from kvprobe.environment.gpu import GpuReport
from kvprobe.environment.memory import read_text_or_none
from kvprobe.results.schema import MemoryModel, NumaNode

COHERENT_NAMES = ("GH200", "GB200", "GB300", "Grace Hopper", "Grace Blackwell")
NODE_MATCH = 0.10  # a CPU-less node within 10% of a GPU's memory total is that GPU's memory
NODE_LINE = re.compile(r"Node \d+ (\S+):\s+(\d+)( kB)?")


def read_node_meminfo(path: Path) -> dict[str, int]:
    """Fields of a node's meminfo ("Node 0 MemFree: 123 kB"), in bytes."""
    fields = {}
    for line in (read_text_or_none(path) or "").splitlines():
        match = NODE_LINE.match(line.strip())
        if match:
            fields[match.group(1)] = int(match.group(2)) * (1024 if match.group(3) else 1)
    return fields


def read_numa_nodes(root: str | Path = "/") -> list[NumaNode]:
    nodes = []
    base = Path(root) / "sys/devices/system/node"
    for directory in sorted(base.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        info = read_node_meminfo(directory / "meminfo")
        nodes.append(
            NumaNode(
                node=int(directory.name[4:]),
                mem_total_bytes=info.get("MemTotal"),
                mem_free_bytes=info.get("MemFree"),
                cpus=(read_text_or_none(directory / "cpulist") or "").strip(),
            )
        )
    return nodes


def node_free(root: str | Path = "/") -> dict[str, int]:
    """MemFree per NUMA node (keys are node numbers as text, as JSON keeps them)."""
    base = Path(root) / "sys/devices/system/node"
    free = {}
    for directory in base.glob("node[0-9]*"):
        value = read_node_meminfo(directory / "meminfo").get("MemFree")
        if value is not None:
            free[directory.name[4:]] = value
    return free


def coherent_memory_mode(root: str | Path = "/") -> str | None:
    """The driver's CoherentGPUMemoryMode ("driver" is CDMM, "numa", "" unset); None where not exposed."""
    text = read_text_or_none(Path(root) / "proc/driver/nvidia/params")
    for line in (text or "").splitlines():
        if line.startswith("CoherentGPUMemoryMode:"):
            return line.split(":", 1)[1].strip().strip('"')
    return None


def classify(gpus: GpuReport, nodes: list[NumaNode], mode: str | None) -> MemoryModel:
    """The memory model, from the strongest signal present."""
    devices = gpus.devices if gpus.available else []
    if not devices:
        return MemoryModel("cpu", "no GPU visible to NVML", [])
    first = devices[0]
    if first.total_bytes is None:
        return MemoryModel("unified", f"NVML reports {first.name}'s device memory as not supported", [])
    cpuless = [(n.node, n.mem_total_bytes) for n in nodes if not n.cpus and n.mem_total_bytes]
    matches = [
        node
        for node, size in cpuless
        if any(d.total_bytes and abs(size - d.total_bytes) <= NODE_MATCH * d.total_bytes for d in devices)
    ]
    if matches:
        return MemoryModel(
            "coherent_numa",
            f"NUMA node(s) {', '.join(map(str, matches))} have no CPUs and hold a GPU's memory total"
            + (f" (driver CoherentGPUMemoryMode {mode!r})" if mode is not None else ""),
            matches,
        )
    if mode == "driver":
        return MemoryModel("coherent_cdmm", "driver CoherentGPUMemoryMode is 'driver' (CDMM)", [])
    if any(tag in first.name for tag in COHERENT_NAMES):
        return MemoryModel(
            "coherent_cdmm", f"{first.name} is coherent, and no NUMA node holds its memory (CDMM or not onlined)", []
        )
    if first.unified_memory:
        return MemoryModel("unified", first.unified_memory_signal, [])
    return MemoryModel("discrete", "the GPU reports its own memory total and no NUMA node holds it", [])
