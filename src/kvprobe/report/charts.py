"""Chart images (PNG and SVG): KV cache per model, utilization window, memory breakdown, and an
experiment's KV cache and memory per condition.

Each chart is first a plain spec (what is drawn: labels, values in GiB, caption), then drawn by
matplotlib; the specs are what the golden tests compare, the drawing is checked as images.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from kvprobe.report.analysis import ModelComparison
from kvprobe.report.compare import AT_U_MAX
from kvprobe.report.conditions import ConditionResult, ExperimentModel, attribution_stem, condition_stem, ladder_stem
from kvprobe.report.formatting import caption_text
from kvprobe.report.summary import ReportSummary
from kvprobe.report.words import PART_LABELS
from kvprobe.units import GIB
from kvprobe.vocabulary import LABELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

# fixed SVG ids: report.html, which embeds them, is compared in docs/
SAME_EVERY_RUN: dict[RcKeyType, Any] = {"svg.hashsalt": "kvprobe"}
COLOURS = {"native": "#2b6cb0", "container": "#dd6b20"}


@dataclass(frozen=True)
class BarPanel:
    title: str
    categories: tuple[str, ...]
    means: dict[str, tuple[float | None, ...]]  # label -> GiB per category; None: not measured, drawn absent
    errors: dict[str, tuple[float, ...]]  # label -> sd in GiB
    bounds: dict[str, tuple[bool, ...]]  # label -> a lower bound per category, drawn open-ended (hatched, >=)


@dataclass(frozen=True, kw_only=True)
class Chart:
    stem: str  # file name without suffix
    title: str
    caption: str


@dataclass(frozen=True, kw_only=True)
class KvCacheChart(Chart):
    panels: tuple[BarPanel, ...]


@dataclass(frozen=True)
class WindowRow:
    name: str
    label: str
    low: float | None
    high: float | None
    high_bound: bool  # u_max is only a lower bound: drawn with an arrow past it


@dataclass(frozen=True, kw_only=True)
class WindowChart(Chart):
    rows: tuple[WindowRow, ...]


@dataclass(frozen=True, kw_only=True)
class StackedBars(Chart):
    bars: tuple[str, ...]
    parts: dict[str, tuple[float, ...]]  # part label -> GiB per bar (negative parts drawn as 0)


@dataclass(frozen=True, kw_only=True)
class ConditionBars(Chart):
    """One bar group per condition: each series (a KV figure) mean ± sd in GiB."""

    conditions: tuple[str, ...]
    means: dict[str, tuple[float | None, ...]]  # None: not measured in that condition, drawn absent
    errors: dict[str, tuple[float, ...]]
    bounds: dict[str, tuple[bool, ...]]  # a lower bound, drawn open-ended (hatched, >=)


@dataclass(frozen=True)
class WaterfallStep:
    rung: str
    level: float  # the rung's mean KV (GiB): the bar runs from the previous level to this one
    change_low: float | None  # the step's 95% interval (GiB), None where no test ran
    change_high: float | None
    shown: bool  # a decrease (or increase) the runs show, not noise


@dataclass(frozen=True, kw_only=True)
class LadderWaterfall(Chart):
    """An isolation ladder's KV at gpu_memory_utilization, from its baseline rung step by step."""

    baseline: str
    baseline_level: float  # GiB
    steps: tuple[WaterfallStep, ...]


ChartSpec = KvCacheChart | WindowChart | StackedBars | ConditionBars | LadderWaterfall


def _caption(models: list[ModelComparison]) -> str:
    return caption_text(models[0]) if models else ""


def _gib(value: float | None) -> float | None:
    return None if value is None else value / GIB


def kv_cache_spec(summary: ReportSummary) -> KvCacheChart:
    models = summary.models
    panels = []
    for metric, title in (("kv_reference_bytes", "at gpu_memory_utilization"), ("kv_u_max_bytes", "at u_max")):
        panels.append(
            BarPanel(
                title=f"KV cache {title} (mean ± sd)",
                categories=tuple(m.model for m in models),
                means={label: tuple(_gib(m.stats[label][metric].mean) for m in models) for label in LABELS},
                errors={label: tuple((m.stats[label][metric].sd or 0) / GIB for m in models) for label in LABELS},
                bounds={label: tuple(metric in m.bounds[label] for m in models) for label in LABELS},
            )
        )
    return KvCacheChart(stem="kv_cache", title="KV cache", panels=tuple(panels), caption=_caption(models))


def window_spec(summary: ReportSummary) -> WindowChart | None:
    rows = tuple(
        WindowRow(
            m.model, label, m.stats[label]["u_min"].mean, m.stats[label]["u_max"].mean, "u_max" in m.bounds[label]
        )
        for m in summary.models
        for label in LABELS
    )
    if not any(row.low is not None and row.high is not None for row in rows):
        return None  # no window measured on either side: nothing to draw
    return WindowChart(
        stem="utilization_window", title="Utilization window", rows=rows, caption=_caption(summary.models)
    )


def _stacked_parts(blocks: list) -> dict[str, tuple[float, ...]]:
    parts = {}
    for part, text in PART_LABELS.items():
        values = tuple(max(0.0, block.parts.get(part, 0.0)) / GIB for _, block in blocks)
        if any(values):
            parts[text] = values
    return parts


def breakdown_spec(summary: ReportSummary) -> StackedBars | None:
    models = [m for m in summary.models if m.attribution["native"] and m.attribution["container"]]
    blocks = [(f"{m.model}\n{label}", m.attribution[label]) for m in models for label in LABELS]
    if not blocks:
        return None
    return StackedBars(
        stem="memory_breakdown",
        title="Where the memory went at u_max",
        bars=tuple(name for name, _ in blocks),
        parts=_stacked_parts(blocks),
        caption=_caption(models),
    )


def _condition_series(conditions: list[ConditionResult], metric: str) -> tuple[tuple, tuple, tuple]:
    means = tuple(_gib(c.stats[metric].mean) for c in conditions)
    errors = tuple((c.stats[metric].sd or 0) / GIB for c in conditions)
    return means, errors, tuple(metric in c.bounds and metric in AT_U_MAX for c in conditions)


def condition_specs(model: ExperimentModel, index: int) -> list[ChartSpec]:
    """The experiment's KV figures per condition, and its attribution stacked per condition."""
    series = {"kv_reference_bytes": "at gpu_memory_utilization", "kv_u_max_bytes": "at u_max"}
    caption = f"experiment {model.experiment}, {model.model}; baseline {model.baseline}"
    drawn = {title: _condition_series(model.conditions, metric) for metric, title in series.items()}
    specs: list[ChartSpec] = []
    if any(v is not None for means, _, _ in drawn.values() for v in means):
        specs.append(
            ConditionBars(
                stem=condition_stem(index),
                title=f"KV cache per condition (mean ± sd), {model.model}",
                caption=caption,
                conditions=tuple(c.name for c in model.conditions),
                means={title: means for title, (means, _, _) in drawn.items()},
                errors={title: errors for title, (_, errors, _) in drawn.items()},
                bounds={title: bound for title, (_, _, bound) in drawn.items()},
            )
        )
    blocks = [(c.name, c.attribution) for c in model.conditions if c.attribution]
    if blocks:
        specs.append(
            StackedBars(
                stem=attribution_stem(index),
                title=f"Where the memory went at u_max, per condition, {model.model}",
                bars=tuple(name for name, _ in blocks),
                parts=_stacked_parts(blocks),
                caption=caption,
            )
        )
    waterfall = ladder_spec(model, index, caption)
    return specs + ([waterfall] if waterfall else [])


def ladder_spec(model: ExperimentModel, index: int, caption: str) -> LadderWaterfall | None:
    """The ladder's waterfall of KV at gpu_memory_utilization (never a bound: the reference start is exact)."""
    base = next(c for c in model.conditions if c.name == model.baseline).stats["kv_reference_bytes"].mean
    if not model.ladder or base is None:
        return None
    steps = []
    for step in model.ladder:
        change = step.changes["kv_reference_bytes"]
        if change.changed_mean is None:
            return None  # a rung without a KV figure: no level to draw the rest from
        welch = change.welch
        steps.append(
            WaterfallStep(
                rung=step.name,
                level=change.changed_mean / GIB,
                change_low=_gib(welch.ci95_low) if welch else None,
                change_high=_gib(welch.ci95_high) if welch else None,
                shown=change.evidence == "changed",
            )
        )
    return LadderWaterfall(
        stem=ladder_stem(index),
        title=f"KV at gpu_memory_utilization, step by step, {model.model}",
        caption=caption,
        baseline=model.baseline,
        baseline_level=base / GIB,
        steps=tuple(steps),
    )


def chart_specs(summary: ReportSummary) -> list[ChartSpec]:
    """Every chart that has data to draw; a chart with nothing in it is not made."""
    specs: list[ChartSpec] = []
    if summary.models:
        made = (kv_cache_spec(summary), window_spec(summary), breakdown_spec(summary))
        specs += [spec for spec in made if spec is not None]
    for index, model in enumerate(summary.experiments, start=1):
        specs += condition_specs(model, index)
    return specs


def _value_text(value: float | None, bound: bool) -> str:
    return "not measured" if value is None else (">=" if bound else "") + f"{value:.2f}"


def alt_text(spec: ChartSpec) -> str:
    """The chart's data in words (the figure's alt text): every value drawn, bounds and gaps said."""
    if isinstance(spec, KvCacheChart):
        return "; ".join(
            f"{panel.title}: "
            + ", ".join(
                f"{name} {label} {_value_text(panel.means[label][i], panel.bounds[label][i])} GiB"
                for i, name in enumerate(panel.categories)
                for label in panel.means
            )
            for panel in spec.panels
        )
    if isinstance(spec, WindowChart):
        return f"{spec.title}: " + ", ".join(
            f"{row.name} {row.label} {_value_text(row.low, False)} to {_value_text(row.high, row.high_bound)}"
            for row in spec.rows
        )
    if isinstance(spec, ConditionBars):
        return (
            f"{spec.title}: "
            + "; ".join(
                f"{series}: "
                + ", ".join(
                    f"{name} {_value_text(means[i], spec.bounds[series][i])}" for i, name in enumerate(spec.conditions)
                )
                for series, means in spec.means.items()
            )
            + " (GiB)"
        )
    if isinstance(spec, LadderWaterfall):
        return f"{spec.title}: {spec.baseline} {spec.baseline_level:.2f} GiB, then " + ", ".join(
            f"{step.rung} {step.level:.2f} GiB ({'a change the runs show' if step.shown else 'not shown by the runs'})"
            for step in spec.steps
        )
    totals = [sum(values[i] for values in spec.parts.values()) for i in range(len(spec.bars))]
    return f"{spec.title}: " + ", ".join(
        f"{bar.replace(chr(10), ' ')} {total:.2f} GiB in {len(spec.parts)} parts"
        for bar, total in zip(spec.bars, totals, strict=True)
    )


def _bars(axis, xs: list[float], means: tuple, errors: tuple, bounds: tuple, width: float, **style) -> None:
    """Measured bars with their sd; a lower bound hatched and open-ended (an arrow up, '>=');
    a value not measured drawn as nothing, labelled so."""
    for x, mean, error, bound in zip(xs, means, errors, bounds, strict=True):
        if mean is None:
            axis.text(x, 0, "not\nmeasured", ha="center", va="bottom", fontsize=6, color="#777")
            continue
        bar = axis.bar(x, mean, width, yerr=None if bound else error, capsize=3, hatch="//" if bound else None, **style)
        style.pop("label", None)
        if bound:
            axis.annotate("", (x, mean * 1.12), (x, mean), arrowprops={"arrowstyle": "->", "color": "#333"})
        axis.bar_label(bar, labels=[_value_text(mean, bound)], fontsize=7, padding=2)


def _draw_kv_cache(spec: KvCacheChart):
    fig, axes = plt.subplots(1, len(spec.panels), figsize=(5.5 * len(spec.panels), 4.2), squeeze=False)
    width = 0.38
    for axis, panel in zip(axes[0], spec.panels, strict=True):
        for offset, label in ((-width / 2, "native"), (width / 2, "container")):
            xs = [i + offset for i in range(len(panel.categories))]
            _bars(
                axis,
                xs,
                panel.means[label],
                panel.errors[label],
                panel.bounds[label],
                width,
                color=COLOURS[label],
                label=label,
            )
        axis.set_xticks(range(len(panel.categories)), panel.categories, rotation=15, ha="right")
        axis.set_ylabel("KV cache (GiB)")
        axis.set_title(panel.title)
        axis.legend()
    fig.text(0.01, -0.14, spec.caption, fontsize=8, color="#555")
    return fig


def _draw_window(spec: WindowChart):
    fig, axis = plt.subplots(figsize=(8, 1.2 + 0.9 * max(1, len(spec.rows) // 2)))
    ticks, names = [], []
    for index, row in enumerate(spec.rows):
        y = (index // 2) * 2.5 + index % 2
        if row.low is not None and row.high is not None:
            axis.barh(
                y,
                row.high - row.low,
                left=row.low,
                color=COLOURS[row.label],
                height=0.8,
                hatch="//" if row.high_bound else None,
            )
            end = row.high
            if row.high_bound:
                axis.annotate("", (row.high + 0.05, y), (row.high, y), arrowprops={"arrowstyle": "->"})
                end = row.high + 0.05
            text = f"{row.low:.2f}-{'>=' if row.high_bound else ''}{row.high:.2f}"
            axis.text(end + 0.005, y, text, va="center", fontsize=8)
        ticks.append(y)
        names.append(f"{row.name} ({row.label})")
    axis.set_yticks(ticks, names, fontsize=8)
    axis.set_xlim(0, 1.15)
    axis.set_xlabel("gpu_memory_utilization that starts the engine (u_min to u_max)")
    axis.set_title(spec.title)
    fig.text(0.01, -0.20, spec.caption, fontsize=8, color="#555")
    return fig


def _draw_stacked(spec: StackedBars):
    fig, axis = plt.subplots(figsize=(8.5, 4.5))
    cmap = plt.get_cmap("tab20")
    bottoms = [0.0] * len(spec.bars)
    for index, text in enumerate(PART_LABELS.values()):
        values = spec.parts.get(text)
        if values is None:
            continue
        axis.bar(range(len(spec.bars)), values, bottom=bottoms, color=cmap(index), label=text)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axis.set_xticks(range(len(spec.bars)), spec.bars, fontsize=8)
    axis.set_ylabel("GiB")
    axis.set_title(spec.title)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.text(0.01, -0.10, spec.caption, fontsize=8, color="#555")
    return fig


def _draw_conditions(spec: ConditionBars):
    fig, axis = plt.subplots(figsize=(max(6.0, 1.3 * len(spec.conditions)), 4.2))
    width = 0.8 / max(1, len(spec.means))
    cmap = plt.get_cmap("tab10")
    for number, (series, means) in enumerate(spec.means.items()):
        xs = [i + (number - (len(spec.means) - 1) / 2) * width for i in range(len(spec.conditions))]
        _bars(axis, xs, means, spec.errors[series], spec.bounds[series], width, color=cmap(number), label=series)
    axis.set_xticks(range(len(spec.conditions)), spec.conditions, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("KV cache (GiB)")
    axis.set_title(spec.title)
    axis.legend(fontsize=8)
    fig.text(0.01, -0.16, spec.caption, fontsize=8, color="#555")
    return fig


def _draw_waterfall(spec: LadderWaterfall):
    fig, axis = plt.subplots(figsize=(max(6.0, 1.2 * (len(spec.steps) + 1)), 4.2))
    axis.bar(0, spec.baseline_level, 0.6, color=COLOURS["native"])
    axis.text(0, spec.baseline_level, f"{spec.baseline_level:.2f}", ha="center", va="bottom", fontsize=7)
    previous = spec.baseline_level
    for x, step in enumerate(spec.steps, start=1):
        change = step.level - previous
        colour = ("#c53030" if change < 0 else "#2f855a") if step.shown else "#a0aec0"
        axis.bar(x, change if change else previous * 0.002, 0.6, bottom=previous, color=colour)
        if step.change_low is not None and step.change_high is not None:
            # the whisker: where this rung's mean would lie at either end of the step's interval
            low, high = previous + step.change_low, previous + step.change_high
            axis.errorbar(x, step.level, yerr=[[step.level - low], [high - step.level]], color="#333", capsize=3)
        axis.text(x, max(previous, step.level), f"{change:+.2f}", ha="center", va="bottom", fontsize=7)
        previous = step.level
    axis.set_xticks(range(len(spec.steps) + 1), [spec.baseline, *(s.rung for s in spec.steps)], rotation=20, ha="right")
    axis.set_ylabel("KV cache (GiB)")
    axis.set_title(spec.title)
    fig.text(0.01, -0.16, spec.caption, fontsize=8, color="#555")
    return fig


def draw(spec: ChartSpec) -> dict[str, bytes]:
    """{stem.png, stem.svg}: the chart drawn, as file contents."""
    # Each drawer takes the spec type it is keyed by, which a dict's type cannot say.
    drawers: dict[type[ChartSpec], Callable[[Any], Figure]] = {
        KvCacheChart: _draw_kv_cache,
        WindowChart: _draw_window,
        StackedBars: _draw_stacked,
        ConditionBars: _draw_conditions,
        LadderWaterfall: _draw_waterfall,
    }
    fig = drawers[type(spec)](spec)
    files = {}
    for suffix in ("png", "svg"):
        buffer = io.BytesIO()
        metadata = {"Date": None} if suffix == "svg" else None
        with plt.rc_context(SAME_EVERY_RUN):
            fig.savefig(buffer, format=suffix, dpi=130, bbox_inches="tight", metadata=metadata)
        files[f"{spec.stem}.{suffix}"] = buffer.getvalue()
    plt.close(fig)
    return files
