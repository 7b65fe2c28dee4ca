"""GPUs through NVML only: the probe's process reads device memory without creating a CUDA context."""

from __future__ import annotations

import contextlib
from typing import Any

from kvprobe.results.schema import GpuInfo, GpuReport

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


class Nvml:
    """A short-lived NVML session; every call degrades to 'unavailable' instead of raising."""

    def __init__(self, module: Any = None) -> None:
        """`module` answers as pynvml does: a recorded machine's (environment.recorded), or pynvml."""
        self.error: str | None = None
        try:
            if module is None:
                import pynvml

                module = pynvml
            module.nvmlInit()
            self.nvml = module
        except Exception as exc:  # no driver, no library, no device
            self.nvml = None
            self.error = f"NVML unavailable: {exc}"

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *exc) -> None:
        if self.nvml is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()

    def device_count(self) -> int:
        return self.nvml.nvmlDeviceGetCount() if self.nvml else 0

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
                handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
                values.append(int(getattr(self.nvml.nvmlDeviceGetMemoryInfo(handle), field)))
            except Exception:
                values.append(None)
        return values

    def processes(self) -> list[dict]:
        """Every process NVML lists on any device: index, pid, used_bytes."""
        if not self.nvml:
            return []
        return [{"index": index, **proc} for index in range(self.device_count()) for proc in self._processes(index)]

    def _processes(self, index: int) -> list[dict]:
        handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
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
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            return int(self.nvml.nvmlDeviceGetTemperature(handle, self.nvml.NVML_TEMPERATURE_GPU))
        except Exception:
            return None

    def report(self, host_total: int) -> GpuReport:
        if not self.nvml:
            return GpuReport(available=False, reason=self.error)
        nvml = self.nvml
        report = GpuReport(available=True, driver_version=_text(nvml.nvmlSystemGetDriverVersion()))
        try:
            version = nvml.nvmlSystemGetCudaDriverVersion_v2()
            report.cuda_driver_version = f"{version // 1000}.{version % 1000 // 10}"
        except Exception:
            pass
        for index in range(self.device_count()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(nvml.nvmlDeviceGetName(handle))
            total: int | None
            used: int | None
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                total, used = int(memory.total), int(memory.used)
            except Exception:
                total = used = None
            unified, signal = classify_unified(name, total, host_total)
            report.devices.append(GpuInfo(index, name, total, used, unified, signal, self._processes(index)))
        return report
