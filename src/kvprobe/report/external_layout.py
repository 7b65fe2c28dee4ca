"""The external study's page: its figures against its engine's equation, the container's loss by it,
the order of its runs, a question about its labels, and what kvprobe's own runs would need.

Every number is made from `report.external`; rounding happens here, for display only.
"""

from __future__ import annotations

from fractions import Fraction

from kvprobe.report.document import Block, BulletList, Document, FrontMatter, Heading, Paragraph, Table, code
from kvprobe.report.external import (
    ENGINE_FRACTION,
    STATED_TOTAL_BYTES,
    ExternalSummary,
    LabelCheck,
    StudyRun,
    Trend,
)
from kvprobe.report.formatting import fmt_stat
from kvprobe.report.stats import Summary, summarise
from kvprobe.report.words import TAGS
from kvprobe.units import gib

SIGNIFICANT = 0.05


def _g(value: Fraction | float, digits: int = 2, sign: bool = False) -> str:
    return gib(float(value), digits=digits, sign=sign)


def _started(run: StudyRun) -> str:
    stamp = run.timestamp
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}"


def _described(values: list[Fraction]) -> Summary:
    """Mean and sd only: the runs are not independent draws, so no interval is shown."""
    stat = summarise([float(v) for v in values])
    return Summary(stat.n, stat.mean, stat.sd, None, None)


def _equation_blocks(summary: ExternalSummary) -> list[Block]:
    fit, n = summary.fit, len(summary.source.runs)
    fixed = fit.sum_at_engine_fraction
    return [
        Heading(2, "The study's figures are its engine's sizing equation"),
        Paragraph.of(
            f"In all {n} runs, KV = f x (T - in use) with f = {float(fit.fraction):.6f} and "
            f"T = {_g(fit.total_bytes, 4)} GiB (least squares over every run, exact on the study's decimals). "
            f"The largest |residual| is {_g(fit.max_abs_residual_bytes, 4)} GiB, inside the "
            f"{_g(fit.rounding_bound_bytes, 4)} GiB that rounding both figures to 0.01 GiB allows. With f fixed "
            f"at TensorRT-LLM's default {float(ENGINE_FRACTION)}, in use + KV / {float(ENGINE_FRACTION)} = "
            f"{_g(fixed.mean or 0, 3)} ± {_g(fixed.sd or 0, 3)} GiB (mean ± sd, n = {fixed.n}).",
        ),
        Paragraph.of(
            "So the study's ",
            code("peak_memory"),
            " is the memory in use when the engine sized its KV cache, and its ",
            code("kv_cache"),
            " is 0.9 of what was free then: TensorRT-LLM's ",
            code("free_gpu_memory_fraction"),
            " (default 0.9), a fraction of free device memory (",
            code("cudaMemGetInfo"),
            "), not of the total. KV, peak and weights are consistent by construction. An earlier version of "
            "this page set the reported peak against predicted weights plus KV and concluded that they could "
            "not all be right; that premise was wrong, and the check is gone. "
            f"T is {_g(fit.total_bytes - STATED_TOTAL_BYTES, 3)} GiB above the 119.64 the study states for the "
            "machine; which total the engine saw, its figures do not say.",
        ),
    ]


def _loss_blocks(summary: ExternalSummary) -> list[Block]:
    rows = tuple(
        (
            loss.model if loss.scope == "all runs" else f"{loss.model} ({loss.scope})",
            f"{loss.n['native']} / {loss.n['container']}",
            _g(loss.kv_lost_bytes, 3),
            _g(loss.extra_in_use_bytes, 3),
            _g(loss.explained_bytes, 3),
            _g(loss.residual_bytes, 4, sign=True),
        )
        for loss in summary.losses
    )
    header = (
        "model (the study's label)",
        "runs native / container",
        "KV lost (GiB)",
        "extra in use at sizing (GiB)",
        f"{float(ENGINE_FRACTION)} x extra (GiB)",
        "residual (GiB)",
    )
    published = [loss for loss in summary.losses if loss.scope == "all runs"]
    lost = [loss.kv_lost_bytes for loss in published]
    extra = [loss.extra_in_use_bytes for loss in published]
    return [
        Heading(2, f"The container's loss is {float(ENGINE_FRACTION)} x the extra memory in use at sizing"),
        Paragraph.of(
            "Means per side, as the study averaged them; the residual is the KV lost minus 0.9 x the extra "
            "memory in use, exact on the study's decimals."
        ),
        Table(header, rows, (False, True, True, True, True, True)),
        Paragraph.of(
            f"The container lost {_g(min(lost), 1)}-{_g(max(lost), 1)} GiB of KV because "
            f"{_g(min(extra), 1)}-{_g(max(extra), 1)} GiB more memory was in use when the engine sized it. What "
            "that memory was, the study did not record. On a GB10 the free memory ",
            code("cudaMemGetInfo"),
            " reports tracks the kernel's MemFree (public report: unslothai/unsloth PR #10705), so page cache "
            "and shared memory count as in use there, as does memory held by any other process. The study "
            "dropped no caches between runs and ran its container with ",
            code("--ipc=host --shm-size=60g"),
            " and no memory limit (its scripts at commit 326cc72). Its analysis names Docker's cgroup accounting "
            "of unified memory as the root cause; with no limit set and the engine sizing from free device "
            "memory, not from a cgroup's figure, its figures do not test that explanation. "
            "Whether the extra memory was page cache, shared memory "
            "or another process's is a question for runs that record the memory views at the moment of sizing "
            "(last section).",
        ),
    ]


def _blocks_in_order(runs: tuple[StudyRun, ...]) -> list[list[StudyRun]]:
    """Consecutive runs of the same model and side."""
    blocks: list[list[StudyRun]] = []
    for run in runs:
        if blocks and (blocks[-1][0].model, blocks[-1][0].label) == (run.model, run.label):
            blocks[-1].append(run)
        else:
            blocks.append([run])
    return blocks


def _slope_text(item: Trend) -> str:
    text = _g(item.slope_bytes_per_run, 3, sign=True)
    if item.slope_se_bytes is not None and item.ci95_bytes is not None:
        low, high = item.ci95_bytes
        text += f" ± {_g(item.slope_se_bytes, 3)} [{_g(low, 3, sign=True)}, {_g(high, 3, sign=True)}]"
    return text


def _order_blocks(summary: ExternalSummary) -> list[Block]:
    runs = summary.source.runs
    order = tuple(
        (str(i), block[0].model, block[0].label, str(len(block)), _started(block[0]), _started(block[-1]))
        for i, block in enumerate(_blocks_in_order(runs), 1)
    )
    per_model_native_first = all(
        max(r.timestamp for r in runs if r.model == m and r.label == "native")
        < min(r.timestamp for r in runs if r.model == m and r.label == "container")
        for m in {r.model for r in runs}
    )
    trends = tuple(
        (
            t.model,
            t.label,
            t.scope,
            str(t.n),
            _g(t.first_kv_bytes),
            _g(t.last_kv_bytes),
            _slope_text(t),
            "-" if t.p_value is None else f"{t.p_value:.2g}",
        )
        for t in summary.trends
    )
    tested = [t for t in summary.trends if t.p_value is not None and t.scope == "completed series"]
    trending = [t for t in tested if t.p_value is not None and t.p_value < SIGNIFICANT]
    sides = []
    for model in sorted({r.model for r in runs}):
        for label in ("native", "container"):
            group = [r for r in runs if r.model == model and r.label == label]
            kv = [r.kv_bytes for r in group]
            sides.append(
                (
                    model,
                    label,
                    str(len(group)),
                    fmt_stat(_described(kv), "GiB"),
                    f"{_g(min(kv))} - {_g(max(kv))}",
                    fmt_stat(_described([r.in_use_bytes for r in group]), "GiB"),
                )
            )
    order_sentence = (
        "For every model, every native run ran before every container run"
        if per_model_native_first
        else "The sides of a model were not run in two blocks"
    )
    return [
        Heading(2, "Order of the runs and the trend within each side"),
        Paragraph.of(
            f"{order_sentence}: the runs came in these blocks, each native series followed by its container "
            "series (start times on the study's clock; its scripts wait five minutes and for the GPU to cool "
            "between runs, and drop no caches):"
        ),
        Table(("block", "model", "side", "runs", "first started", "last started"), order, (True,) + (False,) * 5),
        Paragraph.of(
            "Within each side, KV against the run's position in its series: the least-squares slope ± its "
            "standard error [95% CI], and the two-sided p of a t-test of no trend (n - 2 degrees of freedom). "
            "No trend is what a comparison of the sides treating the runs as independent would assume."
        ),
        Table(
            ("model", "side", "runs", "n", "first KV (GiB)", "last KV (GiB)", "slope (GiB per run)", "p (no trend)"),
            trends,
            (False, False, False, True, True, True, True, True),
        ),
        Paragraph.of(
            f"{len(trending)} of {len(tested)} completed series trend at p < {SIGNIFICANT}: the runs of a side are "
            "not exchangeable draws (and the slope's own standard error assumes independent scatter about the "
            "line, so it describes, it does not prove). A Welch test between the sides would treat the runs as "
            "independent, and its p-value would overstate; an earlier version of this page gave one. With every "
            "container run of a model after every native run of it, no statistic from these runs can separate "
            "the container from the order in which the runs were made, and this page gives none. The figures "
            "per side below are descriptive (mean ± sd, range; no interval)."
        ),
        Table(
            ("model", "side", "runs", "KV (GiB)", "KV range (GiB)", "in use at sizing (GiB)"),
            tuple(sides),
            (False, False, True, True, True, True),
        ),
        *_restart_blocks(summary),
    ]


def _restart_blocks(summary: ExternalSummary) -> list[Block]:
    restarted = summary.restarted_runs
    if not restarted:
        return []
    groups = sorted({(r.model, r.label) for r in restarted})
    items = []
    for model, label in groups:
        these = [r for r in restarted if (r.model, r.label) == (model, label)]
        side = [r for r in summary.source.runs if (r.model, r.label) == (model, label)]
        completed = next(r for r in side if not r.restarted)
        items.append(
            Paragraph.of(
                f"{model} {label}: its n = {len(side)} includes {len(these)} run(s) started "
                + ", ".join(_started(r) for r in these)
                + f", each with iteration {', '.join(sorted({str(r.iteration) for r in these}))}, before the "
                f"series that completed began again at iteration 1 ({_started(completed)}). The study's "
                "published means include them; the rows marked completed series above leave them out."
            )
        )
    return [Paragraph.of("Runs from abandoned series (the runner started again):"), BulletList(tuple(items))]


def _run_table(summary: ExternalSummary) -> list[Block]:
    rows = tuple(
        (
            str(i),
            _started(run),
            run.model,
            run.label,
            str(run.iteration),
            _g(run.in_use_bytes),
            _g(run.kv_bytes),
            _g(residual, 4, sign=True),
            "-" if run.output_tokens_per_s is None else f"{run.output_tokens_per_s:.1f}",
            "abandoned series" if run.restarted else "",
        )
        for i, (run, residual) in enumerate(zip(summary.source.runs, summary.fit.residual_bytes, strict=True), 1)
    )
    header = (
        "#",
        "started",
        "model",
        "side",
        "iteration",
        "in use at sizing (GiB)",
        "KV (GiB)",
        "residual (GiB)",
        "output tokens/s",
        "note",
    )
    return [
        Heading(2, "Run by run, in the order they ran"),
        Paragraph.of("The residual is KV - f x (T - in use) with the fitted f and T above."),
        Table(header, rows, (True, False, False, False, True, True, True, True, True, False)),
    ]


def _label_rows(labels: tuple[LabelCheck, ...]) -> tuple[tuple[str, ...], ...]:
    fits = {True: "yes", False: "no", None: "-"}
    return tuple(
        (
            item.model,
            item.model_id,
            fmt_stat(Summary(item.throughput.n, item.throughput.mean, item.throughput.sd, None, None), "tok/s")
            + f" (n = {item.throughput.n})",
            "-" if item.predicted_weight_bytes is None else _g(item.predicted_weight_bytes),
            _g(item.smallest_in_use_bytes),
            fits[item.weights_fit_in_use],
        )
        for item in labels
    )


def _label_blocks(summary: ExternalSummary) -> list[Block]:
    labels = summary.labels
    means = [item.throughput.mean for item in labels if item.throughput.mean is not None]
    too_big = [item for item in labels if item.weights_fit_in_use is False]
    weights_sentence = (
        " And the weights that the config of "
        + ", ".join(f"{item.model_id} implies ({_g(item.predicted_weight_bytes or 0)} GiB)" for item in too_big)
        + " are more than the memory in use at sizing in every run; the engine loads its weights "
        "before it sizes its KV cache, so a run of that model as configured would show at least that much."
        if too_big
        else ""
    )
    return [
        Heading(2, "A question about the labels"),
        Paragraph.of(
            "Output throughput per label, with the weights that the named model's config implies (",
            code("kvprobe predict"),
            ", the config's dtype, MXFP4 experts for GPT-OSS; '-' where no models file was given) beside the "
            "smallest memory in use at sizing over the label's runs:",
        ),
        Table(
            (
                "label",
                "model id the runner recorded",
                "output tokens/s",
                "weights from config (GiB)",
                "smallest in use at sizing (GiB)",
                "weights <= in use",
            ),
            _label_rows(labels),
            (False, False, True, True, True, False),
        ),
        Paragraph.of(
            f"The runs labelled 7B, 72B and 120B (a mixture of experts) give the same throughput (label means "
            f"{min(means):.1f}-{max(means):.1f} tokens/s). The study's runner ",
            code("scripts/run_comprehensive_benchmark.sh"),
            " passes each label's ",
            code("--model"),
            " and ",
            code("--model-path"),
            " to ",
            code("run_native_benchmark.sh"),
            " and ",
            code("run_container_benchmark.sh"),
            "; in the public source, at the commit that added these results (326cc72) and at f465b5f, those "
            "two scripts read only their first argument and their TensorRT-LLM branch hard-codes ",
            code("--model deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"),
            f".{weights_sentence} Were the series labelled 72B and 120B runs of the 7B? The study's logs would "
            "say; they are not in its repository. This page keeps its labels and cannot vouch for them.",
        ),
    ]


def _needs_blocks() -> list[Block]:
    items = (
        Paragraph.of(
            "The equation's inputs at the moment of sizing, in every run: MemFree, MemAvailable, Cached, "
            "Shmem, the cgroup's usage and limit, the device's free memory; then a loss splits into named "
            "parts instead of one figure of extra memory in use."
        ),
        Paragraph.of(
            "Page-cache conditions: caches dropped before each start, against the checkpoint read into the "
            "page cache first (and /dev/shm filled to a known size). Public sources say TensorRT-LLM sizes "
            "from ",
            code("cudaMemGetInfo"),
            ", which on a GB10 tracks MemFree, so page cache should cost it KV; vLLM since about 0.24 sizes "
            "from MemAvailable on integrated GPUs (vllm-project/vllm PR #35356), which counts page cache as "
            "available, so it should cost vLLM little. Neither was measured here.",
        ),
        Paragraph.of(
            "An isolation ladder, one feature per step: native; the image's filesystem in a chroot (the "
            "study's native side); a container sharing host IPC, network and PID with no cgroup of its own; "
            "+ its own cgroup, no limit; + private IPC with the study's /dev/shm size; + a memory limit; the "
            "study's exact flags. The step whose KV drops is the step that costs it."
        ),
        Paragraph.of(
            "Conditions interleaved, each from a fresh start, with the cache state set and recorded, so that "
            "condition and order are not confounded; the engine (TensorRT-LLM as the study ran it, or vLLM) "
            "and the model it loaded taken from the engine's own log, not from a label."
        ),
    )
    return [
        Heading(2, "What kvprobe's own runs would need to tell page cache from isolation"),
        Paragraph.of("kvprobe measures vLLM; none of this is in the study's data. To answer what it leaves open:"),
        BulletList(items),
    ]


def external_document(summary: ExternalSummary, date: str) -> Document:
    """The study read against its engine's equation, its order and its labels."""
    source = summary.source
    title = f"External source: {source.name}"
    blocks: list[Block] = [
        Paragraph.of(
            "Not kvprobe measurements. Source: ",
            code(source.origin),
            f". Engine: {source.engine}; not vLLM, which kvprobe measures. Machine: {source.machine}. Figures "
            "are the study's own, GiB with two decimals; the arithmetic here is exact on those decimals and "
            "rounded for display only.",
        ),
        *_equation_blocks(summary),
        *_loss_blocks(summary),
        *_order_blocks(summary),
        *_label_blocks(summary),
        *_needs_blocks(),
        *_run_table(summary),
    ]
    return Document(title=title, blocks=blocks, front_matter=FrontMatter(title=title, date=date, tags=TAGS))
