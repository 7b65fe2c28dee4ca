"""What the probe and an engine's worker process say to each other, typed once for both sides.

The probe writes a `WorkerSpec` (JSON) and starts the worker, or hands it to a worker already
waiting; the worker prints phase marks on its log, holds at ready until the probe has measured it
(the ready gate), and writes a `results.schema.WorkerResult`. On a Ray cluster every process of the
trial carries `TRIAL_TAG` in its environment, so each node's agent can find them. Every engine
adapter's worker speaks this protocol; defaults live here and nowhere else.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from kvprobe.safe_io import write_new

PHASE_MARK = "KVPROBE_PHASE"
"""Starts a log line `KVPROBE_PHASE PHASE UNIX_TIME`: where an engine start is (import, engine_start,
ready, generated, filled, throughput, done), for the probe's phase samples."""

INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def accept_interrupts() -> None:
    """A worker's first step. The probe spawns it with these signals held (a Ctrl-C must not fall
    between the spawn and the teardown), and a child inherits its parent's signal mask: without this,
    SIGTERM would never reach the engine and every teardown would wait for SIGKILL."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)


TRIAL_TAG = "KVPROBE_TRIAL"
"""The environment variable naming a trial (RUN_ID/NUMBER) in every process of it, Ray workers included."""


class Protocol(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Throughput(Protocol):
    """A fixed decode workload timed at u_max."""

    requests: int = Field(gt=0)
    prompt_len: int = Field(gt=0)
    output_len: int = Field(gt=0)


class Workload(Protocol):
    """What the worker runs once the engine is ready."""

    generate_tokens: int = Field(8, gt=0, description="One short request: the engine generates.")
    fill_target: float | None = Field(None, description="Run the fill test to this share of the KV blocks.")
    throughput: Throughput | None = None


class RayJoin(Protocol):
    address: str
    tag: str = Field(description="The trial's TRIAL_TAG value.")


class WorkerSpec(Protocol):
    """One trial as its worker receives it."""

    engine_args: dict = Field(description="The engine's own arguments (vLLM's EngineArgs, TensorRT-LLM's LLM).")
    usage_context: str = Field("OPENAI_API_SERVER", description="vLLM's UsageContext whose defaults apply.")
    ready_gate: str | None = Field(None, description="The worker holds at ready until this file exists.")
    workload: Workload = Workload()
    ray: RayJoin | None = None
    result_path: str | None = Field(None, description="Given to a waiting worker with its spec.")


READY_GATE_TIMEOUT_S = 60.0
POLL_S = 0.02


def mark(phase: str) -> None:
    """The worker's phase mark (see PHASE_MARK)."""
    print(f"{PHASE_MARK} {phase} {time.time():.3f}", flush=True)


def wait_for_file(path: Path, timeout_s: float | None = None) -> bool:
    """Until the probe creates `path` (or `timeout_s` has passed); whether it came."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not path.exists():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def read_spec(path: Path) -> WorkerSpec:
    return WorkerSpec.model_validate_json(path.read_text())


def write_result(result_path: str, result: dict) -> None:
    """The worker's result, atomically (the probe reads the whole file or none), its temporary file
    made anew (never written through a link planted in the trial folder) and removed if writing fails."""
    tmp = Path(result_path + ".tmp")
    try:
        write_new(tmp, json.dumps(result))
        os.replace(tmp, result_path)
    except BaseException:  # a full disk: no torn temporary left behind
        tmp.unlink(missing_ok=True)
        raise


def wait_for_spec(spec_path: Path) -> WorkerSpec:
    """A prestarted worker's wait for the spec the probe writes once the search has decided the
    trial. Nothing here touches CUDA; the probe ends this process if no spec comes."""
    mark("waiting")
    wait_for_file(spec_path)
    return read_spec(spec_path)


def hold_until_measured(gate: str | None) -> bool:
    """At ready, wait (idle) for the probe to measure the engine before generating; False where the
    gate did not come in time (the probe was stalled or gone), which the result records."""
    if not gate:
        return True
    return wait_for_file(Path(gate), READY_GATE_TIMEOUT_S)
