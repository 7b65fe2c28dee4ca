"""A stand-in for vLLM in machinery tests: the real adapter (engine arguments, log parsing, failure
classes) whose worker process plays back recorded engine starts (tests/kvprobe_replay_worker.py)
instead of starting an engine. Everything around the worker is kvprobe's real code: the trial
runner's spawning, watching, sampling and teardown, the scheduler, the journal and the report.

The recording is one or more committed journals, named in RECORDING_VARIABLE (os.pathsep between
them); a `kvprobe` subprocess takes this engine when started with `standin_environment()`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kvprobe.engines.vllm import VllmEngine

HERE = Path(__file__).resolve().parent
WORKER = HERE / "kvprobe_replay_worker.py"
RECORDING_VARIABLE = "KVPROBE_STANDIN_RECORDING"
START_S_VARIABLE = "KVPROBE_STANDIN_START_S"  # seconds from engine start to ready (default 1.5)
DOCS = HERE.parent / "docs"
# The tiny model's engine starts on this machine's CPU backend: passes at 0.2 and 0.52-0.69, a
# refused start check at 0.7 and 0.76 (docs/benchmarks/raw/cpu-strategy).
TINY_LLAMA = [
    DOCS / "benchmarks/raw/cpu-strategy/strategy-bracketed/.journal/20261126T000922-cc2b.jsonl",
    DOCS / "benchmarks/raw/cpu-strategy/strategy-bisection/.journal/20261126T001119-38c8.jsonl",
]


class ReplayEngine(VllmEngine):
    """A stand-in for vLLM: its worker replays recorded starts (see the module docstring)."""

    def worker_command(
        self, spec_path: str, result_path: str | None = None, prepare_like: str | None = None
    ) -> list[str]:
        command = [sys.executable, str(WORKER), spec_path]
        if result_path:
            return [*command, result_path]
        return [*command, *(["--prepare-like", prepare_like] if prepare_like else [])]


def standin_environment(recording: list[Path] = TINY_LLAMA, start_s: float | None = None) -> dict[str, str]:
    """os.environ for a `kvprobe` subprocess that measures with ReplayEngine (tests/standin/sitecustomize.py)."""
    path = [str(HERE / "standin"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), RECORDING_VARIABLE: os.pathsep.join(map(str, recording))}
    if start_s is not None:
        env[START_S_VARIABLE] = str(start_s)
    return env


def install() -> None:
    """Make `kvprobe.engines.get_engine()` return the stand-in in this process."""
    from kvprobe import engines

    engines.ENGINES["vllm"] = ReplayEngine
