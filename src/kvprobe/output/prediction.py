"""`kvprobe predict` as tables (a terminal), one line per model (piped) or JSON, with the pool it used, the
verdict and why, and what it cannot know and how far it was off on committed runs said beside them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kvprobe.config import load_model_source
from kvprobe.errors import InputError
from kvprobe.output.progress import print_rows
from kvprobe.predict import (
    MEASURED_ERROR,
    SIGNIFICANT_DIGITS,
    Assessment,
    Pool,
    Prediction,
    assess,
    machine_pool,
    parse_pool_size,
    predict,
    significant,
)
from kvprobe.results.loader import load_result
from kvprobe.units import gib

IN_A_BLOCK, LONG_CONTEXT = "bytes per token in a block", "bytes per token, long context"
LAYOUT_COLUMNS = ("model", "attention", IN_A_BLOCK, LONG_CONTEXT, "bytes per block")
BUDGET_COLUMNS = ("model", "u", "weights GiB", "KV left GiB", "tokens", "requests at once", "verdict")
NUMERIC = {IN_A_BLOCK, LONG_CONTEXT, "bytes per block", "u", "weights GiB"}
NUMERIC |= {"KV left GiB", "tokens", "requests at once"}


@dataclass(frozen=True)
class PredictedModel:
    """One model's prediction and what the budget leaves it."""

    prediction: Prediction
    assessment: Assessment


def _layout_row(row: PredictedModel) -> tuple[str, ...]:
    prediction = row.prediction
    return (
        prediction.model,
        prediction.attention,
        f"{prediction.group_bytes_per_token:,}",
        f"{prediction.long_context_bytes_per_token:,}",
        f"{prediction.bytes_per_block:,}",
    )


def _budget_row(row: PredictedModel) -> tuple[str, ...]:
    prediction, fit = row.prediction, row.assessment
    return (
        prediction.model,
        f"{fit.utilization:.2f}",
        gib(prediction.weight_bytes, 1),
        gib(fit.kv_bytes, 1),
        significant(fit.tokens),
        significant(fit.max_concurrency),
        fit.verdict,
    )


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    """A table whose model names and figures are never cut or folded (at 80 columns too): those columns are
    as wide as their widest cell or header word; headers, the attention and the verdict wrap instead."""
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for index, column in enumerate(columns):
        numeric = column in NUMERIC
        longest_word = max(len(word) for word in column.split())
        width = max([longest_word] + [len(row[index]) for row in rows]) if numeric or column == "model" else None
        table.add_column(column, justify="right" if numeric else "left", width=width, min_width=longest_word)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def print_predictions(console: Console, rows: list[PredictedModel], pool: Pool, from_result: bool) -> None:
    title = f"kvprobe predict: a pool of {gib(pool.bytes, unit=True)}"
    if console.is_terminal:
        console.print(_table(f"{title}: what a token and a block take", LAYOUT_COLUMNS, [_layout_row(r) for r in rows]))
        console.print(_table(f"{title}: what the budget leaves", BUDGET_COLUMNS, [_budget_row(r) for r in rows]))
        for row in rows:
            console.print(f"{escape(row.prediction.model)}: {row.assessment.verdict}: {row.assessment.reason}")
    else:
        columns = LAYOUT_COLUMNS + BUDGET_COLUMNS[1:] + ("why",)
        lines = [_layout_row(r) + _budget_row(r)[1:] + (r.assessment.reason,) for r in rows]
        print_rows(console, title, columns, lines)
    for line in _notes(pool, from_result):
        console.print(line, highlight=False, soft_wrap=not console.is_terminal)


def _notes(pool: Pool, from_result: bool) -> list[str]:
    unknown = "nothing beyond the earlier result's" if from_result else "activation peak, non-torch memory"
    error = MEASURED_ERROR.text() if from_result else f"with --from, the {MEASURED_ERROR.text()}"
    notes = [
        f"Pool: {escape(pool.source)}.",
        f"Predicted, not measured; {error}. Tokens and requests at once (vLLM's maximum concurrency at "
        f"max_model_len) are rounded to {SIGNIFICANT_DIGITS} significant figures; --json has them exact.",
        f"Not included: {unknown}; engine overheads. Blocks are of 16 tokens unless block_size is set "
        "(vLLM's CPU backend uses 128). Bytes per token in a block is bytes per block / block size: one KV cache "
        "group's layers (with full and sliding-window layers a block holds one group); long context is what each "
        "further token of a request costs (layers without a window). Tokens and requests count blocks of every "
        "group, with max_num_batched_tokens = max_model_len.",
    ]
    if pool.kind == "cpu":
        notes.append(
            "The measured error is of GPU runs: vLLM's CPU backend counts its worker's whole resident set as non-KV."
        )
    return notes


def predictions_json(rows: list[PredictedModel], pool: Pool, other_bytes: float | None) -> dict[str, Any]:
    """Every figure exact (bytes, blocks and tokens as integers), with the display strings beside them."""
    models = []
    for row in rows:
        prediction, fit = row.prediction, row.assessment
        models.append(
            {
                "model": prediction.model,
                "attention": prediction.attention,
                "groups": [asdict(group) for group in prediction.groups],
                "block_size": prediction.block_size,
                "bytes_per_block": prediction.bytes_per_block,
                "bytes_per_token": {
                    "in_a_block": prediction.group_bytes_per_token,
                    "long_context": prediction.long_context_bytes_per_token,
                    "all_layers": prediction.bytes_per_token,
                },
                "weight_bytes": round(prediction.weight_bytes),
                **asdict(fit),
                "max_concurrency": fit.max_concurrency,
                "display": dict(zip(BUDGET_COLUMNS[1:], _budget_row(row)[1:], strict=True)),
            }
        )
    return {
        "pool": {"bytes": pool.bytes, "kind": pool.kind, "source": pool.source, "display": gib(pool.bytes, unit=True)},
        "subtracted_from_earlier_result_bytes": None if other_bytes is None else round(other_bytes),
        "measured_error": {**asdict(MEASURED_ERROR), "text": MEASURED_ERROR.text()},
        "not_included": ([] if other_bytes is not None else ["activation peak", "non-torch memory"])
        + ["engine overheads"],
        "models": models,
    }


@dataclass
class PredictionRun:
    """`kvprobe predict`'s answer: a row per model, the pool, and the earlier result's other memory."""

    rows: list[PredictedModel]
    pool: Pool
    other_bytes: float | None


def predict_models(
    models_file: str | None,
    memory: str | None,
    utilization: float | None,
    only: tuple,
    from_result: str | None,
    serve_command: tuple[str, ...] | None = None,
) -> PredictionRun:
    """Each model's prediction and verdict (the models of a models file or of one `vllm serve` command
    line); every problem with the inputs at once (InputError)."""
    problems, models, pool, earlier = [], [], None, None
    try:
        models = load_model_source(models_file, serve_command, list(only) or None)
    except InputError as exc:
        problems.append(str(exc))
    try:
        pool = Pool(parse_pool_size(memory), "given", f"--memory {memory}") if memory else machine_pool()
    except ValueError as exc:
        problems.append(str(exc))
    try:
        earlier = load_result(Path(from_result)) if from_result else None
    except ValueError as exc:
        problems.append(str(exc))
    if problems or pool is None:
        raise InputError("\n".join(problems))
    other = None
    if earlier is not None and earlier.memory_breakdown is not None:
        report = earlier.memory_breakdown
        other = (report.activation_peak_bytes or 0.0) + (report.non_torch_bytes or 0.0)
    rows, unusable = [], []
    for settings in models:
        try:
            prediction = predict(
                settings.name,
                settings.hf_config(),
                settings.kv_cache_dtype,
                settings.dtype,
                settings.tensor_parallel_size,
                settings.block_size or 16,
                settings.extra_engine_args.get("quantization"),
            )
        except (OSError, ValueError) as exc:  # UnusableConfig and UnsafeFile are ValueErrors
            unusable.append(f"{models_file}: {exc}".replace("\n", f"\n{models_file}: "))
            continue
        share = utilization or settings.gpu_memory_utilization
        rows.append(PredictedModel(prediction, assess(prediction, pool.bytes, share, settings.max_model_len, other)))
    if unusable:
        raise InputError("\n".join(unusable))
    return PredictionRun(rows, pool, other)
