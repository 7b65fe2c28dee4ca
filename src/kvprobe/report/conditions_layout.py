"""The report's "why" section: an experiment's conditions against its baseline, in words and tables.

Every sentence here is made from `report.conditions` numbers: a change is called a change only
where the data show one (Welch's p < 0.05, or both sides constant and different); otherwise the
section says it is not significant, too few, or a bound.
"""

from __future__ import annotations

from kvprobe.experiment.schedule_view import describe
from kvprobe.report.compare import UNITS, Comparison
from kvprobe.report.conditions import (
    CONDITION_METRICS,
    ConditionResult,
    ConditionVerdict,
    ExperimentModel,
    LadderStep,
    attribution_stem,
    condition_stem,
    costliest_step,
    ladder_stem,
)
from kvprobe.report.document import Block, BulletList, Figure, Heading, Paragraph, Table, code, strong
from kvprobe.report.formatting import boundary_text, change_text, fmt_stat, interval_text, p_text, with_unit
from kvprobe.report.sizing_layout import inputs_moved_text, sizing_blocks
from kvprobe.report.words import BOUND_NOTE, EVIDENCE_TEXT, PART_LABELS, SHORT_TITLES
from kvprobe.units import gib

HEADLINE_METRICS = ("kv_reference_bytes", "kv_u_max_bytes")  # the KV figures an experiment's answer speaks of


def _moved_text(verdict: ConditionVerdict | LadderStep) -> str:
    if not verdict.moved_parts:
        return "-"
    names = {**PART_LABELS, "unexplained": "unexplained"}
    return ", ".join(f"{names.get(part, part)} {gib(value, sign=True)}" for part, value in verdict.moved_parts.items())


def _ladder_table(model: ExperimentModel) -> Table:
    """Each rung: what it is, its KV, the change against the rung before and against the baseline."""
    results = {r.name: r for r in model.conditions}
    against_baseline = {v.name: v.changes for v in model.verdicts}
    base = results[model.baseline]
    rows = [
        (
            "0",
            model.baseline,
            describe(base.condition) if base.condition else "-",
            fmt_stat(base.stats["kv_reference_bytes"], "GiB"),
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
        )
    ]
    for number, step in enumerate(model.ladder, start=1):
        result = results[step.name]
        rows.append(
            (
                str(number),
                step.name,
                describe(result.condition) if result.condition else "-",
                fmt_stat(result.stats["kv_reference_bytes"], "GiB"),
                change_text(step.changes["kv_reference_bytes"], "GiB"),
                change_text(against_baseline[step.name]["kv_reference_bytes"], "GiB"),
                change_text(step.changes["u_max"], "fraction"),
                change_text(step.changes["kv_u_max_bytes"], "GiB"),
                _moved_text(step),
                inputs_moved_text(step.sizing),
            )
        )
    header = (
        "step",
        "rung",
        "what",
        "KV at gpu_memory_utilization (GiB)",
        "change against the rung before",
        f"change against {model.baseline}",
        "u_max against the rung before",
        "KV at u_max against the rung before",
        "attribution parts that moved at this step (GiB)",
        "sizing equation inputs that moved (KV change, GiB)",
    )
    return Table(header, tuple(rows), (True, False, False, True, *[False] * 6))


def ladder_answer(model: ExperimentModel) -> str:
    """The ladder's answer: the step that costs the KV, by how much, and what moved there."""
    found = costliest_step(model)
    if found is None:
        return (
            f"Isolation ladder {model.experiment}, {model.model}: no step from {model.baseline} to "
            f"{model.ladder[-1].name} lowered the KV cache by more than its runs vary."
        )
    step, metric, change = found
    if change.evidence == "below_bound":
        amount = f"by at least {with_unit(-(change.change or 0.0), 'GiB', sign=False)} (the rung before is a bound)"
    else:
        detail = ", ".join(x for x in (interval_text(change, "GiB"), p_text(change)) if x)
        amount = f"{with_unit(change.change, 'GiB')} ({(change.change_percent or 0.0):+.1f}%, {detail})"
    moved = f"; parts that moved at this step: {_moved_text(step)}" if step.moved_parts else ""
    return (
        f"Isolation ladder {model.experiment}, {model.model}: the step that costs the KV cache is "
        f"{step.name} (after {step.previous}): {SHORT_TITLES[metric]} {amount}{moved}."
    )


def _ladder_blocks(model: ExperimentModel, index: int, charts: dict[str, str]) -> list[Block]:
    blocks: list[Block] = [
        Heading(3, "The ladder, step by step"),
        Paragraph.of(
            "Each rung adds one isolation feature to the rung before it. Changes: this rung minus the rung "
            "before with the 95% interval of Welch's t-test; a change is called one only where the runs show "
            "it. ",
            ladder_answer(model),
        ),
        _ladder_table(model),
    ]
    if model.unmeasured:
        blocks.append(
            Paragraph.of(
                "Rungs with no complete run here (missing, not zero): ",
                ", ".join(model.unmeasured),
                "; the step after a missing rung is against the last measured rung before it.",
            )
        )
    stem = ladder_stem(index)
    if stem in charts:
        caption = (
            f"Waterfall from {model.baseline} to {model.ladder[-1].name}, {model.model}: the first bar is "
            f"{model.baseline}'s mean KV; each further bar spans the step's change in the mean, with its 95% "
            "interval as a whisker. Red: a decrease the runs show; grey: not shown by the runs."
        )
        blocks.append(Figure(stem, caption, charts[stem]))
    return blocks


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
        cells = [fmt_stat(result.stats[m], UNITS[m], m in result.bounds) for m in CONDITION_METRICS]
        what = describe(result.condition) if result.condition else "-"
        boundary = boundary_text(result.boundary)
        rows.append((result.name, what, str(result.n), *cells, boundary, _measured_text(result)))
    header = (
        "condition",
        "what",
        "n",
        *(f"{SHORT_TITLES[m]}{' (GiB)' * (UNITS[m] == 'GiB')}" for m in CONDITION_METRICS),
        "u_max set by",
        "measured",
    )
    return Table(header, tuple(rows), (False, False, True, *[True] * len(CONDITION_METRICS), False, False))


def _trend_text(result: ConditionResult) -> str:
    trend = result.trend
    if trend is None:
        return "-"
    slope = gib(trend.slope_bytes_per_repeat, 3, unit=True, sign=True)
    if trend.ci95_bytes is None or trend.p_value is None:
        return f"{slope} per repeat (n {trend.n}: no test below three repeats)"
    low, high = trend.ci95_bytes
    if low == high:  # the repeats lie exactly on a line: no variance left to test against
        return f"{slope} per repeat, exactly (every repeat on one line)"
    return f"{slope} per repeat, 95% CI [{gib(low, 3, sign=True)}, {gib(high, 3, sign=True)}], p = {trend.p_value:.2g}"


def _repeat_blocks(model: ExperimentModel) -> list[Block]:
    """Whether the repeats are independent draws, as the tests assume: the trend over repeats per
    condition, and the cells whose engine multiplied another memory total than the rest."""
    rows = tuple((r.name, str(r.n), _trend_text(r)) for r in model.conditions if r.trend is not None)
    blocks: list[Block] = []
    if rows:
        slopes = [r.trend.slope_bytes_per_repeat for r in model.conditions if r.trend is not None]
        same_way = len(slopes) > 1 and (all(x > 0 for x in slopes) or all(x < 0 for x in slopes))
        note = (
            " In every condition the KV moves the same way with the repeat number: the repeats are not "
            "independent draws, and Welch's test, which assumes they are, can find differences that are "
            "only the order the cells ran in. With this design a change is supported only where it is "
            "larger than that drift."
            if same_way
            else ""
        )
        blocks += [
            Paragraph.of(
                strong("Repeats"),
                ": the KV at gpu_memory_utilization against the repeat number, per condition (least squares; "
                f"the test's null hypothesis is no trend, which the comparisons above assume).{note}",
            ),
            Table(("condition", "n", "KV change per repeat"), rows, (False, True, False)),
        ]
    if model.odd_cells:
        listed = "; ".join(
            f"{c.condition} repeat {c.repeat}: {gib(c.engine_total_bytes)} GiB where the usual total is "
            f"{gib(c.usual_total_bytes)} GiB"
            for c in model.odd_cells
        )
        blocks.append(
            Paragraph.of(
                strong("Cells whose engine multiplied another memory total"),
                f" (its log; the usual total is its condition's, or where no two of its runs agree the "
                f"experiment's; its KV is not comparable with the rest, and the comparisons above include it): "
                f"{listed}.",
            )
        )
    return blocks


def _changes_table(model: ExperimentModel) -> Table:
    rows = tuple(
        (v.name, *(change_text(v.changes[m], UNITS[m]) for m in CONDITION_METRICS), _moved_text(v))
        for v in model.verdicts
    )
    header = ("condition", *(SHORT_TITLES[m] for m in CONDITION_METRICS), "why: attribution parts that moved (GiB)")
    return Table(header, rows, (False, *[True] * len(CONDITION_METRICS), False))


def _verdict(model: ExperimentModel, verdict: ConditionVerdict) -> Paragraph:
    shares = [
        f"{share:.0%} of the change in {SHORT_TITLES[m]}"
        for m, share in verdict.share_of_loss.items()
        if share is not None
    ]
    changed = [
        SHORT_TITLES[m]
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
    odd = sorted({c.condition for c in model.odd_cells} & {verdict.name, model.baseline})
    if odd:
        text += f" (with a cell of {' and '.join(odd)} whose engine multiplied another memory total: see above)"
    return Paragraph.of(strong(verdict.name), f": {text}.")


def experiment_blocks(experiments: list[ExperimentModel], charts: dict[str, str]) -> list[Block]:
    blocks: list[Block] = []
    for index, model in enumerate(experiments, start=1):
        blocks += [
            Heading(2, f"Why: experiment {model.experiment}, {model.model}"),
            Paragraph.of(
                f"Conditions run {model.order}, compared with the baseline ",
                code(model.baseline),
                f". Cells: mean ± sd [95% CI]; {BOUND_NOTE}. Changes: condition minus baseline with its 95% "
                "interval, Welch's t-test, from the runs with an exact u_max where u_max is involved; a u_max "
                "set by kvprobe's guard is not compared with one the engine set. The attribution is the u_max "
                "start's.",
            ),
            _conditions_table(model),
            *_repeat_blocks(model),
            Paragraph.of(strong("Against the baseline"), ":"),
            _changes_table(model),
        ]
        if model.missing_cells:
            blocks.append(
                Paragraph.of(
                    strong("Cells without a result"), " (missing, not zero): ", "; ".join(model.missing_cells), "."
                )
            )
        if model.missing_baseline:
            blocks.append(Paragraph.of(f"No complete run of the baseline {model.baseline}: nothing is compared."))
        explained = [v for v in model.verdicts if v.name != model.explains]
        if model.explains:
            blocks.append(
                Paragraph.of(strong("Verdicts"), f" (each condition held against the change {model.explains} shows):")
            )
        blocks.append(BulletList(tuple(_verdict(model, v) for v in explained)))
        if model.ladder:
            blocks += _ladder_blocks(model, index, charts)
        for verdict in model.verdicts:
            blocks += sizing_blocks(verdict.sizing, model.baseline, verdict.name)
        stem = attribution_stem(index)
        if stem in charts:
            caption = f"Where the memory went at the u_max start, per condition, {model.model} (GiB)."
            blocks.append(Figure(stem, caption, charts[stem]))
    return blocks


def _answer_chart(model: ExperimentModel, index: int, charts: dict[str, str]) -> list[Block]:
    """The chart of the answer: every condition's KV beside the baseline's, drawn right under it."""
    stem = condition_stem(index)
    if stem not in charts:
        return []
    caption = (
        f"KV cache per condition against the baseline {model.baseline}, {model.model} (mean ± sd, GiB). A hatched "
        "bar marked >= is a lower bound; a condition not measured has no bar."
    )
    return [Figure(stem, caption, charts[stem])]


def _largest_move(model: ExperimentModel) -> tuple[ConditionVerdict, str, Comparison] | None:
    """The condition whose KV moved most against the baseline, among the changes the data show."""
    shown = [
        (verdict, metric, verdict.changes[metric])
        for metric in HEADLINE_METRICS
        for verdict in model.verdicts
        if verdict.changes[metric].evidence in ("changed", "below_bound") and verdict.changes[metric].change
    ]
    return max(shown, key=lambda item: abs(item[2].change_percent or 0.0), default=None)


def experiment_answer(experiments: list[ExperimentModel], charts: dict[str, str]) -> list[Block]:
    """On top, per experiment model: one sentence saying which condition moves the KV, by how much and
    with what interval, and the chart of every condition against the baseline."""
    blocks: list[Block] = []
    for index, model in enumerate(experiments, start=1):
        if model.ladder:
            blocks.append(Paragraph.of(strong(ladder_answer(model))))
            blocks += _answer_chart(model, index, charts)
            continue
        found = _largest_move(model)
        if not model.verdicts and model.unmeasured:
            text = (
                f"Experiment {model.experiment}, {model.model}: no result of {', '.join(model.unmeasured)}, so "
                f"nothing is compared with the baseline {model.baseline}; its figures are below."
            )
        elif not model.verdicts:
            text = (
                f"Experiment {model.experiment}, {model.model}: the baseline {model.baseline} is its only condition, "
                "so nothing is compared; its figures are below."
            )
        elif found is None:
            text = (
                f"Experiment {model.experiment}, {model.model}: no condition moved the KV cache against the "
                f"baseline {model.baseline} by more than its runs vary."
            )
        else:
            verdict, metric, change = found
            if change.evidence == "below_bound":
                lowered = with_unit(-(change.change or 0.0), "GiB", sign=False)
                amount = f"lowered by at least {lowered} (the baseline is a lower bound)"
            else:
                percent = [] if change.change_percent is None else [f"{change.change_percent:+.1f}%"]
                detail = ", ".join(x for x in (*percent, interval_text(change, "GiB"), p_text(change)) if x)
                amount = f"{with_unit(change.change, 'GiB')} ({detail})"
            text = (
                f"Experiment {model.experiment}, {model.model}: {verdict.name} moves the {SHORT_TITLES[metric]} "
                f"most against the baseline {model.baseline}: {amount}, from "
                f"{gib(change.reference_mean)} to {gib(change.changed_mean)} GiB."
            )
            odd = sorted({c.condition for c in model.odd_cells} & {verdict.name, model.baseline})
            if odd:
                text += (
                    f" That comparison includes a cell of {' and '.join(odd)} whose engine multiplied another "
                    "memory total than its other runs (see Repeats)."
                )
        blocks.append(Paragraph.of(strong(text)))
        blocks += _answer_chart(model, index, charts)
    return blocks
