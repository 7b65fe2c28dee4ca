"""Trials in parallel across GPUs (`kvprobe experiment --devices 0,1`): one lane per device.

Each lane runs the experiment's cells one after another, the next cell in the schedule as soon as
its last one ends, with its device alone visible (CUDA_VISIBLE_DEVICES) and a results directory of
its own (OUT/lane-DEVICE: its own lock, journals and trial groups, so that one lane's start never
takes another's live trial for a stale one). `kvprobe report OUT` reads every lane.

Only where each device is a memory pool of its own (discrete GPUs). On unified memory (GB10) or
the CPU backend every engine draws from one pool and parallel trials would measure each other:
refused there, with the reason. The lanes do share the host's memory, so a lane's trial is over
when its processes are gone and its GPU is back at its baseline; host memory, which the other
lanes' engines move, is not awaited.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvprobe.environment.gpu import visible_devices
from kvprobe.experiment.spec import Experiment
from kvprobe.results.schema import Environment
from kvprobe.results.store import LANE_PREFIX


@dataclass(frozen=True)
class Lane:
    """Where a cell runs: its device (None: the machine as it is, one cell at a time) and results."""

    device: str | None
    out_dir: Path

    @property
    def name(self) -> str:
        return "" if self.device is None else f"GPU {self.device}"


def lanes(out_dir: Path, devices: tuple[str, ...]) -> list[Lane]:
    """One lane per device; no devices: the one lane of a plain experiment, in OUT itself."""
    if not devices:
        return [Lane(None, out_dir)]
    return [Lane(device, out_dir / f"{LANE_PREFIX}{device}") for device in devices]


def lane_problems(experiment: Experiment, machine: Environment, devices: tuple[str, ...]) -> list[str]:
    """Why this experiment cannot run in parallel on `devices`; one line each. `machine`: this
    machine's environment with every GPU listed (collected with CUDA_VISIBLE_DEVICES unset)."""
    if not devices:
        return []
    problems = []
    if machine.kv_pool != "gpu":
        unified = next((d.unified_memory_signal for d in machine.gpu.devices if d.unified_memory), None)
        why = unified or machine.gpu.reason or "no GPU"
        problems.append(
            "--devices: trials in parallel need discrete GPUs, each a memory pool of its own; here the KV "
            f"lives in host memory ({why}), one pool, and parallel trials would measure each other"
        )
    uuids: list[str | None] = [device.uuid for device in machine.gpu.devices]
    named: list[int] = []
    for device in devices:
        chosen, note = visible_devices(device, uuids)
        if note or len(chosen) != 1:
            problems.append(f"--devices: {device!r} names no GPU of this machine (NVML index or GPU UUID)")
        named += chosen[:1]
    if len(set(named)) != len(named):
        problems.append("--devices: a GPU is named twice (by index or UUID); each lane needs a GPU of its own")
    for condition in experiment.conditions:
        host_wide = [
            name
            for name, given in (
                ("hold_memory", condition.hold_memory_bytes),
                ("page_cache", condition.page_cache_bytes),
                ("drop_caches", condition.drop_caches),
            )
            if given
        ]
        for name in host_wide:
            problems.append(
                f"{experiment.path}: condition '{condition.name}': field '{name}': acts on the whole host, "
                "so on every lane's trials at once; run this experiment without --devices"
            )
    for model in experiment.models:
        if model.ranks > 1:
            problems.append(
                f"{experiment.models_file}: model '{model.name}': needs {model.ranks} GPUs "
                "(tensor/pipeline parallel); a lane has one"
            )
    return problems
