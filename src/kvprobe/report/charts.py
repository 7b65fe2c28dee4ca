"""Chart images (PNG and SVG): KV cache per model, utilization window, memory breakdown."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GIB = 1 << 30
COLOURS = {"native": "#2b6cb0", "container": "#dd6b20"}
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
CHARTS = ("kv_cache", "utilization_window", "memory_breakdown")


def caption(model: dict) -> str:
    cap = model["caption"]["native"]
    return (f"{cap['device']} | vLLM {cap['vllm']}, torch {cap['torch']}, kvprobe {cap['kvprobe']} | "
            f"n = {model['n']['native']} native, {model['n']['container']} container")


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for suffix in ("png", "svg"):
        path = out_dir / f"{stem}.{suffix}"
        fig.savefig(path, dpi=130, bbox_inches="tight", metadata={"Date": None} if suffix == "svg" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def kv_cache_chart(report: dict, out_dir: Path) -> list[Path]:
    models = report["models"]
    metrics = (("kv_reference_bytes", "at gpu_memory_utilization"), ("kv_u_max_bytes", "at u_max"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    for axis, (metric, title) in zip(axes[0], metrics):
        width = 0.38
        for offset, label in ((-width / 2, "native"), (width / 2, "container")):
            means = [(m["stats"][label][metric]["mean"] or 0) / GIB for m in models]
            errors = [(m["stats"][label][metric]["sd"] or 0) / GIB for m in models]
            xs = [i + offset for i in range(len(models))]
            bars = axis.bar(xs, means, width, yerr=errors, capsize=4, color=COLOURS[label], label=label)
            axis.bar_label(bars, labels=[f"{v:.2f}" for v in means], fontsize=8, padding=2)
        axis.set_xticks(range(len(models)), [m["model"] for m in models], rotation=15, ha="right")
        axis.set_ylabel("KV cache (GiB)")
        axis.set_title(f"KV cache {title} (mean ± sd)")
        axis.legend()
    if models:
        fig.text(0.01, -0.14, caption(models[0]), fontsize=8, color="#555")
    return _save(fig, out_dir, "kv_cache")


def utilization_window_chart(report: dict, out_dir: Path) -> list[Path]:
    models = report["models"]
    fig, axis = plt.subplots(figsize=(8, 1.2 + 0.9 * max(1, len(models))))
    ticks, names = [], []
    for i, model in enumerate(models):
        for j, label in enumerate(("native", "container")):
            low = model["stats"][label]["u_min"]["mean"]
            high = model["stats"][label]["u_max"]["mean"]
            y = i * 2.5 + j
            if low is not None and high is not None:
                axis.barh(y, high - low, left=low, color=COLOURS[label], height=0.8)
                axis.text(high + 0.005, y, f"{low:.2f}-{high:.2f}", va="center", fontsize=8)
            ticks.append(y)
            names.append(f"{model['model']} ({label})")
    axis.set_yticks(ticks, names, fontsize=8)
    axis.set_xlim(0, 1.08)
    axis.set_xlabel("gpu_memory_utilization that starts the engine (u_min to u_max)")
    axis.set_title("Utilization window")
    if models:
        fig.text(0.01, -0.20, caption(models[0]), fontsize=8, color="#555")
    return _save(fig, out_dir, "utilization_window")


def memory_breakdown_chart(report: dict, out_dir: Path) -> list[Path]:
    models = [m for m in report["models"] if m["attribution"]["native"] and m["attribution"]["container"]]
    fig, axis = plt.subplots(figsize=(8.5, 4.5))
    bars, names = [], []
    for model in models:
        for label in ("native", "container"):
            bars.append(model["attribution"][label])
            names.append(f"{model['model']}\n{label}")
    cmap = plt.get_cmap("tab20")
    bottoms = [0.0] * len(bars)
    for index, (part, text) in enumerate(PART_LABELS.items()):
        values = [max(0.0, b["parts"].get(part, 0.0)) / GIB for b in bars]  # a negative part has no bar
        if not any(values):
            continue
        axis.bar(range(len(bars)), values, bottom=bottoms, color=cmap(index), label=text)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    axis.set_xticks(range(len(bars)), names, fontsize=8)
    axis.set_ylabel("GiB")
    axis.set_title("Where the memory went at u_max")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if models:
        fig.text(0.01, -0.10, caption(models[0]), fontsize=8, color="#555")
    return _save(fig, out_dir, "memory_breakdown")


class ChartWriter:
    name = "charts"

    def write(self, report: dict, out_dir: Path) -> list[Path]:
        if not report["models"]:
            return []
        return (kv_cache_chart(report, out_dir) + utilization_window_chart(report, out_dir)
                + memory_breakdown_chart(report, out_dir))
