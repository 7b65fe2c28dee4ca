"""How a trial ended, from what was observed: a pure function, so every rule is testable alone.

The runner gathers what it saw (its own verdict if it had to stop the worker, the exit status, the
worker's result, the engine's log classified, the samples' largest gap) into `Observed`; `judge`
maps that to the trial's outcome and its KV figures, and the runner builds the record once.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from kvprobe.engines.vllm import Classification
from kvprobe.results.schema import EngineMemoryReport, WorkerResult
from kvprobe.vocabulary import Outcome


@dataclass(frozen=True)
class Observed:
    """Everything a trial's outcome depends on."""

    verdict: tuple[Outcome, str] | None  # the probe stopped the worker: guard or timeout
    returncode: int | None
    worker: WorkerResult
    said: Classification  # what the engine's log says of a failed start, read the adapter's way
    fill_target: float | None
    kv_cache_memory_bytes: int | None
    memory_report: EngineMemoryReport
    largest_sample_gap_s: float = 0.0
    stall_s: float = 5.0


class Judgement(BaseModel):
    """The fields of a TrialRecord that judging decides."""

    outcome: Outcome
    reason: str
    passed: bool = False
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    bytes_per_block: int | None = None
    kv_cache_tokens: int | None = None
    kv_cache_bytes: int | None = None


def kv_layout(seen: Observed) -> tuple[int | None, int | None, int | None]:
    """Blocks, tokens per block and bytes per block: as the worker read them from its engine (vLLM),
    else as the engine printed them (TensorRT-LLM's LLM API does not hand them to its caller)."""
    worker, report = seen.worker, seen.memory_report
    blocks = worker.num_gpu_blocks or report.kv_blocks_logged or None
    block_size = worker.block_size or report.tokens_per_block_logged
    per_token = report.kv_bytes_per_token
    bytes_per_block = worker.bytes_per_block or (per_token * block_size if per_token and block_size else None)
    return blocks, block_size, bytes_per_block


def _ended(seen: Observed) -> tuple[Outcome, str]:
    said_outcome, said_reason = seen.said.outcome, seen.said.reason
    if seen.verdict is not None:
        return seen.verdict
    if seen.returncode == 0 and kv_layout(seen)[0] is not None:
        return "ok", ""
    if seen.returncode is not None and seen.returncode < 0:
        if said_outcome != "error":  # the engine said why before the signal came
            return said_outcome, said_reason
        return "killed", f"worker ended by signal {-seen.returncode}"
    return said_outcome, said_reason


def _stall(seen: Observed) -> str | None:
    """Why the probe cannot vouch for an otherwise good start: it was stopped while the engine ran."""
    if seen.worker.ready_gate_expired:
        return "the worker stopped waiting for the probe at ready: the probe was stalled or gone"
    if seen.largest_sample_gap_s > seen.stall_s:
        return f"the probe took no memory sample for {seen.largest_sample_gap_s:.1f} s (stalled): phases unreliable"
    return None


def kv_tokens(logged_tokens: int | None, blocks: int | None, block_size: int | None) -> int | None:
    """The engine's own token capacity. With full and sliding-window layers a block holds one group's
    layers, so blocks x block size would count every token once per group (twice for GPT-OSS)."""
    if logged_tokens:
        return logged_tokens
    return blocks * block_size if blocks and block_size else None


def kv_bytes(blocks: int | None, bytes_per_block: int | None, budget: int | None, logged: float | None) -> int | None:
    """What the engine allocated, exactly: blocks x bytes per block. Without bytes per block (an MLA
    model, an engine that does not say), the budget asked for, else the engine's two-decimal GiB log."""
    if blocks and bytes_per_block:
        return blocks * bytes_per_block
    if budget:
        return int(budget)
    return int(logged) if logged is not None else None


def judge(seen: Observed) -> Judgement:
    """The outcome, whether the trial passed, and its KV figures (only for a start that came up)."""
    outcome, reason = _ended(seen)
    if outcome != "ok":
        return Judgement(outcome=outcome, reason=reason)
    stalled = _stall(seen)
    if stalled:
        return Judgement(outcome="stalled", reason=stalled)
    blocks, block_size, bytes_per_block = kv_layout(seen)
    figures = {
        "num_gpu_blocks": blocks,
        "block_size": block_size,
        "bytes_per_block": bytes_per_block,
        "kv_cache_tokens": kv_tokens(seen.memory_report.kv_cache_tokens_logged, blocks, block_size),
        "kv_cache_bytes": kv_bytes(
            blocks, bytes_per_block, seen.kv_cache_memory_bytes, seen.memory_report.kv_cache_bytes
        ),
    }
    fill = seen.worker.fill
    if seen.fill_target:
        if fill is None:  # a worker without a fill test cannot vouch for the capacity
            return Judgement(
                outcome="ok", reason="no fill test ran: the capacity is not shown", passed=False, **figures
            )
        if fill.peak_kv_usage + 1e-9 < seen.fill_target:
            short = f"fill reached {fill.peak_kv_usage:.1%} of the KV blocks, below the {seen.fill_target:.0%} target"
            return Judgement(outcome="ok", reason=short, passed=False, **figures)
    return Judgement(outcome="ok", reason="started and generated", passed=True, **figures)
