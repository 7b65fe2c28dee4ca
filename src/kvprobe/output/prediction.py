"""`kvprobe predict` as rows, and what it cannot know said beside them."""

from __future__ import annotations

from rich.console import Console

from kvprobe.output.progress import print_rows
from kvprobe.predict import Prediction, kv_budget_left
from kvprobe.units import gib

COLUMNS = (
    "model",
    "attention",
    "KV bytes/token",
    "bytes/block",
    "weights GiB",
    "u",
    "KV left GiB",
    "tokens (as vLLM counts them)",
    "requests of max_model_len",
)


def print_predictions(
    console: Console,
    predictions: list[Prediction],
    memory_bytes: int,
    utilization: float | None,
    own_utilization: dict[str, float],
    other_bytes: float | None,
    max_model_len: dict[str, int],
) -> None:
    rows = []
    for prediction in predictions:
        u = utilization or own_utilization[prediction.model]
        left = kv_budget_left(prediction, memory_bytes, u, other_bytes)
        tokens = prediction.tokens(left, max_model_len[prediction.model])
        rows.append(
            (
                prediction.model,
                prediction.attention,
                f"{prediction.bytes_per_token:,}",
                f"{prediction.bytes_per_block:,}",
                gib(prediction.weight_bytes),
                f"{u:.2f}",
                gib(left),
                f"{tokens:,}",
                f"{tokens / max_model_len[prediction.model]:.1f}",
            )
        )
    print_rows(
        console,
        f"kvprobe predict: {gib(memory_bytes, unit=True)} of memory",
        COLUMNS,
        rows,
        left=("model", "attention"),
    )
    unknown = "activation peak, non-torch memory" if other_bytes is None else "nothing beyond the earlier result's"
    console.print(
        f"Not included: {unknown}; engine overheads. Blocks are of 16 tokens unless block_size is set "
        "(vLLM's CPU backend uses 128). With full and sliding-window layers a block holds one group's layers, "
        "and a request takes blocks of every group; tokens and requests count that, with max_num_batched_tokens "
        "= max_model_len.",
        highlight=False,
    )
