"""Chart images (PNG and SVG): KV cache per model, utilization window, memory breakdown, and an
experiment's KV cache and memory per condition.

Each chart is first a plain spec (what is drawn: labels, values in GiB, caption), then drawn by
matplotlib; the specs are what the golden tests compare, the drawing is checked as images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from kvprobe.report.analysis import ModelComparison
from kvprobe.report.conditions import ExperimentModel, attribution_stem, condition_stem
from kvprobe.report.document import Document
from kvprobe.report.layout import PART_LABELS, caption_text
from kvprobe.report.summary import ReportSummary
from kvprobe.units import GIB
from kvprobe.vocabulary import LABELS

COLOURS = {"native": "#2b6cb0", "container": "#dd6b20"}


@dataclass(frozen=True)
class BarPanel:
    title: str
    categories: tuple[str, ...]
    means: dict[str, tuple[float, ...]]  # label -> GiB per category
    errors: dict[str, tuple[float, ...]]  # label -> sd in GiB


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
    means: dict[str, tuple[float, ...]]
    errors: dict[str, tuple[float, ...]]


ChartSpec = KvCacheChart | WindowChart | StackedBars | ConditionBars


def _caption(models: list[ModelComparison]) -> str:
    return caption_text(models[0]) if models else ""


def kv_cache_spec(summary: ReportSummary) -> KvCacheChart:
    models = summary.models
    panels = []
    for metric, title in (("kv_reference_bytes", "at gpu_memory_utilization"), ("kv_u_max_bytes", "at u_max")):
        panels.append(
            BarPanel(
                title=f"KV cache {title} (mean ± sd)",
                categories=tuple(m.model for m in models),
                means={label: tuple((m.stats[label][metric].mean or 0) / GIB for m in models) for label in LABELS},
                errors={label: tuple((m.stats[label][metric].sd or 0) / GIB for m in models) for label in LABELS},
            )
        )
    return KvCacheChart(stem="kv_cache", title="KV cache", panels=tuple(panels), caption=_caption(models))


def window_spec(summary: ReportSummary) -> WindowChart:
    rows = tuple(
        WindowRow(m.model, label, m.stats[label]["u_min"].mean, m.stats[label]["u_max"].mean)
        for m in summary.models
        for label in LABELS
    )
    return WindowChart(
        stem="utilization_window", title="Utilization window", rows=rows, caption=_caption(summary.models)
    )


def breakdown_spec(summary: ReportSummary) -> StackedBars:
    models = [m for m in summary.models if m.attribution["native"] and m.attribution["container"]]
    blocks = [(f"{m.model}\n{label}", m.attribution[label]) for m in models for label in LABELS]
    parts = {}
    for part, text in PART_LABELS.items():
        values = tuple(max(0.0, block.parts.get(part, 0.0)) / GIB for _, block in blocks)
        if any(values):
            parts[text] = values
    return StackedBars(
        stem="memory_breakdown",
        title="Where the memory went at u_max",
        bars=tuple(name for name, _ in blocks),
        parts=parts,
        caption=_caption(models),
    )


def condition_specs(model: ExperimentModel, index: int) -> list[ChartSpec]:
    """The experiment's KV figures per condition, and its attribution stacked per condition."""
    names = tuple(c.name for c in model.conditions)
    series = {"kv_reference_bytes": "at gpu_memory_utilization", "kv_u_max_bytes": "at u_max"}
    caption = f"experiment {model.experiment}, {model.model}; baseline {model.baseline}"
    bars = ConditionBars(
        stem=condition_stem(index),
        title=f"KV cache per condition (mean ± sd), {model.model}",
        caption=caption,
        conditions=names,
        means={t: tuple((c.stats[m].mean or 0) / GIB for c in model.conditions) for m, t in series.items()},
        errors={t: tuple((c.stats[m].sd or 0) / GIB for c in model.conditions) for m, t in series.items()},
    )
    blocks = [(c.name, c.attribution) for c in model.conditions if c.attribution]
    parts = {}
    for part, text in PART_LABELS.items():
        values = tuple(max(0.0, block.parts.get(part, 0.0)) / GIB for _, block in blocks)
        if any(values):
            parts[text] = values
    stacked = StackedBars(
        stem=attribution_stem(index),
        title=f"Where the memory went at u_max, per condition, {model.model}",
        bars=tuple(name for name, _ in blocks),
        parts=parts,
        caption=caption,
    )
    return [bars, stacked] if blocks else [bars]


def chart_specs(summary: ReportSummary) -> list[ChartSpec]:
    specs: list[ChartSpec] = []
    if summary.models:
        specs += [kv_cache_spec(summary), window_spec(summary), breakdown_spec(summary)]
    for index, model in enumerate(summary.experiments, start=1):
        specs += condition_specs(model, index)
    return specs


def _draw_kv_cache(spec: KvCacheChart):
    fig, axes = plt.subplots(1, len(spec.panels), figsize=(5.5 * len(spec.panels), 4.2), squeeze=False)
    width = 0.38
    for axis, panel in zip(axes[0], spec.panels, strict=True):
        for offset, label in ((-width / 2, "native"), (width / 2, "container")):
            xs = [i + offset for i in range(len(panel.categories))]
            bars = axis.bar(
                xs, panel.means[label], width, yerr=panel.errors[label], capsize=4, color=COLOURS[label], label=label
            )
            axis.bar_label(bars, labels=[f"{v:.2f}" for v in panel.means[label]], fontsize=8, padding=2)
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
            axis.barh(y, row.high - row.low, left=row.low, color=COLOURS[row.label], height=0.8)
            axis.text(row.high + 0.005, y, f"{row.low:.2f}-{row.high:.2f}", va="center", fontsize=8)
        ticks.append(y)
        names.append(f"{row.name} ({row.label})")
    axis.set_yticks(ticks, names, fontsize=8)
    axis.set_xlim(0, 1.08)
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
        bars = axis.bar(xs, means, width, yerr=spec.errors[series], capsize=3, color=cmap(number), label=series)
        axis.bar_label(bars, labels=[f"{v:.2f}" for v in means], fontsize=7, padding=2)
    axis.set_xticks(range(len(spec.conditions)), spec.conditions, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("KV cache (GiB)")
    axis.set_title(spec.title)
    axis.legend(fontsize=8)
    fig.text(0.01, -0.16, spec.caption, fontsize=8, color="#555")
    return fig


def draw(spec: ChartSpec) -> dict[str, bytes]:
    """{stem.png, stem.svg}: the chart drawn, as file contents."""
    drawers = {
        KvCacheChart: _draw_kv_cache,
        WindowChart: _draw_window,
        StackedBars: _draw_stacked,
        ConditionBars: _draw_conditions,
    }
    fig = drawers[type(spec)](spec)
    files = {}
    for suffix in ("png", "svg"):
        buffer = io.BytesIO()
        metadata = {"Date": None} if suffix == "svg" else None
        fig.savefig(buffer, format=suffix, dpi=130, bbox_inches="tight", metadata=metadata)
        files[f"{spec.stem}.{suffix}"] = buffer.getvalue()
    plt.close(fig)
    return files


class ChartWriter:
    name = "charts"

    def render(self, summary: ReportSummary, document: Document, images: dict[str, bytes]) -> dict[str, bytes]:
        return images
