"""One vLLM engine start, run as its own process by a trial: start, generate, optionally fill.

    python -m kvprobe.engines.vllm_worker SPEC.json RESULT.json
    python -m kvprobe.engines.vllm_worker SPEC.json [--prepare-like TRIAL_SPEC.json]
        # started early: import (and prepare like the running trial), then wait for SPEC.json

The spec holds the engine arguments and the workload. The result JSON is written only when the
engine started and every step passed; any failure leaves the log for the parent to classify.
This is the only kvprobe code that imports vLLM or touches CUDA.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kvprobe.predict import blocks_held_per_request, kv_groups, page_layers
from kvprobe.worker_protocol import (
    TRIAL_TAG,
    RayJoin,
    WorkerSpec,
    accept_interrupts,
    hold_until_measured,
    mark,
    read_spec,
    wait_for_spec,
    write_result,
)

# Scheduler steps the cache must stay full (requests waiting, no new peak) before a fill stops: by
# then the scheduler has held its peak (recorded as peak_kv_usage and checked against the fill target),
# and the rest of the requests' decoding adds nothing but time.
SATURATED_STEPS = 8


class KVUsageWatch:
    """The scheduler's KV usage step by step: its peak, and whether the cache has stayed full."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.peak_usage, self.peak_running, self.waiting, self.steps_without_new_peak = 0.0, 0, 0, 0

    def record(self, usage: float, running: int, waiting: int) -> None:
        if usage > self.peak_usage:
            self.peak_usage, self.steps_without_new_peak = usage, 0
        else:
            self.steps_without_new_peak += 1
        self.peak_running = max(self.peak_running, running)
        self.waiting = waiting

    def stayed_full(self, target: float) -> bool:
        """At the fill target, requests still waiting for blocks, and no new peak for a while."""
        return self.peak_usage >= target and self.waiting > 0 and self.steps_without_new_peak >= SATURATED_STEPS


def _stats_logger(watch: KVUsageWatch):
    from vllm.v1.metrics.loggers import StatLoggerBase

    class WatchKVUsage(StatLoggerBase):
        """Hands each step's scheduler stats to `watch`."""

        def __init__(self, vllm_config, engine_index: int = 0):
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
            if scheduler_stats is not None:
                s = scheduler_stats
                watch.record(s.kv_cache_usage, s.num_running_reqs, s.num_waiting_reqs)

        def log_engine_initialized(self):
            pass

    return WatchKVUsage


def _run_requests(
    engine, requests: list[tuple[list[int], int]], stop: Callable[[], bool] | None = None
) -> tuple[int, float, bool]:
    """Submit all requests at once, step until done or until `stop()` says so (then abort the rest);
    return generated tokens, seconds and whether it stopped early."""
    from vllm import SamplingParams

    started = time.perf_counter()
    ids = [f"r{index}-{started}" for index in range(len(requests))]
    for request_id, (prompt, output_len) in zip(ids, requests, strict=True):
        params = SamplingParams(max_tokens=output_len, min_tokens=output_len, ignore_eos=True, temperature=0.0)
        engine.add_request(request_id, {"prompt_token_ids": prompt}, params)
    generated, stopped = 0, False
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                generated += len(output.outputs[0].token_ids)
        if stop is not None and not stopped and stop():
            engine.abort_request(ids)
            stopped = True
    return generated, time.perf_counter() - started, stopped


def _prompt(rng: random.Random, length: int, vocab: int) -> list[int]:
    # Token ids above the usual special ids; distinct prompts so prefix caching shares nothing.
    return [rng.randrange(16, vocab) for _ in range(length)]


FILL_OVERCOMMIT = 1.05  # ask for 5% more than fits, so the scheduler runs the cache full


def fill_request_count(num_blocks: int, per_request_blocks: int) -> int:
    """Full-length requests that together ask for a little more KV than the cache holds
    (`per_request_blocks`: predict.blocks_held_per_request, every KV cache group's blocks)."""
    return math.ceil(FILL_OVERCOMMIT * num_blocks / per_request_blocks)


def fill_plan(
    num_blocks: int, per_request_blocks: int, max_model_len: int, max_num_seqs: int, max_batched_tokens: int
) -> dict:
    """Requests that occupy the KV blocks at once, verified afterwards by the scheduler's peak usage.

    Slightly more is asked for than fits, so the cache runs full whatever the block size; each
    request's output is long enough that the first is still decoding when the last is prefilled.
    """
    requests = max(1, min(fill_request_count(num_blocks, per_request_blocks), max_num_seqs))
    prefill_steps = math.ceil(requests * max_model_len / max(1, max_batched_tokens))
    output_len = min(max(4, 2 * prefill_steps + 8), max_model_len // 2)
    return {
        "requests": requests,
        "prompt_len": max_model_len - output_len,
        "output_len": output_len,
        "capacity_tokens": num_blocks * max_model_len // per_request_blocks,
        "reachable_fraction": min(1.0, requests * per_request_blocks / max(1, num_blocks)),
    }


def fill_cache(engine, watch: KVUsageWatch, rng: random.Random, target: float) -> dict:
    """The fill test (fill_plan's requests, until done or the cache has stayed full): a FillResult."""
    config = engine.vllm_config
    num_blocks = int(config.cache_config.num_gpu_blocks or 0)
    max_model_len = int(config.model_config.max_model_len)
    groups = kv_groups(config.model_config.hf_text_config.to_dict())
    per_request = blocks_held_per_request(groups, int(config.cache_config.block_size), max_model_len)
    scheduler = config.scheduler_config
    plan = fill_plan(
        num_blocks, per_request, max_model_len, int(scheduler.max_num_seqs), int(scheduler.max_num_batched_tokens)
    )
    vocab = int(config.model_config.get_vocab_size())
    requests = [(_prompt(rng, plan["prompt_len"], vocab), plan["output_len"]) for _ in range(plan["requests"])]
    watch.reset()
    _, seconds, stopped = _run_requests(engine, requests, stop=lambda: watch.stayed_full(target))
    return {
        **plan,
        "seconds": seconds,
        "peak_kv_usage": watch.peak_usage,
        "peak_running": watch.peak_running,
        "stopped_full": stopped,
    }


def bytes_per_block(config) -> int | None:
    """KV bytes one block takes on this rank, from the engine's own model and cache config:
    K and V x the layers a block spans x KV heads x head size x dtype bytes x block size (a block
    spans every layer, or one group's with full and sliding-window layers: predict.page_layers).
    None where that formula does not hold (MLA compresses K and V) or the config does not say."""
    try:
        from vllm.utils.torch_utils import get_dtype_size, kv_cache_dtype_str_to_dtype

        model, cache = config.model_config, config.cache_config
        if model.use_mla:
            return None
        dtype = kv_cache_dtype_str_to_dtype(cache.cache_dtype, model)
        layers = model.get_num_layers(config.parallel_config)
        hf_config = model.hf_text_config.to_dict()
        if hf_config.get("num_hidden_layers") == layers:  # without pipeline stages: the group's layers
            layers = page_layers(kv_groups(hf_config))
        heads = model.get_num_kv_heads(config.parallel_config)
        return 2 * layers * heads * model.get_head_size() * get_dtype_size(dtype) * int(cache.block_size)
    except (ImportError, AttributeError, KeyError, TypeError):
        return None


def usage_context(spec: WorkerSpec):
    """vLLM's UsageContext that a spec names (its defaults differ between `vllm serve` and `LLM`)."""
    from vllm.usage.usage_lib import UsageContext

    return UsageContext[spec.usage_context]


def prepare_engine(like: Path) -> dict:
    """A waiting worker's head start beyond `import vllm`: modules an engine start imports only once
    it runs (its worker class and the model class), found through an engine config built from the
    running trial's arguments (the next trial's are not known yet).

    vLLM forks its engine core from this process, so the engine inherits them. vLLM's own front end
    builds the same config before that fork without touching CUDA (it asks NVML); whether anything
    here did is recorded (`cuda_initialized`: vLLM would then spawn its engine core, re-importing
    everything). Not the attention backends: selecting one imports FlashInfer, which initializes
    CUDA at import (seen on the H100 host, vLLM 0.26). A failing step ends the preparation, never
    the trial."""
    import torch
    from vllm import EngineArgs

    mark("prepare")
    started, steps, error = time.perf_counter(), [], None
    try:
        running = read_spec(like)
        config = EngineArgs(**running.engine_args).create_engine_config(usage_context(running))
        steps.append("config")
        worker_cls = config.parallel_config.worker_cls
        if isinstance(worker_cls, str):
            importlib.import_module(worker_cls.rpartition(".")[0])
            steps.append("worker")
        from vllm.model_executor.models import ModelRegistry

        ModelRegistry.resolve_model_cls(config.model_config.architectures, config.model_config)
        steps.append("model")
    except Exception as exc:  # a head start that fails costs the trial nothing
        error = f"{type(exc).__name__}: {exc}"[:500]
    return {
        "like": like.name,
        "seconds": time.perf_counter() - started,
        "steps": steps,
        "error": error,
        "cuda_initialized": torch.cuda.is_initialized(),
    }


def join_ray_cluster(cluster: RayJoin | None) -> None:
    """Connect to the probe's Ray cluster (if the spec names one) with the trial's tag in every
    worker's environment: vLLM passes the driver's runtime_env on to the workers it places, so each
    node's kvprobe agent can find (and end) this trial's processes there."""
    if not cluster:
        return
    import ray

    address, tag = cluster.address, cluster.tag
    os.environ["RAY_ADDRESS"] = address  # the engine core process (a child) joins the same cluster
    ray.init(address=address, runtime_env={"env_vars": {TRIAL_TAG: tag}})


def main(spec_path: str, result_path: str | None, prepare_like: str | None = None) -> int:
    """Run one trial. Without `result_path` the worker was started ahead of its trial: it imports,
    prepares like `prepare_like` (if given), then waits for SPEC_PATH to appear, and the spec names
    the result path."""
    spec = read_spec(Path(spec_path)) if result_path else None
    mark("import")
    t_import = time.perf_counter()
    import vllm
    from vllm import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    import_s = time.perf_counter() - t_import
    prepared = None
    if spec is None:
        prepared = prepare_engine(Path(prepare_like)) if prepare_like else None
        spec = wait_for_spec(Path(spec_path))
        result_path = spec.result_path
    assert result_path is not None, "a waiting worker's spec names its result path"
    watch = KVUsageWatch()
    join_ray_cluster(spec.ray)
    engine_args = EngineArgs(**spec.engine_args, disable_log_stats=False)
    mark("engine_start")
    t_start = time.perf_counter()
    engine = LLMEngine.from_engine_args(
        engine_args,
        usage_context=usage_context(spec),
        stat_loggers=[_stats_logger(watch)],
    )
    start_s = time.perf_counter() - t_start
    mark("ready")
    gate_came = hold_until_measured(spec.ready_gate)

    config = engine.vllm_config
    vocab = int(config.model_config.get_vocab_size())
    rng = random.Random(0)
    result: dict = {
        "num_gpu_blocks": int(config.cache_config.num_gpu_blocks or 0),
        "block_size": int(config.cache_config.block_size),
        "bytes_per_block": bytes_per_block(config),
        "max_num_seqs": int(config.scheduler_config.max_num_seqs),
        "max_num_batched_tokens": int(config.scheduler_config.max_num_batched_tokens),
        "timings": {"import_s": import_s, "engine_start_s": start_s},
        "versions": {"vllm": vllm.__version__},
        "prepared": prepared,
        "ready_gate_expired": not gate_came,
    }

    workload = spec.workload
    _, seconds, _ = _run_requests(engine, [(_prompt(rng, 16, vocab), workload.generate_tokens)])
    result["timings"]["generate_s"] = seconds
    mark("generated")

    if workload.fill_target:
        result["fill"] = fill_cache(engine, watch, rng, workload.fill_target)
        result["timings"]["fill_s"] = result["fill"]["seconds"]
        mark("filled")

    if workload.throughput:
        shape = workload.throughput.model_dump()
        requests = [(_prompt(rng, shape["prompt_len"], vocab), shape["output_len"]) for _ in range(shape["requests"])]
        _run_requests(engine, requests[:1])  # warm-up
        tokens, seconds, _ = _run_requests(engine, requests)
        result["throughput"] = {**shape, "output_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
        mark("throughput")

    result["cuda"] = _cuda_view()
    result["versions"].update(_torch_versions())
    write_result(result_path, result)
    mark("done")
    sys.stdout.flush()
    # The parent tears down the whole process group; a clean shutdown here only costs time.
    os._exit(0)


def _torch_versions() -> dict:
    try:
        import torch
    except ImportError:
        return {}
    return {"torch": torch.__version__, "cuda_runtime": torch.version.cuda}


def _cuda_view() -> dict | None:
    """CUDA's own view of device memory, taken here so the probe process never creates a context."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return {"free_bytes": free, "total_bytes": total, "device_name": torch.cuda.get_device_name()}
    except Exception as exc:  # a CUDA error here must not fail a trial that already passed
        return {"error": str(exc)}


if __name__ == "__main__":
    accept_interrupts()
    parser = argparse.ArgumentParser(prog="python -m kvprobe.engines.vllm_worker")
    parser.add_argument("spec")
    parser.add_argument("result", nargs="?")
    parser.add_argument("--prepare-like", help="a waiting worker: the running trial's spec to prepare like")
    args = parser.parse_args()
    sys.exit(main(args.spec, args.result, args.prepare_like))
