"""A recorded-engine STAND-IN for TensorRT-LLM, used only by tests/test_trtllm.py: it is not TensorRT-LLM.

LLM(...) records its arguments, prints the recorded log lines of trtllm-1.1.0rc3-dgx-spark.log (a public
TensorRT-LLM 1.1.0rc3 log; STAND_IN_LOG names another file of tests/data/trtllm), and generate() returns
`max_tokens` token ids per prompt.
"""

import json
import os
from pathlib import Path
from types import SimpleNamespace

__version__ = "stand-in"
RECORDED_LOGS = Path(__file__).resolve().parents[2]


class SamplingParams:
    def __init__(self, max_tokens, **kwargs):
        self.max_tokens = max_tokens


class LLM:
    def __init__(self, **kwargs):
        kwargs["kv_cache_config"] = vars(kwargs["kv_cache_config"])
        Path(os.environ["STAND_IN_ARGS"]).write_text(json.dumps(kwargs))
        recorded = RECORDED_LOGS / os.environ.get("STAND_IN_LOG", "trtllm-1.1.0rc3-dgx-spark.log")
        for line in recorded.read_text().splitlines()[1:]:
            print(line, flush=True)

    def generate(self, prompts, params):
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[0] * params.max_tokens)]) for _ in prompts]
