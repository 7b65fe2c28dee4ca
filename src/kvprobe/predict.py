"""What a model's config.json implies, with no engine: KV bytes per token and per block, and weight bytes.

KV bytes follow vLLM's per-layer cache layout: K and V each of KV heads x head size per token on full
and sliding-window attention (KV heads split across tensor-parallel ranks, replicated when fewer than
ranks), one latent of kv_lora_rank + rope dims per token with MLA. Weight bytes count the parameters of
a decoder (embeddings, attention, dense or MoE MLP, LM head) at the dtype or quantization given.
What this cannot know (the activation peak, non-torch memory) is said by `Prediction.unknown`.

`assess` turns a prediction and a pool into a verdict (fits, fits without one full request, does not fit,
and why); `machine_pool` reads the pool vLLM would multiply by gpu_memory_utilization on this machine (or
on a recorded one); `MEASURED_ERROR` is how far the KV left was from the engine's on committed GPU runs.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kvprobe.environment.gpu import Nvml
from kvprobe.environment.memory import read_meminfo
from kvprobe.environment.memory_model import classify, coherent_memory_mode, read_numa_nodes
from kvprobe.environment.recorded import RecordedNvml
from kvprobe.errors import InputError
from kvprobe.units import gib, parse_size
from kvprobe.vocabulary import MemoryKind

AttentionKind = Literal["full", "sliding", "mla"]
DTYPE_BYTES = {
    "float32": 4.0,
    "float": 4.0,
    "bfloat16": 2.0,
    "float16": 2.0,
    "half": 2.0,
    "fp8": 1.0,
    "fp8_e4m3": 1.0,
    "fp8_e5m2": 1.0,
}
MXFP4_BYTES = 4.25 / 8  # 4-bit values and one 8-bit scale per 32
MAX_DIMENSION = 1 << 31  # far above any real model's layer, head, hidden or vocabulary count
# config.json fields the arithmetic reads: (required, smallest allowed value)
COUNTS: dict[str, tuple[bool, int]] = {
    "num_hidden_layers": (True, 1),
    "hidden_size": (True, 1),
    "num_attention_heads": (True, 1),
    "vocab_size": (True, 1),
    "head_dim": (False, 1),
    "num_key_value_heads": (False, 1),
    "intermediate_size": (False, 1),
    "moe_intermediate_size": (False, 1),
    "num_local_experts": (False, 0),
    "num_experts": (False, 0),
    "kv_lora_rank": (False, 0),
    "qk_rope_head_dim": (False, 0),
    "sliding_window": (False, 1),
    "max_window_layers": (False, 0),
}


class UnusableConfig(InputError, ValueError):
    """A config.json the prediction cannot use; the message has one line per problem."""


def _count_problems(config: dict) -> list[str]:
    problems = []
    for name, (required, least) in COUNTS.items():
        value = config.get(name)
        if value is None:
            if required:
                problems.append(f"field '{name}': missing")
        elif isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_DIMENSION:
            problems.append(f"field '{name}': must be a whole number from {least} to {MAX_DIMENSION}, got {value!r}")
    return problems


def config_problems(config: object, kv_cache_dtype: str = "auto", dtype: str = "auto") -> list[str]:
    """Every field of config.json the arithmetic would trip on (missing, not a whole number in its
    range, an unknown dtype), one line each; none for a config a prediction can use."""
    if not isinstance(config, dict):
        return [f"expected a JSON object, got {type(config).__name__}"]
    problems = _count_problems(config)
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    if config.get("head_dim") is None and isinstance(hidden, int) and isinstance(heads, int) and 0 < hidden < heads:
        problems.append(f"field 'hidden_size': {hidden} is smaller than num_attention_heads {heads} (no head_dim)")
    if config.get("intermediate_size") is None and config.get("moe_intermediate_size") is None:
        problems.append("field 'intermediate_size': missing")
    if config.get("use_sliding_window") and config.get("sliding_window") is None:
        problems.append("field 'sliding_window': missing (use_sliding_window is set)")
    layer_types = config.get("layer_types")
    if layer_types is not None and not (isinstance(layer_types, list) and all(isinstance(t, str) for t in layer_types)):
        problems.append("field 'layer_types': must be a list of names")
    elif layer_types and "sliding_attention" in layer_types and config.get("sliding_window") is None:
        problems.append("field 'sliding_window': missing (layer_types has sliding_attention)")
    for setting in (kv_cache_dtype, dtype):
        name = setting if setting != "auto" else config.get("torch_dtype") or config.get("dtype") or "bfloat16"
        if str(name) not in DTYPE_BYTES:
            problems.append(f"dtype {name!r}: unknown (known: {', '.join(DTYPE_BYTES)})")
            break
    return problems


@dataclass(frozen=True)
class AttentionGroup:
    """Layers that share one KV layout."""

    kind: AttentionKind
    layers: int
    bytes_per_token_per_layer: int  # on one rank
    window: int | None = None  # sliding attention keeps at most this many tokens per request


@dataclass(frozen=True)
class Prediction:
    model: str
    groups: tuple[AttentionGroup, ...]
    block_size: int
    weight_bytes: float
    unknown: tuple[str, ...] = field(default=("activation peak", "non-torch memory"))

    @property
    def bytes_per_token(self) -> int:
        """Every layer's KV for one token (what the engine's bytes per block holds, per token)."""
        return sum(group.layers * group.bytes_per_token_per_layer for group in self.groups)

    @property
    def hybrid(self) -> bool:
        """Full and sliding-window layers: a block then holds one group's layers, not every layer's."""
        return len(self.groups) > 1

    @property
    def group_bytes_per_token(self) -> int:
        """What one block holds per token: bytes per block / block size (one KV cache group's layers)."""
        return page_layers(self.groups) * self.groups[0].bytes_per_token_per_layer

    @property
    def long_context_bytes_per_token(self) -> int:
        """What each further token of a long request costs: the layers without a window (a sliding-window
        layer holds at most its window, whatever the length)."""
        return sum(g.layers * g.bytes_per_token_per_layer for g in self.groups if not g.window)

    @property
    def bytes_per_block(self) -> int:
        """One engine block: `page_layers(...)` layers of one token each, times the block size."""
        return page_layers(self.groups) * self.groups[0].bytes_per_token_per_layer * self.block_size

    def tokens(self, kv_bytes: float, max_model_len: int, max_batched_tokens: int | None = None) -> int:
        """Tokens a KV budget holds as vLLM counts them: whole blocks, shared by every group a request
        uses (max_batched_tokens defaults to max_model_len, vLLM's usual setting)."""
        blocks = max(0, int(kv_bytes // self.bytes_per_block))
        per_request = blocks_per_request(
            self.groups, self.block_size, max_model_len, max_batched_tokens or max_model_len
        )
        return int(blocks / per_request * max_model_len)

    @property
    def attention(self) -> str:
        """The layer groups in words, e.g. '18 full, 18 sliding (window 128)'."""
        return ", ".join(f"{g.layers} {g.kind}" + (f" (window {g.window})" if g.window else "") for g in self.groups)


def _dtype_bytes(kv_cache_dtype: str, dtype: str, config: dict) -> float:
    name = kv_cache_dtype if kv_cache_dtype != "auto" else dtype
    if name == "auto":
        name = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return DTYPE_BYTES[name]


def _head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def layer_kinds(config: dict) -> list[str]:
    layers = int(config["num_hidden_layers"])
    if config.get("layer_types"):
        return ["sliding" if kind == "sliding_attention" else "full" for kind in config["layer_types"][:layers]]
    if config.get("use_sliding_window") and config.get("sliding_window"):
        switch = int(config.get("max_window_layers", layers))  # Qwen2: layers from here on slide
        return ["full" if index < switch else "sliding" for index in range(layers)]
    return ["full"] * layers


def page_layers(groups: tuple[AttentionGroup, ...]) -> int:
    """Layers one engine block spans. vLLM's hybrid allocator (full and sliding-window layers, as in
    GPT-OSS) cuts the layers into groups of the smallest kind's count, one block table per group,
    all drawing blocks from one pool; a model of one kind has one group of every layer."""
    return min(g.layers for g in groups)


def blocks_per_request(
    groups: tuple[AttentionGroup, ...], block_size: int, max_model_len: int, max_batched_tokens: int
) -> int:
    """Blocks one max_model_len request takes from that pool, as vLLM counts them for its token
    capacity and max concurrency: every block of a full-attention group, and of a sliding-window
    group what the window and one scheduler step (max_num_batched_tokens) can touch, plus one."""
    page = page_layers(groups)
    total = 0
    for group in groups:
        if group.window:
            reach = min(group.window - 1 + max_batched_tokens, max_model_len)
            blocks = math.ceil(reach / block_size) + 1
        else:
            blocks = math.ceil(max_model_len / block_size)
        total += math.ceil(group.layers / page) * blocks
    return total


def blocks_held_per_request(groups: tuple[AttentionGroup, ...], block_size: int, max_model_len: int) -> int:
    """Blocks one max_model_len request holds once prefilled: every block of a full-attention group,
    and of a sliding-window group only its window's (the engine frees blocks the window has left).
    A fill test sizes its requests by this; vLLM's token capacity counts `blocks_per_request`."""
    page = page_layers(groups)
    total = 0
    for group in groups:
        full = math.ceil(max_model_len / block_size)
        blocks = min(full, math.ceil(group.window / block_size) + 1) if group.window else full
        total += math.ceil(group.layers / page) * blocks
    return total


def kv_groups(
    config: dict, kv_cache_dtype: str = "auto", dtype: str = "auto", tensor_parallel_size: int = 1
) -> tuple[AttentionGroup, ...]:
    size = _dtype_bytes(kv_cache_dtype, dtype, config)
    layers = int(config["num_hidden_layers"])
    if config.get("kv_lora_rank"):
        latent = int(config["kv_lora_rank"]) + int(config.get("qk_rope_head_dim", 0))
        return (AttentionGroup("mla", layers, int(latent * size)),)
    kv_heads = int(config.get("num_key_value_heads") or config["num_attention_heads"])
    per_rank = max(1, kv_heads // tensor_parallel_size)
    per_layer = int(2 * per_rank * _head_dim(config) * size)
    kinds = layer_kinds(config)
    groups = []
    for kind in ("full", "sliding"):
        count = kinds.count(kind)
        if count:
            window = int(config["sliding_window"]) if kind == "sliding" else None
            groups.append(AttentionGroup(kind, count, per_layer, window))
    return tuple(groups)


def weight_bytes(config: dict, dtype: str = "auto", quantization: str | None = None) -> float:
    """Parameter bytes of a decoder-only model, by its config (norms and biases are left out: <0.1%)."""
    hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    heads, head_dim = int(config["num_attention_heads"]), _head_dim(config)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    vocab = int(config["vocab_size"])
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    experts = int(config.get("num_local_experts") or config.get("num_experts") or 0)
    intermediate = int(config.get("moe_intermediate_size") or config["intermediate_size"])
    mlp = 3 * hidden * intermediate * max(1, experts)
    router = hidden * experts
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    dense_size = _dtype_bytes("auto", dtype, config)
    method = quantization or (config.get("quantization_config") or {}).get("quant_method")
    if method == "fp8":
        return embeddings * dense_size + layers * (attention + mlp + router) * 1.0
    if method == "mxfp4":  # experts in MXFP4; attention, router, embeddings stay in the model's dtype
        return embeddings * dense_size + layers * ((attention + router) * dense_size + mlp * MXFP4_BYTES)
    return (embeddings + layers * (attention + mlp + router)) * dense_size


def predict(
    name: str,
    config: dict,
    kv_cache_dtype: str = "auto",
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    block_size: int = 16,
    quantization: str | None = None,
) -> Prediction:
    """UnusableConfig (one line per problem, naming the model) when config.json cannot give one."""
    problems = config_problems(config, kv_cache_dtype, dtype)
    if problems:
        raise UnusableConfig("\n".join(f"model '{name}': config.json {problem}" for problem in problems))
    groups = kv_groups(config, kv_cache_dtype, dtype, tensor_parallel_size)
    weights = weight_bytes(config, dtype, quantization) / tensor_parallel_size
    return Prediction(name, groups, block_size, weights)


def kv_budget_left(
    prediction: Prediction, memory_bytes: float, utilization: float, activation_and_other_bytes: float | None = None
) -> float:
    """KV bytes a budget of utilization x memory leaves after the weights (and, if known from an
    earlier result, the activation peak and non-torch memory)."""
    return utilization * memory_bytes - prediction.weight_bytes - (activation_and_other_bytes or 0.0)


Verdict = Literal["fits", "fits without one full request", "does not fit"]


@dataclass(frozen=True)
class MeasuredError:
    """How far the predicted KV left was from the engine's own KV bytes, (predicted - engine) / engine, on
    committed GPU runs: at each model's own gpu_memory_utilization, the pool being the GPU's NVML total and
    the run's own activation peak and non-torch memory subtracted (`kvprobe predict --from`). tests/
    test_predict.py recomputes these from the committed results."""

    low: float  # the smallest error of the models with one attention kind
    high: float  # the largest of them
    hybrid: float  # full and sliding-window attention (GPT-OSS-120B on an H100: 6.75 GiB of KV)
    low_bytes: int  # the same errors in bytes: the smallest of all runs
    high_bytes: int  # and the largest
    runs: str  # which runs, in words

    def text(self) -> str:
        return (
            f"measured error on committed GPU runs ({self.runs}): {self.low:+.1%}..{self.high:+.1%}, "
            f"{self.hybrid:+.0%} for hybrid attention ({gib(self.low_bytes, 1, unit=True)}.."
            f"{gib(self.high_bytes, 1, unit=True)} too much KV)"
        )


MEASURED_ERROR = MeasuredError(
    low=0.0052,
    high=0.033,  # the 72B with CUDA graphs, a start that compiled the model (its profile peaked higher)
    hybrid=0.1722,
    low_bytes=599_000_000,
    high_bytes=2_079_000_000,
    runs="DeepSeek-R1-Distill-Qwen-7B on H100 and H200, Qwen2.5-72B fp8 on H200, GPT-OSS-120B on H100 and H200, "
    "Llama-3.1-8B in tensor parallel 2 on two H200s; eager and with CUDA graphs",
)
SIGNIFICANT_DIGITS = 3  # tokens and concurrency as shown: the error above is about 1%


@dataclass(frozen=True)
class Assessment:
    """What one budget (utilization x pool) leaves one model, in exact bytes, blocks and tokens."""

    utilization: float
    budget_bytes: int  # utilization x pool
    kv_bytes: int  # the budget less the weights (and an earlier result's other memory); below 0: short by that
    blocks: int  # whole blocks of that
    blocks_per_request: int  # what one max_model_len request takes (vLLM's count)
    tokens: int  # as vLLM counts them
    max_model_len: int
    verdict: Verdict
    reason: str

    @property
    def max_concurrency(self) -> float:
        """Requests of max_model_len at once, as vLLM logs it ("Maximum concurrency for N tokens")."""
        return self.tokens / self.max_model_len


def assess(
    prediction: Prediction,
    pool_bytes: int,
    utilization: float,
    max_model_len: int,
    activation_and_other_bytes: float | None = None,
) -> Assessment:
    """The verdict for one model: does not fit (weights, or weights and the earlier result's other memory,
    leave no KV), fits without one full request (vLLM refuses to start at this max_model_len), or fits."""
    budget = utilization * pool_bytes
    left = kv_budget_left(prediction, pool_bytes, utilization, activation_and_other_bytes)
    blocks = max(0, int(left // prediction.bytes_per_block))
    per_request = blocks_per_request(prediction.groups, prediction.block_size, max_model_len, max_model_len)
    tokens = prediction.tokens(left, max_model_len)
    weights = gib(prediction.weight_bytes, 1, unit=True)
    verdict: Verdict
    if prediction.weight_bytes >= pool_bytes:
        verdict, reason = "does not fit", f"weights alone ({weights}) exceed the pool ({gib(pool_bytes, 1, unit=True)})"
    elif prediction.weight_bytes >= budget:
        verdict, reason = "does not fit", f"weights ({weights}) exceed the budget {utilization:.2f} x pool"
    elif left <= 0:
        verdict, reason = "does not fit", "no room for KV after the weights and the earlier result's other memory"
    elif blocks < per_request:
        need = gib(per_request * prediction.bytes_per_block, 1, unit=True)
        verdict = "fits without one full request"
        reason = (
            f"room for KV ({gib(left, 1, unit=True)}) but less than one {max_model_len:,}-token request "
            f"({need}): vLLM refuses to start unless max_model_len is lowered"
        )
    else:
        verdict, reason = "fits", f"room for at least one {max_model_len:,}-token request"
        if int(left * (1 - MEASURED_ERROR.high) // prediction.bytes_per_block) < per_request:
            reason += f"; within the measured error ({MEASURED_ERROR.high:+.1%}) of holding none"
    return Assessment(utilization, int(budget), int(left), blocks, per_request, tokens, max_model_len, verdict, reason)


def significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> str:
    """A count rounded to `digits` significant figures for display: 1,749,904 -> '1,750,000', 15.04 -> '15.0'."""
    if value == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    return f"{round(value, decimals):,.{max(0, decimals)}f}"


# --- the pool ---------------------------------------------------------------------------------------------

PoolKind = Literal["given"] | MemoryKind
BARE_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


@dataclass(frozen=True)
class Pool:
    """The memory gpu_memory_utilization multiplies, and where that figure came from."""

    bytes: int
    kind: PoolKind  # "given" for --memory, else the machine's memory model
    source: str  # in words, e.g. "MemTotal of /proc/meminfo: unified memory (...)"


def parse_pool_size(text: str) -> int:
    """--memory: a size with its unit; a bare number is refused (is 119.6 bytes, GiB or GB?)."""
    if BARE_NUMBER.fullmatch(text):
        raise ValueError(
            f"--memory {text!r} has no unit: write it as {text.strip()}g or {text.strip()}GiB (k, m, g, t are "
            "powers of 1024, and GB is read as GiB)"
        )
    return parse_size(text)


def _cpus(cpulist: str) -> set[int]:
    """'0-3,8' -> {0, 1, 2, 3, 8}."""
    cpus: set[int] = set()
    for part in filter(None, cpulist.strip().split(",")):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def _cpu_pool(mem_total: int, root: Path, first_cpu: int | None) -> Pool:
    """vLLM's CPU backend multiplies the MemTotal of the NUMA node of the worker's first CPU (the system's
    MemTotal where the kernel lists no nodes)."""
    nodes = [n for n in read_numa_nodes(root) if n.cpus and n.mem_total_bytes]
    matching = [n for n in nodes if first_cpu is not None and first_cpu in _cpus(n.cpus)]
    if not (matching or nodes):
        return Pool(mem_total, "cpu", "MemTotal of /proc/meminfo (no NUMA node listed): vLLM's CPU backend")
    node = (matching or nodes)[0]
    which = f"the node of CPU {first_cpu}, this process's first" if matching else "the first node with CPUs"
    return Pool(
        int(node.mem_total_bytes or 0),
        "cpu",
        f"MemTotal of NUMA node {node.node} ({which}): vLLM's CPU backend sizes its budget by the node of "
        "its first CPU",
    )


def machine_pool(recorded: Path | None = None) -> Pool:
    """The pool vLLM multiplies on this machine: MemTotal on unified memory, GPU 0's NVML total on a discrete
    or coherent GPU, the NUMA node's MemTotal on the CPU backend. With `recorded`, a recorded machine's files
    and NVML answers (a simulation, environment.recorded) instead of this machine's."""
    root = recorded or Path("/")
    mem_total = read_meminfo(root / "proc/meminfo").get("MemTotal", 0)
    with Nvml(RecordedNvml(recorded / "nvml.json") if recorded else None) as nvml:
        gpus = nvml.report(mem_total)
    model = classify(gpus, read_numa_nodes(root), coherent_memory_mode(root))
    simulated = f" (simulated from {recorded.name})" if recorded else ""
    if model.kind == "unified":
        return Pool(mem_total, "unified", f"MemTotal of /proc/meminfo: unified memory, {model.signal}{simulated}")
    if model.kind == "cpu":
        first_cpu = None if recorded else min(os.sched_getaffinity(0))
        pool = _cpu_pool(mem_total, root, first_cpu)
        return Pool(pool.bytes, pool.kind, f"{pool.source} ({model.signal}){simulated}")
    device = gpus.devices[0]
    of = f" of {len(gpus.devices)}" if len(gpus.devices) > 1 else ""
    return Pool(
        int(device.total_bytes or 0),
        model.kind,
        f"GPU 0{of} ({device.name}) memory total from NVML: {model.kind} memory, {model.signal}{simulated}",
    )
