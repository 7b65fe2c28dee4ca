"""Test-only: a `kvprobe` process started with tests/replay_engine.standin_environment() measures
with the stand-in engine (ReplayEngine) instead of vLLM. Python imports this module at start-up
from PYTHONPATH; without the recording variable it does nothing."""

import os
import sys
from pathlib import Path

if os.environ.get("KVPROBE_STANDIN_RECORDING"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import replay_engine

    replay_engine.install()
