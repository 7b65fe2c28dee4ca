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

import json
from pathlib import Path


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
        self.answers = json.loads(Path(path).read_text())
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
