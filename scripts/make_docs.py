"""Regenerate every figure in docs/ from the committed raw data (result JSON, journals, bench rows).

    .venv/bin/python scripts/make_docs.py            # write docs/
    .venv/bin/python scripts/make_docs.py --check    # exit 1 and name each file that differs

Reports are `kvprobe report` of committed results; the GPU pages and docs/benchmarks.md are
tables computed here from the same files. tests/test_docs.py runs --check, so a figure in
docs/ that its data no longer gives fails the tests. report.html is compared too: it embeds the
charts' SVGs, drawn with fixed ids and no date, so it is the same on every run of one matplotlib
version (the PNG files are written but not compared).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy  # noqa: E402

from kvprobe.config import load_models  # noqa: E402
from kvprobe.engines.sizing import LOG_ROUNDING_BYTES, check_trial  # noqa: E402
from kvprobe.engines.vllm import VllmEngine  # noqa: E402
from kvprobe.experiment.schedule_view import describe  # noqa: E402
from kvprobe.predict import predict  # noqa: E402
from kvprobe.report.cluster import cluster_runs  # noqa: E402
from kvprobe.report.external import STUDY_MODELS, load_benchmark_spark, summarise_external  # noqa: E402
from kvprobe.report.external_layout import external_document  # noqa: E402
from kvprobe.report.markdown import MarkdownWriter  # noqa: E402
from kvprobe.report.sizing import all_checks  # noqa: E402
from kvprobe.report.summary import build_report  # noqa: E402
from kvprobe.report.writers import FORMATS, ReportOptions, render_report  # noqa: E402
from kvprobe.results.loader import load_result  # noqa: E402
from kvprobe.results.schema import SCHEMA_VERSION, KvFigure, ResultDocument, SizingCheck, TrialRecord  # noqa: E402
from kvprobe.results.store import TRIALS_DIR, ResultStore, trial_log  # noqa: E402
from kvprobe.trial.process_group import SIGTERM_GRACE_S  # noqa: E402
from kvprobe.units import gib  # noqa: E402

COMPARED_FILES = ("report.md", "report.html", "summary.json", "runs.csv")
EXPERIMENT = "docs/experiments/cpu-2026-11-26"  # the committed CPU experiment (issue 14)
SIZING_EXPERIMENT = "docs/experiments/sizing-cpu-2026-11-30"  # the CPU run recording the sizing inputs (issue 26)
RAY_GPU = "docs/multinode/h200x2-2026-11-30"  # two Ray nodes of one H200 each (issue 29)
GRAPHS = "docs/gpu-graphs"  # CUDA graphs against eager mode: the 7B on two lanes, the TP 2 model, the large two
GRAPHS_7B = "deepseek-r1-distill-qwen-7b"
# The study's two large models, each mode side by side on one H200, every run twice (issue 27, item 17)
GRAPHS_LARGE = {
    "qwen2.5-72b-instruct-fp8": ("qwen72b-fp8", "docs/gpu/h200-qwen2.5-72b-instruct-fp8/results"),
    "gpt-oss-120b": ("gpt-oss", "docs/gpu/h100-gpt-oss-120b/results"),
}
GRAPHS_LARGE_RESULTS = tuple(
    f"{GRAPHS}/results-{short}{run}" for short, _ in GRAPHS_LARGE.values() for run in ("", "-again")
)
LADDER_EXPERIMENT = "docs/experiments/ladder-cpu-2026-11-30"  # the isolation ladder on this CPU machine (issue 25)
# The discrete-GPU control of the study's models, one results directory per model and card.
GPU_RESULTS = (
    "docs/gpu-h200/results",
    "docs/gpu/h200-qwen2.5-72b-instruct-fp8/results",
    "docs/gpu/h100-gpt-oss-120b/results",
)
REPORTS = (
    (
        "tests/data/results",
        "docs/sample-report",
        "KV cache, native vs a 4 GiB container (vLLM CPU backend, tiny model)",
        "2026-11-25",
    ),
    (
        "docs/gpu-h100/results",
        "docs/gpu-h100/report",
        "DeepSeek-R1-Distill-Qwen-7B on an H100: native vs a 16 GiB cgroup v2",
        "2026-11-25",
    ),
    (
        "docs/gpu-h200/results",
        "docs/gpu-h200/report",
        "DeepSeek-R1-Distill-Qwen-7B on an H200: native vs a 16 GiB cgroup v2",
        "2026-11-25",
    ),
    (
        f"{EXPERIMENT}/results",
        f"{EXPERIMENT}/report",
        "Why a container loses KV cache: seven conditions on vLLM's CPU backend",
        "2026-11-26",
    ),
    (
        GPU_RESULTS,
        "docs/gpu/report",
        "The study's models on discrete GPUs: native vs a 16 GiB cgroup v2",
        "2026-11-26",
    ),
    (
        f"{SIZING_EXPERIMENT}/results",
        f"{SIZING_EXPERIMENT}/report",
        "A cgroup limit vLLM's CPU backend cannot see, against native: the KV by its sizing equation",
        "2026-11-30",
    ),
    (
        f"{LADDER_EXPERIMENT}/results",
        f"{LADDER_EXPERIMENT}/report",
        "An isolation ladder on vLLM's CPU backend: native to the study's flags, one feature at a time",
        "2026-11-30",
    ),
    (
        "docs/gpu-tp2/results",
        "docs/gpu-tp2/report",
        "Llama-3.1-8B (config only) in tensor parallel 2 on two H200s",
        "2026-11-30",
    ),
    (
        ("docs/gpu-graphs/results", "docs/gpu-graphs/results-tp2", *GRAPHS_LARGE_RESULTS),
        "docs/gpu-graphs/report",
        "CUDA graphs (as vllm serve starts) against eager mode, on H200s",
        "2026-12-01",
    ),
    (
        f"{RAY_GPU}/results",
        f"{RAY_GPU}/report",
        "Llama-3.1-8B (config only) in tensor parallel 2 over a two-node Ray cluster, one H200 a node",
        "2026-11-30",
    ),
    (
        "docs/multinode/cpu-2026-11-26/results",
        "docs/multinode/cpu-2026-11-26/report",
        "The tiny model over a two-node Ray cluster (vLLM's CPU backend)",
        "2026-11-26",
    ),
)
PHASES = (
    ("import", "engine_start"),
    ("engine_start", "weights_loaded"),
    ("weights_loaded", "kv_allocated"),
    ("kv_allocated", "ready"),
    ("generated", "filled"),
)


def load(results: str | tuple[str, ...]) -> list[ResultDocument]:
    documents = []
    for directory in (results,) if isinstance(results, str) else results:
        loaded, problems = ResultStore(ROOT / directory).load_all()
        if problems:
            raise SystemExit("\n".join(problems))
        documents += [doc for _, doc in loaded]
    return documents


def report_files(results: str | tuple[str, ...], title: str, date: str) -> dict[str, bytes]:
    options = ReportOptions(title=title, date=date)  # report.md, titled, for reading on the forge
    return render_report(build_report(load(results)), list(FORMATS), options)


BEFORE_FILL_FIX = "docs/gpu/h100-gpt-oss-120b/results-before-fill-fix"
# Results from before kvprobe recorded its commit (environment.software.kvprobe_commit): the commit
# whose code made them, from the project's history, and printed as such.
COMMIT_NOT_RECORDED = {
    "docs/gpu-h200/results": "c781ffe",
    "docs/gpu-h100/results": "70579b6",
    "docs/gpu/h200-qwen2.5-72b-instruct-fp8/results": "3cd3c3e",
    "docs/gpu/h100-gpt-oss-120b/results": "c9dee04",
}


def seconds(values: list[float]) -> str:
    return f"{sum(values):.0f}"


def measured_at(results: str) -> str:
    """The kvprobe commit(s) the results record, or the project history's where they predate the record."""
    recorded = sorted({str(d.environment.software.get("kvprobe_commit")) for d in load(results)} - {"None"})
    if recorded:
        return ", ".join(c[:12] if c != "unknown" else "unknown (not a git checkout)" for c in recorded)
    return f"{COMMIT_NOT_RECORDED[results]} (by the project's history: these results predate the recorded commit)"


def one_boot(rows: list[dict]) -> None:
    if len({row["boot_id"] for row in rows}) != 1:
        raise SystemExit("benchmark rows from different boots: not one machine, not comparable")


SAME_FIGURES = ("u_max", "u_min", "kv_u_max_blocks", "physical_blocks")


VARIANTS = {
    "before": "`--prestart off --kv-approach from-below`: the search as it was before this round",
    "prestart-off": "`--prestart off`: no overlap; kv_blocks from above (the default on a discrete GPU: a budget "
    "that does not fit fails at its allocation, before any fill)",
    "prestart-auto": "the defaults: on this discrete GPU the next two trials' workers import while a trial runs; "
    "kv_blocks from above",
}


def warm_up_words(row: dict) -> str:
    """The warm-up that row's machine ran (rows made before --warm-up took searches ran one start)."""
    searches = row.get("warm_up") or "reference"
    return "one reference start" if searches == "reference" else f"the searches {searches.replace(',', ', ')}"


def search_speed_section(rows: list[dict], raw: str, title: str, change: str) -> list[str]:
    """One machine's runs of the whole search: the same search with and without overlapping imports,
    and (where it ran) the search as it was before."""
    one_boot(rows)
    first = rows[0]
    runs = {v: [r for r in rows if r["variant"] == v] for v in VARIANTS}
    off, on = (statistics.mean(r["wall_s"] for r in runs[v]) for v in ("prestart-off", "prestart-auto"))
    pairs = [o["wall_s"] / a["wall_s"] for o, a in zip(runs["prestart-off"], runs["prestart-auto"], strict=True)]
    same = all(r[k] == first[k] for r in rows for k in SAME_FIGURES)
    tried = [{json.dumps([r["utilizations"], r["kv_cache_memory_bytes"]]) for r in runs[v]} for v in runs]
    lines = [
        f"### {title}",
        "",
        f"{first['device']}, boot {first['boot_id'][:8]}, vLLM {first['vllm']}, kvprobe at commit",
        f"{first['kvprobe_commit']} ({change}), {first['finished_at'][:10]}; before run 1 an untimed warm-up ran "
        f"{warm_up_words(first)} ({first['warm_up_s']:.0f} s).",
        f"Raw rows: `{raw}.json`; each run's results, journal, trial specs and engine logs: `{raw}/`.",
        "",
        *[f"- *{v}*: {VARIANTS[v]};" for v in VARIANTS if runs[v]],
        "",
        "The fill column is the worker's fill timer (`fill_s`: from the fill requests' start until they finished or",
        "the cache had stayed full, summed over the run's fill tests); the first-fill table below uses phase marks",
        "(KV allocated to ready: the engine's warm-up), a different interval.",
        "",
        "| run | variant | prestarted starts | kv_blocks from | engine starts | fill tests | fill_s (s) | wall (s) "
        "| per start (s) | u_max | KV blocks at u_max | physical KV blocks |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for number, row in enumerate(rows, 1):
        fills = [f for f in row["fill_s"] if f is not None]
        lines.append(
            f"| {number} | {row['variant']} | {sum(row['prestarted'])} | {row['kv_approach'].replace('_', ' ')} | "
            f"{row['engine_starts']} | {len(fills)} | {sum(fills):.1f} | {row['wall_s']:.1f} | "
            f"{row['wall_s'] / row['engine_starts']:.1f} | {row['u_max']} | {row['kv_u_max_blocks']:,} | "
            f"{row['physical_blocks']:,} |"
        )
    per_pair = ", ".join(f"{p:.3f}x" for p in pairs)
    spread = (
        f" (mean {statistics.mean(pairs):.3f}x, standard deviation {statistics.stdev(pairs):.3f}, "
        f"lowest {min(pairs):.3f}x)"
        if len(pairs) > 2
        else ""
    )
    off_imports = [i for r in runs["prestart-off"] for i in r["import_s"] if i is not None]
    met = "met in every pair" if min(pairs) >= 1.8 else "met by the means only" if off / on >= 1.8 else "not met"
    lines += [
        "",
        f"- **Overlap alone** (the same search, prestart-off against prestart-auto): {off / on:.3f}x"
        + (
            f" by mean wall time ({off:.1f} s to {on:.1f} s); per pair in run order {per_pair}{spread}."
            if len(pairs) > 1
            else f" ({off:.1f} s to {on:.1f} s), one pair."
        ),
        f"  The issue's goal of 1.8x is {met} here. What overlap hides is imports: the prestart-off starts' "
        f"imports took {statistics.mean(off_imports):.1f} s on average here.",
    ]
    lines += drift_lines(rows)
    if runs["before"]:
        before = statistics.mean(r["wall_s"] for r in runs["before"])
        lines.append(
            f"- **Against the search as it was** (before, {len(runs['before'])} run): {before / on:.3f}x "
            f"({before:.1f} s to {on:.1f} s)."
        )
    lines += [
        f"- The figures are {'identical in every run' if same else 'NOT the same in every run'} (u_max, u_min, KV",
        "  blocks at u_max, physical KV blocks); the settings tried are "
        + ("the same within each kv_blocks approach." if all(len(t) <= 1 for t in tried) else "NOT the same."),
        "",
    ]
    return lines


OVERLAP_OFF, OVERLAP_ON = ("prestart-off", "prestart=off"), ("prestart-auto", "prestart=on")


def speedup_section(machines: list[tuple[str, str]]) -> list[str]:
    """Every machine's whole-search pairs side by side: no overlap against overlapping imports, the
    order within each pair and the warm-up, the drift-adjusted ratio where a machine ran more than one
    pair, and what the ratio depends on. `machines`: (raw rows file, what its commit did)."""
    table = []
    for raw, change in machines:
        every_row = json.loads((ROOT / f"{raw}.json").read_text())  # numbered in run order, `before` runs too
        rows = [r for r in every_row if r["variant"] in OVERLAP_OFF + OVERLAP_ON]
        one_boot(rows)
        offs = [r for r in rows if r["variant"] in OVERLAP_OFF]
        ons = [r for r in rows if r["variant"] in OVERLAP_ON]
        ratios = [off["wall_s"] / on["wall_s"] for off, on in zip(offs, ons, strict=True)]
        first = "overlap first" if rows[0]["variant"] in OVERLAP_ON else "no overlap first"
        warm = f"{warm_up_words(rows[0])} ({rows[0]['warm_up_s']:.0f} s)" if rows[0].get("warm_up_s") else "none"
        fit = drift_fit([{**r, "variant": _overlap_name(r)} for r in every_row])
        imports = [i for r in offs for i in r["import_s"] if i is not None]
        table.append(
            f"| {rows[0]['device']}, boot {rows[0]['boot_id'][:8]} | {rows[0]['kvprobe_commit']} ({change}) | "
            f"{warm} | {len(ratios)}, {first} | {', '.join(f'{x:.2f}x' for x in ratios)} | "
            f"{statistics.mean(o['wall_s'] for o in offs) / statistics.mean(o['wall_s'] for o in ons):.2f}x | "
            f"{f'{fit[0]:.2f}x' if fit else '-'} | {statistics.mean(imports):.1f} | `{raw}.json` |"
        )
    return [
        "## The speed-up of overlapping imports, every machine side by side",
        "",
        "The whole search of deepseek-r1-distill-qwen-7b without overlap (`--prestart off`) against",
        "overlapping imports (the default on a discrete GPU), from the raw rows named in each line. Ratio:",
        "wall time without overlap / with it; the drift-adjusted figure fits one straight line of wall time",
        "against the run number shared by both variants (each its own level) and reads the ratio at the",
        "middle run, where a machine ran two pairs or more.",
        "",
        "| machine | kvprobe commit | warm-up before run 1 | pairs, order | ratio per pair | ratio of means "
        "| drift-adjusted | mean import without overlap (s) | raw rows |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | --- |",
        *table,
        "",
        "What the speed-up depends on, as these machines show it:",
        "",
        "- **Import time.** Overlap hides the next trials' imports behind the running trial, so the time it",
        "  can save is about the imports of every start but the first (the mean import column). The rows",
        "  differ in commit as well as machine, so the table does not separate import time from the rest.",
        "- **What cannot overlap.** A fill test's generation and the engine's own start after its imports",
        "  run in the trial itself; the H200 row's commit still approached the physical capacity from below",
        "  (its kv_blocks trials took 200 s of the 271 s), which the later commits do not.",
        "- **Order and warm-up.** The variant that runs first on a cold machine pays for cold file and kernel",
        "  caches; every pair here ran in one order only, so the drift-adjusted figure is the most the design",
        "  supports.",
        "- **Tensor parallelism.** At 2+ ranks prestart is off (vLLM's config build initializes CUDA there):",
        "  no overlap and no speed-up (`docs/gpu-tp2/`).",
        "- Issue 29 reports one more H200 pair (1.32x); its raw rows are not committed, so it is not in",
        "  the table.",
        "",
    ]


def _overlap_name(row: dict) -> str:
    """The H200 rows' variant names (prestart=off, prestart=on) as the H100 rows spell them."""
    names = dict.fromkeys(OVERLAP_OFF, "prestart-off") | dict.fromkeys(OVERLAP_ON, "prestart-auto")
    return names.get(row["variant"], row["variant"])


def drift_fit(rows: list[dict]) -> tuple[float, float] | None:
    """(the ratio no overlap / overlap at the middle run with a shared linear drift taken out, that
    drift in seconds a run); None with fewer than two runs of each variant."""
    both = [(n, r) for n, r in enumerate(rows) if r["variant"] in ("prestart-off", "prestart-auto")]
    off_runs = [n for n, r in both if r["variant"] == "prestart-off"]
    if len(off_runs) < 2 or len(both) - len(off_runs) < 2:
        return None
    design = numpy.array(
        [[r["variant"] == "prestart-off", r["variant"] == "prestart-auto", n] for n, r in both], dtype=float
    )
    (level_off, level_auto, drift), *_ = numpy.linalg.lstsq(design, [r["wall_s"] for _, r in both], rcond=None)
    middle = statistics.mean(n for n, _ in both)
    return float((level_off + drift * middle) / (level_auto + drift * middle)), float(drift)


def drift_lines(rows: list[dict]) -> list[str]:
    """What the run order can and cannot support: wall time drifting with the run number is fitted as
    one straight line shared by both variants (least squares, each variant its own level), and the
    ratio read at the middle run; the pairs read the other way round show how much the order matters."""
    fit = drift_fit(rows)
    if fit is None:
        return []
    adjusted, drift = fit
    both = [(n, r) for n, r in enumerate(rows) if r["variant"] in ("prestart-off", "prestart-auto")]
    walls = [r["wall_s"] for _, r in both]
    other_way = [
        walls[i] / walls[i + 1] if both[i][1]["variant"] == "prestart-off" else walls[i + 1] / walls[i]
        for i in range(1, len(both) - 1, 2)
    ]
    first = both[0][1]["variant"]
    return [
        f"- **What this design supports**: {first} ran first in every pair, and wall time drifted by"
        f" {drift:+.1f} s a run ({100 * drift / statistics.mean(walls):+.1f}% of the mean wall time; a straight line"
        " shared by both variants, fitted to the raw rows). With that drift taken out the ratio at the middle run is"
        f" {adjusted:.2f}x; pairing each run with the next one instead"
        f" ({', '.join(f'{p:.2f}x' for p in other_way)}) shows the size of the order effect. The order was never"
        " reversed, so the drift and the variant cannot be told apart beyond that line.",
    ]


def fill_start_section(machines: list[tuple[list[dict], list[str]]]) -> list[str]:
    """KV allocation to ready in each run's passing kv_blocks start, in run order on each machine
    (its bench rows, and its runs' result folders in the same order)."""
    table, firsts = [], []
    for rows, folders in machines:
        gaps = []
        for number, (row, folder) in enumerate(zip(rows, folders, strict=True), 1):
            (doc,) = load(folder)
            marks = next(t for t in reversed(doc.trials) if t.search == "kv_blocks" and t.passed).memory.phases
            gaps.append(marks["ready"].t - marks["kv_allocated"].t)
            table.append(f"| {row['boot_id'][:8]} | {number} | {row['variant']} | {gaps[-1]:.1f} |")
        firsts.append((rows[0]["variant"], gaps[0], max(gaps[1:]), warm_up_words(rows[0])))
    slowest_first = all(first > later for _, first, later, _ in firsts)
    lines = [
        "### The first fill start on each machine",
        "",
        "From KV allocated to ready (the engine's warm-up) in each run's passing kv_blocks start, in run order",
        "(seconds; phase marks in the results above). The first run on each machine: "
        + "; ".join(
            f"{variant} after a warm-up of {warm_up}, {first:.1f} s against at most {later:.1f} s later"
            for variant, first, later, warm_up in firsts
        )
        + (". On every machine the first fill start was the slowest." if slowest_first else "."),
        "",
        "| machine (boot) | run | variant | KV allocated to ready (s) |",
        "| --- | ---: | --- | ---: |",
        *table,
    ]
    return [*lines, ""]


def preparation_section(folders: list[str], attention_rows: list[dict], attention_raw: str) -> list[str]:
    """Engine start to weights loaded, for starts whose worker prepared while it waited (its log has
    the `prepare` mark) against the rest, on one machine; and the run that also selected the
    attention backend while waiting."""
    spans: dict[bool, list[float]] = {True: [], False: []}
    for folder in folders:
        (doc,) = load(folder)
        for trial in doc.trials:
            marks = trial.memory.phases
            if "engine_start" in marks and "weights_loaded" in marks:
                spans["prepare" in marks].append(marks["weights_loaded"].t - marks["engine_start"].t)

    def row(prepared: bool) -> str:
        values = spans[prepared]
        return (
            f"| {'yes' if prepared else 'no'} | {len(values)} | {statistics.mean(values):.2f} | "
            f"{statistics.stdev(values):.2f} | {min(values):.2f} | {max(values):.2f} |"
        )

    (attention,) = attention_rows
    return [
        "### What the waiting worker prepares",
        "",
        "A waiting worker builds an engine config like the running trial's and imports the engine's worker",
        "class and the model class; vLLM forks its engine core from the worker, so the engine inherits them.",
        "From engine start to weights loaded (vLLM's config, its engine core's start, the model's construction",
        "and dummy weights), every start of the third machine's runs, whether its worker had prepared:",
        "",
        "| prepared | starts | mean (s) | standard deviation (s) | min (s) | max (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        row(True),
        row(False),
        "",
        "What this table cannot separate: a worker prepares only while it waits, so every prepared start was also",
        "prestarted (its imports overlapped the trial before), and the unprepared starts are those that were not",
        "prestarted, or whose preparation had not finished. The difference belongs to prestart with preparation",
        "together; no run prestarted without preparing.",
        "",
        f"Selecting the attention backend while waiting too (commit {attention['kvprobe_commit']}, another H100 boot,",
        f"one prestart-auto run, raw in `{attention_raw}`) imported FlashInfer, which initializes CUDA at",
        "import: the worker recorded "
        + ("`cuda_initialized`" if attention["cuda_initialized_while_waiting"] else "no CUDA use (unexpected)")
        + ", vLLM then spawned its engine core instead of forking it, and the search took "
        + f"{attention['wall_s']:.0f} s.",
        "That step was dropped.",
        "",
    ]


def kv_blocks_walls(outcome: str) -> str:
    """The range of wall times of the H200 control's kv_blocks trials with this outcome."""
    walls = [
        t.wall_s
        for d in load("docs/gpu-h200/results")
        for t in d.trials
        if t.search == "kv_blocks" and t.outcome == outcome
    ]
    return f"{min(walls):.1f}-{max(walls):.1f}"


def prestart_section(rows: list[dict]) -> list[str]:
    one_boot(rows)
    off, on = (next(r for r in rows if r["variant"] == f"prestart={v}") for v in ("off", "on"))
    lines = [
        "## Earlier: the whole search with and without overlapping imports on an H200",
        "",
        "`scripts/bench_search.py --vary prestart=off,on` ran the whole search (reference, u_max, u_min,",
        "kv_blocks; tolerance 0.01, range 0.05-1.0, `--no-confirm` so that each variant fits one 10-minute",
        f"device call) of {off['model']} twice on one machine, one variant after the other, on the same",
        f"boot (boot id {off['boot_id'][:8]}): {off['device']}, vLLM {off['vllm']}, kvprobe at commit",
        f"{off['kvprobe_commit']}, {off['finished_at'][:10]}. With prestart at that commit, the next trial's worker",
        "(one, not two) imported vLLM while the current trial ran; kv_blocks came from below; no warm-up start",
        "(the first variant, prestart off, paid for cold caches in its first start).",
        "",
        "| prestart | engine starts | wall (s) | trial time (s) | per start (s) | mean import (s) | u_max | "
        "KV blocks at u_max | physical KV blocks |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in (off, on):
        imports = [i for i in row["import_s"] if i]
        lines.append(
            f"| {row['variant'].split('=')[1]} | {row['engine_starts']} | {row['wall_s']:.0f} | "
            f"{seconds(row['trial_wall_s'])} | {sum(row['trial_wall_s']) / row['engine_starts']:.1f} | "
            f"{statistics.mean(imports):.1f} | {row['u_max']} | {row['kv_u_max_blocks']:,} | "
            f"{row['physical_blocks']:,} |"
        )
    ratio = off["wall_s"] / on["wall_s"]
    same = all(off[k] == on[k] for k in ("u_max", "u_min", "kv_u_max_blocks", "physical_blocks", "utilizations"))
    fills = [w for w, u in zip(on["trial_wall_s"], on["utilizations"], strict=True) if u is None]
    lines += [
        "",
        f"Whole search {ratio:.2f}x faster with prestart ({off['wall_s']:.0f} s to {on['wall_s']:.0f} s); the figures "
        f"{'are identical' if same else 'DIFFER'} (u_max, u_min, KV blocks, every setting tried). The goal was 1.8x:",
        f"not met here. The {len(fills)} kv_blocks trials take {seconds(fills)} s of the",
        f"{seconds(on['trial_wall_s'])} s of trials with prestart and cannot overlap; imports are what overlaps.",
        "The raw row records no trial's outcome, so how many of them filled the cache is not known from it;",
        "in the H200 control's results (`docs/gpu-h200/results`) a kv_blocks trial that fills takes",
        f"{kv_blocks_walls('ok')} s and one refused at its allocation {kv_blocks_walls('oom')} s.",
        "",
    ]
    return lines


def strategy_section(rows: list[dict]) -> list[str]:
    first = rows[0]
    lines = [
        "## u_max search: bracketed against plain bisection",
        "",
        "`scripts/bench_search.py --vary strategy=bracketed,bisection --searches u_max --container 4g`: the",
        f"tiny model in a {first['container']} podman container, range {first['range']}, tolerance",
        f"{first['tolerance']}; {first['device']} ({first['host']}), vLLM {first['vllm']}, kvprobe at commit",
        f"{first['kvprobe_commit']}, {first['finished_at'][:10]}. *Bracketed* predicts u_max from the first",
        "start's memory report; *bisection* halves the range.",
        "",
        "| strategy | engine starts | wall (s) | trial time (s) | u_max | utilizations tried |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant'].split('=')[1]} | {row['engine_starts']} | {row['wall_s']:.0f} | "
            f"{seconds(row['trial_wall_s'])} | {row['u_max']} | {', '.join(map(str, row['utilizations']))} |"
        )
    return [*lines, ""]


def phase_section(results: str, run: str = "native") -> list[str]:
    (doc,) = [d for d in load(results) if d.label == "native"]
    lines = [
        f"## Time per trial: {doc.device}, {doc.model}, {run}",
        "",
        f"From the phase marks in `{results}` (seconds). *To engine start*: the imports, or for a prestarted",
        "worker what was left of them when its trial began; then weights (dummy), profiling, KV allocation",
        "and warm-up, the fill test; teardown until the process group is gone and NVML shows the device",
        "back at its baseline:",
        "",
        "| trial | search | setting | outcome | prestarted | to engine start | weights | profiling | KV + warm-up "
        "| fill | teardown |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for trial in doc.trials:
        marks = {name: sample.t for name, sample in trial.memory.phases.items()}
        spans = [f"{marks[b] - marks[a]:.1f}" if a in marks and b in marks else "-" for a, b in PHASES]
        setting = (
            f"u={trial.utilization}" if trial.utilization is not None else f"{gib(trial.kv_cache_memory_bytes)} GiB"
        )
        lines.append(
            f"| {trial.number} | {trial.search} | {setting} | {trial.outcome} | {trial.prestarted} | "
            f"{' | '.join(spans)} | {trial.teardown_s:.1f} |"
        )
    return [*lines, ""]


def run_number(folder: str) -> int:
    """N of a kept run's folder N-VARIANT (run 10 sorts after run 9)."""
    return int(Path(folder).name.split("-", 1)[0])


ESTIMATE_LINE = re.compile(r"about (\d+) engine starts, estimated (\d+) min at (\d+) s a start")


def experiment_section() -> list[str]:
    """The CPU demo matrix's duration beside the estimate `kvprobe experiment` printed before it ran."""
    run = json.loads((ROOT / EXPERIMENT / "run.json").read_text())
    log = " ".join((ROOT / EXPERIMENT / "experiment.log").read_text().split())
    starts_estimated, minutes_estimated, per_start_estimated = ESTIMATE_LINE.search(log).groups()
    trials = [t for doc in load(f"{EXPERIMENT}/results") for t in doc.trials]
    took = run["finished_at"] - run["started_at"]
    return [
        "## The CPU demo experiment: its duration and the estimate",
        "",
        f"`kvprobe experiment experiments/cpu-demo.yaml` ({EXPERIMENT}/), {run['machine']}, commit",
        f"{run['commit']}. The estimate is what the command printed before its first start (no earlier",
        "trials in the directory, so an assumed time per start); `--dry-run` prints the same.",
        "",
        "| | engine starts | time per start (s) | total (min) |",
        "| --- | ---: | ---: | ---: |",
        f"| estimated | {starts_estimated} | {per_start_estimated} | {minutes_estimated} |",
        f"| measured | {len(trials)} | {took / len(trials):.0f} | {took / 60:.0f} |",
        "",
        *run["notes"][:1],
        "",
    ]


def experiment_readme() -> str:
    """docs/experiments/cpu-.../README.md: what ran, where, and what the report is made from."""
    run = json.loads((ROOT / EXPERIMENT / "run.json").read_text())
    documents = load(f"{EXPERIMENT}/results")
    first = documents[0]
    spec = first.experiment
    counts = {name: sum(1 for d in documents if d.condition == name) for name in spec.conditions}
    starts = sum(len(d.trials) for d in documents)
    lines = [
        f"# Experiment {spec.name}: why a container loses KV cache, on vLLM's CPU backend",
        "",
        "Made by `scripts/make_docs.py`. Ran from the repository root as",
        "",
        "```",
        RAN_AS,
        "```",
        "",
        f"at kvprobe commit {run['commit']}, where `experiments/cpu-demo.yaml` was this folder's",
        "[`experiment.yaml`](experiment.yaml). Today's `experiments/cpu-demo.yaml` runs the same conditions with the",
        "same command: it states `ipc_host: false` (a private 1 GiB /dev/shm, as recorded in each container",
        "result's command line) and `stack: none`, which that commit's kvprobe took as its defaults; today's",
        "default would be `--ipc host`. The copy here keeps its model path relative to the repository's",
        "`experiments/`, so it runs only from there.",
        "",
        f"Machine: {run['machine']}. The machine's MemTotal in /proc/meminfo at the first cell was",
        f"{gib(first.environment.host_memory['MemTotal'])} GiB; the engine's memory total (the NUMA node's",
        "MemTotal, which vLLM's CPU backend multiplies gpu_memory_utilization by, from its log) is a separate",
        f"figure, per cell in the report. vLLM {first.versions.vllm}, torch {first.versions.torch};",
        f"{starts} engine starts in {(run['finished_at'] - run['started_at']) / 60:.0f} min (the file's comment",
        f"estimated 45 min; the run printed {printed_estimate()} min, at 42 s a start).",
        "Files: [`experiment.yaml`](experiment.yaml) and",
        "[`cpu-demo-models.yaml`](cpu-demo-models.yaml) as run, [`results/`](results/) (result JSON,",
        "`experiment.json`, journals, trial specs and engine logs), [`experiment.log`](experiment.log) (the",
        "command's output), [`report/`](report/report.md) (the report, made from `results/`).",
        "",
        f"Baseline `{spec.baseline}`; the loss held against: `{spec.explains}`. Runs per condition:",
        "",
        "| condition | results |",
        "| --- | ---: |",
        *[f"| {name} | {n} |" for name, n in counts.items()],
        "",
        'What the numbers say is in the report\'s "Why" section, stated only where the data show a change.',
        "",
        "Notes on this machine (measured facts, not conclusions):",
        "",
        *[f"- {note}" for note in run["notes"]],
        "",
    ]
    return "\n".join(lines)


RAN_AS = (
    "python scripts/make_random_weights.py configs/tiny-llama-1g .weights/tiny-llama-1g\n"
    "kvprobe experiment experiments/cpu-demo.yaml --out results-cpu-demo"
)


def printed_estimate() -> int:
    """The estimate in minutes the experiment printed when it started (its log)."""
    log = (ROOT / EXPERIMENT / "experiment.log").read_text()
    found = re.search(r"estimated (\d+) min", log)
    assert found, "experiment.log: no estimate printed"
    return int(found.group(1))


def sizing_experiment_readme() -> str:
    """docs/experiments/sizing-cpu-.../README.md: what ran, and each run's KV against vLLM's CPU equation."""
    documents = sorted(load(f"{SIZING_EXPERIMENT}/results"), key=lambda d: d.started_at)
    first = documents[0]
    lines = [
        f"# Experiment {first.experiment.name}: a cgroup limit vLLM's CPU backend cannot see, by its sizing equation",
        "",
        "Made by `scripts/make_docs.py`. Ran as",
        "",
        "```",
        "kvprobe experiment experiments/sizing-cpu.yaml --out results",
        "```",
        "",
        f"on this project's CPU machine ({gib(first.environment.host_memory['MemTotal'])} GiB MemTotal at the first",
        f"cell), vLLM {first.versions.vllm}, torch {first.versions.torch}. Files: [`experiment.yaml`](experiment.yaml)",
        "as run (its `models: ../models.yaml` is the repository's [`models.yaml`](models.yaml), copied here),",
        "[`results/`](results/) (result JSON with each trial's memory samples and `sizing_checks`,",
        "`experiment.json`, journals, trial specs and engine logs), [`experiment.log`](experiment.log) (the",
        "command's output), [`report/`](report/report.md) (the report; its \"By the engine's sizing equation\"",
        "table splits the KV difference into the equation's input changes with the residual). The checkout's",
        "and the virtual environment's directories in the committed files were rewritten to `/srv/kvprobe`.",
        "",
        "Each run's reference start against vLLM's CPU equation, ceil(utilization x the NUMA node's MemTotal)",
        "- the worker's resident memory (the limit sits on a cgroup below the mount's root, where vLLM",
        "does not read it), with what kvprobe sampled at the sizing moment (`weights_loaded`):",
        "",
        "| run | condition | predicted (GiB) | engine (GiB) | residual (bytes) | agrees | MemAvailable (GiB) "
        "| MemFree (GiB) | Cached (GiB) | Shmem (GiB) | cgroup usage / limit (GiB) |",
        "| ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for doc in documents:
        for check in all_checks(doc):
            at = check.at_sizing
            cgroup = f"{gib(at.cgroup_usage)} / {gib(at.cgroup_limit)}" if at and at.cgroup_limit else "-"
            lines.append(
                f"| {doc.repeat} | {doc.condition} | {gib(check.predicted_kv_bytes, 3)} | "
                f"{gib(check.engine_kv_bytes, 3)} | {check.residual_bytes:+,} | {'yes' if check.agrees else 'NO'} | "
                f"{gib(at and at.host_available)} | {gib(at and at.host_free)} | {gib(at and at.page_cache)} | "
                f"{gib(at and at.shmem, 3)} | {cgroup} |"
            )
    return "\n".join(lines) + "\n"


def commits_line(documents: list[ResultDocument]) -> str:
    """Which kvprobe commits the cells ran (each cell is a new kvprobe process: it runs the checkout
    as it is when the cell starts)."""
    counts: dict[str, int] = {}
    for doc in sorted(documents, key=lambda d: d.started_at):
        commit = doc.environment.software.get("kvprobe_commit") or "unknown"
        key = commit[:7] + ("-modified" if commit.endswith("-modified") else "")
        counts[key] = counts.get(key, 0) + 1
    if len(counts) == 1:
        return f"Every cell ran kvprobe commit {next(iter(counts))}."
    listed = ", ".join(f"{commit} ({n} results)" for commit, n in counts.items())
    return (
        f"The cells ran kvprobe commits {listed}, in that order: each cell is a new kvprobe process and runs the "
        "checkout as it is when the cell starts, and commits landed during the run. Between them kvprobe's "
        "source changed in its report, TensorRT-LLM's adapter, input checks, the way a worker writes its "
        "result file and (during the third repeat) the experiment's resume check and the Ray agents; nothing "
        "that sets a vLLM trial's arguments or figures (the committed diff shows it). The third repeat ran "
        "from `--resume` with the experiment file's bytes as run: a first `--resume` after a comment in the "
        "file had been edited restarted at cell 1 (the resume check then compared the file's bytes; it now "
        "compares its settings) and was stopped within a minute, its files removed."
    )


def progress_line(experiment: dict, documents: list[ResultDocument], rungs: int) -> str:
    """How far the experiment got (its manifest, experiment.json), and each full repeat's duration."""
    done, unfinished = len(experiment["done"]), len(experiment["unfinished"])
    repeats = sorted({d.repeat for d in documents})
    took = {
        r: max(d.finished_at for d in documents if d.repeat == r)
        - min(d.started_at for d in documents if d.repeat == r)
        for r in repeats
        if sum(1 for d in documents if d.repeat == r) == rungs
    }
    durations = ", ".join(f"repeat {r} took {seconds / 60:.0f} min" for r, seconds in took.items())
    if experiment["status"] == "finished":
        return f"All {done} cells finished ({durations})."
    return (
        f"It was stopped after {done} cells ({len(took)} full repeat(s) of the {rungs} rungs, {unfinished} cell(s) "
        f"unfinished; {durations}): the third repeat did not fit in this session. `experiment.json` keeps the "
        "run: `--resume` runs the rest, and the report lists what is missing."
    )


def ladder_readme() -> str:
    """docs/experiments/ladder-cpu-.../README.md: what ran, what each rung was as recorded inside it."""
    documents = sorted(load(f"{LADDER_EXPERIMENT}/results"), key=lambda d: d.started_at)
    first = documents[0]
    spec = first.experiment
    experiment = json.loads((ROOT / LADDER_EXPERIMENT / "results" / "experiment.json").read_text())
    took = max(d.finished_at for d in documents) - min(d.started_at for d in documents)
    starts = sum(len(d.trials) for d in documents)
    lines = [
        f"# Experiment {spec.name}: an isolation ladder on vLLM's CPU backend",
        "",
        "Made by `scripts/make_docs.py`. Ran from the repository root, as root, as",
        "",
        "```",
        "kvprobe experiment experiments/ladder-cpu.yaml --out results",
        "```",
        "",
        f"on this project's CPU machine (2 cores, {gib(first.environment.host_memory['MemTotal'])} GiB MemTotal at",
        f"the first cell), podman with runc, vLLM {first.versions.vllm}, torch {first.versions.torch}.",
        f"{len(documents)} results, {starts} engine starts in {took / 60:.0f} min, {spec.order}.",
        progress_line(experiment, documents, len(spec.conditions)),
        "Files:",
        "[`experiment.yaml`](experiment.yaml) and [`cpu-demo-models.yaml`](cpu-demo-models.yaml) as run,",
        "[`results/`](results/) (result JSON, `experiment.json`, journals, trial specs and engine logs),",
        "[`experiment.log`](experiment.log) (the command's output), [`report/`](report/report.md) (the report:",
        "its ladder section holds each step against the one before, with the step's sizing-equation inputs).",
        "The checkout's directory in the committed files was rewritten to `/srv/kvprobe`.",
        "",
        commits_line(documents),
        "",
        "Each rung as kvprobe recorded it from inside the run (the cgroup it ran in and its limit, the",
        "size of /dev/shm, the runtime's command line for a container rung, the root for the chroot):",
        "",
        "| rung | what | results | cgroup (limit) | /dev/shm (GiB) | how the side was made |",
        "| --- | --- | ---: | --- | ---: | --- |",
    ]
    for name in spec.conditions:
        runs = [d for d in documents if d.condition == name]
        if not runs:
            lines.append(f"| {name} | - | 0 | - | - | - |")
            continue
        doc = runs[0]
        env, made = doc.environment, doc.options.container
        limit = "none" if env.cgroup.limit_bytes is None else f"{gib(env.cgroup.limit_bytes)} GiB"
        if made is None:
            how = "this machine's own install"
        elif made.runtime == "chroot":
            how = f"chroot of `{made.rootfs}`, {len(made.mounts)} mounts"
        else:  # the runtime's flags, up to the image or root it ran
            flags = made.command[: made.command.index("--rootfs")] if "--rootfs" in made.command else made.command
            how = "`" + " ".join(flags) + "`"
        lines.append(
            f"| {name} | {describe(env.condition) if env.condition else '-'} | {len(runs)} | "
            f"`{env.cgroup.path}` ({limit}) | {gib(env.shm_bytes)} | {how} |"
        )
    lines += [
        "",
        "What the numbers say is in the report's ladder section, stated only where the runs show a change.",
        "Other work ran on this machine during parts of the run (kvprobe's own tests): it lowers MemAvailable,",
        "and so the u_max that kvprobe's guard sets (the report names which boundary set each u_max). The KV at",
        "gpu_memory_utilization does not depend on it: vLLM's CPU backend sizes it from the node's MemTotal",
        "and its own resident memory, and every start's sizing check in the results says whether it agreed.",
        "The rung without a cgroup of its own (podman `--cgroups=disabled`) is not here: it needs crun, and",
        "Debian 12's crun refuses this machine's hybrid cgroup hierarchy. The study's memlock and stack",
        "ulimits are left out on every rung (this machine's root may not raise them in a container).",
        "",
    ]
    return "\n".join(lines)


TEST_SUITE = "docs/benchmarks/raw/test-suite.json"
RECHECK = "docs/benchmarks/raw/test-suite-pair-2-recheck.txt"  # pair 2's failures run again in the checkout


CPU_START_RUN = "tests/data/kv-blocks-container/tiny-llama/container-20261201T065242-67d0-r1.json"


def start_timeline() -> list[str]:
    """Where a real CPU start's time goes, from the phase marks of one committed run's trials."""
    document = load_result(ROOT / CPU_START_RUN)

    def spans(start: str, end: str) -> list[float]:
        found = []
        for trial in document.trials:
            phases = trial.memory.phases
            if start in phases and end in phases:
                found.append(phases[end].t - phases[start].t)
        return found

    def span(values: list[float]) -> str:
        return f"{min(values):.1f}-{max(values):.1f} s ({len(values)} starts)"

    filled = [t.wall_s for t in document.trials if t.passed and t.fill_target]
    plain = [t.wall_s for t in document.trials if t.passed and not t.fill_target]
    return [
        "",
        "Most of a real start's time passes before the engine has loaded its weights. In one run of the tiny",
        f"model in a 4 GiB podman container (`{CPU_START_RUN}`, its trials' phase marks), the probe's worker",
        f"took {span(spans('import', 'engine_start'))} from its start to its engine start (its import of vLLM);",
        f"from there to weights loaded took {span(spans('engine_start', 'weights_loaded'))}: vLLM's engine core",
        "and then its worker start, each a spawned process that imports vLLM again (vLLM's CPU platform forces",
        f"spawn), and the weights load. Weights to ready took {span(spans('weights_loaded', 'ready'))}, the",
        f"larger KV caches the longer. A whole passing start took {min(plain):.1f}-{max(plain):.1f} s",
        f"({len(plain)} starts), and {min(filled):.1f}-{max(filled):.1f} s with its fill test ({len(filled)}).",
    ]


def test_suite_section() -> list[str]:
    """The README's test command at `before` and at a later commit, pair by pair on one boot, from its rows."""
    rows = json.loads((ROOT / TEST_SUITE).read_text())
    assert len({row["boot_id"] for row in rows}) == 1, f"{TEST_SUITE}: rows from more than one boot"
    assert len(rows) % 2 == 0, f"{TEST_SUITE}: rows come in pairs"
    pairs = [rows[i : i + 2] for i in range(0, len(rows), 2)]
    befores = {row["commit"] for row in rows if row["variant"] == "before"}
    assert len(befores) == 1, f"{TEST_SUITE}: the pairs' `before` commits differ: {befores}"
    first = rows[0]
    lines = [
        "## The test suite on this project's 2-core CPU machine",
        "",
        "`scripts/bench_tests.py` ran the README's test command (`.venv/bin/python -m pytest`) at two commits,",
        f"one after the other, on one boot of a {first['cores']}-core machine ({first['cpu_model']},",
        f"{first['mem_total_kib'] / (1 << 20):.1f} GiB), in pairs against the same `before` ({len(pairs)} so far),",
        f"in the order below (raw rows: `{TEST_SUITE}`). The commits' tests differ: the later ones have more tests,",
        "and they test kvprobe's own machinery with a recorded-engine stand-in instead of real vLLM starts",
        "(8df9fd5: resume, lock, prestart, interrupts, the experiment runner; since ab9cd4a also a probe stopped",
        "mid-start and a measure from a serve command; since b7cb159 the kv_blocks search's better first guess",
        "on host memory, and the same real-engine assertions from fewer starts: u_min and the progress on a",
        "terminal in the window run, the ladder's chroot beside pair_run's native start); every test whose",
        "subject is the engine still starts real vLLM. One run a variant in each pair: no spread is measured,",
        "so each ratio is one pair's.",
        "",
        "| pair | order | variant | commit | wall (s) | pytest's summary | later / before |",
        "| ---: | ---: | --- | --- | ---: | --- | ---: |",
    ]
    for number, pair in enumerate(pairs, start=1):
        (before,) = [row for row in pair if row["variant"] == "before"]
        (later,) = [row for row in pair if row["variant"] != "before"]
        for order, row in enumerate(pair, start=1):
            ratio = f"{later['wall_s'] / before['wall_s']:.2f}" if row is later else ""
            lines.append(
                f"| {number} | {order} | {row['variant']} | `{row['commit'][:7]}` | {row['wall_s']:.0f} | "
                f"{row['summary']} | {ratio} |"
            )
    walls = [row["wall_s"] for row in rows if row["variant"] == "before"]
    killed_probe = "tests/test_multinode.py::test_a_killed_probe_leaves_nothing_on_any_node_after_resume"
    assert all(any(killed_probe in line for line in row["not_passed"]) for row in rows if row["variant"] == "before"), (
        f"{TEST_SUITE}: the text says the killed-probe test failed at every `before`"
    )
    (third_before,) = [row for row in pairs[2] if row["variant"] == "before"]
    (third_after,) = [row for row in pairs[2] if row["variant"] != "before"]
    assert not third_after["not_passed"], f"{TEST_SUITE}: the text says every test passed at pair 3's `after`"
    runner_failed = [line for line in third_before["not_passed"] if "test_experiment_run.py" in line]

    def runner_setup(row: dict) -> float:
        (seconds,) = [
            t["seconds"] for t in row["slowest"] if t["phase"] == "setup" and "test_experiment_run.py" in t["test"]
        ]
        return seconds

    other_setups = [runner_setup(row) for row in rows if row["variant"] == "before" and row is not third_before]
    (recheck,) = re.findall(r"^(\d+ passed in [\d.]+s)", (ROOT / RECHECK).read_text(), re.M)
    lines += [
        "",
        f"The same `before` took {min(walls):.0f} to {max(walls):.0f} s: the machine's speed moved between pairs,",
        "so compare a later commit with the `before` of its own pair only.",
        "",
        "Beside pair 1's `before` run a few short test files ran, under a minute in all. Tests failed in the",
        "benchmark's worktrees that pass in a checkout, for two reasons `bench_tests.py` has fixed since: in pair",
        "1 the worktrees sat in a directory of mode 0700, which the two tests that run kvprobe as another user",
        "(`setpriv`) cannot read; in pairs 1 and 2 the worktrees had no `.venv`, and the three tests that run",
        "`ROOT/.venv/bin/python` in a container of this machine's root failed at every commit (the worktree now",
        "links the checkout's). Every test that did not pass at a later commit passed when run again in the",
        "checkout at that commit: in pair 1 the four without an engine fixture and `test_engine_pair.py` whole",
        f"(not recorded); in pair 2 those three and `tests/test_predict.py` ({recheck}, `{RECHECK}`), whose",
        "measured-error figures took the pair's new GPU runs in the next commit. `test_multinode.py`'s killed-probe",
        "test failed at `before` (ef330ae) in every pair, and in pair 3 so did its experiment-runner tests",
        f"({len(runner_failed)}, one fixture); neither was run again, the old commit's tests being only the",
        f"yardstick. That fixture took {runner_setup(third_before):.0f} s at setup there, against",
        f"{min(other_setups):.0f}-{max(other_setups):.0f} s in the other `before` runs: part of pair 3's ratio is that",
        "failure's time, not the later commit's gain. In pair 3 every test passed at `after`.",
        *start_timeline(),
    ]
    for number, pair in enumerate(pairs, start=1):
        for row in pair:
            label = f"`{row['variant']}` in pair {number} ({row['commit'][:7]})"
            if row["not_passed"]:
                failed = [line.split(" - ")[0].split(" ", 1)[1] for line in row["not_passed"]]
                lines += ["", f"Not passed at {label}, its own tests:", ""]
                lines += [f"- `{test}`" for test in failed]
            lines += ["", f"The slowest tests at {label} (pytest's `--durations`):", ""]
            lines += ["| seconds | phase | test |", "| ---: | --- | --- |"]
            lines += [f"| {t['seconds']:.1f} | {t['phase']} | `{t['test']}` |" for t in row["slowest"][:10]]
    return [*lines, ""]


def benchmarks() -> str:
    raw = ROOT / "docs" / "benchmarks" / "raw"
    lines = [
        "# Benchmarks",
        "",
        "Speed goals live here, never in timed tests. Every table is made by `scripts/make_docs.py` from the",
        "raw rows and results named in it; each names its machine and commit.",
        "",
    ]
    if (ROOT / TEST_SUITE).exists():
        lines += test_suite_section()
    machines = [f"docs/benchmarks/raw/h100-search{suffix}" for suffix in ("", "-2", "-3")]
    rows = [json.loads((ROOT / f"{raw_rows}.json").read_text()) for raw_rows in machines]
    runs = [
        sorted((str(p.relative_to(ROOT)) for p in (ROOT / raw_dir).iterdir() if p.is_dir()), key=run_number)
        for raw_dir in machines
    ]
    lines += [
        "## The whole 7B search on an H100: overlapping imports, kv_blocks from above, a shorter fill",
        "",
        "`scripts/bench_search.py --warm-up` ran the whole search of deepseek-r1-distill-qwen-7b (reference,",
        "u_max, u_min, kv_blocks; tolerance 0.01, range 0.05-1.0, `--no-confirm` so that each run fits one",
        f"10-minute device call) several times on each of {len(machines)} H100 machines, all runs of a machine on one",
        "boot, after an untimed warm-up meant to warm file and kernel caches (whether it did is in the first",
        "fill start on each machine, below).",
        "",
    ]
    lines += speedup_section(
        [
            (machines[0], "two workers ahead, kv_blocks from above"),
            (machines[1], "and the fill stops once full"),
            (machines[2], "and each waiting worker prepares"),
            ("docs/benchmarks/raw/h200-prestart", "one worker ahead, kv_blocks from below"),
        ]
    )
    lines += search_speed_section(
        rows[2],
        machines[2],
        "Third machine: three pairs, the variants alternating (overlap first in each pair)",
        "as on the second machine below, and each waiting worker prepares like the running trial",
    )
    lines += preparation_section(
        runs[2],
        json.loads((raw / "h100-prepare-attention.json").read_text()),
        "docs/benchmarks/raw/h100-prepare-attention/",
    )
    lines += search_speed_section(
        rows[0], machines[0], "First machine: five runs", "two workers ahead, kv_blocks from above"
    )
    lines += search_speed_section(
        rows[1], machines[1], "Second machine: one pair", "as above, and the fill stops once the cache has stayed full"
    )
    lines += fill_start_section(list(zip(rows, runs, strict=True)))
    lines += phase_section(f"{machines[2]}/1-prestart-auto", "third machine, run 1 (prestart-auto)")
    lines += phase_section(f"{machines[2]}/2-prestart-off", "third machine, run 2 (prestart-off)")
    lines += phase_section(f"{machines[0]}/1-prestart-auto", "first machine, run 1 (prestart-auto)")
    lines += phase_section(f"{machines[0]}/2-prestart-off", "first machine, run 2 (prestart-off)")
    lines += phase_section(f"{machines[1]}/1-prestart-auto", "second machine, run 1 (prestart-auto)")
    lines += prestart_section(json.loads((raw / "h200-prestart.json").read_text()))
    lines += phase_section("docs/gpu-h200/results")
    lines += strategy_section(json.loads((raw / "cpu-strategy.json").read_text()))
    lines += experiment_section()
    lines += lanes_section()
    lines += cpu_teardown_section()
    return "\n".join(lines)


def lanes_section() -> list[str]:
    """Trials in parallel across GPUs: one experiment with one lane and with two, pairs alternating."""
    rows = json.loads((ROOT / f"{LANES_RAW}.json").read_text())
    one_boot(rows)
    assert len(rows) % 2 == 0, f"{LANES_RAW}.json: the runs come in pairs"
    pairs = [rows[i : i + 2] for i in range(0, len(rows), 2)]

    def figures(row: dict) -> dict[tuple[str, int], int]:
        return {(c["model"], c["repeat"]): c["reference_blocks"] for c in row["results"]}

    table = []
    for number, pair in enumerate(pairs, 1):
        by_variant = {r["variant"]: r for r in pair}
        one, two = by_variant["one-gpu"], by_variant["two-gpus"]
        alone = figures(one)
        differ = [
            f"{model} r{repeat}: {alone[(model, repeat)]:,} alone, {blocks:,}"
            for (model, repeat), blocks in figures(two).items()
            if alone[(model, repeat)] != blocks
        ]
        table.append(
            f"| {number} | {' then '.join(r['variant'] for r in pair)} | {one['wall_s']:.1f} | {two['wall_s']:.1f} | "
            f"{two['wall_s'] / one['wall_s']:.2f}x | {'no: ' + '; '.join(differ) if differ else 'yes'} |"
        )
    first = rows[0]
    cold, *later = lanes_reference_blocks(GRAPHS_7B)
    warm = set().union(*later)
    (eager,) = set().union(*lanes_reference_blocks(f"{GRAPHS_7B}-eager"))
    vllm = {load_result(path).versions.vllm for path in (ROOT / LANES_RAW).glob("run-*/lane-*/*/*.json")}
    cells = len(first["results"])
    starts = sum(c["engine_starts"] for c in first["results"])
    ratios = [{r["variant"]: r["wall_s"] for r in pair} for pair in pairs]
    ratios_two_one = [wall["two-gpus"] / wall["one-gpu"] for wall in ratios]
    met = [
        n
        for n, (ratio, row) in enumerate(zip(ratios_two_one, table, strict=True), 1)
        if ratio <= 0.55 and "| yes |" in row
    ]
    missed = [n for n in range(1, len(pairs) + 1) if n not in met]
    lines = [
        "## Trials in parallel across GPUs (`kvprobe experiment --devices`)",
        "",
        f"`scripts/bench_lanes.py {first['experiment']}` on the two-H200 host (boot {first['boot_id'][:8]}, kvprobe",
        f"{first['kvprobe_commit']}, vLLM {', '.join(sorted(map(str, vllm)))}): the same experiment, {cells} results"
        f" from {starts} engine starts (the 7B with CUDA graphs and eager, two repeats, the reference search),",
        "with one lane (`--devices 0`) and with two (`--devices 0,1`), in pairs whose order alternates. Wall time is",
        "the whole `kvprobe experiment` command. Raw rows: "
        f"[`{LANES_RAW}.json`]({LANES_RAW.removeprefix('docs/')}.json); results, journals and engine logs of every",
        f"run: [`{LANES_RAW}/`]({LANES_RAW.removeprefix('docs/')}/).",
        "",
        "| pair | order | one GPU s | two GPUs s | two / one | same blocks in every result |",
        "| ---: | --- | ---: | ---: | ---: | --- |",
        *table,
        "",
        "- The goal, at most 0.55x the one-GPU wall time with identical figures, holds in pair(s)"
        f" {', '.join(map(str, met)) or 'none'} ({', '.join(f'{ratios_two_one[n - 1]:.2f}x' for n in met)}).",
        f"- Not in pair(s) {', '.join(map(str, missed)) or 'none'}. Pair 1's two-GPU run came first on a fresh"
        " machine, and each lane compiled the",
        "  graphs model (torch.compile, CUDA graph capture) with a cold cache; the one-GPU run after it found the",
        "  cache warm. The order was alternated so that such a cost shows, not to cancel it.",
        f"- Figures: the eager model gave {eager:,} blocks in every run. The graphs model gave"
        f" {', '.join(f'{b:,}' for b in sorted(cold))} blocks in the cold run and"
        f" {', '.join(f'{b:,}' for b in sorted(warm))} in every later run, on either",
        "  GPU and with one lane or two: the compile cache, not the lane, moves that profile (docs/gpu-graphs/).",
        "- Two lanes share the host (its memory and CPU cores): a lane's trial does not wait for host memory to",
        "  settle, because the other lane moves it. A host with fewer cores or less memory was not measured.",
        "",
    ]
    return lines


CPU_TEARDOWN = "docs/benchmarks/raw/cpu-teardown-2026-12-01"  # a plain measure with the process list watched


def process_snapshots(path: Path) -> list[tuple[float, list[list[str]]]]:
    """A `ps -eo pid,ppid,pgid,[sid,]stat,comm` watch (gzip, `@ TIME` before each listing): (time, rows)."""
    snapshots: list[tuple[float, list[list[str]]]] = []
    with gzip.open(path, "rt") as lines:
        for line in lines:
            if line.startswith("@ "):
                snapshots.append((float(line[2:]), []))
            elif snapshots and len(fields := line.split()) in (5, 6):
                snapshots[-1][1].append(fields)
    return snapshots


def teardown_rows(doc: ResultDocument, snapshots: list[tuple[float, list[list[str]]]]) -> tuple[list[str], float]:
    """A table row per passing trial: its teardown, and the processes of its group (pgid, the third
    column) still running, not zombies, at the last listing before none was; and the largest gap
    between two listings around any of those teardowns."""
    rows, gaps = [], []
    for trial in (t for t in doc.trials if t.passed):
        end = trial.started_at + trial.wall_s  # the trial's end: SIGTERM to its group
        listed = [procs for when, procs in snapshots if trial.started_at < when < end]
        group = next(p[2] for p in listed[-1] if p[-1].startswith("VLLM::Worker") and "Z" not in p[-2])
        window = [when for when, _ in snapshots if end - 1.0 < when < end + trial.teardown_s + 1.0]
        gaps += [b - a for a, b in itertools.pairwise(window)]
        after = [(when - end, [p for p in procs if p[2] == group]) for when, procs in snapshots if when > end]
        running = [(offset, group_now) for offset, group_now in after if any("Z" not in p[-2] for p in group_now)]
        if running:
            offset, last = running[-1]
            names, at = ", ".join(sorted({p[-1] for p in last if "Z" not in p[-2]})), f"{offset:.2f}"
        else:
            names, at = "not listed (none in the next listing)", "-"
        rows.append(
            f"| {doc.model} | {trial.number} | {trial.search} | {trial.utilization} | {trial.teardown_s:.2f} | "
            f"{trial.kill_s:.2f} | {names} | {at} | {'yes' if trial.baseline_restored else 'no'} |"
        )
    return rows, max(gaps)


TEARDOWN_HEADER = (
    "| model | trial | search | u | teardown s | until no process s | still running at the last listing "
    "before none was | that listing, s after the trial's end | memory back |",
    "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | --- |",
)


def teardown_span(results: str, field: str = "teardown_s") -> str:
    """The shortest and longest `field` of the passing trials in `results`, in seconds."""
    times = [getattr(t, field) for doc in load(results) for t in doc.trials if t.passed]
    return f"{min(times):.2f}-{max(times):.2f}"


def cpu_teardown_section() -> list[str]:
    """Each passing trial's teardown on the CPU backend, and which of its processes outlived SIGTERM."""
    (doc,) = load(f"{CPU_TEARDOWN}/results")
    rows, gap = teardown_rows(doc, process_snapshots(ROOT / CPU_TEARDOWN / "ps-watch.log.gz"))
    beyond = [t.kill_s - SIGTERM_GRACE_S for t in doc.trials if t.passed]
    return [
        "## Teardown on the CPU backend: what outlives SIGTERM",
        "",
        "`kvprobe measure models.yaml --only tiny-llama --searches reference,u_min` on this project's 2-core",
        f"machine, kvprobe {measured_at(f'{CPU_TEARDOWN}/results')}, vLLM {doc.versions.vllm} (CPU), with `ps`",
        f"listing every process about every 0.1 s (around the teardowns the largest gap {gap:.2f} s; raw:",
        f"[`{CPU_TEARDOWN}/`]({CPU_TEARDOWN.removeprefix('docs/')}/)). A trial's teardown (`trial/process_group.py`)",
        f"sends its group SIGTERM, waits up to {SIGTERM_GRACE_S:g} s, then SIGKILLs what is left.",
        "",
        *TEARDOWN_HEADER,
        *rows,
        "",
        "The trial's worker (the group's leader) had already exited by the trial's end, in every trial. vLLM's",
        "engine core, its CPU worker (`VLLM::Worker`, busy on the CPU) and one more Python child did not act on",
        "SIGTERM: they ran until the grace was over and SIGKILL ended them, "
        f"{min(beyond):.2f}-{max(beyond):.2f} s after it. Every passing CPU trial's teardown is the grace and that",
        "tail, with memory back at baseline. The H200 runs, with the same grace: "
        f"[`docs/gpu-graphs/`](gpu-graphs/README.md) (7B trials {teardown_span(f'{GRAPHS}/results')} s,"
        f" tensor parallel 2 {teardown_span(f'{GRAPHS}/results-tp2')} s).",
        "",
    ]


def measured(value, doc: ResultDocument) -> str:
    """A README cell, or "not searched" where that side ran fewer searches (its figure is missing)."""
    try:
        return value(doc)
    except (KeyError, AttributeError, TypeError):
        return "not searched"


def control_readme(results: str, card: str, report: str = "report/report.md") -> str:
    docs = {d.label: d for d in load(results)}
    native, cgroup = docs["native"], docs["container"]
    rows = (
        ("KV at gpu_memory_utilization", lambda d: f"{gib(d.reference.bytes)} GiB, {d.reference.num_blocks:,} blocks"),
        (
            "u_max",
            lambda d: (
                f">= {d.u_max} (passed at the top of its range: a lower bound)"
                if d.u_max_censored
                else f"{d.u_max} (failing {d.searches['u_max'].failing})"
            ),
        ),
        ("u_min", lambda d: f"{d.u_min} (failing {d.searches['u_min'].failing})"),
        ("KV at u_max", lambda d: f"{gib(d.kv_at_u_max.bytes)} GiB, {d.kv_at_u_max.num_blocks:,} blocks"),
        (
            "physical KV (fill test)",
            lambda d: (
                "not measured"
                if d.physical_capacity is None
                else (
                    f"{gib(d.physical_capacity.bytes)} GiB, "
                    f"{d.physical_capacity.num_blocks:,} blocks, fill peak "
                    f"{d.physical_capacity.fill.peak_kv_usage:.1%}"
                )
            ),
        ),
        ("engine starts", lambda d: str(d.engine_starts)),
        ("cgroup memory limit seen", lambda d: gib(d.environment.cgroup.limit_bytes, unit=True)),
    )
    lines = [
        f"# The discrete-GPU control on {card}",
        "",
        "Made by `scripts/make_docs.py` from [`results/`](results/) (result JSON, journals, trial specs and",
        f"logs), measured by kvprobe {native.versions.kvprobe} at commit {measured_at(results)} on",
        f"{native.device}, vLLM {native.versions.vllm}, torch {native.versions.torch}. Model: the shipped",
        f"{native.model} config (dummy weights), settings hash `{native.settings_hash}`. The 'container' side is",
        "a cgroup v2 with memory.max = 16 GiB entered with its own cgroup and mount namespaces",
        "(`scripts/gpu_host.sh cgroup`), not a container runtime. Its environment block nevertheless reads",
        f"'{cgroup.environment.container.runtime}' (score {cgroup.environment.container.score}): the host's stray",
        "/.dockerenv and the private cgroup namespace with a limit are the evidence it weighed.",
        "",
        "| | native | 16 GiB cgroup v2 |",
        "| --- | ---: | ---: |",
        *[f"| {name} | {measured(value, native)} | {measured(value, cgroup)} |" for name, value in rows],
        "",
        f"Report: [`{report}`]({report}). What this shows is limited to this card: with the",
        "KV cache in device memory, the memory cgroup did not change the engine's KV figures here. It does",
        "not show what a container limit does on GB10 or GH200, where CUDA allocations come from host memory;",
        "that is measured on those machines or not at all.",
        "",
    ]
    return "\n".join(lines)


TP2 = "docs/gpu-tp2"
LANES_RAW = "docs/benchmarks/raw/h200x2-lanes"  # one experiment on one GPU and on two (issue 29)


def tp2_readme() -> str:
    """docs/gpu-tp2/README.md: the tensor-parallel run's figures, every rank's attribution and each
    trial's teardown, from its result; what it shows and what it does not."""
    (doc,) = load(f"{TP2}/results")
    gpus = doc.environment.gpu
    attribution = doc.attribution
    assert attribution is not None and doc.reference and doc.kv_at_u_max and doc.physical_capacity
    views = attribution.budget_views
    figure = "{:,} blocks, {} GiB ({:,} bytes), {:,} tokens"

    def kv(f) -> str:
        return figure.format(f.num_blocks, gib(f.bytes), f.bytes, f.tokens)

    def failing(search: str) -> str:
        return str(doc.searches[search].failing)

    rank_rows = [
        f"| {r.index} (NVML {r.nvml_index}) | {gib(r.total_bytes)} | {gib(r.engine_measured_bytes)} | "
        f"{gib(r.parts.kv_cache)} | {gib(r.parts.engine_beyond_request)} | {gib(r.parts.other_processes)} | "
        f"{gib(r.parts.free_at_ready)} | {r.unexplained_bytes / 2**20:.2f} MiB | {gib(r.kv_room_bytes)} |"
        for r in attribution.ranks
    ]
    trial_rows = [
        f"| {t.number} | {t.search} | {t.utilization if t.utilization is not None else '-'} | {t.outcome} | "
        f"{t.wall_s:.1f} | {t.teardown_s:.2f} | {t.kill_s:.2f} | {'yes' if t.baseline_restored else 'no'} |"
        for t in doc.trials
    ]
    view_text = ", ".join(f"{name} {gib(value)} GiB" for name, value in views.views.items()) if views else "none"
    lines = [
        "# Tensor parallel 2 on two H200s",
        "",
        "Made by `scripts/make_docs.py` from [`results/`](results/) (result JSON, journal, trial specs and",
        "engine logs); raw console output, `kvprobe env` under three `CUDA_VISIBLE_DEVICES` settings,",
        "`nvidia-smi` before and after, and the process list every 0.25 s in [`raw/`](raw/). Measured by",
        f"kvprobe {doc.versions.kvprobe} on {doc.device} (NVLink NV18 between them), vLLM {doc.versions.vllm},",
        f"torch {doc.versions.torch}, in two calls of the run (the second `--resume`d the first's journal). Model:",
        "a Llama-3.1-8B-shaped config (`configs/llama-3.1-8b`, the public config.json, dummy weights),",
        "bf16, max_model_len 8192, `tensor_parallel_size: 2` (`configs/gpu-tp2.yaml`), settings hash",
        f"`{doc.settings_hash}`. Paths of the device's checkout read `<checkout>` in the committed files.",
        "Report: [`report/report.md`](report/report.md) (one side only: it has no container run to compare).",
        "",
        "| | |",
        "| --- | --- |",
        f"| `CUDA_VISIBLE_DEVICES` | {gpus.cuda_visible_devices!r}: "
        + ", ".join(f"GPU {d.index} = NVML {d.nvml_index} ({d.uuid})" for d in gpus.devices)
        + " |",
        f"| KV at gpu_memory_utilization {doc.reference.utilization} | {kv(doc.reference)} |",
        f"| u_max | {doc.u_max} (failing {failing('u_max')}: refused at the start-up check) |",
        f"| KV at u_max | {kv(doc.kv_at_u_max)} |",
        f"| u_min | {doc.u_min} (failing {failing('u_min')}: KV too small for one 8192-token request) |",
        f"| physical KV (fill test) | {kv(doc.physical_capacity)}, fill peak "
        f"{doc.physical_capacity.fill.peak_kv_usage:.1%} |",
        f"| engine starts | {doc.engine_starts} |",
        f"| prestart | {'on' if doc.options.prestart else 'off'}: {doc.options.prestart_reason} |",
        "",
        "## Every rank at u_max",
        "",
        "The engine's log gives one rank's split (weights "
        f"{gib(attribution.parts.weights)} GiB, activation peak {gib(attribution.parts.activation_peak)} GiB,"
        f" non-torch {gib(attribution.parts.non_torch)} GiB, KV cache {gib(attribution.parts.kv_cache)} GiB),",
        "applied to each rank; what each rank holds is NVML's per-process figure on its own device.",
        "",
        "| device | total GiB | engine (NVML) GiB | KV GiB | engine beyond request GiB | other processes GiB "
        "| free at ready GiB | unexplained | KV room GiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rank_rows,
        "",
        f"The rank that limits the KV: device {attribution.limiting_rank} (least KV room; here both ranks"
        " hold the same to the byte, so it is the first of equals, not a rank that holds more).",
        "",
        f"Budget view at the u_max start: the engine logged {gib(views.engine_free_bytes) if views else '-'} GiB"
        f" free; NVML's views: {view_text}; closest {views.closest if views else '-'}, spread"
        f" {gib(views.spread_bytes) if views else '-'} GiB. What the engine's figure lacks against"
        " NVML's is not split further here.",
        "",
        "## Each trial's teardown",
        "",
        "| trial | search | u | outcome | wall s | teardown s | until no process s | baseline back |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: | --- |",
        *trial_rows,
        "",
        "Every passing trial's group outlived the SIGTERM grace `trial/process_group.py` had then (5 s;",
        "1 s now) and was SIGKILLed; trials whose engine had already exited ended in hundredths of a",
        "second. The process",
        "list (`raw/ps-watch.log.gz`, read by hand against each trial's start and wall time) shows what",
        "survived: in trials 1, 3, 6, 7 and 10 (the others not read) the `VLLM::Worker_TP` processes",
        "ended 2.2 to 3.7 s after SIGTERM, while `VLLM::EngineCore` and a `python3` child of the trial's",
        "worker were still listed 4.7 to 5.0 s after it, until SIGKILL. The list holds command names",
        "only: which Python process that second one is (multiprocessing's resource tracker ignores",
        "SIGTERM, for one) is not shown. This run came before the signal-mask fix, when every trial process",
        "held SIGTERM, so what ended the `Worker_TP` processes then was not SIGTERM. Memory was back at baseline",
        "after every trial. With the fix and a 1 s grace the same model's TP 2 trials ended in"
        f" {teardown_span(f'{GRAPHS}/results-tp2')} s, the `Worker_TP` processes still SIGKILLed after the grace",
        "([`docs/gpu-graphs/`](../gpu-graphs/README.md)).",
        "Over Ray the same model's passing trials ended in 0.4-0.5 s (`docs/multinode/h200x2-2026-11-30/`).",
        "",
        "## What this shows and what it does not",
        "",
        "- Shown: kvprobe measures a TP=2 engine on two GPUs with all four searches; the blocks equal those",
        "  of the earlier run of the same shape on this host that issue 29 reports (kvprobe at ef330ae, equal",
        "  to plain vLLM's: 113,169 at 0.85, 131,779 at 0.98, 0.99 refused); both devices are attributed and",
        "  each adds up; the budget view holds NVML's device",
        "  free memory, not host memory; `CUDA_VISIBLE_DEVICES` is recorded, and under `1` and under GPU 1's",
        "  UUID `kvprobe env` lists NVML device 1 alone as the engine's GPU 0 (`raw/env-cvd-*.json`).",
        "- Not shown: a rank that holds more than the other (both held the same here: the limiting-rank",
        "  logic is checked by tests/test_multi_gpu.py only); a TP=2 measurement under",
        "  `CUDA_VISIBLE_DEVICES=1,0` or a single hidden GPU with a running engine; a preparation (prestart)",
        "  that does not initialize CUDA at TP=2 (prestart is off there, as every result says); Ray.",
        "",
    ]
    return "\n".join(lines)


def blocks_of(figure: KvFigure | None) -> int:
    """A figure's blocks, where the docs need one that exists (a committed run that lacks it is an error)."""
    if figure is None or figure.num_blocks is None:
        raise SystemExit("a committed figure is missing")
    return figure.num_blocks


def graphs_mode(doc: ResultDocument) -> str:
    eager = doc.settings.get("enforce_eager")
    return "not recorded" if eager is None else "eager" if eager else "CUDA graphs"


def lane_of(doc: ResultDocument) -> str:
    return f"GPU {doc.environment.gpu.cuda_visible_devices or '-'}"


def lanes_reference_blocks(model: str) -> list[set[int]]:
    """The reference blocks `model` gave in each run of the lanes benchmark, in run order."""
    rows = json.loads((ROOT / f"{LANES_RAW}.json").read_text())
    return [{c["reference_blocks"] for c in row["results"] if c["model"] == model} for row in rows]


def lanes_start_walls(model: str) -> list[float]:
    """The reference starts' wall seconds of `model` in the lanes benchmark's runs after its first."""
    rows = json.loads((ROOT / f"{LANES_RAW}.json").read_text())[1:]
    return [wall for row in rows for c in row["results"] if c["model"] == model for wall in c["trial_wall_s"]]


def graphs_readme() -> str:
    """docs/gpu-graphs/README.md: u_max and the KV at u_max with CUDA graphs and in eager mode, from
    the committed results; every passing trial's teardown; what was and was not measured."""
    experiment = sorted(load(f"{GRAPHS}/results"), key=lambda d: (graphs_mode(d), d.repeat))
    tp2 = {graphs_mode(d): d for d in load(f"{GRAPHS}/results-tp2")}
    (tp2_eager_earlier,) = load(f"{TP2}/results")

    by_mode: dict[str, list[ResultDocument]] = {}
    for doc in experiment:
        by_mode.setdefault(graphs_mode(doc), []).append(doc)
    at_u_max = {mode: {blocks_of(d.kv_at_u_max) for d in docs} for mode, docs in by_mode.items()}
    assert all(len(blocks) == 1 for blocks in at_u_max.values()), "the repeats differ: say so, not one figure"
    (graphs_max,), (eager_max,) = at_u_max["CUDA graphs"], at_u_max["eager"]
    tp2_graphs = tp2["CUDA graphs"]
    tp2_g, tp2_e = blocks_of(tp2_graphs.kv_at_u_max), blocks_of(tp2_eager_earlier.kv_at_u_max)
    first, *later = lanes_reference_blocks(GRAPHS_7B)
    (cold,), (warm,) = first | {blocks_of(d.reference) for d in by_mode["CUDA graphs"]}, set().union(*later)
    eager_runs = [*lanes_reference_blocks(f"{GRAPHS_7B}-eager"), {blocks_of(d.reference) for d in by_mode["eager"]}]
    (eager_reference,) = set().union(*eager_runs)
    graphs_reference = by_mode["CUDA graphs"][0].reference
    assert graphs_reference is not None and graphs_reference.bytes_per_block is not None
    bytes_per_block = graphs_reference.bytes_per_block
    graphs_walls, eager_walls = lanes_start_walls(GRAPHS_7B), lanes_start_walls(f"{GRAPHS_7B}-eager")
    tp2_rows, tp2_gap = teardown_rows(tp2_graphs, process_snapshots(ROOT / GRAPHS / "raw/ps-watch-tp2.log.gz"))
    eager_rows, eager_gap = teardown_rows(tp2["eager"], process_snapshots(ROOT / GRAPHS / "raw/ps-watch-tp2.log.gz"))
    single = [
        f"| {d.model} | {lane_of(d)} | "
        + ", ".join(f"{t.teardown_s:.2f} ({t.kill_s:.2f})" for t in d.trials if t.passed)
        + f" | {'yes' if all(t.baseline_restored for t in d.trials) else 'no'} |"
        for d in experiment
    ]
    before_fix = [t.teardown_s for t in tp2_eager_earlier.trials if t.passed]
    large_table, large_findings = graphs_large_section()
    lines = [
        "# CUDA graphs (as `vllm serve` starts) against eager mode, on H200s",
        "",
        "Made by `scripts/make_docs.py` from [`results/`](results/) (`kvprobe experiment",
        "experiments/eager-vs-graphs-h200x2.yaml --devices 0,1`: one repeat a GPU) and",
        "[`results-tp2/`](results-tp2/) (`kvprobe measure` of the TP 2 model, `configs/gpu-tp2.yaml`) and the",
        "large two's `results-*` (below), with",
        "their journals, trial specs and engine logs; `kvprobe env`, `nvidia-smi`, the experiment's console and",
        f"the TP 2 run's process list in [`raw/`](raw/). {experiment[0].device}, vLLM {experiment[0].versions.vllm},",
        f"torch {experiment[0].versions.torch}, kvprobe commit {measured_at(f'{GRAPHS}/results')} (that of",
        "`src/kvprobe`; the models and experiment files it ran were committed in f186ad7 to 87978da). Models:",
        "public config.json, dummy weights, bf16, max_model_len 8192. Paths of the device's checkout read",
        "`<checkout>`. Report: [`report/report.md`](report/report.md).",
        "",
        "`vllm serve` compiles the model and captures CUDA graphs unless told `--enforce-eager`. vLLM either",
        "estimates the graphs' memory and takes it from the KV budget (its log says so: GPT-OSS-120B below), or",
        "captures them after sizing the KV cache, in what the budget leaves (every other model here); the",
        "compiled forward pass also changes the activation peak vLLM profiles. So u_max and the KV at u_max",
        'can differ from eager mode\'s. "Failing above it" names where in vLLM (its traceback) a start ran out',
        "of memory.",
        "",
        "| model | mode | where | u | KV blocks at u | u_max | failing above it | KV blocks at u_max | GiB | tokens |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
        *(graphs_row(d, f"{lane_of(d)}, repeat {d.repeat}") for d in experiment),
        graphs_row(tp2_graphs, "GPUs 0,1 (this run)"),
        graphs_row(tp2["eager"], "GPUs 0,1 (this run)"),
        graphs_row(tp2_eager_earlier, "GPUs 0,1 ([`docs/gpu-tp2/`](../gpu-tp2/README.md), 2026-11-30)"),
        "",
        f"- **The 7B:** with CUDA graphs u_max is one step lower and the KV at u_max {eager_max - graphs_max:,}"
        f" blocks ({100 * (eager_max - graphs_max) / eager_max:.1f}%) smaller than in eager mode. Both repeats,",
        "  one on each GPU, gave the same blocks.",
        f"- **The TP 2 model:** with CUDA graphs u_max is {tp2_graphs.u_max} with {tp2_g:,} blocks at u_max;"
        f" eager mode reached {tp2_eager_earlier.u_max} with {tp2_e:,} in the committed run of the same model on"
        f" another machine of this kind, a day earlier: graphs have {100 * (tp2_e - tp2_g) / tp2_e:.1f}% fewer."
        " This run's eager reference start gave"
        f" {blocks_of(tp2['eager'].reference):,} blocks, that run's {blocks_of(tp2_eager_earlier.reference):,}.",
        f"- **At the reference utilization** eager mode gave {eager_reference:,} blocks on the 7B in every run;"
        f" CUDA graphs gave {cold:,} with a cold torch.compile cache (this experiment, and the lanes benchmark's"
        f" first run) and {warm:,} once the cache was warm (every later run): {warm - cold:+,} blocks"
        f" ({(warm - cold) * bytes_per_block / 2**20:+.0f} MiB), so which mode has more there depends on the cache.",
        f"- **Start time** (the lanes benchmark's warm runs, reference starts): CUDA graphs"
        f" {min(graphs_walls):.0f}-{max(graphs_walls):.0f} s, eager {min(eager_walls):.0f}-{max(eager_walls):.0f} s."
        f" The first graphs start here took {by_mode['CUDA graphs'][0].trials[0].wall_s:.0f} s (cold caches).",
        "",
        "## The study's large models, each mode on one H200, twice",
        "",
        "`kvprobe experiment experiments/graphs-qwen72b-fp8-h200.yaml` and `experiments/graphs-gpt-oss-h200.yaml`",
        "(models in `configs/gpu-graphs-large.yaml`; the 72B with online fp8), each run twice one after the",
        "other on one H200 (`results-qwen72b-fp8/`, `results-qwen72b-fp8-again/`, `results-gpt-oss/`,",
        "`results-gpt-oss-again/`; consoles, `kvprobe env` and `nvidia-smi` in [`raw/`](raw/)), kvprobe commit",
        f"{measured_at(GRAPHS_LARGE_RESULTS[0])} (that of `src/kvprobe`; the three files it ran were committed with",
        "the results, unchanged). Beside them, each model's committed eager run (GPT-OSS-120B's on an",
        "H100: another card, so only its mode compares). The activation peak is vLLM's logged figure (two",
        "decimals of GiB) in the start that gave the KV at u_max.",
        "",
        *large_table,
        "",
        *large_findings,
        "",
        f"## Each passing trial's teardown (SIGTERM grace {SIGTERM_GRACE_S:g} s)",
        "",
        "The 7B, one GPU (teardown s, and in brackets until no process was left):",
        "",
        "| model | where | each passing trial | memory back, every trial |",
        "| --- | --- | --- | --- |",
        *single,
        "",
        f"Tensor parallel 2, with the process list (`ps` about every 0.25 s; around these teardowns the largest"
        f" gap between two listings was {max(tp2_gap, eager_gap):.2f} s):",
        "",
        *TEARDOWN_HEADER,
        *tp2_rows,
        *eager_rows,
        "",
        "On one GPU every process acts on SIGTERM and the group is gone in hundredths of a second. At tensor",
        "parallel 2 the engine core exits, but the two `VLLM::Worker_TP` processes (and a Python child) run until",
        "the grace is over and SIGKILL ends them: each such teardown is the grace and a few tenths, under 2 s with",
        f"memory back. The run in `docs/gpu-tp2/` ({min(before_fix):.1f}-{max(before_fix):.1f} s) had a 5 s grace.",
        "",
        "## What this shows and what it does not",
        "",
        "- Shown: as served, with graphs captured, u_max is one step lower than in eager mode on the 7B (two",
        "  repeats, one a GPU) and on the Llama-3.1-8B-shaped model at TP 2 (one run each mode, eager's u_max from",
        "  the day before), and equal to eager's on the 72B in fp8 and on GPT-OSS-120B (two runs each; GPT-OSS's",
        "  next step is refused in both modes). No model had a higher u_max with graphs. The KV at u_max moves",
        "  either way: lower on three models, higher on the 72B, whose compiled forward pass peaked lower in",
        "  vLLM's profile than eager's in every start but the very first, which compiled it.",
        "- Not shown: GPT-OSS-120B with graphs on the H100 of its committed run (no H100 was lent this round);",
        "  the large models at tensor parallel 2; other vLLM versions.",
        "",
    ]
    return "\n".join(lines)


# vLLM functions an out-of-memory traceback can end in, the more telling first
OOM_SITES = ("flashinfer_autotune", "capture_model", "warmup_kernels", "kernel_warmup", "profile_run")


@functools.cache
def committed_results_dirs() -> tuple[Path, ...]:
    """Every directory under docs/ that holds trial logs (its .trials)."""
    return tuple(sorted(p.parent for p in (ROOT / "docs").rglob(TRIALS_DIR)))


def committed_log(trial: TrialRecord) -> str:
    """A trial's engine log as committed under docs/ (run ids are unique), or ''."""
    return next(filter(None, (trial_log(d, trial.log_path) for d in committed_results_dirs())), "")


def oom_site(trial: TrialRecord) -> str | None:
    """Where in vLLM a start ran out of memory, from its committed log's traceback."""
    text = committed_log(trial)
    return next((site for site in OOM_SITES if f"in {site}" in text), None)


def u_max_failing(doc: ResultDocument) -> str:
    """The utilization that failed above u_max, how, and (out of memory) where in vLLM."""
    search = doc.searches["u_max"]
    if search.failing is None:
        return "none: passed at the top of its range"
    above = next((t for t in doc.trials if t.search == "u_max" and t.utilization == search.failing), None)
    if above is None:
        return str(search.failing)
    site = oom_site(above) if above.outcome == "oom" else None
    return f"{search.failing} ({above.outcome}{f' in `{site}`' if site else ''})"


def blocks_of_trial(doc: ResultDocument) -> int:
    """The trial that gave the KV at u_max."""
    searched = doc.kv_at_u_max
    assert searched is not None and searched.trial is not None
    return searched.trial


def peak_at(doc: ResultDocument, trial: int | None) -> str:
    """The activation peak vLLM logged (two decimals of GiB) in one start of `doc`."""
    report = next((t.memory_report for t in doc.trials if t.number == trial), None)
    return gib(report.activation_peak_bytes) if report and report.activation_peak_bytes else "-"


def peak_at_u_max(doc: ResultDocument) -> str:
    """The activation peak vLLM logged in the start that gave the KV at u_max."""
    return peak_at(doc, blocks_of_trial(doc))


def graphs_row(doc: ResultDocument, where: str, peak: bool = False) -> str:
    """One result's row of the graphs tables: the reference, u_max and the KV at u_max (and, with
    `peak`, the activation peak vLLM logged in the start at u_max)."""
    reference = doc.reference
    assert reference is not None
    searched = doc.kv_at_u_max
    u_max = f">={doc.u_max}" if doc.u_max_censored else str(doc.u_max)  # a lower bound, shown as one
    at_u_max = (
        f"{u_max} | {u_max_failing(doc)} | {blocks_of(searched):,} | {gib(searched.bytes)} | {searched.tokens:,}"
        if searched
        else "not searched | | | |"
    )
    if peak:
        at_u_max += f" | {peak_at_u_max(doc)}"
    return (
        f"| {doc.model} | {graphs_mode(doc)} | {where} | {reference.utilization} | {blocks_of(reference):,} | "
        f"{at_u_max} |"
    )


def graphs_large_section() -> tuple[list[str], list[str]]:
    """The large two on one H200: each mode's figures in both runs beside the committed eager run (the
    section's table), and one finding per model."""
    table = [
        "| model | mode | run | u | KV blocks at u | u_max | failing above it | KV blocks at u_max | GiB | tokens"
        " | activation peak at u_max, GiB |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    findings = []
    for model, (short, committed_dir) in GRAPHS_LARGE.items():
        by_mode: dict[str, list[ResultDocument]] = {}
        for run, suffix in (("first", ""), ("again", "-again")):
            for doc in sorted(load(f"{GRAPHS}/results-{short}{suffix}"), key=graphs_mode):
                by_mode.setdefault(graphs_mode(doc), []).append(doc)
                table.append(graphs_row(doc, run, peak=True))
        (committed,) = [d for d in load(committed_dir) if d.label == "native"]
        link = "../" + committed_dir.removeprefix("docs/").removesuffix("/results") + "/README.md"
        table.append(graphs_row(committed, f"[committed]({link}), {committed.device}", peak=True))

        def one(figures: dict[str, set]) -> tuple:
            assert all(len(values) == 1 for values in figures.values()), "the runs differ: say so, not one figure"
            return next(iter(figures["CUDA graphs"])), next(iter(figures["eager"]))

        if any(d.u_max_censored for docs in by_mode.values() for d in docs):
            raise SystemExit(f"{model}: a u_max at the top of its range is a bound: write it as one")
        graphs_max, eager_max = one({mode: {blocks_of(d.kv_at_u_max) for d in docs} for mode, docs in by_mode.items()})
        graphs_u, eager_u = one({mode: {d.u_max for d in docs} for mode, docs in by_mode.items()})
        graphs_peak, eager_peak = one({mode: {peak_at_u_max(d) for d in docs} for mode, docs in by_mode.items()})
        at_u_max = [next(t for t in d.trials if t.number == blocks_of_trial(d)) for d in by_mode["CUDA graphs"]]
        estimates = {VllmEngine().memory_report(committed_log(t)).cudagraph_estimate_bytes for t in at_u_max}
        (estimate,) = estimates
        references = {
            mode: ", ".join(
                f"{blocks_of(d.reference):,} (peak {peak_at(d, d.reference.trial)} GiB)" for d in docs if d.reference
            )
            for mode, docs in by_mode.items()
        }
        failing = {u_max_failing(d) for docs in by_mode.values() for d in docs}
        u_max_words = (
            f"u_max {graphs_u}, equal to eager's" if graphs_u == eager_u else f"u_max {graphs_u}, eager {eager_u}"
        )
        findings.append(
            f"- **{model}:** with CUDA graphs {u_max_words}, and {graphs_max:,} blocks at u_max against"
            f" eager's {eager_max:,} ({100 * (graphs_max - eager_max) / eager_max:+.1f}%), in both runs. In that"
            f" start vLLM logged an activation peak of {graphs_peak} GiB compiled and {eager_peak} GiB eager, and "
            + (
                f"took its CUDA graph estimate, {gib(estimate)} GiB, from the KV budget."
                if estimate
                else "made no CUDA graph estimate (the graphs were captured after the KV cache was sized)."
            )
            + f" At the reference utilization (first run, again) graphs gave {references['CUDA graphs']},"
            f" eager {references['eager']}."
            + (
                f" Above u_max every start failed the same way ({failing.pop()}), in both modes: there u_max cannot"
                " tell them apart."
                if len(failing) == 1 and "startup-check" in next(iter(failing))
                else ""
            )
        )
    return table, findings


def killed_run_console() -> tuple[list[str], list[str], list[str]]:
    """From the kill-and-resume call's console: the tagged processes listed 5 s after the probe's
    SIGKILL, those listed after --resume, and the GPUs' memory in use 5 s after the SIGKILL."""
    lines = (ROOT / RAY_GPU / "raw/kill-and-resume/console.txt").read_text().splitlines()
    after_kill = lines.index("tagged processes 5 s after the SIGKILL:")
    gpus = lines.index("index, memory.used [MiB]")
    after_resume = lines.index("tagged processes after --resume:")
    return lines[after_kill + 1 : gpus], lines[gpus + 1 : gpus + 3], lines[after_resume + 1 : after_resume + 2]


def ray_gpu_readme() -> str:
    """docs/multinode/h200x2-*/README.md: the two-node Ray run's figures against the same model at
    TP 2 without Ray, every node's attribution, teardown, and the killed probe's leftovers."""
    (doc,) = load(f"{RAY_GPU}/results")
    (without_ray,) = load(f"{TP2}/results")
    cluster = doc.environment.cluster
    assert cluster is not None and doc.kv_at_u_max and without_ray.kv_at_u_max
    (run,) = cluster_runs([doc])
    killed = [json.loads(line) for line in (ROOT / RAY_GPU / "raw/kill-and-resume/journal.jsonl").open()]
    left, gpu_memory, after_resume = killed_run_console()
    node_rows = [
        f"| {node.node_id[:8]}{' (probe)' if node.probe_node else ''} | "
        + ", ".join(f"NVML {d.nvml_index} ({d.uuid})" for d in node.environment.gpu.devices)
        + f" | {node.gpus:g} | {node.ray_memory_monitor_refresh_ms} |"
        for node in cluster.nodes
    ]
    trial_rows = [
        f"| {t.number} | {t.search} | {t.utilization} | {t.outcome} | {t.wall_s:.1f} | {t.teardown_s:.2f} | "
        + ", ".join(f"{n.node_id[:8]}: {'yes' if n.baseline_restored else 'NO'}" for n in t.nodes)
        + " |"
        for t in doc.trials
    ]
    killed_rows = [
        f"| {e['trial']['number']} | {e['trial']['search']} | {e['trial']['utilization']} | {e['trial']['outcome']} | "
        f"{e['trial']['num_gpu_blocks'] or 0:,} |"
        for e in killed
    ]
    same = doc.kv_at_u_max.num_blocks == without_ray.kv_at_u_max.num_blocks and doc.u_max == without_ray.u_max
    limiting = run.limiting_node or "-"
    lines = [
        "# Tensor parallel 2 over a two-node Ray cluster: one H200 a node",
        "",
        "Made by `scripts/make_docs.py` from [`results/`](results/) (result JSON, journal, trial specs and engine",
        "logs) and [`raw/`](raw/) (console output, the process list every 0.25 s, the killed probe's run).",
        f"Measured by kvprobe {doc.versions.kvprobe} with vLLM {doc.versions.vllm}, Ray {cluster.ray_version},",
        f"torch {doc.versions.torch} on {doc.device}. The result records commit"
        f" {(doc.environment.software.get('kvprobe_commit') or '-')[:7]}, which the device's copy of the checkout",
        "reported; the code that ran was commit 6fd8c44's (its schema has the memory-monitor field the result",
        "holds); the 60 s connect timeout came after this run. The cluster: `tests/ray_cluster.py --one-gpu-each",
        "--memory-monitor-off` (`scripts/gpu_host.sh ray2`), two Ray nodes on one host, each raylet given",
        "one GPU (`CUDA_VISIBLE_DEVICES`) and its own `VLLM_HOST_IP`: the topology of two linked DGX Sparks,",
        "with NVLink instead of their network. Model: the Llama-3.1-8B-shaped config of `docs/gpu-tp2/`,",
        "`tensor_parallel_size: 2`, `distributed_executor_backend: ray`, `disable_custom_all_reduce: true`",
        "(`configs/gpu-ray2.yaml`; why the last: below). Paths of the device's checkout read `<checkout>`.",
        "Report: [`report/report.md`](report/report.md). Device time: this run was one `--searches u_max",
        "--range 0.98:0.99 --no-confirm` call; the killed-probe run below was another.",
        "",
        "| node | its GPU | Ray GPUs | RAY_memory_monitor_refresh_ms |",
        "| --- | --- | ---: | --- |",
        *node_rows,
        "",
        f"u_max {doc.u_max} (failing {doc.searches['u_max'].failing}: refused at the start-up check), KV at u_max"
        f" {doc.kv_at_u_max.num_blocks:,} blocks, {gib(doc.kv_at_u_max.bytes)} GiB ({doc.kv_at_u_max.bytes:,} bytes),",
        f"{doc.kv_at_u_max.tokens:,} tokens. Without Ray (`docs/gpu-tp2/`, the multiprocessing backend, one node):",
        f"u_max {without_ray.u_max}, {without_ray.kv_at_u_max.num_blocks:,} blocks:"
        f" {'the same to the block' if same else 'DIFFERENT'}.",
        "",
        "## Each node at u_max",
        "",
        "Each node's agent measured its own GPU (the one its raylet was given), with NVML's per-process",
        "figure for the trial's processes there. The parts, the limiting node and the unexplained rest",
        "are in the report's multi-node section; in short:",
        "",
        "| node | pool GiB | the trial's processes GiB | other processes GiB | free at ready GiB | unexplained MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {a.node_id[:8]} | {gib(a.total_bytes)} | {gib(a.parts.engine)} | {gib(a.parts.other_processes)} | "
            f"{gib(a.parts.free_at_ready)} | {a.unexplained_bytes / 2**20:.2f} |"
            for a in doc.node_attribution
        ],
        "",
        f"The node that limits the KV: {limiting[:8]}"
        + (" (both nodes had the same free to the MiB: the first of equals)." if run.limiting_tie else "."),
        "",
        "## Teardown",
        "",
        "| trial | search | u | outcome | wall s | teardown s | memory back, per node |",
        "| ---: | --- | ---: | --- | ---: | ---: | --- |",
        *trial_rows,
        "",
        "With Ray the engine's workers are Ray actors, not children of the trial's group; the passing trial",
        "ended well inside the 1 s SIGTERM grace, where the same model without Ray outlived the then 5 s",
        "grace (`docs/gpu-tp2/`).",
        "",
        "## A probe killed mid-trial, then `--resume`",
        "",
        "Another call (`scripts/gpu_host.sh ray2-kill`, searches reference and u_max, `--no-confirm`) ran",
        "the same model on a fresh cluster and SIGKILLed the probe 2 s after the first `ready` it printed,",
        "which was the third trial's. Its journal after the `--resume` (trials 1 and 2 from before the kill,",
        "3 run again; [`raw/kill-and-resume/journal.jsonl`](raw/kill-and-resume/)):",
        "",
        "| trial | search | u | outcome | KV blocks |",
        "| ---: | --- | ---: | --- | ---: |",
        *killed_rows,
        "",
        f"Tagged with that run's trial 5 s after the SIGKILL ({len(left)} processes; GPUs in use then:"
        f" {'; '.join(gpu_memory)}):",
        "",
        *[f"    {line.strip()}" for line in left],
        "",
        "`--resume` then ended the stale trial group, asked both nodes' agents to sweep the run's tag,",
        "re-ran trial 3 and finished (u_max 0.98, the same KV). Tagged processes listed after it:"
        f" {'none' if not after_resume or after_resume[0].startswith('index') else after_resume}; both GPUs at 0 MiB.",
        "",
        "## What this shows and what it does not",
        "",
        "- Shown: vLLM over Ray with its two ranks on two Ray nodes of one GPU each, measured by kvprobe's",
        "  agents on both nodes, each on its own GPU; the same KV as without Ray to the block; Ray's",
        "  memory-monitor setting recorded per node; a SIGKILLed probe's engine (driver, engine core,",
        "  pooled Ray workers) left running and ended by `--resume`.",
        "- Two settings this one-host cluster needs that two machines do not: each raylet's own",
        "  `VLLM_HOST_IP` (vLLM's Ray executor refuses two nodes behind one address), and",
        "  `disable_custom_all_reduce` (vLLM's custom all-reduce tests for one machine through shared",
        "  memory, finds it, and then asks for a GPU the rank cannot see:",
        "  `raw/earlier-attempts/custom-all-reduce-error.log.gz`).",
        "- An earlier attempt ran the probe without the cluster's loopback setting: Ray's client kept",
        "  retrying the GCS at the host's other address and kvprobe waited for it until the call's limit",
        "  (`raw/earlier-attempts/probe-without-loopback.log`); kvprobe now gives up on a cluster that does",
        "  not answer within a minute (exit 2).",
        "- Not shown: two real machines (their network, their separate memory); a node that holds more",
        "  than the other (both held the same here); the guard firing on a GPU node; u_min and the fill",
        "  test over Ray (device time).",
        "",
    ]
    return "\n".join(lines)


def kvprobe_output(*arguments: str) -> bytes:
    """A kvprobe command's output as a reader would type it (paths relative to the repository)."""
    command = [sys.executable, "-m", "kvprobe.cli", *arguments]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "100"},
    )
    return (f"$ kvprobe {' '.join(arguments)}\n" + done.stdout).encode()


def card_total(doc: ResultDocument) -> int:
    """The GPU's memory as NVML reported it in the result's environment."""
    total = doc.environment.gpu.devices[0].total_bytes
    assert total is not None, f"{doc.where()}: no GPU total recorded"
    return total


def gpu_index() -> str:
    """docs/gpu/README.md: which model was measured where, and the one report of them all."""
    lines = [
        "# The discrete-GPU control: the study's models, native vs a 16 GiB cgroup v2",
        "",
        "Made by `scripts/make_docs.py`. One report of every model: [`report/report.md`](report/report.md).",
        "",
        "| model | card | vLLM | kvprobe commit | results and logs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for results in GPU_RESULTS:
        doc = load(results)[0]
        link = os.path.relpath(ROOT / Path(results).parent, ROOT / "docs" / "gpu")
        lines.append(
            f"| {doc.model} | {doc.device} | {doc.versions.vllm} | {measured_at(results)} | [`{link}/`]({link}/) |"
        )
    qwen, oss = (next(d for d in load(r) if d.label == "native") for r in GPU_RESULTS[1:])
    if not all(d.settings.get("enforce_eager") for r in GPU_RESULTS for d in load(r)):
        raise SystemExit("docs/gpu/: a run not in eager mode; the page says every run was")
    before = [t.worker.fill.peak_kv_usage for d in load(BEFORE_FILL_FIX) for t in d.trials if t.worker.fill]
    bf16 = {m.name: m for m in load_models(ROOT / "models.yaml")}["qwen2.5-72b-instruct"]
    bf16_weights = predict(bf16.name, bf16.hf_config(), bf16.kv_cache_dtype, bf16.dtype).weight_bytes
    lines += [
        "",
        f"GPT-OSS-120B (MXFP4 experts, {gib(oss.memory_breakdown.weights_bytes)} GiB of weights by vLLM's log) was"
        " measured on the H100, where the issue first",
        "saw its token count go wrong; `results-before-fill-fix/` in its folder keeps the run whose fill",
        "test, sized by vLLM's worst-case blocks per request, reached only "
        f"{min(before):.0%}-{max(before):.0%} (see the fill fix).",
        "",
        f"Qwen2.5-72B runs with online fp8 (`quantization: fp8`): in bf16 its {gib(bf16_weights, 1)} GiB of weights"
        f" (predicted) exceed the H100's {gib(card_total(oss), 1)} GiB and 0.9 of the H200's"
        f" {gib(card_total(qwen), 1)} GiB (NVML's totals); whether bf16 starts on the H200 at a higher",
        "utilization, with room for one request, was not measured. The fp8 model was measured on the H200, where 0.9"
        f" leaves {gib(qwen.reference.bytes)} GiB of KV, not on the H100,",
        "where issue 16 reports too little KV in fp8 for a real window (not measured here).",
        "",
        "Every run on this page started in eager mode (`enforce_eager: true`, as models.yaml then set), which",
        "its report shows beside u_max. Each model with CUDA graphs, as `vllm serve` starts, beside eager on one",
        "H200: [`../gpu-graphs/`](../gpu-graphs/README.md) (GPT-OSS-120B there on the H200, not this H100).",
        "",
    ]
    return "\n".join(lines)


def simulated_environments() -> dict[Path, bytes]:
    """`kvprobe env` of every recorded machine (a simulation: tests/data/machines/SOURCES.md)."""
    machines = sorted(p.name for p in (ROOT / "tests" / "data" / "machines").iterdir() if p.is_dir())
    out = ROOT / "docs" / "environments" / "simulated"
    return {
        out / f"{name}.txt": kvprobe_output("env", "--recorded", f"tests/data/machines/{name}") for name in machines
    }


def external_report() -> bytes:
    """The original study read against TensorRT-LLM's sizing equation; its labels beside the shipped configs."""
    models = {m.name: m for m in load_models(ROOT / "models.yaml")}
    predictions = {}
    for study_name, name in STUDY_MODELS.items():
        config = json.loads((Path(models[name].model) / "config.json").read_text())
        predictions[study_name] = predict(name, config, models[name].kv_cache_dtype, models[name].dtype)
    source = load_benchmark_spark(ROOT / "docs" / "external" / "benchmark-spark" / "all_benchmark_results.json")
    document = external_document(summarise_external(source, predictions), "2026-11-25")
    return MarkdownWriter().render_document(document).encode()


SCHEMA_MARK = re.compile(r"(<!-- schema_version -->)\d+(<!-- end schema_version -->)")
README_BLOCK = ("<!-- predict-dgx-spark: made by scripts/make_docs.py -->", "<!-- end predict-dgx-spark -->")


SIZING_BLOCK = ("<!-- sizing-residuals: made by scripts/make_docs.py -->", "<!-- end sizing-residuals -->")
# Every committed vLLM result directory, for the equation-against-engine table.
SIZING_RESULTS = (
    "tests/data/results",
    f"{EXPERIMENT}/results",
    f"{SIZING_EXPERIMENT}/results",
    "docs/multinode/cpu-2026-11-26/results",
    "docs/gpu-h100/results",
    "docs/gpu-h200/results",
    *GPU_RESULTS[1:],
    BEFORE_FILL_FIX,
    f"{GRAPHS}/results/lane-0",  # CUDA graphs and eager, one repeat a GPU
    f"{GRAPHS}/results/lane-1",
    *GRAPHS_LARGE_RESULTS,
)
AT_SIZING_FIELDS = {
    "host_free": "MemFree",
    "shmem": "Shmem",
    "node_free": "MemFree per NUMA node",
    "device_free": "NVML free per device",
}


def sizing_directories() -> list[str]:
    raw = sorted(
        {str(p.parent.parent.relative_to(ROOT)) for p in (ROOT / "docs/benchmarks/raw").rglob("*-r[0-9]*.json")}
    )
    return [*SIZING_RESULTS, *raw]


def backend(doc: ResultDocument) -> str:
    for card in ("H100", "H200"):
        if card in doc.device:
            return card
    return "CPU" if doc.device.startswith("CPU") else doc.device


NODE_TOTAL = "the NUMA node's MemTotal (MemTotal used)"


def engine_total(doc: ResultDocument, trial: int) -> float | None:
    """The total the engine logged it multiplied by the utilization, at one trial."""
    return next((t.memory_report.budget_total_bytes for t in doc.trials if t.number == trial), None)


def with_logged_cudagraph_estimate(directory: str, doc: ResultDocument) -> tuple[list[SizingCheck], int]:
    """The result's checks, each redone where its committed engine log says vLLM took a CUDA graph
    estimate from the KV budget and the result, made before kvprobe read that line, does not know it;
    and how many were redone."""
    checks, redone = [], 0
    total = doc.cuda_view.total_bytes if doc.cuda_view else None
    for recorded in all_checks(doc):
        trial = next(t for t in doc.trials if t.number == recorded.trial)
        gpu = recorded.equation in ("vllm-cuda", "vllm-integrated")
        log = trial_log(ROOT / directory, trial.log_path) if gpu else None
        predates = trial.memory_report.cudagraph_estimate_applied is None
        report = VllmEngine().memory_report(log) if predates and log else None
        check = None
        if report is not None and report.cudagraph_estimate_applied:
            check = check_trial(trial.model_copy(update={"memory_report": report}), doc.environment, total)
        checks.append(check or recorded)
        redone += check is not None
    return checks, redone


def sizing_rows() -> list[dict]:
    """One row per results directory: checks, how many agree, the largest residual, what is missing."""
    rows = []
    for directory in sizing_directories():
        for doc in load(directory):
            every, redone = with_logged_cudagraph_estimate(directory, doc)
            checks = [c for c in every if c.equation != "explicit"]
            lacking = {
                name
                for c in checks
                for field, name in AT_SIZING_FIELDS.items()
                if (c.at_sizing is None or getattr(c.at_sizing, field) is None)
                and (field != "device_free" or c.equation != "vllm-cpu")  # no device to ask
            }
            rows.append(
                {
                    "directory": directory,
                    "backend": backend(doc),
                    "unrecorded_node": [
                        (engine_total(doc, c.trial), c.inputs["node_total_bytes"], c.agrees)
                        for c in checks
                        if "no NUMA node" in c.sources.get("node_total_bytes", "")
                        and "node_total_bytes" in c.inputs
                        and "cgroup_limit_bytes" not in c.inputs  # a visible limit clamps the total: its own input
                    ],
                    "checks": checks,
                    "redone": redone,
                    "lacking": lacking
                    | {m for c in checks for m in c.missing}
                    | {NODE_TOTAL for c in checks if "no NUMA node" in c.sources.get("node_total_bytes", "")},
                }
            )
    return rows


def sizing_table() -> tuple[str, str]:
    """docs/sizing-checks.md and the README's block: every committed vLLM result's KV against its equation."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for row in sizing_rows():
        grouped.setdefault((row["backend"], row["directory"]), []).append(row)
    lines = [
        "# Every committed vLLM result against its engine's sizing equation",
        "",
        "Made by `scripts/make_docs.py` (`engines.sizing.check_trial`, per utilization start; explicit budgets",
        "are their own prediction and left out). Residual = the engine's KV (blocks x bytes per block) minus",
        "the equation's prediction; it agrees where it is within the log's two-decimal GiB rounding of the",
        "inputs read from the engine's log plus one block.",
        "",
        "| backend | results | starts | agree | largest residual (GiB) | inputs not recorded at sizing |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    largest: dict[str, tuple[float, str]] = {}
    lacking: dict[str, set[str]] = {}
    for (card, directory), rows in sorted(grouped.items()):
        checks = [c for row in rows for c in row["checks"] if c.residual_bytes is not None]
        if not checks:
            continue
        worst = max(checks, key=lambda c: abs(c.residual_bytes or 0))
        missing = set().union(*(row["lacking"] for row in rows))
        lacking.setdefault(card, set()).update(missing)
        if abs(worst.residual_bytes or 0) > abs(largest.get(card, (0.0, ""))[0]):
            largest[card] = (float(worst.residual_bytes or 0), directory)
        agree = sum(1 for c in checks if c.agrees)
        lines.append(
            f"| {card} | `{directory}` | {len(checks)} | {agree} | {gib(worst.residual_bytes, 3, sign=True)} | "
            f"{', '.join(sorted(missing)) or '-'} |"
        )
    block = [
        "| backend | largest residual (GiB) | in | inputs its committed runs lack at sizing |",
        "| --- | ---: | --- | --- |",
    ]
    for card in ("CPU", "H100", "H200"):
        if card in largest:
            value, where = largest[card]
            block.append(
                f"| {card} | {gib(value, 3, sign=True)} | `{where}` | {', '.join(sorted(lacking[card])) or '-'} |"
            )
    redone = sorted({row["directory"] for row in grouped_rows(grouped) if row["redone"]})
    if redone:
        lines += [
            "",
            f"In {', '.join(f'`{d}`' for d in redone)} vLLM took its CUDA graph estimate from the KV budget",
            '("Estimated CUDA graph memory", beside "CUDA graph memory profiling is enabled"), a term kvprobe',
            "read only after these results were made: their checks are redone here with the estimate read from",
            f"the committed engine logs ({sum(row['redone'] for row in grouped_rows(grouped))} starts).",
        ]
    unrecorded = [found for row in grouped_rows(grouped) for found in row["unrecorded_node"]]
    disagree = [(engine, meminfo) for engine, meminfo, agrees in unrecorded if not agrees]
    explained = [(e, m) for e, m in disagree if e is not None and abs(e - m) > LOG_ROUNDING_BYTES]
    if unrecorded:
        lines += [
            "",
            f"{len(unrecorded)} CPU starts without a cgroup limit the engine sees come from results made before",
            "kvprobe recorded NUMA nodes: their node total is /proc/meminfo's MemTotal at the run's start.",
            f"{len(disagree)} of them disagree, {len(explained)} where the total the engine logged it multiplied",
            '("Auto set (kv/TOTAL) GiB") was not that MemTotal ('
            + ", ".join(sorted({f"{gib(e)} against {gib(m)} GiB" for e, m in explained}))
            + "): the engine read another total than the one recorded, and the check says so.",
        ]
    return "\n".join(lines) + "\n", "\n".join(block) + "\n"


def grouped_rows(grouped: dict[tuple[str, str], list[dict]]) -> list[dict]:
    return [row for rows in grouped.values() for row in rows]


def replace_block(text: str, markers: tuple[str, str], body: str) -> str:
    start, end = markers
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{body}{end}{after}"


def readme_with(prediction: bytes, sizing_block: str) -> bytes:
    """README.md with `kvprobe predict`'s output for the study's machine, the sizing residuals and the
    schema version the code writes."""
    text = replace_block((ROOT / "README.md").read_text(), README_BLOCK, f"```\n{prediction.decode()}```\n")
    text = replace_block(text, SIZING_BLOCK, sizing_block)
    return SCHEMA_MARK.sub(rf"\g<1>{SCHEMA_VERSION}\g<2>", text).encode()


def outputs() -> dict[Path, bytes]:
    files: dict[Path, bytes] = {}
    for results, out, title, date in REPORTS:
        files.update({ROOT / out / name: data for name, data in report_files(results, title, date).items()})
    files[ROOT / "docs" / "benchmarks.md"] = benchmarks().encode()
    prediction = kvprobe_output("predict", "models.yaml", "--memory", "119.6g")
    files[ROOT / "docs" / "predict-dgx-spark.txt"] = prediction
    sizing_doc, sizing_block = sizing_table()
    files[ROOT / "docs" / "sizing-checks.md"] = sizing_doc.encode()
    files[ROOT / "README.md"] = readme_with(prediction, sizing_block)
    files.update(simulated_environments())
    files[ROOT / "docs" / "external" / "benchmark-spark" / "report.md"] = external_report()
    files[ROOT / "docs" / "gpu-h200" / "README.md"] = control_readme("docs/gpu-h200/results", "an H200").encode()
    files[ROOT / "docs" / "gpu-h100" / "README.md"] = control_readme("docs/gpu-h100/results", "an H100").encode()
    for results in GPU_RESULTS[1:]:
        card = "an H200" if "/h200-" in results else "an H100"
        readme = control_readme(results, card, "../report/report.md")
        files[ROOT / Path(results).parent / "README.md"] = readme.encode()
    files[ROOT / "docs" / "gpu" / "README.md"] = gpu_index().encode()
    files[ROOT / EXPERIMENT / "README.md"] = experiment_readme().encode()
    files[ROOT / SIZING_EXPERIMENT / "README.md"] = sizing_experiment_readme().encode()
    files[ROOT / LADDER_EXPERIMENT / "README.md"] = ladder_readme().encode()
    files[ROOT / TP2 / "README.md"] = tp2_readme().encode()
    files[ROOT / GRAPHS / "README.md"] = graphs_readme().encode()
    files[ROOT / RAY_GPU / "README.md"] = ray_gpu_readme().encode()
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = parser.parse_args()
    differ = []
    for path, data in outputs().items():
        if args.check:
            if (path.name in COMPARED_FILES or path.suffix in (".md", ".txt")) and (
                not path.exists() or path.read_bytes() != data
            ):
                differ.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if differ:
        raise SystemExit("differs from its raw data: " + ", ".join(differ))


if __name__ == "__main__":
    main()
