"""The fixed value sets kvprobe writes into results: trial outcomes, searches, labels, strategies.

One place for each set, as `Literal` aliases (vLLM's config classes do the same), so that a
typo is a type error and the result schema validates what it reads.
"""

from __future__ import annotations

from typing import Literal, get_args

Outcome = Literal[
    "ok", "startup-check", "kv-too-small", "oom", "killed", "guard", "timeout", "stalled", "config-error", "error"
]
"""How an engine start ended. `ok` may still fail its fill test (see TrialRecord.passed).
`config-error`: the engine refused its own configuration before touching memory; it says nothing
about any boundary, so a search that meets it stops instead of steering by it. `stalled`: the start
came up, but the probe was stopped meanwhile (no samples for seconds), so it is started again."""

RETRIED: tuple[Outcome, ...] = ("timeout", "stalled")
"""Outcomes that say nothing about the setting: such a start is tried again."""

ABOVE_WINDOW: tuple[Outcome, ...] = ("startup-check", "oom", "killed", "guard")
"""Refused for asking too much memory: such a start lies above u_max."""

BELOW_WINDOW: tuple[Outcome, ...] = ("kv-too-small",)
"""Refused for too little KV cache: such a start lies below u_min."""

SearchName = Literal["reference", "u_max", "u_min", "kv_blocks", "throughput", "manual"]
"""What a trial was started for. `manual` marks trials started outside a measurement (tests)."""

Search = Literal["reference", "u_max", "u_min", "kv_blocks"]
"""The searches a user can choose with --searches, in the order they run."""
SEARCHES: tuple[Search, ...] = get_args(Search)

Label = Literal["native", "container"]
"""Where a run happened."""
LABELS: tuple[Label, ...] = get_args(Label)

Strategy = Literal["bracketed", "bisection"]
"""bracketed: predict each boundary from the engine's memory report; bisection: plain halving."""
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)

KvApproach = Literal["from_below", "from_above"]
"""The side the physical-capacity search comes from: from_below starts at u_max's budget (every
pass runs a fill); from_above starts beyond the prediction (failures are cheap on a discrete GPU)."""

Status = Literal["complete", "failed"]

Pool = Literal["gpu", "host"]
"""The memory the KV cache lives in: one discrete GPU's, or host memory (CPU backend, unified)."""

EngineName = Literal["vllm", "tensorrt-llm"]
"""The serving engine a model is measured with (models file field `engine`)."""

MemoryKind = Literal["cpu", "discrete", "unified", "coherent_numa", "coherent_cdmm"]
"""How a machine's GPU memory relates to host memory (environment.memory_model.classify decides)."""
