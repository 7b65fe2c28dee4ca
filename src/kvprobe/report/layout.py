"""The report's words and tables: a `Document` built from the `ReportSummary` numbers.

Every figure is rounded here, for display only; the numbers themselves stay in the summary.
"""

from __future__ import annotations

from kvprobe.report.analysis import (
    Comparison,
    Finding,
    Flag,
    LimitCut,
    ModelComparison,
    PageCacheCharged,
    RecoverableKv,
    UMaxDrop,
    Unit,
)
from kvprobe.report.document import (
    Block,
    BulletList,
    Document,
    Figure,
    FrontMatter,
    Heading,
    Paragraph,
    Table,
    emphasis,
    strong,
)
from kvprobe.report.document import code as code_span
from kvprobe.report.stats import Summary
from kvprobe.report.summary import ReportSummary
from kvprobe.units import gib
from kvprobe.vocabulary import LABELS

DEFAULT_TITLE = "KV cache: native vs container"
TAGS = ("vllm", "kv-cache", "containers")
PART_LABELS = {
    "kv_cache": "KV cache",
    "weights": "weights",
    "activation_peak": "activation peak",
    "non_torch": "non-torch",
    "other_engine": "other engine (budget)",
    "other_processes": "other processes",
    "page_cache": "page cache (cgroup)",
    "engine_beyond_request": "engine beyond its request",
    "cgroup_cut": "cut by cgroup limit",
    "kernel_unaccounted": "kernel, in no meminfo account",
    "free_at_ready": "free at ready",
}
ROWS = (
    ("kv_reference_bytes", "KV cache at gpu_memory_utilization (GiB)"),
    ("kv_reference_blocks", "KV blocks at gpu_memory_utilization"),
    ("kv_reference_tokens", "KV tokens at gpu_memory_utilization"),
    ("reference_engine_total_bytes", "memory total the engine multiplied it by (its log, GiB)"),
    ("u_max", "u_max (largest utilization that starts)"),
    ("u_min", "u_min (smallest that holds one max_model_len request)"),
    ("kv_u_max_bytes", "KV cache at u_max (GiB)"),
    ("kv_u_max_blocks", "KV blocks at u_max"),
    ("kv_u_max_tokens", "KV tokens at u_max"),
    ("max_concurrency", "max concurrency at max_model_len"),
    ("physical_kv_bytes", "physical KV capacity, fill-tested (GiB)"),
    ("physical_kv_blocks", "physical KV capacity, fill-tested (blocks)"),
    ("peak_host_in_use_bytes", "host memory in use at peak, u_max start (MemTotal - lowest MemAvailable, GiB)"),
    ("peak_cgroup_usage_bytes", "cgroup memory usage at peak, u_max start (GiB)"),
    ("peak_gpu_used_bytes", "GPU memory used at peak, u_max start (NVML, GiB)"),
    ("throughput_tokens_per_s", "decode throughput (tokens/s)"),
    ("bytes_per_block", "KV bytes per block, measured (engine's config)"),
    ("predicted_bytes_per_block", "KV bytes per block, predicted from config.json"),
    ("weights_logged_bytes", "weights, the engine's log (GiB)"),
    ("predicted_weight_bytes", "weights, predicted from config.json (GiB)"),
)
LOSS_ROWS = (
    ("kv_reference_bytes", "KV at gpu_memory_utilization (GiB)"),
    ("kv_u_max_bytes", "KV at u_max (GiB)"),
    ("physical_kv_bytes", "physical KV (GiB)"),
    ("u_max", "u_max"),
    ("throughput_tokens_per_s", "throughput (tokens/s)"),
)
CHART_CAPTIONS = {
    "kv_cache": "kv cache",
    "utilization_window": "utilization window",
    "memory_breakdown": "memory breakdown",
}


def fmt(value: float | None, unit: Unit) -> str:
    if value is None:
        return "-"
    if unit == "GiB":
        return gib(value)
    if unit in ("tokens", "blocks", "bytes"):
        return f"{value:,.0f}"
    if unit == "":
        return f"{value:.3f}"
    return f"{value:.1f}"


def fmt_stat(stat: Summary, unit: Unit) -> str:
    if not stat.n:
        return "-"
    text = fmt(stat.mean, unit)
    if stat.sd is not None:
        text += f" ± {fmt(stat.sd, unit)}"
    if stat.ci95_low is not None:
        text += f" [{fmt(stat.ci95_low, unit)}, {fmt(stat.ci95_high, unit)}]"
    return text


VERDICT_TEXT = {
    "identical": "identical in every repeat",
    "no_variance": "no variance to test (each side repeated its own value)",
    "too_few": "n too small for a test",
}
FLAG_TEXT = {
    "few_runs": "{label}: only {value:.0f} run(s); repeat at least 3 times before quoting",
    "unstable_sd": "{label} {metric}: unstable, the standard deviation is {value:.0%} of the mean",
    "non_monotone": "{label} {metric}: the search saw a start fail above one that passed, in {run}",
    "boundary_flipped": "{label} {metric}: the same setting {value} both passed and failed, in {run}",
    "baseline_not_restored": "{label}: memory did not come back to its baseline after a trial, in {run}",
    "incomplete_run": "{label}: {run} did not finish every search; its figures are compared where it has them",
}


def p_text(comparison: Comparison) -> str:
    welch = comparison.welch
    if welch is None or welch.verdict != "tested":
        return VERDICT_TEXT.get(welch.verdict if welch else "too_few", "-")
    return "<0.001" if welch.p_value < 0.001 else f"{welch.p_value:.2g}"


def comparison_cells(comparison: Comparison, unit: Unit) -> tuple[str, str, str, str]:
    """lost, lost %, native/container, p (or why there is no test)."""
    lost = fmt(comparison.lost, unit) if unit == "GiB" else f"{comparison.lost:.3f}"
    if not comparison.exact:
        lost = f"≈{lost} (from the engine's 2-decimal GiB log)"
    pct = "-" if comparison.lost_percent is None else f"{comparison.lost_percent:.1f}%"
    ratio = "-" if comparison.ratio_native_over_container is None else f"{comparison.ratio_native_over_container:.2f}x"
    return lost, pct, ratio, p_text(comparison)


def caption_text(model: ModelComparison) -> str:
    cap = model.caption["native"]
    return (
        f"{cap.device} | vLLM {cap.vllm}, torch {cap.torch}, kvprobe {cap.kvprobe} | "
        f"n = {model.n['native']} native, {model.n['container']} container"
    )


def finding_text(finding: Finding) -> str:
    if isinstance(finding, RecoverableKv):
        physical, allocated = finding.physical_bytes, finding.allocated_bytes
        return (
            f"In the container, a fill test passed with {gib(physical)} GiB of KV cache where vLLM allocated "
            f"{gib(allocated)} GiB at u_max: start vLLM with --kv-cache-memory-bytes {int(physical)} to recover "
            f"{gib(physical - allocated)} GiB ({100 * (physical / allocated - 1):.0f}% more KV)."
        )
    if isinstance(finding, LimitCut):
        return (
            f"The container's memory limit puts {gib(finding.cut_bytes)} GiB of host memory out of reach; "
            f"vLLM multiplies gpu_memory_utilization by the limit, so the same setting gives "
            f"{gib(finding.container_kv_bytes)} GiB of KV instead of {gib(finding.native_kv_bytes)} GiB."
        )
    if isinstance(finding, PageCacheCharged):
        return (
            f"{gib(finding.page_cache_bytes)} GiB of page cache was charged to the container's cgroup at start; "
            f"it counts against the limit until reclaimed (kvprobe measure --drop-caches shows the difference)."
        )
    assert isinstance(finding, UMaxDrop)
    return f"u_max drops from {finding.native:.2f} natively to {finding.container:.2f} in the container."


def flag_text(flag: Flag) -> str:
    return FLAG_TEXT[flag.kind].format(label=flag.label, metric=flag.metric, value=flag.value or 0, run=flag.run)


def _metric_table(model: ModelComparison, metrics: dict[str, Unit]) -> Table:
    rows = []
    for name, title in ROWS:
        native, container = model.stats["native"][name], model.stats["container"][name]
        if not native.n and not container.n:
            continue
        cells = [fmt_stat(stat, metrics[name]) for stat in (native, container)]
        # a search that passed at the top of its range only bounds u_max, and what was measured there, from below
        cells = [(">= " + c if name in model.bounds[label] else c) for c, label in zip(cells, LABELS, strict=True)]
        rows.append((title, *cells))
    return Table(("metric", "native", "container"), tuple(rows), (False, True, True))


def _loss_table(model: ModelComparison, metrics: dict[str, Unit]) -> Table:
    rows = []
    for name, title in LOSS_ROWS:
        comparison = model.comparison[name]
        if comparison.not_compared == "censored":
            rows.append(
                (title, "not compared: a lower bound (a u_max search ended at the top of its range)", "", "", "")
            )
        elif comparison.available:
            rows.append((title, *comparison_cells(comparison, metrics[name])))
    return Table(("capacity", "lost", "lost %", "native/container", "p"), tuple(rows), (False, True, True, True, True))


def _attribution_blocks(model: ModelComparison) -> list[Block]:
    native, container = model.attribution["native"], model.attribution["container"]
    if not model.attribution_difference or native is None or container is None:
        return []
    rows = []
    for part, text in PART_LABELS.items():
        a, b = native.parts.get(part, 0.0), container.parts.get(part, 0.0)
        if a or b:
            rows.append((text, gib(a), gib(b), gib(b - a, sign=True)))
    difference = container.unexplained_bytes - native.unexplained_bytes
    rows.append(
        ("unexplained", gib(native.unexplained_bytes), gib(container.unexplained_bytes), gib(difference, sign=True))
    )
    heading = Paragraph.of(
        strong("Where the memory went"), f" at u_max (GiB; pool: {native.pool} memory, {gib(native.total_bytes)} GiB):"
    )
    table = Table(("part", "native", "container", "difference"), tuple(rows), (False, True, True, True))
    return [heading, table]


def model_section(model: ModelComparison, metrics: dict[str, Unit]) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, model.model),
        Paragraph.of(
            "Settings hash ",
            code_span(model.settings_hash),
            " (matched on both sides), "
            f"n = {model.n['native']} native and {model.n['container']} container runs. "
            "Cells: mean ± sd [95% CI].",
        ),
        _metric_table(model, metrics),
        Paragraph.of(strong("Lost in the container"), " (native minus container, Welch's t-test):"),
        _loss_table(model, metrics),
        *_attribution_blocks(model),
    ]
    if model.findings:
        blocks += [
            Paragraph.of(strong("Advice"), " (from these measurements):"),
            BulletList(tuple(Paragraph.of(finding_text(f)) for f in model.findings)),
        ]
    if model.flags:
        blocks += [
            Paragraph.of(strong("Check before quoting"), " (as pyperf warns of unstable results):"),
            BulletList(tuple(Paragraph.of(flag_text(f)) for f in model.flags)),
        ]
    if model.container:
        blocks.append(Paragraph.of("Container command: ", code_span(" ".join(model.container.command))))
    blocks.append(Paragraph.of(emphasis(caption_text(model))))
    return blocks


def _headline(summary: ReportSummary) -> Table:
    rows = []
    for model in summary.models:
        comparison = model.comparison["kv_reference_bytes"]
        if comparison.available:
            rows.append(
                (
                    model.model,
                    gib(comparison.native_mean),
                    gib(comparison.container_mean),
                    *comparison_cells(comparison, "GiB"),
                )
            )
    header = ("model", "KV native (GiB)", "KV container (GiB)", "lost", "lost %", "native/container", "p")
    return Table(header, tuple(rows), (False, *[True] * 6))


def build_document(summary: ReportSummary, title: str | None, date: str, charts: list[str]) -> Document:
    """The whole report; `charts` are the stems of the chart files written beside it."""
    title = title or DEFAULT_TITLE
    blocks: list[Block] = [
        Paragraph.of(
            f"{len(summary.models)} model(s) with matched native and container runs, "
            f"from {summary.documents} result file(s)."
        ),
    ]
    if summary.models:
        blocks += [_headline(summary), *[Figure(s, CHART_CAPTIONS[s]) for s in charts if s in CHART_CAPTIONS]]
    for model in summary.models:
        blocks += model_section(model, summary.metrics)
    if summary.unmatched:
        blocks += [
            Heading(2, "Not compared"),
            Paragraph.of("These results have no matched counterpart or are incomplete:"),
            BulletList(tuple(Paragraph.of(problem) for problem in summary.unmatched)),
        ]
    return Document(title=title, blocks=blocks, front_matter=FrontMatter(title=title, date=date, tags=TAGS))
