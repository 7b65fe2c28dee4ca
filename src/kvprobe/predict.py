"""What a model's config.json implies, with no engine: KV bytes per token and per block, and weight bytes.

KV bytes follow vLLM's per-layer cache layout: K and V each of KV heads x head size per token on full
and sliding-window attention (KV heads split across tensor-parallel ranks, replicated when fewer than
ranks), one latent of kv_lora_rank + rope dims per token with MLA. Weight bytes count the parameters of
a decoder (embeddings, attention, dense or MoE MLP, LM head) at the dtype or quantization given.
What this cannot know (the activation peak, non-torch memory) is said by `Prediction.unknown`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

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


class UnusableConfig(ValueError):
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
