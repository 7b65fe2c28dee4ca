"""GPUs through NVML only: the probe's process reads device memory without creating a CUDA context.

NVML numbers every GPU of the machine; the engine sees those CUDA_VISIBLE_DEVICES leaves it, in
that variable's order. `Nvml` reads the engine's devices: its index i is the engine's cuda:i, and
each device records the NVML index and UUID it maps to.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Literal

from kvprobe.results.schema import GpuInfo, GpuReport

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
FROM_ENVIRONMENT: Literal["environment"] = "environment"
# CUDA_VISIBLE_DEVICES as the engine will read it; FROM_ENVIRONMENT: this process's; None: unset.
VisibleDevices = str | Literal["environment"] | None

# GB10 (DGX Spark) has one memory pool for CPU and GPU. GH200/GB200 have HBM of their own, reached
# coherently by the CPU: environment.memory_model tells their two modes apart.
UNIFIED_MEMORY_NAMES = ("GB10",)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def classify_unified(name: str, total: int | None, host_total: int) -> tuple[bool, str]:
    """Tell unified memory from a discrete card, and say which signal decided."""
    if total is None:
        return True, "NVML reports device memory as not supported (unified memory)"
    if any(tag in name for tag in UNIFIED_MEMORY_NAMES):
        return True, f"device name {name!r} is a Grace unified-memory part"
    if host_total and abs(total - host_total) <= 0.05 * host_total:
        return True, "device memory total equals system memory"
    return False, "device reports its own memory total, apart from system memory"


def visible_devices(variable: str | None, uuids: list[str | None]) -> tuple[list[int], str | None]:
    """The NVML indices a CUDA program sees, in its order, under CUDA_VISIBLE_DEVICES = `variable`
    (None: unset), and why entries were left out (None: none were). As CUDA reads it: entries are
    indices or (prefixes of) GPU UUIDs, and the first entry that names no device, or one already
    named, ends the list. Index entries count in NVML's PCI bus order, which is CUDA's order on
    identical GPUs and under CUDA_DEVICE_ORDER=PCI_BUS_ID."""
    if variable is None:
        return list(range(len(uuids))), None
    chosen: list[int] = []
    for entry in (part.strip() for part in variable.split(",")):
        index = _device_of(entry, uuids)
        if index is None or index in chosen:
            return chosen, f"{CUDA_VISIBLE_DEVICES} entry {entry!r} names no device of this machine (or one twice)"
        chosen.append(index)
    return chosen, None


def _device_of(entry: str, uuids: list[str | None]) -> int | None:
    if entry.isdigit():
        return int(entry) if int(entry) < len(uuids) else None
    if entry.startswith("GPU-"):
        matches = [index for index, uuid in enumerate(uuids) if uuid and uuid.startswith(entry)]
        return matches[0] if len(matches) == 1 else None
    return None  # MIG instances and anything else: not mapped to a whole device


class Nvml:
    """A short-lived NVML session over the engine's devices; every call degrades to 'unavailable'
    instead of raising."""

    def __init__(self, module: Any = None, visible: VisibleDevices = FROM_ENVIRONMENT) -> None:
        """`module` answers as pynvml does: a recorded machine's (environment.recorded), or pynvml.
        `visible` is CUDA_VISIBLE_DEVICES as the engine will read it: by default this process's
        environment (a recorded machine's: the variable it was recorded under); None for every
        device (a Ray node's agent, which watches its whole node)."""
        self.error: str | None = None
        self.variable = visible
        if visible == FROM_ENVIRONMENT:
            recorded = getattr(module, "cuda_visible_devices", None)
            self.variable = os.environ.get(CUDA_VISIBLE_DEVICES) if module is None else recorded
        self.visible: list[int] = []
        self.visibility_note: str | None = None
        self.uuids: list[str | None] = []
        try:
            if module is None:
                import pynvml

                module = pynvml
            module.nvmlInit()
            self.nvml = module
        except Exception as exc:  # no driver, no library, no device
            self.nvml = None
            self.error = f"NVML unavailable: {exc}"
            return
        self.uuids = [self._uuid(index) for index in range(module.nvmlDeviceGetCount())]
        self.visible, self.visibility_note = visible_devices(self.variable, self.uuids)

    def _uuid(self, nvml_index: int) -> str | None:
        try:
            return _text(self.nvml.nvmlDeviceGetUUID(self.nvml.nvmlDeviceGetHandleByIndex(nvml_index)))
        except Exception:
            return None

    def _handle(self, index: int):
        """The NVML handle of the engine's device `index` (its cuda:index)."""
        return self.nvml.nvmlDeviceGetHandleByIndex(self.visible[index])

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *exc) -> None:
        if self.nvml is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()

    def device_count(self) -> int:
        """The devices the engine can use."""
        return len(self.visible)

    def used_bytes(self) -> list[int | None]:
        """Used memory per device; None where NVML cannot tell (unified memory)."""
        return self._memory_info("used")

    def free_bytes(self) -> list[int | None]:
        """Free memory per device; None where NVML cannot tell (unified memory)."""
        return self._memory_info("free")

    def _memory_info(self, field: str) -> list[int | None]:
        if not self.nvml:
            return []
        values: list[int | None] = []
        for index in range(self.device_count()):
            try:
                handle = self._handle(index)
                values.append(int(getattr(self.nvml.nvmlDeviceGetMemoryInfo(handle), field)))
            except Exception:
                values.append(None)
        return values

    def processes(self) -> list[dict]:
        """Every process NVML lists on the engine's devices: index (the engine's), pid, used_bytes."""
        if not self.nvml:
            return []
        return [{"index": index, **proc} for index in range(self.device_count()) for proc in self._processes(index)]

    def _processes(self, index: int) -> list[dict]:
        handle = self._handle(index)
        found = []
        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                for proc in getattr(self.nvml, getter)(handle):
                    used = proc.usedGpuMemory
                    found.append({"pid": int(proc.pid), "used_bytes": int(used) if isinstance(used, int) else None})
            except Exception:
                continue
        return found

    def temperature_c(self, index: int = 0) -> int | None:
        if not self.nvml:
            return None
        try:
            handle = self._handle(index)
            return int(self.nvml.nvmlDeviceGetTemperature(handle, self.nvml.NVML_TEMPERATURE_GPU))
        except Exception:
            return None

    def report(self, host_total: int) -> GpuReport:
        if not self.nvml:
            return GpuReport(available=False, reason=self.error)
        nvml = self.nvml
        report = GpuReport(
            available=True,
            driver_version=_text(nvml.nvmlSystemGetDriverVersion()),
            cuda_visible_devices=self.variable,
            not_visible=[index for index in range(len(self.uuids)) if index not in self.visible],
            visibility_note=self.visibility_note,
        )
        try:
            version = nvml.nvmlSystemGetCudaDriverVersion_v2()
            report.cuda_driver_version = f"{version // 1000}.{version % 1000 // 10}"
        except Exception:
            pass
        for index in range(self.device_count()):
            handle = self._handle(index)
            name = _text(nvml.nvmlDeviceGetName(handle))
            total: int | None
            used: int | None
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                total, used = int(memory.total), int(memory.used)
            except Exception:
                total = used = None
            unified, signal = classify_unified(name, total, host_total)
            processes = self._processes(index)
            nvml_index = self.visible[index]
            report.devices.append(
                GpuInfo(index, name, total, used, unified, signal, processes, nvml_index, self.uuids[nvml_index])
            )
        return report
