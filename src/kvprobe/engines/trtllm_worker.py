"""One TensorRT-LLM engine start, run as its own process by a trial: start through the LLM API
(PyTorch backend), generate a few tokens, write the result. Not run against a real TensorRT-LLM here.

    python -m kvprobe.engines.trtllm_worker SPEC.json RESULT.json
    python -m kvprobe.engines.trtllm_worker SPEC.json   # started early: import, then wait for SPEC.json

The protocol is vllm_worker's: the spec holds the engine arguments (TrtllmEngine.engine_args, with
`kv_cache_config` a plain dict) and the workload; phase marks go to stdout; the result JSON is written
only when the engine started and every step passed; any failure leaves the log for the parent to
classify. This is the only kvprobe code that imports TensorRT-LLM.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from kvprobe.engines.vllm_worker import _cuda_view, _prompt, _torch_versions
from kvprobe.worker_protocol import accept_interrupts, hold_until_measured, mark, read_spec, wait_for_spec, write_result

PROMPT_VOCAB = 1000  # token ids below every model's vocabulary: the worker starts without a tokenizer


def generate(llm, rng: random.Random, requests: int, prompt_len: int, output_len: int) -> tuple[int, float]:
    """Submit `requests` prompts at once; generated tokens and seconds."""
    from tensorrt_llm import SamplingParams

    params = SamplingParams(max_tokens=output_len, ignore_eos=True, temperature=0.0)
    prompts = [_prompt(rng, prompt_len, PROMPT_VOCAB) for _ in range(requests)]
    started = time.perf_counter()
    outputs = llm.generate(prompts, params)
    seconds = time.perf_counter() - started
    return sum(len(output.outputs[0].token_ids) for output in outputs), seconds


def main(spec_path: str, result_path: str | None) -> int:
    """Run one trial; without `result_path` import first, then wait for SPEC_PATH (which names it)."""
    spec = read_spec(Path(spec_path)) if result_path else None
    mark("import")
    t_import = time.perf_counter()
    import tensorrt_llm
    from tensorrt_llm import LLM
    from tensorrt_llm.llmapi import KvCacheConfig

    import_s = time.perf_counter() - t_import
    if spec is None:
        spec = wait_for_spec(Path(spec_path))
        result_path = spec.result_path
    assert result_path is not None, "a waiting worker's spec names its result path"
    args = dict(spec.engine_args)
    kv_cache_config = KvCacheConfig(**args.pop("kv_cache_config", {}))
    mark("engine_start")
    t_start = time.perf_counter()
    llm = LLM(**args, kv_cache_config=kv_cache_config)
    start_s = time.perf_counter() - t_start
    mark("ready")
    gate_came = hold_until_measured(spec.ready_gate)

    rng = random.Random(0)
    workload = spec.workload
    _, generate_s = generate(llm, rng, 1, 16, workload.generate_tokens)
    mark("generated")
    result: dict = {  # a WorkerResult: the blocks are not here (the LLM API does not give them): the log has them
        "timings": {"import_s": import_s, "engine_start_s": start_s, "generate_s": generate_s},
        "versions": {"tensorrt_llm": tensorrt_llm.__version__, **_torch_versions()},
        "ready_gate_expired": not gate_came,
    }
    if workload.throughput:
        shape = workload.throughput.model_dump()
        generate(llm, rng, 1, shape["prompt_len"], shape["output_len"])  # warm-up
        tokens, seconds = generate(llm, rng, shape["requests"], shape["prompt_len"], shape["output_len"])
        result["throughput"] = {**shape, "output_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
        mark("throughput")
    result["cuda"] = _cuda_view()
    write_result(result_path, result)
    mark("done")
    sys.stdout.flush()
    os._exit(0)  # the parent tears down the process group; TensorRT-LLM's shutdown only costs time


if __name__ == "__main__":
    accept_interrupts()
    parser = argparse.ArgumentParser(prog="python -m kvprobe.engines.trtllm_worker")
    parser.add_argument("spec")
    parser.add_argument("result", nargs="?")
    parsed = parser.parse_args()
    sys.exit(main(parsed.spec, parsed.result))
