"""Recorded machines: a directory of the files kvprobe reads (/proc, /sys, cgroup files) and the
NVML answers (nvml.json), so that machines this project cannot reach are detected and accounted
for in tests. A simulation, and named as such wherever its output is shown.

nvml.json:

    {"driver_version": "580.95.05", "cuda_driver_version": 13000,
     "devices": [{"name": "NVIDIA GB10", "memory": "not_supported",
                  "processes": [{"pid": 4242, "used_bytes": null}]}]}

`memory` is {"total": BYTES, "used": BYTES} where NVML reports device memory. Optional: a device's
"uuid" (as nvmlDeviceGetUUID answers; without it NVML reports the query as not supported), and
"cuda_visible_devices", the variable the machine was recorded under (absent: unset).
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from kvprobe.environment.memory import read_kernel_fields
from kvprobe.safe_io import UnsafeFile, read_json

MAX_RECORDED_FILE_BYTES = 16 << 20  # a recorded /proc or /sys file, or nvml.json, is a few KiB
MAX_RECORDED_FILES = 10_000


def _file_problems(root: Path) -> list[str]:
    """Every entry of a recorded machine must be a regular file of sane size (a FIFO would hang a
    read, /dev/zero would never end) or a namespace link (proc/PID/ns/*, read as a link, never opened)."""
    problems: list[str] = []
    for count, path in enumerate(root.rglob("*")):
        if count >= MAX_RECORDED_FILES:
            return [*problems, f"{root}: more than {MAX_RECORDED_FILES} entries; not a recorded machine"]
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            if path.parent.name != "ns":
                problems.append(f"{path}: a symbolic link; a recorded machine holds files")
        elif not stat.S_ISDIR(info.st_mode) and not stat.S_ISREG(info.st_mode):
            problems.append(f"{path}: not a regular file")
        elif info.st_size > MAX_RECORDED_FILE_BYTES:
            problems.append(f"{path}: {info.st_size} bytes, more than a recorded file holds")
    return problems


def _nvml_problems(answers: Any, source: Path) -> list[str]:
    if not isinstance(answers, dict):
        return [f"{source}: expected a JSON object"]
    if "unavailable" in answers:
        return [] if isinstance(answers["unavailable"], str) else [f"{source}: field 'unavailable': expected text"]
    problems = []
    if not isinstance(answers.get("driver_version"), str):
        problems.append(f"{source}: field 'driver_version': expected text")
    if not isinstance(answers.get("cuda_driver_version"), int):
        problems.append(f"{source}: field 'cuda_driver_version': expected a whole number")
    devices = answers.get("devices")
    if not isinstance(devices, list):
        return [*problems, f"{source}: field 'devices': expected a list"]
    for index, device in enumerate(devices):
        where = f"{source}: devices.{index}"
        if not isinstance(device, dict) or not isinstance(device.get("name"), str):
            problems.append(f"{where}: expected an object with a 'name'")
            continue
        memory = device.get("memory")
        if memory != "not_supported" and not (
            isinstance(memory, dict) and all(isinstance(memory.get(key), int) for key in ("total", "used"))
        ):
            problems.append(f'{where}.memory: expected \'not_supported\' or {{"total": BYTES, "used": BYTES}}')
        processes = device.get("processes", [])
        if not isinstance(processes, list) or not all(
            isinstance(p, dict) and isinstance(p.get("pid"), int) for p in processes
        ):
            problems.append(f"{where}.processes: expected a list of objects with a 'pid'")
    return problems


def recorded_problems(root: Path) -> list[str]:
    """What makes `root` unusable as a recorded machine, one line per problem (none: usable)."""
    root = Path(root)
    problems = _file_problems(root)
    if problems:
        return problems
    meminfo = root / "proc" / "meminfo"
    if not meminfo.is_file():
        problems.append(f"{root}: no proc/meminfo; not a recorded machine")
    else:
        try:
            if "MemTotal" not in read_kernel_fields(meminfo):
                problems.append(f"{meminfo}: no 'MemTotal: N kB' line")
        except UnicodeDecodeError:
            problems.append(f"{meminfo}: not text")
    nvml = root / "nvml.json"
    if not nvml.is_file():
        return [*problems, f"{root}: no nvml.json; not a recorded machine"]
    try:
        return problems + _nvml_problems(read_json(nvml, MAX_RECORDED_FILE_BYTES, kind="nvml.json"), nvml)
    except (OSError, UnsafeFile) as exc:
        return [*problems, str(exc)]


class NotSupported(Exception):
    """What NVML raises for a query the device does not support (NVML_ERROR_NOT_SUPPORTED)."""

    def __str__(self) -> str:
        return "Not Supported"


class _Memory:
    def __init__(self, total: int, used: int):
        self.total, self.used, self.free = total, used, total - used


class _Process:
    def __init__(self, pid: int, used: int | None):
        self.pid, self.usedGpuMemory = pid, used


class RecordedNvml:
    """Answers the pynvml calls kvprobe makes, from a machine's nvml.json."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, path: Path):
        self.answers = read_json(path, MAX_RECORDED_FILE_BYTES, kind="nvml.json")
        self.devices = self.answers.get("devices", [])
        self.cuda_visible_devices: str | None = self.answers.get("cuda_visible_devices")

    def nvmlInit(self) -> None:
        if self.answers.get("unavailable"):
            raise RuntimeError(self.answers["unavailable"])

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict:
        return self.devices[index]

    def nvmlDeviceGetName(self, device: dict) -> str:
        return device["name"]

    def nvmlDeviceGetUUID(self, device: dict) -> str:
        if "uuid" not in device:
            raise NotSupported
        return device["uuid"]

    def nvmlDeviceGetMemoryInfo(self, device: dict) -> _Memory:
        memory = device["memory"]
        if memory == "not_supported":
            raise NotSupported
        return _Memory(memory["total"], memory["used"])

    def nvmlDeviceGetComputeRunningProcesses(self, device: dict) -> list[_Process]:
        return [_Process(p["pid"], p.get("used_bytes")) for p in device.get("processes", [])]

    def nvmlDeviceGetGraphicsRunningProcesses(self, device: dict) -> list[_Process]:
        return []

    def nvmlDeviceGetTemperature(self, device: dict, sensor: int) -> int:
        return int(device.get("temperature_c", 40))

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.answers["driver_version"]

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return int(self.answers["cuda_driver_version"])
