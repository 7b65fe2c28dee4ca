"""Host and cgroup memory, read from /proc/meminfo and both cgroup layouts (v1, v2, hybrid)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvprobe.results.schema import CgroupMemory

UNLIMITED = 1 << 62  # cgroup v1 reports "no limit" as a number near PAGE_COUNTER_MAX


def read_kernel_fields(path: str | Path) -> dict[str, int]:
    """`Key: N [kB]` lines, as /proc/meminfo and /proc/PID/smaps_rollup write them, in bytes
    (counts without a unit as they are); other lines are skipped."""
    values: dict[str, int] = {}
    for line in Path(path).read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if 1 <= len(parts) <= 2 and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def read_meminfo(path: str | Path = "/proc/meminfo") -> dict[str, int]:
    """All /proc/meminfo fields in bytes."""
    return read_kernel_fields(path)


_ACCOUNTED = (
    "MemFree",
    "Active",
    "Inactive",
    "Unevictable",
    "Slab",
    "KernelStack",
    "PageTables",
    "SecPageTables",
    "Percpu",
    "VmallocUsed",
)


def kernel_unaccounted(info: dict[str, int]) -> int:
    """Memory in no /proc/meminfo account: MemTotal less free, LRU (anon, file, shmem), slab, kernel
    stack, page-table, per-CPU, vmalloc and huge pages.

    Mostly drivers' pages, steady. On VMs with free-page reporting (Firecracker's virtio-balloon,
    this project's CI machine) it also holds pages a process freed that the hypervisor has not
    handed back yet: over a GiB after an engine exits (1.34 GiB seen on the CI machine), returned
    over tens of seconds, during which MemAvailable is that much lower.
    """
    huge = info.get("HugePages_Total", 0) * info.get("Hugepagesize", 0)
    return info["MemTotal"] - huge - sum(info.get(key, 0) for key in _ACCOUNTED)


VIRTIO_BALLOON_DEVICE_ID = 0x0005
VIRTIO_BALLOON_F_REPORTING = 5  # feature bit: the guest reports free pages to the hypervisor


def free_page_reporting(virtio_root: str | Path = "/sys/bus/virtio/devices") -> bool:
    """Whether a virtio-balloon device negotiated free-page reporting: freed pages then sit in no
    meminfo account until the hypervisor hands them back (see kernel_unaccounted)."""
    for device in Path(virtio_root).glob("*"):
        try:
            if int((device / "device").read_text(), 16) != VIRTIO_BALLOON_DEVICE_ID:
                continue
            features = (device / "features").read_text().strip()  # one character per bit, bit 0 first
        except (OSError, ValueError):
            continue
        if len(features) > VIRTIO_BALLOON_F_REPORTING and features[VIRTIO_BALLOON_F_REPORTING] == "1":
            return True
    return False


HOST_FIELDS = ("MemTotal", "MemFree", "MemAvailable", "Cached", "Buffers", "Shmem", "SwapTotal", "SwapFree")


def host_memory(path: str | Path = "/proc/meminfo") -> dict[str, int]:
    """The meminfo fields a result keeps, and the kernel's unlisted pages as `Unaccounted`."""
    info = read_meminfo(path)
    return {**{key: info.get(key, 0) for key in HOST_FIELDS}, "Unaccounted": kernel_unaccounted(info)}


def read_text_or_none(path: Path) -> str | None:
    """A small kernel or sysfs file's text; None where it is missing or unreadable."""
    try:
        return path.read_text()
    except OSError:
        return None


def _read(path: Path) -> str | None:
    text = read_text_or_none(path)
    return None if text is None else text.strip()


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED else value


def _read_stat(path: Path) -> dict[str, int]:
    text = _read(path) or ""
    stat = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            stat[key] = int(value)
    return stat


def _own_cgroup_paths(proc_cgroup: str) -> dict[str, str]:
    """Controller -> path from /proc/self/cgroup; the v2 entry is keyed ''."""
    paths = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                paths[controller] = parts[2]
    return paths


def detect_cgroup_version(root: Path) -> str:
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "memory").is_dir():
        return "hybrid" if (root / "unified" / "cgroup.controllers").exists() else "v1"
    return "none"


def _cgroup_dir(mount: Path, own_path: str | None) -> Path:
    """Our cgroup's directory; inside a private cgroup namespace it is the mount's root itself."""
    if own_path and own_path != "/":
        candidate = mount / own_path.lstrip("/")
        if candidate.is_dir():
            return candidate
    return mount


@dataclass(frozen=True)
class _Layout:
    """Where one cgroup version keeps the memory controller and its files."""

    mount: str  # below /sys/fs/cgroup
    controller: str  # the key of our line in /proc/self/cgroup
    limit: str
    usage: str
    peak: str


LAYOUTS = {
    "v2": _Layout("", "", "memory.max", "memory.current", "memory.peak"),
    "v1": _Layout("memory", "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "memory.max_usage_in_bytes"),
}


def read_cgroup_memory(
    root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup"
) -> CgroupMemory:
    root = Path(root)
    version = detect_cgroup_version(root)
    if version == "none":
        return CgroupMemory(version="none")
    layout = LAYOUTS["v2" if version == "v2" else "v1"]  # hybrid keeps memory on the v1 side
    own = _own_cgroup_paths(_read(Path(proc_cgroup)) or "")
    directory = _cgroup_dir(root / layout.mount if layout.mount else root, own.get(layout.controller))
    return CgroupMemory(
        version=version,
        path=str(directory),
        limit_bytes=_read_int(directory / layout.limit),
        usage_bytes=_read_int(directory / layout.usage),
        peak_bytes=_read_int(directory / layout.peak),
        stat=_summarise_stat(_read_stat(directory / "memory.stat"), v2=version == "v2"),
    )


def cgroup_file_bytes() -> int | None:
    """Page cache charged to our cgroup (memory.stat `file`), None outside a memory cgroup."""
    memory = read_cgroup_memory()
    return memory.stat.get("file") if memory.limit_bytes is not None else None


def _summarise_stat(stat: dict[str, int], v2: bool) -> dict[str, int]:
    """anon / file / shmem / kernel in bytes, named the same for both layouts."""
    if v2:
        keys = {"anon": "anon", "file": "file", "shmem": "shmem", "kernel": "kernel"}
        summary = {ours: stat[theirs] for ours, theirs in keys.items() if theirs in stat}
        if "kernel" not in summary and "kernel_stack" in stat:
            summary["kernel"] = stat.get("kernel_stack", 0) + stat.get("slab", 0) + stat.get("sock", 0)
        return summary
    keys = {"anon": "rss", "file": "cache", "shmem": "shmem", "mapped_file": "mapped_file"}
    summary = {ours: stat[theirs] for ours, theirs in keys.items() if theirs in stat}
    return summary


def shm_size_bytes(path: str = "/dev/shm") -> int | None:
    import os

    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


def memlock_limit() -> int | None:
    """RLIMIT_MEMLOCK soft limit in bytes; None means unlimited."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return None if soft == resource.RLIM_INFINITY else soft
