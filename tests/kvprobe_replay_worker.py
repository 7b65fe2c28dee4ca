"""A stand-in for kvprobe.engines.vllm_worker: plays back one recorded engine start instead of
starting vLLM, with the same protocol (tests/replay_engine.py runs it as the worker command).

    python kvprobe_replay_worker.py SPEC.json RESULT.json
    python kvprobe_replay_worker.py SPEC.json [--prepare-like TRIAL_SPEC.json]   # started early: waits for SPEC.json

From the recording (the journals named in KVPROBE_STANDIN_RECORDING) it takes the start nearest to
the spec's setting (the same kind: utilization, or explicit KV bytes) and reproduces it: the phase
marks, the engine's recorded log lines, a little resident memory for the probe's sampler, the wait
at ready for the probe's gate, the result file of a start that passed, the exit code of one that
failed. It imports nothing of vLLM; its file name holds "kvprobe", as a worker's command line does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

PHASE_MARK = "KVPROBE_PHASE"  # kvprobe.engines.vllm_worker's, spelled out: this stand-in imports no kvprobe
POLL_S = 0.02
READY_GATE_TIMEOUT_S = 60.0
IMPORT_S = 0.3
HELD_BYTES = 64 << 20  # touched at engine start, so the sampler sees the "engine" take memory
PAGE = 4096


def mark(phase: str) -> None:
    print(f"{PHASE_MARK} {phase} {time.time():.3f}", flush=True)


def wait_for_file(path: Path, timeout_s: float | None = None) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not path.exists() and (deadline is None or time.monotonic() < deadline):
        time.sleep(POLL_S)


def recorded_trials() -> list[dict]:
    """Every recorded start, with the journal it came from."""
    trials = []
    for journal in filter(None, os.environ["KVPROBE_STANDIN_RECORDING"].split(os.pathsep)):
        for line in Path(journal).read_text().splitlines():
            if line.strip():
                trials.append({**json.loads(line)["trial"], "journal": journal})
    return trials


def nearest(trials: list[dict], engine_args: dict) -> dict:
    """The recorded start whose setting is nearest the spec's, of the same kind."""
    explicit = engine_args.get("kv_cache_memory_bytes") is not None
    key = "kv_cache_memory_bytes" if explicit else "utilization"
    wanted = engine_args["kv_cache_memory_bytes" if explicit else "gpu_memory_utilization"]
    candidates = [t for t in trials if (t["kv_cache_memory_bytes"] is not None) == explicit]
    if not candidates:
        sys.exit(f"stand-in worker: no recorded start with {key}")
    return min(candidates, key=lambda t: (abs(t[key] - wanted), t["number"]))


def engine_lines(trial: dict) -> list[str]:
    """The engine's log of the recorded start (committed beside its journal, else the journal's
    tail with the line that decided a failure), without the recorded phase marks."""
    journal = Path(trial["journal"])
    log = journal.parent.parent / ".trials" / journal.stem / Path(trial.get("log_path") or "-").name
    if log.is_file():
        lines = log.read_text(errors="replace").splitlines()
    else:
        lines = list(trial.get("log_tail") or [])
        if not trial["passed"] and trial["reason"] not in "\n".join(lines):
            lines.append(trial["reason"])
    return [line for line in lines if not line.startswith(PHASE_MARK)]


def main(spec_path: str, result_path: str | None, prepare_like: str | None) -> int:
    spec = json.loads(Path(spec_path).read_text()) if result_path else None
    mark("import")
    time.sleep(IMPORT_S)
    if spec is None:
        if prepare_like:
            mark("prepare")
        mark("waiting")
        wait_for_file(Path(spec_path))
        spec = json.loads(Path(spec_path).read_text())
        result_path = spec["result_path"]
    trial = nearest(recorded_trials(), spec["engine_args"])
    start_s = float(os.environ.get("KVPROBE_STANDIN_START_S", "1.5"))
    mark("engine_start")
    held = bytearray(HELD_BYTES)
    held[::PAGE] = b"\x01" * (HELD_BYTES // PAGE)  # resident now
    lines = engine_lines(trial)
    for line in lines:
        print(line, flush=True)
        time.sleep(start_s / max(1, len(lines)))
    if not trial["passed"] or trial["returncode"] != 0:
        return trial["returncode"] if trial["returncode"] and trial["returncode"] > 0 else 1
    mark("ready")
    if spec.get("ready_gate"):
        wait_for_file(Path(spec["ready_gate"]), READY_GATE_TIMEOUT_S)
    mark("generated")
    worker = {
        **trial["worker"],
        "prepared": {
            "like": Path(prepare_like).name,
            "seconds": 0.0,
            "steps": [],
            "error": None,
            "cuda_initialized": False,
        }
        if prepare_like
        else None,
    }
    tmp = Path(result_path + ".tmp")  # as kvprobe.worker_protocol.write_result: nothing torn left behind
    try:
        tmp.write_text(json.dumps(worker))
        os.replace(tmp, result_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    mark("done")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    # as kvprobe.worker_protocol.accept_interrupts: the probe spawned it with these held
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT))
    parser = argparse.ArgumentParser(prog="kvprobe_replay_worker.py")
    parser.add_argument("spec")
    parser.add_argument("result", nargs="?")
    parser.add_argument("--prepare-like")
    args = parser.parse_args()
    sys.exit(main(args.spec, args.result, args.prepare_like))
