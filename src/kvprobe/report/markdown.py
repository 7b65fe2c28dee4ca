"""Markdown: tables ready to paste into a Hugo post, with an optional front matter."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from kvprobe.report.charts import PART_LABELS, caption

GIB = 1 << 30
ROWS = (
    ("kv_reference_bytes", "KV cache at gpu_memory_utilization (GiB)"),
    ("kv_reference_tokens", "KV tokens at gpu_memory_utilization"),
    ("u_max", "u_max (largest utilization that starts)"),
    ("u_min", "u_min (smallest that holds one max_model_len request)"),
    ("kv_u_max_bytes", "KV cache at u_max (GiB)"),
    ("kv_u_max_blocks", "KV blocks at u_max"),
    ("kv_u_max_tokens", "KV tokens at u_max"),
    ("max_concurrency", "max concurrency at max_model_len"),
    ("physical_kv_bytes", "physical KV capacity, fill-tested (GiB)"),
    ("peak_memory_bytes", "peak memory during the u_max start (GiB)"),
    ("throughput_tokens_per_s", "decode throughput (tokens/s)"),
)


def fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit == "GiB":
        return f"{value / GIB:.2f}"
    if unit in ("tokens", "blocks"):
        return f"{value:,.0f}"
    if unit == "":
        return f"{value:.3f}"
    return f"{value:.1f}"


def fmt_stat(stat: dict, unit: str) -> str:
    if not stat["n"]:
        return "-"
    text = fmt(stat["mean"], unit)
    if stat["sd"] is not None:
        text += f" ± {fmt(stat['sd'], unit)}"
    if stat["ci95_low"] is not None:
        text += f" [{fmt(stat['ci95_low'], unit)}, {fmt(stat['ci95_high'], unit)}]"
    return text


def comparison_line(comparison: dict, unit: str) -> str:
    if not comparison.get("available"):
        return "-"
    lost = fmt(comparison["lost"], unit) if unit == "GiB" else f"{comparison['lost']:.3f}"
    pct = "-" if comparison["lost_percent"] is None else f"{comparison['lost_percent']:.1f}%"
    ratio = "-" if comparison["ratio_native_over_container"] is None else f"{comparison['ratio_native_over_container']:.2f}x"
    p = comparison["welch"]["p_value"]
    p_text = "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.2g}")
    return f"{lost} | {pct} | {ratio} | {p_text}"


def model_section(model: dict, metrics: dict) -> list[str]:
    lines = [f"## {model['model']}", ""]
    lines.append(f"Settings hash `{model['settings_hash']}` (matched on both sides), "
                 f"n = {model['n']['native']} native and {model['n']['container']} container runs. "
                 "Cells: mean ± sd [95% CI].")
    lines += ["", "| metric | native | container |", "| --- | ---: | ---: |"]
    for name, title in ROWS:
        native, container = model["stats"]["native"][name], model["stats"]["container"][name]
        if not native["n"] and not container["n"]:
            continue
        cells = [fmt_stat(stat, metrics[name]) for stat in (native, container)]
        if name == "u_max":  # a search that passed at the top of its range only bounds u_max from below
            cells = [(">= " + c if model["u_max_censored"][label] else c) for c, label in zip(cells, ("native", "container"))]
        lines.append(f"| {title} | {cells[0]} | {cells[1]} |")
    lines += ["", "**Lost in the container** (native minus container, Welch's t-test):", "",
              "| capacity | lost | lost % | native/container | p |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, title in (("kv_reference_bytes", "KV at gpu_memory_utilization (GiB)"), ("kv_u_max_bytes", "KV at u_max (GiB)"),
                        ("physical_kv_bytes", "physical KV (GiB)"), ("u_max", "u_max"),
                        ("throughput_tokens_per_s", "throughput (tokens/s)")):
        comparison = model["comparison"][name]
        if name == "u_max" and any(model["u_max_censored"].values()):
            lines.append("| u_max | not compared: a search ended at the top of its range (see above) | | | |")
        elif comparison.get("available"):
            lines.append(f"| {title} | {comparison_line(comparison, metrics[name])} |")
    if model["attribution_difference"]:
        native, container = model["attribution"]["native"], model["attribution"]["container"]
        lines += ["", "**Where the memory went** at u_max (GiB; pool: "
                  f"{native['pool']} memory, {native['total_bytes'] / GIB:.2f} GiB):", "",
                  "| part | native | container | difference |", "| --- | ---: | ---: | ---: |"]
        for part, text in PART_LABELS.items():
            a, b = native["parts"].get(part, 0.0), container["parts"].get(part, 0.0)
            if a or b:
                lines.append(f"| {text} | {a / GIB:.2f} | {b / GIB:.2f} | {(b - a) / GIB:+.2f} |")
        lines.append(f"| unexplained | {native['unexplained_bytes'] / GIB:.2f} | {container['unexplained_bytes'] / GIB:.2f} | "
                     f"{(container['unexplained_bytes'] - native['unexplained_bytes']) / GIB:+.2f} |")
    if model["advice"]:
        lines += ["", "**Advice** (from these measurements):", ""] + [f"- {a}" for a in model["advice"]]
    if model.get("container"):
        lines += ["", f"Container command: `{' '.join(model['container']['command'])}`"]
    lines += ["", f"*{caption(model)}*", ""]
    return lines


def render(report: dict, title: str, front_matter: bool, charts: list[str]) -> str:
    lines: list[str] = []
    if front_matter:
        lines += ["---", f'title: "{title}"', f"date: {time.strftime('%Y-%m-%d')}", "draft: true",
                  'tags: ["vllm", "kv-cache", "containers"]', "---", ""]
    lines += [f"# {title}", ""]
    lines.append(f"{len(report['models'])} model(s) with matched native and container runs, "
                 f"from {report['documents']} result file(s).")
    lines.append("")
    lines += ["| model | KV native (GiB) | KV container (GiB) | lost | lost % | native/container | p |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model in report["models"]:
        c = model["comparison"]["kv_reference_bytes"]
        if c.get("available"):
            lines.append(f"| {model['model']} | {c['native_mean'] / GIB:.2f} | {c['container_mean'] / GIB:.2f} | "
                         f"{comparison_line(c, 'GiB')} |")
    lines.append("")
    for chart in charts:
        lines += [f"![{chart.replace('_', ' ')}]({chart}.png)", ""]
    for model in report["models"]:
        lines += model_section(model, report["metrics"])
    if report["unmatched"]:
        lines += ["## Not compared", "", "These results have no matched counterpart or are incomplete:", ""]
        lines += [f"- {p}" for p in report["unmatched"]] + [""]
    return "\n".join(lines)


class MarkdownWriter:
    name = "markdown"
    options = ("title", "front_matter")

    def __init__(self) -> None:
        self.title = "KV cache: native vs container"
        self.front_matter = False

    def configure(self, title: Optional[str] = None, front_matter: bool = False) -> None:
        self.title = title or self.title
        self.front_matter = front_matter

    def write(self, report: dict, out_dir: Path) -> list[Path]:
        charts = [c for c in ("kv_cache", "utilization_window", "memory_breakdown") if (out_dir / f"{c}.png").exists()]
        path = out_dir / "report.md"
        path.write_text(render(report, self.title, self.front_matter, charts))
        return [path]
