"""The report's "why" section: an experiment's conditions against its baseline, in words and tables.

Every sentence here is made from `report.conditions` numbers: a change is called a change only
where the data show one (Welch's p < 0.05, or both sides constant and different); otherwise the
section says it is not significant, too few, or a bound.
"""

from __future__ import annotations

from kvprobe.output.experiment import describe
from kvprobe.report.conditions import (
    CONDITION_METRICS,
    Change,
    ConditionResult,
    ConditionVerdict,
    ExperimentModel,
    attribution_stem,
    condition_stem,
)
from kvprobe.report.document import Block, BulletList, Figure, Heading, Paragraph, Table, code, strong
from kvprobe.report.layout import PART_LABELS, fmt, fmt_stat
from kvprobe.units import gib

METRIC_TITLES = {
    "kv_reference_bytes": "KV at gpu_memory_utilization",
    "reference_engine_total_bytes": "engine's memory total there (its log)",
    "u_max": "u_max",
    "kv_u_max_bytes": "KV at u_max",
}
UNITS = {"kv_reference_bytes": "GiB", "reference_engine_total_bytes": "GiB", "u_max": "", "kv_u_max_bytes": "GiB"}
EVIDENCE_TEXT = {
    "no_change": "no change",
    "not_significant": "not significant",
    "too_few": "too few runs to test",
    "bound": "not compared (a lower bound: u_max at the top of its range)",
    "missing": "not measured",
}


def change_text(change: Change, metric: str) -> str:
    if change.evidence == "below_bound":
        amount = gib(change.change, sign=True) + " GiB" if UNITS[metric] == "GiB" else f"{change.change:+.3f}"
        return f"at most {amount} (every run below the baseline's lower bound; no test)"
    if change.evidence != "changed":
        detail = f" ({fmt(change.change, UNITS[metric])}, p = {change.p_value:.2g})" if change.p_value else ""
        return EVIDENCE_TEXT[change.evidence] + detail
    amount = gib(change.change, sign=True) + " GiB" if UNITS[metric] == "GiB" else f"{change.change:+.3f}"
    percent = "" if change.change_percent is None else f" ({change.change_percent:+.1f}%)"
    p_value = "both sides constant" if change.p_value is None else f"p = {change.p_value:.2g}"
    return f"{amount}{percent}, {p_value}"


def _moved_text(verdict: ConditionVerdict) -> str:
    if not verdict.moved_parts:
        return "-"
    names = {**PART_LABELS, "unexplained": "unexplained"}
    return ", ".join(f"{names.get(part, part)} {gib(value, sign=True)}" for part, value in verdict.moved_parts.items())


def _measured_text(result: ConditionResult) -> str:
    done = result.measured
    parts = []
    if done.page_cache_rise_bytes is not None:
        parts.append(f"Cached rose {gib(done.page_cache_rise_bytes)} GiB")
    if done.helper_rss_bytes is not None:
        parts.append(f"helper RSS {gib(done.helper_rss_bytes)} GiB")
    if done.cgroup_limit_bytes is not None:
        parts.append(f"cgroup limit {gib(done.cgroup_limit_bytes)} GiB")
    if done.caches_dropped:
        parts.append("caches dropped")
    return "; ".join(parts) or "-"


def _conditions_table(model: ExperimentModel) -> Table:
    rows = []
    for result in model.conditions:
        cells = [
            (">= " if metric in result.bounds else "") + fmt_stat(result.stats[metric], UNITS[metric])
            for metric in CONDITION_METRICS
        ]
        what = describe(result.condition) if result.condition else "-"
        rows.append((result.name, what, str(result.n), *cells, _measured_text(result)))
    header = (
        "condition",
        "what",
        "n",
        *(f"{METRIC_TITLES[m]}{' (GiB)' * (UNITS[m] == 'GiB')}" for m in CONDITION_METRICS),
        "measured",
    )
    return Table(header, tuple(rows), (False, False, True, *[True] * len(CONDITION_METRICS), False))


def _changes_table(model: ExperimentModel) -> Table:
    rows = tuple(
        (v.name, *(change_text(v.changes[m], m) for m in CONDITION_METRICS), _moved_text(v)) for v in model.verdicts
    )
    header = ("condition", *(METRIC_TITLES[m] for m in CONDITION_METRICS), "why: attribution parts that moved (GiB)")
    return Table(header, rows, (False, *[True] * len(CONDITION_METRICS), False))


def _verdict(model: ExperimentModel, verdict: ConditionVerdict) -> Paragraph:
    shares = [
        f"{share:.0%} of the change in {METRIC_TITLES[m]}"
        for m, share in verdict.share_of_loss.items()
        if share is not None
    ]
    changed = [
        METRIC_TITLES[m]
        + (" (at least; the baseline is a bound)" if verdict.changes[m].evidence == "below_bound" else "")
        for m in CONDITION_METRICS
        if verdict.changes[m].evidence in ("changed", "below_bound")
    ]
    if changed:
        text = "changed " + ", ".join(changed)
        if verdict.moved_parts:
            text += f" (parts that moved: {_moved_text(verdict)})"
    elif any(c.evidence in ("no_change", "not_significant") for c in verdict.changes.values()):
        text = "no significant change in any metric compared"
    else:
        text = "nothing compared: " + "; ".join(sorted({EVIDENCE_TEXT[c.evidence] for c in verdict.changes.values()}))
    if shares:
        text += f"; it reproduces {', '.join(shares)} that {model.explains} shows"
    return Paragraph.of(strong(verdict.name), f": {text}.")


def experiment_blocks(experiments: list[ExperimentModel], charts: list[str]) -> list[Block]:
    blocks: list[Block] = []
    for index, model in enumerate(experiments, start=1):
        blocks += [
            Heading(2, f"Why: experiment {model.experiment}, {model.model}"),
            Paragraph.of(
                "Conditions run interleaved, compared with the baseline ",
                code(model.baseline),
                ". Cells: mean ± sd [95% CI]; changes: condition minus baseline, Welch's t-test. "
                "The attribution is the u_max start's.",
            ),
            _conditions_table(model),
            Paragraph.of(strong("Against the baseline"), ":"),
            _changes_table(model),
        ]
        if model.missing_baseline:
            blocks.append(Paragraph.of(f"No complete run of the baseline {model.baseline}: nothing is compared."))
        explained = [v for v in model.verdicts if v.name != model.explains]
        if model.explains:
            blocks.append(
                Paragraph.of(strong("Verdicts"), f" (each condition held against the change {model.explains} shows):")
            )
        blocks.append(BulletList(tuple(_verdict(model, v) for v in explained)))
        captions = {condition_stem(index): "KV cache per condition", attribution_stem(index): "memory per condition"}
        blocks += [Figure(stem, caption) for stem, caption in captions.items() if stem in charts]
    return blocks
