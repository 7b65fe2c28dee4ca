"""The report's words and tables: a `Document` built from the `ReportSummary` numbers.

Every figure is rounded here, for display only; the numbers themselves stay in the summary.
"""

from __future__ import annotations

from kvprobe.report.analysis import (
    Caption,
    Finding,
    Flag,
    LimitCut,
    ModelComparison,
    PageCacheCharged,
    RecoverableKv,
    SingleSide,
    UMaxDrop,
)
from kvprobe.report.compare import UNITS, Comparison
from kvprobe.report.document import (
    Block,
    BulletList,
    Details,
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
from kvprobe.report.formatting import (
    boundary_text,
    caption_text,
    change_text,
    fmt,
    fmt_stat,
    graphs_text,
    interval_text,
    p_text,
)
from kvprobe.report.sizing_layout import sizing_blocks
from kvprobe.report.summary import ReportSummary
from kvprobe.report.words import BOUND_NOTE, GRAPHS_ROW, PART_LABELS, SHORT_TITLES, TAGS, TITLES
from kvprobe.units import gib
from kvprobe.vocabulary import LABELS

DEFAULT_TITLE = "KV cache: native vs container"
ONE_SIDED_TITLE = "KV cache: what one side measured"
EXPERIMENT_TITLE = "KV cache: what each condition changes"
ROWS = (
    "kv_reference_bytes",
    "kv_reference_blocks",
    "kv_reference_tokens",
    "reference_engine_total_bytes",
    "u_max",
    "u_min",
    "kv_u_max_bytes",
    "kv_u_max_blocks",
    "kv_u_max_tokens",
    "max_concurrency",
    "physical_kv_bytes",
    "physical_kv_blocks",
    "physical_kv_failing_blocks",
    "physical_kv_gap_percent",
    "peak_host_in_use_bytes",
    "peak_host_in_use_by_available_bytes",
    "peak_cgroup_usage_bytes",
    "peak_gpu_used_bytes",
    "throughput_tokens_per_s",
    "bytes_per_block",
    "predicted_bytes_per_block",
    "weights_logged_bytes",
    "predicted_weight_bytes",
)
LOSS_ROWS = ("kv_reference_bytes", "kv_u_max_bytes", "physical_kv_bytes", "u_max", "throughput_tokens_per_s")
CHART_CAPTIONS = {
    "kv_cache": (
        "KV cache per model, native and container, at gpu_memory_utilization and at u_max (mean ± sd, GiB). "
        "A hatched bar marked >= is a lower bound: its u_max search passed at the top of its range."
    ),
    "utilization_window": (
        "The gpu_memory_utilization window that starts the engine, u_min to u_max, native and container. "
        "An arrow past u_max marks a lower bound."
    ),
    "memory_breakdown": "Where the memory went at the u_max start, part by part, native and container (GiB).",
}
FLAG_TEXT = {
    "few_runs": "{label}: only {value:.0f} run(s); repeat at least 3 times before quoting",
    "unstable_sd": "{label} {metric}: unstable, the standard deviation is {value:.0%} of the mean",
    "non_monotone": "{label} {metric}: the search saw a start fail above one that passed, in {run}",
    "boundary_flipped": "{label} {metric}: the same setting {value} both passed and failed, in {run}",
    "baseline_not_restored": "{label}: memory did not come back to its baseline after a trial, in {run}",
    "incomplete_run": "{label}: {run} did not finish every search; its figures are compared where it has them",
}


def loss_cells(comparison: Comparison, metric: str) -> tuple[str, str, str, str]:
    """lost (native minus container) with its interval, lost %, native/container, p (or why no test)."""
    unit = UNITS[metric]
    if not comparison.compared:
        return change_text(comparison, unit, negate=True), "", "", ""
    lost = fmt(-(comparison.change or 0.0), unit)
    if not comparison.exact:
        lost = f"≈{lost} (from the engine's 2-decimal GiB log)"
    interval = interval_text(comparison, unit, negate=True)
    lost += f" {interval}" if interval else ""
    pct = "-" if comparison.change_percent is None else f"{-comparison.change_percent:.1f}%"
    ratio = "-" if not comparison.ratio else f"{1.0 / comparison.ratio:.2f}x"
    return lost, pct, ratio, p_text(comparison)


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


def _metric_table(model: ModelComparison) -> Table:
    rows = []
    for name in ROWS:
        native, container = model.stats["native"][name], model.stats["container"][name]
        if not native.n and not container.n:
            continue
        cells = [fmt_stat(model.stats[label][name], UNITS[name], name in model.bounds[label]) for label in LABELS]
        rows.append((TITLES[name], *cells))
    rows.append(("u_max set by (the failing start above it)", *(boundary_text(model.boundary[x]) for x in LABELS)))
    rows.append((GRAPHS_ROW, *(graphs_text(model.settings) for _ in LABELS)))
    return Table(("metric", "native", "container"), tuple(rows), (False, True, True))


def _loss_table(model: ModelComparison) -> Table:
    rows = tuple((SHORT_TITLES[name], *loss_cells(model.comparison[name], name)) for name in LOSS_ROWS)
    return Table(("capacity", "lost", "lost %", "native/container", "p"), rows, (False, True, True, True, True))


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


def model_section(model: ModelComparison) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, model.model),
        Paragraph.of(
            "Settings hash ",
            code_span(model.settings_hash),
            " (matched on both sides), "
            f"n = {model.n['native']} native and {model.n['container']} container runs. "
            f"Cells: mean ± sd [95% CI]; {BOUND_NOTE}.",
        ),
        _metric_table(model),
        Paragraph.of(
            strong("Lost in the container"),
            " (native is the reference; native minus container with its 95% interval, Welch's t-test):",
        ),
        _loss_table(model),
        *sizing_blocks(model.sizing, "native", "container"),
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
        blocks.append(container_command(model.container.command))
    blocks.append(Paragraph.of(emphasis(caption_text(model))))
    return blocks


def container_command(command: list[str]) -> Details:
    """The container's command line, folded: long, and full of the measuring machine's paths."""
    return Details("Container command line", " ".join(command), "in runs.csv, column container_command")


def _headline(summary: ReportSummary) -> Table:
    rows = []
    for model in summary.models:
        comparison = model.comparison["kv_reference_bytes"]
        if comparison.compared:
            means = (gib(comparison.reference_mean), gib(comparison.changed_mean))
            rows.append((model.model, *means, *loss_cells(comparison, "kv_reference_bytes")))
    header = ("model", "KV native (GiB)", "KV container (GiB)", "lost", "lost %", "native/container", "p")
    return Table(header, tuple(rows), (False, *[True] * 6))


def answer(model: ModelComparison) -> str:
    """The pair's answer in one sentence: the KV lost at gpu_memory_utilization, with its interval."""
    comparison = model.comparison["kv_reference_bytes"]
    if not comparison.compared or comparison.change is None:
        return f"{model.model}: the KV cache at gpu_memory_utilization is {change_text(comparison, 'GiB', True)}."
    lost = -comparison.change
    verb = "loses" if lost > 0 else "gains"
    interval = interval_text(comparison, "GiB", negate=True)
    detail = ", ".join(x for x in (interval.replace("95% CI", "95% CI of the loss"), p_text(comparison)) if x)
    percent = "" if comparison.change_percent is None else f" ({abs(comparison.change_percent):.1f}%)"
    return (
        f"{model.model}: the container {verb} {gib(abs(lost))} GiB{percent} of KV cache at the same "
        f"gpu_memory_utilization ({gib(comparison.reference_mean)} GiB native, {gib(comparison.changed_mean)} GiB "
        f"in the container; {detail}; {EVIDENCE_WORD[comparison.evidence]})."
    )


EVIDENCE_WORD = {
    "changed": "a change the data show",
    "no_change": "no change",
    "not_significant": "not significant",
    "too_few": "too few runs to test",
}


def single_answer(side: SingleSide) -> str:
    """A one-sided run's own answer: its KV at gpu_memory_utilization and at u_max, compared with nothing."""
    reference, u_max = side.stats["kv_reference_bytes"], side.stats["u_max"]
    text = f"{side.model}, {side.label} only (n = {side.n}): KV cache {fmt_stat(reference, 'GiB')} GiB"
    if u_max.n:
        kv_max = side.stats["kv_u_max_bytes"]
        bounded = "u_max" in side.bounds
        text += f"; u_max {fmt_stat(u_max, 'fraction', bounded)} with {fmt_stat(kv_max, 'GiB', bounded)} GiB of KV"
    return text + " (mean ± sd [95% CI]). No counterpart was measured, so nothing is compared."


def _caption_line(caption: Caption, n: int, label: str) -> str:
    return f"{caption.device} | vLLM {caption.vllm}, torch {caption.torch}, kvprobe {caption.kvprobe} | n = {n} {label}"


def single_section(side: SingleSide) -> list[Block]:
    """A side with no counterpart: its own figures, one column."""
    rows = [
        (TITLES[name], fmt_stat(side.stats[name], UNITS[name], name in side.bounds))
        for name in ROWS
        if side.stats[name].n
    ]
    rows.append(("u_max set by (the failing start above it)", boundary_text(side.boundary)))
    rows.append((GRAPHS_ROW, graphs_text(side.settings)))
    return [
        Heading(2, f"{side.model} ({side.label} only)"),
        Paragraph.of(
            "Settings hash ",
            code_span(side.settings_hash),
            f", n = {side.n} {side.label} runs. Cells: mean ± sd [95% CI]; {BOUND_NOTE}.",
        ),
        Table(("metric", side.label), tuple(rows), (False, True)),
        Paragraph.of(emphasis(_caption_line(side.caption, side.n, side.label))),
    ]


def _figures(charts: dict[str, str], captions: dict[str, str]) -> list[Block]:
    """The charts drawn in this run (stem -> alt text) that these captions name, in their order."""
    return [Figure(stem, caption, charts[stem]) for stem, caption in captions.items() if stem in charts]


def build_document(
    summary: ReportSummary, title: str | None, date: str, charts: dict[str, str], answer_first: list[Block]
) -> Document:
    """The pair report; `charts` maps the stems of the chart files written beside it to their alt text;
    `answer_first` leads (an experiment's answer), else each pair's answer does."""
    one_sided = not summary.models and not answer_first and bool(summary.single)
    title = title or (ONE_SIDED_TITLE if one_sided else EXPERIMENT_TITLE if answer_first else DEFAULT_TITLE)
    lead = answer_first or [Paragraph.of(strong(answer(model))) for model in summary.models]
    if one_sided:
        lead = [Paragraph.of(strong(single_answer(side))) for side in summary.single]
    blocks: list[Block] = [*lead]
    if answer_first and summary.models:  # an experiment: its native/container pair is one comparison of several
        blocks.append(Heading(2, "Native and container"))
    if not one_sided and (summary.models or not answer_first):
        blocks.append(
            Paragraph.of(
                f"{len(summary.models)} model(s) with matched native and container runs, "
                f"from {summary.documents} result file(s)."
            )
        )
    if summary.models:
        blocks += [_headline(summary), *_figures(charts, CHART_CAPTIONS)]
    for model in summary.models:
        blocks += model_section(model)
    for side in summary.single:
        blocks += single_section(side)
    if summary.unmatched:
        blocks += [
            Heading(2, "Not compared"),
            Paragraph.of("These results have no matched counterpart or are incomplete:"),
            BulletList(tuple(Paragraph.of(problem) for problem in summary.unmatched)),
        ]
    return Document(title=title, blocks=blocks, front_matter=FrontMatter(title=title, date=date, tags=TAGS))
