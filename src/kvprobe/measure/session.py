"""One `kvprobe measure` run from its request: check the input, find where it runs, open the results
directory, wire runner, executors and scheduler, measure, and say how it ended.

The command line only builds a `MeasureRequest` and hands it here; `kvprobe container` and
`kvprobe experiment` hand theirs to child processes that land here too.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from kvprobe.cluster.ray_cluster import RayCluster
from kvprobe.config import ModelSettings
from kvprobe.engines import engine_unavailable, get_engine
from kvprobe.environment.facts import collect
from kvprobe.errors import InputError, RunFailed
from kvprobe.measure.executors import JournaledExecutor, PreparedExecutor, can_drop_caches
from kvprobe.measure.options import MeasureOptions, resolve_kv_approach, resolve_prestart
from kvprobe.measure.perturb import PerturbedExecutor, with_condition
from kvprobe.measure.request import MeasureRequest
from kvprobe.measure.scheduler import Scheduler
from kvprobe.output.progress import TrialProgress, headroom_warning, print_summary
from kvprobe.results.loader import ResultFileError
from kvprobe.results.schema import Condition, Environment
from kvprobe.results.store import SCRATCH, ResultStore, RunLock
from kvprobe.trial.monitor import GuardPolicy
from kvprobe.trial.process_group import ignore_interrupts
from kvprobe.trial.runner import TrialLimits, TrialRunner
from kvprobe.units import gib

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass
class Where:
    """Where a run measures: this machine's environment block and, on a Ray cluster, its agents."""

    environment: Environment
    cluster: RayCluster | None


def engine_problems(request: MeasureRequest, models: list[ModelSettings]) -> list[str]:
    """An engine that is not installed (one sentence: how to get it), else what its adapter cannot do yet."""
    problems = []
    for m in models:
        where = f"{request.models_source}: model '{m.name}': field 'engine'"
        if said := engine_unavailable(m.engine):
            problems.append(f"{where}: {said}")
        elif m.engine == "tensorrt-llm" and "kv_blocks" in request.search.searches:
            problems.append(
                f"{where}: the physical-capacity search (kv_blocks) needs a fill test, which kvprobe's "
                "TensorRT-LLM worker does not run yet; leave it out (--searches reference,u_max,u_min)"
            )
    return problems


def checked_models(request: MeasureRequest) -> list[ModelSettings]:
    """The models as the request's condition loads them, every problem of the request at once."""
    problems: list[str] = []
    models: list[ModelSettings] = []
    try:
        models = request.models()
        if request.condition is not None:
            models = with_condition(models, request.condition)
    except InputError as exc:
        problems.append(str(exc))
    problems += engine_problems(request, models)
    if request.drop_caches and not can_drop_caches():
        problems.append("--drop-caches needs root and a writable /proc/sys/vm/drop_caches")
    if importlib.util.find_spec("vllm") is None:
        problems.append("vLLM is not installed in this Python environment (see README: setup)")
    problems += ray_problems(request, models)
    engines = sorted({m.engine for m in models})
    if len(engines) > 1:
        problems.append(f"{request.models_source}: one engine per run, not {' and '.join(engines)} (use --only)")
    if problems:
        raise InputError("\n".join(problems))
    return models


# Engine arguments that make the engine run code it finds (in the model directory or named here).
CODE_RUNNING_ARGS = ("trust_remote_code", "worker_cls", "worker_extension_cls", "model_impl")


def code_from_model_directories(models: list[ModelSettings]) -> list[str]:
    """A sentence for each model whose engine arguments make the engine run code from elsewhere."""
    return [
        f"model '{m.name}': extra_engine_args {', '.join(found)}: the engine runs code from the model directory "
        "or the module named there, as the user running kvprobe (see docs/security.md)"
        for m in models
        if (found := [arg for arg in CODE_RUNNING_ARGS if m.extra_engine_args.get(arg) not in (None, False, "auto")])
    ]


def ray_problems(request: MeasureRequest, models: list[ModelSettings]) -> list[str]:
    """Ray models need a cluster to run on, and a cluster needs a Ray model."""
    field = "field 'extra_engine_args.distributed_executor_backend'"
    problems = [
        f"{request.models_source}: model '{m.name}': {field}: ray needs --ray-address (an existing Ray cluster)"
        for m in models
        if m.uses_ray and not request.ray_address
    ]
    if request.ray_address and models and not any(m.uses_ray for m in models):
        problems.append(f"--ray-address: no model measured from {request.models_source} sets {field} to ray")
    return problems


def wider_than_the_machine(models: list[ModelSettings], environment: Environment) -> list[str]:
    """Models split across more GPUs than NVML sees (none on the CPU backend, where ranks are
    processes); on a Ray cluster, than the cluster's GPUs."""
    if environment.cluster is not None:
        gpus = int(sum(node.gpus or 0 for node in environment.cluster.nodes))
        where = "the Ray cluster has"
    else:
        gpus = len(environment.gpu.devices) if environment.gpu.available else 0
        where = "this machine has"
    pipeline = " (x extra_engine_args.pipeline_parallel_size)"
    return [
        f"model '{m.name}': field 'tensor_parallel_size'{pipeline if m.ranks > m.tensor_parallel_size else ''}: "
        f"{m.ranks} GPUs, but {where} {gpus}"
        for m in models
        if gpus and m.ranks > gpus
    ]


def where_to_measure(request: MeasureRequest, models: list[ModelSettings]) -> Where:
    """This machine's environment block, and the Ray cluster's agents where the request names one
    (the block then records the cluster); InputError if the models do not fit where they would run."""
    label = request.label
    environment = collect(None if label == "auto" else label)
    if label == "auto":
        environment.label = "container" if environment.container.detected else "native"
    floor, total = request.start.guard_floor_bytes, environment.host_memory.get("MemTotal")
    if request.start.guard and floor is not None and total and floor >= total:
        raise InputError(
            f"--guard-floor: {gib(floor, unit=True)} is at least this machine's memory ({gib(total, unit=True)}): "
            "the guard would end every start"
        )
    cluster = None
    if request.ray_address:
        cluster = RayCluster(request.ray_address, request.start.guard, request.start.guard_floor_bytes)
        environment.cluster = cluster.record
    wider = wider_than_the_machine(models, environment)
    if wider:
        if cluster is not None:
            cluster.close()
        raise InputError("\n".join(f"{request.models_source}: {problem}" for problem in wider))
    return Where(environment, cluster)


# The search settings a measurement's options carry as they are.
SEARCH_OPTIONS = {"tolerance", "utilization_range", "searches", "strategy", "confirm", "fill_target", "throughput"}


def measure_options(request: MeasureRequest, environment: Environment, ranks: int = 1) -> MeasureOptions:
    """The request's search and start settings, with what depends on the machine (and on the
    models' most engine ranks) decided."""
    search, start = request.search, request.start
    use_prestart, prestart_reason = resolve_prestart(search.prestart, environment, ranks)
    kv_approach, kv_approach_reason = resolve_kv_approach(search.kv_approach, environment)
    assert environment.label is not None, "where_to_measure labels the environment"
    return MeasureOptions(
        **search.model_dump(include=SEARCH_OPTIONS),
        label=environment.label,
        repeats=request.repeats,
        prestart="on" if use_prestart else "off",
        prestart_reason=prestart_reason,
        kv_approach=kv_approach,
        kv_approach_reason=kv_approach_reason,
        **start.model_dump(include={"cooldown_s", "max_gpu_temp_c"}),
        drop_caches=request.drop_caches,
        container=request.started_by,
        condition=request.condition if request.condition and request.condition.name else None,
        experiment=request.experiment,
        only_repeat=request.only_repeat,
        host_shared=start.host_shared,
    )


def run_measure(request: MeasureRequest, console: Console, show_engine_log: bool = False) -> int:
    """Measure what the request asks; the exit code (0 complete, 1 a model failed, 130 interrupted).
    `show_engine_log`: stream the engine's log lines as they come."""
    models = checked_models(request)
    where = where_to_measure(request, models)
    environment, cluster = where.environment, where.cluster
    for warning in [*environment.warnings, *code_from_model_directories(models)]:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    options = measure_options(request, environment, max(model.ranks for model in models))
    guard = GuardPolicy.for_environment(environment, request.start.guard_floor_bytes, enabled=request.start.guard)
    out_dir = Path(request.out_dir)
    lock = RunLock(out_dir)
    try:
        lock.acquire()  # before anything else touches the directory, stale trial groups included
    except OSError as exc:
        raise InputError(f"--out {out_dir}: cannot be used: {exc.strerror}") from None
    scheduler = Scheduler(ResultStore(out_dir), models, options, request.identity())
    run_id, resumed = scheduler.start(request.resume)
    journal = scheduler.journal()
    said = f"resumed, {len(journal)} trials journaled" if resumed else "new"
    console.print(f"run {run_id} ({said}), label {options.label}, results in {escape(str(out_dir))}", highlight=False)
    if journal.skipped:
        console.print(
            f"[yellow]warning:[/] journal lines {journal.skipped} were unusable (cut off or not an "
            "entry); those trials run again"
        )
    if request.resume and not resumed:
        console.print("[yellow]warning:[/] nothing to resume (no unfinished run with these settings); starting anew")

    engine = get_engine(models[0].engine)
    progress = TrialProgress(console, guard, request.expected_starts(models), show_engine_log)
    near_floor = headroom_warning(guard, environment.host_memory)
    if near_floor:
        console.print(f"[yellow]warning:[/] {escape(near_floor)}", highlight=False)
    limits = TrialLimits(timeout_s=request.start.trial_timeout_s, guard=guard, host_shared=request.start.host_shared)
    runner = TrialRunner(
        engine,
        out_dir / ".trials" / run_id,
        limits,
        on_sample=progress.on_sample,
        prestart=options.prestart == "on",
        cluster=cluster,
        on_log=progress.on_log,
    )
    _warn_of_leftovers(console, runner)
    perturbed = PerturbedExecutor(runner, request.condition or Condition(name=""), out_dir / SCRATCH)
    prepared = PreparedExecutor(
        perturbed,
        nvml=runner.nvml,
        cooldown_s=options.cooldown_s,
        max_gpu_temp_c=options.max_gpu_temp_c,
        drop_caches=options.drop_caches,
    )
    executor = JournaledExecutor(journal, prepared, progress)
    try:
        documents = scheduler.measure(executor, engine, environment, guard.settings(), progress)
    except ResultFileError as exc:
        raise InputError(f"{exc}; move it away to measure that model and repeat again") from None
    except OSError as exc:  # a full disk, a results directory gone read-only: the journal keeps what finished
        raise RunFailed(
            f"--out {out_dir}: writing failed ({exc.strerror}); finished trials are journaled, continue with "
            "--resume once it can be written"
        ) from None
    except KeyboardInterrupt:
        ignore_interrupts()  # the trial is torn down: a repeated Ctrl-C must not cut the rest short
        console.print(
            "[yellow]interrupted[/]: finished trials are journaled; continue with --resume --out "
            f"{escape(str(out_dir))}",
            highlight=False,
        )
        return EXIT_INTERRUPTED
    finally:
        runner.close()
        perturbed.close()
        if cluster is not None:
            cluster.close()
    scheduler.finish()
    lock.release()  # `kvprobe container --both` measures inside the container next, in this directory
    print_summary(console, documents)
    return EXIT_OK if all(d.status == "complete" for d in documents) else EXIT_FAILED


def _warn_of_leftovers(console: Console, runner: TrialRunner) -> None:
    for leader in runner.stale_groups_ended:
        console.print(f"[yellow]warning:[/] ended trial group {leader} left running by a killed earlier run")
    for spared in runner.stale_markers_spared:
        console.print(f"[yellow]warning:[/] {escape(spared)}", highlight=False)
    for node, ended in runner.stale_on_nodes.items():
        console.print(f"[yellow]warning:[/] ended {ended} processes a killed earlier run left on node {escape(node)}")
