"""The kvprobe command line. It only parses options and wires the modules together."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
import os
import signal
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from kvprobe.cluster.ray_cluster import ClusterError, RayCluster
from kvprobe.config import ConfigError, load_models, parse_utilization_range
from kvprobe.engines import get_engine
from kvprobe.engines.vllm_args import EngineNotInstalled
from kvprobe.environment.facts import collect
from kvprobe.environment.recorded import recorded_problems
from kvprobe.measure.executors import JournaledExecutor, PreparedExecutor, can_drop_caches
from kvprobe.measure.options import MeasureOptions, resolve_kv_approach, resolve_prestart
from kvprobe.measure.perturb import PerturbedExecutor, with_condition
from kvprobe.measure.scheduler import Scheduler
from kvprobe.output.progress import TrialProgress, print_summary
from kvprobe.results.loader import ResultFileError, load_result
from kvprobe.results.schema import Condition, ContainerLimits, ContainerRun, Environment, ExperimentRef
from kvprobe.results.store import SCRATCH, BadManifest, DirectoryRefused, ResultStore, RunLock, distinct_results
from kvprobe.safe_io import UnsafeFile
from kvprobe.trial.monitor import GuardPolicy
from kvprobe.trial.runner import TrialLimits, TrialRunner
from kvprobe.units import parse_size
from kvprobe.vocabulary import SEARCHES, STRATEGIES

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class BadInput(click.ClickException):
    exit_code = EXIT_BAD_INPUT


class FiniteFloat(click.FloatRange):
    """click's FloatRange, less nan and inf: nan passes every comparison a range makes
    (`--trial-timeout nan` would turn the timeout off) and inf is no duration."""

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kvprobe")
def main() -> None:
    """Measure the KV cache an LLM engine really gets, natively and in containers."""


EXTERNAL_HELP = "The original DGX Spark study's all_benchmark_results.json, shown as a labelled external source."
REPORT_HELP = {
    "out": "Where to write the report (default: the first RESULTS_DIR/report).",
    "format": "Comma-separated: markdown, html, csv, json, charts, or all.",
    "models": "With --external: the models file whose configs check its figures (kvprobe predict).",
}
MEASURE_HELP = {
    "out": "Results directory (one JSON per model and repeat).",
    "label": "Where this run happens; auto (the default) decides from the container evidence.",
    "tolerance": "Utilization tolerance of the searches.",
    "range": "Utilization range to search, overriding each model's utilization_range.",
    "strategy": "bracketed: predict each boundary from the engine's memory report; bisection: plain halving.",
    "fill": "Share of KV blocks the fill test must occupy at once.",
    "guard": "Kill a trial when free memory falls below SIZE (default: max(2 GiB, 3%) host, 3% cgroup).",
    "resume": "Continue the last unfinished run in --out, skipping finished work.",
    "prestart": "Start the next trials' workers (their imports) during a trial; auto: on discrete GPUs only.",
    "kv_approach": "Side the physical-capacity search comes from; auto: from above on discrete GPUs only (there "
    "a budget that does not fit fails at its allocation, before the fill test).",
    "ray": "An existing Ray cluster (host:port) for models with distributed_executor_backend: ray; a kvprobe "
    "agent on every node samples, guards and tears down there.",
}


def _measure_options(func):
    labels, fill_range = click.Choice(["native", "container", "auto"]), FiniteFloat(0.1, 1.0)
    options = [
        click.option("--out", "out_dir", default="results", type=click.Path(file_okay=False), help=MEASURE_HELP["out"]),
        click.option("--label", type=labels, default="auto", help=MEASURE_HELP["label"]),
        click.option("--only", multiple=True, help="Measure only this model (repeatable)."),
        click.option("--repeats", type=click.IntRange(1), default=1, show_default=True),
        click.option("--cooldown", "cooldown_s", type=FiniteFloat(0), default=0.0, help="Seconds between starts."),
        click.option("--max-gpu-temp", type=int, help="Wait before each start until the GPU is this cool (C)."),
        click.option("--tolerance", type=FiniteFloat(0.001, 0.5), default=0.01, help=MEASURE_HELP["tolerance"]),
        click.option("--range", "utilization_range", metavar="LO:HI", help=MEASURE_HELP["range"]),
        click.option("--searches", default=",".join(SEARCHES), show_default=True, help="Comma-separated searches."),
        click.option("--strategy", type=click.Choice(STRATEGIES), default="bracketed", help=MEASURE_HELP["strategy"]),
        click.option("--fill-target", type=fill_range, default=0.95, show_default=True, help=MEASURE_HELP["fill"]),
        click.option("--throughput", is_flag=True, help="Also time a fixed decode workload at u_max."),
        click.option("--trial-timeout", type=FiniteFloat(10), default=900.0, show_default=True),
        click.option("--guard-floor", metavar="SIZE", help=MEASURE_HELP["guard"]),
        click.option("--no-guard", is_flag=True, help="Disable the host-memory guard (not advised on unified memory)."),
        click.option("--drop-caches", is_flag=True, help="Drop the page cache before each trial (root only)."),
        click.option("--resume", is_flag=True, help=MEASURE_HELP["resume"]),
        click.option("--no-confirm", is_flag=True, help="Do not start each boundary once more to confirm it."),
        click.option(
            "--prestart", type=click.Choice(["auto", "on", "off"]), default="auto", help=MEASURE_HELP["prestart"]
        ),
        click.option(
            "--kv-approach",
            type=click.Choice(["auto", "from-below", "from-above"]),
            default="auto",
            help=MEASURE_HELP["kv_approach"],
        ),
        click.option("--annotate", hidden=True, help="How `kvprobe container` started this run (JSON)."),
        click.option("--condition", "condition_json", hidden=True, help="An experiment's condition (JSON)."),
        click.option("--experiment-ref", "experiment_json", hidden=True, help="The experiment of this run (JSON)."),
        click.option("--only-repeat", type=click.IntRange(1), hidden=True, help="Measure this repeat alone."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@click.argument("models_file", type=click.Path(dir_okay=False))
@_measure_options
@click.option("--ray-address", metavar="ADDRESS", help=MEASURE_HELP["ray"])
def measure(models_file: str, **kwargs) -> None:
    """Find u_max, u_min, KV at the reference utilization and the physical KV capacity."""
    sys.exit(run_measure(models_file, **kwargs))


def wider_than_the_machine(models: list, environment) -> list[str]:
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


def ray_problems(models_file: str, models: list, ray_address: str | None) -> list[str]:
    """Ray models need a cluster to run on, and a cluster needs a Ray model."""
    field = "field 'extra_engine_args.distributed_executor_backend'"
    problems = [
        f"{models_file}: model '{m.name}': {field}: ray needs --ray-address (an existing Ray cluster)"
        for m in models
        if m.uses_ray and not ray_address
    ]
    if ray_address and not any(m.uses_ray for m in models):
        problems.append(f"--ray-address: no model measured from {models_file} sets {field} to ray")
    return problems


def _measure_input(
    models_file: str,
    only: tuple,
    utilization_range: str | None,
    searches: str,
    drop_caches: bool,
    guard_floor: str | None,
    condition: Condition,
) -> tuple[list, tuple | None, tuple, int | None]:
    """The models (as the condition loads them), --range, --searches and --guard-floor, checked;
    BadInput names what is wrong."""
    try:
        models = with_condition(load_models(models_file, list(only) or None), condition)
        span = parse_utilization_range(utilization_range) if utilization_range else None
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    except ValueError as exc:
        raise BadInput(f"--range: {exc}") from None
    except EngineNotInstalled as exc:
        raise BadInput(f"{models_file}: {exc}") from None
    chosen = tuple(s.strip() for s in searches.split(",") if s.strip())
    if not chosen:
        raise BadInput(f"--searches: no search named (known: {', '.join(SEARCHES)})")
    unknown = [s for s in chosen if s not in SEARCHES]
    if unknown:
        raise BadInput(f"--searches: unknown search {unknown[0]!r} (known: {', '.join(SEARCHES)})")
    if drop_caches and not can_drop_caches():
        raise BadInput("--drop-caches needs root and a writable /proc/sys/vm/drop_caches")
    if importlib.util.find_spec("vllm") is None:
        raise BadInput("vLLM is not installed in this Python environment (see README: setup)")
    try:
        floor = parse_size(guard_floor) if guard_floor else None
    except ValueError as exc:
        raise BadInput(f"--guard-floor: {exc}") from None
    return models, span, chosen, floor


def run_measure(
    models_file: str,
    out_dir: str,
    label: str,
    only: tuple,
    repeats: int,
    cooldown_s: float,
    max_gpu_temp: int | None,
    tolerance: float,
    utilization_range: str | None,
    searches: str,
    strategy: str,
    fill_target: float,
    throughput: bool,
    trial_timeout: float,
    guard_floor: str | None,
    no_guard: bool,
    drop_caches: bool,
    resume: bool,
    no_confirm: bool,
    prestart: str,
    kv_approach: str = "auto",
    annotate: str | None = None,
    condition_json: str | None = None,
    experiment_json: str | None = None,
    only_repeat: int | None = None,
    ray_address: str | None = None,
) -> int:
    console = Console(stderr=False)
    condition, experiment = _experiment_cell(condition_json, experiment_json)
    models, span, chosen, floor = _measure_input(
        models_file, only, utilization_range, searches, drop_caches or condition.drop_caches, guard_floor, condition
    )

    environment, cluster = _where_to_measure(models_file, models, label, ray_address, not no_guard, floor)
    if label == "auto":
        label = "container" if environment.container.detected else "native"
        environment.label = label
    for warning in environment.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")

    searching = {
        "tolerance": tolerance,
        "utilization_range": span,
        "searches": chosen,
        "strategy": strategy,
        "confirm": not no_confirm,
    }
    drop_caches = drop_caches or condition.drop_caches
    around_each_start = {"cooldown_s": cooldown_s, "max_gpu_temp_c": max_gpu_temp, "drop_caches": drop_caches}
    container = ContainerRun.model_validate_json(annotate) if annotate else None
    use_prestart, prestart_reason = resolve_prestart(prestart, environment)
    searching["prestart"], searching["prestart_reason"] = ("on" if use_prestart else "off"), prestart_reason
    searching["kv_approach"], searching["kv_approach_reason"] = resolve_kv_approach(
        kv_approach.replace("-", "_"), environment
    )
    options = MeasureOptions(
        label=label,
        repeats=repeats,
        fill_target=fill_target,
        throughput=throughput,
        container=container,
        condition=condition if condition.name else None,
        experiment=experiment,
        only_repeat=only_repeat,
        **searching,
        **around_each_start,
    )
    guard = GuardPolicy.for_environment(environment, floor, enabled=not no_guard)
    identity = {
        "models_file_sha256": hashlib.sha256(Path(models_file).read_bytes()).hexdigest(),
        "only": sorted(only),
        "repeats": repeats,
        "label": label,
        **_condition_identity(options),
        "tolerance": tolerance,
        "range": span,
        "searches": chosen,
        "strategy": strategy,
        "confirm": not no_confirm,
        "prestart": prestart,
        "kv_approach": kv_approach,
        "fill_target": fill_target,
        "throughput": throughput,
        **({"ray_address": ray_address} if ray_address else {}),
    }
    lock = RunLock(Path(out_dir))
    try:
        lock.acquire()  # before anything else touches the directory, stale trial groups included
    except DirectoryRefused as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"--out {out_dir}: cannot be used: {exc.strerror}") from None
    scheduler = Scheduler(ResultStore(Path(out_dir)), models, options, identity)
    try:
        run_id, resumed = scheduler.start(resume)
        journal = scheduler.journal()
    except (BadManifest, UnsafeFile) as exc:
        raise BadInput(str(exc)) from None
    console.print(
        f"run {run_id} ({'resumed, ' + str(len(journal)) + ' trials journaled' if resumed else 'new'}), "
        f"label {label}, results in {escape(out_dir)}",
        highlight=False,
    )
    if journal.skipped:
        console.print(
            f"[yellow]warning:[/] journal lines {journal.skipped} were unusable (cut off or not an "
            "entry); those trials run again"
        )
    if resume and not resumed:
        console.print("[yellow]warning:[/] nothing to resume (no unfinished run with these settings); starting anew")

    engine = get_engine()
    progress = TrialProgress(console)
    runner = TrialRunner(
        engine,
        Path(out_dir) / ".trials" / run_id,
        TrialLimits(timeout_s=trial_timeout, guard=guard),
        on_sample=progress.on_sample,
        prestart=options.prestart == "on",
        cluster=cluster,
    )
    _warn_of_leftovers(console, runner)
    perturbed = PerturbedExecutor(runner, condition, Path(out_dir) / SCRATCH)
    executor = JournaledExecutor(journal, PreparedExecutor(perturbed, nvml=runner.nvml, **around_each_start), progress)
    _sigterm_as_interrupt()
    try:
        documents = scheduler.measure(executor, engine, environment, guard.settings(), progress)
    except ResultFileError as exc:
        raise BadInput(f"{exc}; move it away to measure that model and repeat again") from None
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted[/]: finished trials are journaled; continue with --resume --out {escape(out_dir)}",
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


def _where_to_measure(
    models_file: str, models: list, label: str, ray_address: str | None, guard: bool, floor: int | None
) -> tuple[Environment, RayCluster | None]:
    """This machine's environment block, and the Ray cluster's agents where --ray-address names one
    (the block then records the cluster); BadInput if the models do not fit where they would run."""
    environment = collect(None if label == "auto" else label)
    problems = ray_problems(models_file, models, ray_address)
    if problems:
        raise BadInput("\n".join(problems))
    cluster = None
    if ray_address:
        try:
            cluster = RayCluster(ray_address, guard, floor)
        except ClusterError as exc:
            raise BadInput(str(exc)) from None
        environment.cluster = cluster.record
    wider = wider_than_the_machine(models, environment)
    if wider:
        if cluster is not None:
            cluster.close()
        raise BadInput("\n".join(f"{models_file}: {problem}" for problem in wider))
    return environment, cluster


def _experiment_cell(condition_json: str | None, experiment_json: str | None) -> tuple[Condition, ExperimentRef | None]:
    """The condition `kvprobe experiment` runs this measurement under (a plain run: nothing done)."""
    condition = Condition.model_validate_json(condition_json) if condition_json else Condition(name="")
    return condition, ExperimentRef.model_validate_json(experiment_json) if experiment_json else None


def _condition_identity(options: MeasureOptions) -> dict:
    """What of an experiment's cell decides what it measures: the condition and the one repeat."""
    condition = options.condition
    return {
        "condition": options.condition_name,
        "condition_spec": condition.model_dump(mode="json") if condition else None,
        "only_repeat": options.only_repeat,
    }


@main.command()
@click.argument("experiment_file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The results directory.")
@click.option("--resume", is_flag=True, help="Continue the unfinished experiment in --out, skipping finished cells.")
@click.option("--dry-run", is_flag=True, help="Print the schedule and its estimated duration; run nothing.")
def experiment(experiment_file: str, out_dir: str, resume: bool, dry_run: bool) -> None:
    """Run every condition of EXPERIMENT_FILE for every repeat, interleaved (A B C A B C ...)."""
    from kvprobe.experiment.run import ExperimentRun
    from kvprobe.experiment.spec import load_experiment
    from kvprobe.output.experiment import print_schedule

    try:
        loaded = load_experiment(experiment_file)
    except (ConfigError, EngineNotInstalled) as exc:
        raise BadInput(str(exc)) from None
    console = Console()
    earlier, _ = ResultStore(Path(out_dir)).load_all() if Path(out_dir).is_dir() else ([], [])
    print_schedule(console, loaded, [t for _, doc in earlier for t in doc.trials])
    if dry_run:
        return
    if importlib.util.find_spec("vllm") is None:
        raise BadInput("vLLM is not installed in this Python environment (see README: setup)")

    def on_cell(cell, state: str) -> None:
        console.rule(f"{escape(cell.condition.name)}, repeat {cell.repeat}: {state}")

    _sigterm_as_interrupt()
    try:
        status = ExperimentRun(loaded, Path(out_dir), on_cell).run(resume)
    except DirectoryRefused as exc:
        raise BadInput(str(exc)) from None
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    if status == EXIT_INTERRUPTED:
        console.print(f"[yellow]interrupted[/]: continue with --resume --out {escape(out_dir)}", highlight=False)
    sys.exit(status)


def _sigterm_as_interrupt() -> None:
    """SIGTERM and SIGINT both interrupt a run (trials ended, journal kept). SIGINT is set explicitly:
    a process started as a shell's background job inherits it ignored, and would not stop on it."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the environment block as JSON.")
@click.option("--label", type=click.Choice(["native", "container"]), default=None)
@click.option(
    "--recorded",
    type=click.Path(file_okay=False, exists=True),
    help="Read a recorded machine's files and NVML answers instead of this machine's (a simulation).",
)
def env(as_json: bool, label: str | None, recorded: str | None) -> None:
    """Print where a measurement would be taken: container, cgroup, memory, GPUs, software."""
    problems = recorded_problems(Path(recorded)) if recorded else []
    if problems:
        raise BadInput("\n".join(problems))
    block = collect(label, Path(recorded) if recorded else None)
    if as_json:
        click.echo(block.model_dump_json(indent=1))
        return
    from kvprobe.output.environment import print_environment

    print_environment(Console(), block)


# measure options whose parameter name is not their flag's
MEASURE_FLAGS = {
    "--out-dir": "--out",
    "--cooldown-s": "--cooldown",
    "--utilization-range": "--range",
    "--condition-json": "--condition",
    "--experiment-json": "--experiment-ref",
}


def _measure_arguments(values: dict) -> list[str]:
    """Measure options as command-line arguments, to hand the same options to the container."""
    arguments: list[str] = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        flag = MEASURE_FLAGS.get(flag, flag)
        if value is None or value is False or value == ():
            continue
        if value is True:
            arguments.append(flag)
        elif isinstance(value, tuple):
            for item in value:
                arguments += [flag, str(item)]
        else:
            arguments += [flag, str(value)]
    return arguments


def _container_half(
    console: Console, spec, models_file: str, measure_values: dict, volume_flags: list[str], limits: ContainerLimits
) -> int:
    """`kvprobe measure` in a named container; an interrupt stops the container before kvprobe exits."""
    from kvprobe.container_launcher import build_command, inner_command, last_line, run_in_container

    out_dir = Path(measure_values["out_dir"]).resolve()
    console.rule("container")
    spec = dataclasses.replace(spec, name=f"kvprobe-measure-{os.getpid()}")
    values = {**measure_values, "label": "container", "out_dir": str(out_dir), "annotate": None}
    arguments = ["measure", str(Path(models_file).resolve()), *_measure_arguments(values)]
    command = build_command(spec, inner_command(spec, arguments), volume_flags)
    annotation = ContainerRun(command=command, runtime=spec.runtime, limits=limits).model_dump_json()
    command = [*command, "--annotate", annotation]
    console.print("[dim]" + escape(" ".join(command[:-2])) + "[/]", highlight=False, soft_wrap=True)
    try:
        done = run_in_container(spec, command)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted[/]: stopped and removed container {spec.name}; finished trials are "
            f"journaled, continue with --resume --out {escape(str(out_dir))}",
            highlight=False,
        )
        sys.exit(EXIT_INTERRUPTED)
    if done.returncode not in (EXIT_OK, EXIT_FAILED):
        console.print(f"[red]the container run failed (exit {done.returncode}):[/] {escape(last_line(done, ''))}")
        sys.exit(EXIT_FAILED)
    return done.returncode


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("models_file", type=click.Path(dir_okay=False))
@click.option("--runtime", type=click.Choice(["docker", "podman"]), required=True)
@click.option("--image", default=None, help="Image with vLLM and kvprobe installed (see docker/Dockerfile).")
@click.option("--rootfs", default=None, help="podman only: run on this root filesystem (e.g. '/:O', the host's own).")
@click.option("--memory", default=None, help="Container memory limit, e.g. 4g.")
@click.option("--shm-size", default="60g", show_default=True, help="Size of a private /dev/shm (--ipc-private).")
@click.option(
    "--ipc-host/--ipc-private",
    default=True,
    show_default=True,
    help="Share the host's IPC namespace (the original study's --ipc=host), or a private /dev/shm of --shm-size.",
)
@click.option(
    "--gpus", default="auto", show_default=True, help="--gpus value; auto = all when NVML sees a GPU, none = omit."
)
@click.option(
    "--memlock", default="-1", show_default=True, help="--ulimit memlock value; 'none' keeps the runtime default."
)
@click.option(
    "--stack", default="67108864", show_default=True, help="--ulimit stack value; 'none' keeps the runtime default."
)
@click.option("--network", default="none", show_default=True)
@click.option("--oci-runtime", default=None, help="podman --runtime (default: runc where crun is missing).")
@click.option(
    "--python", "python_inside", default=None, help="Python inside the container (default: this one for --rootfs)."
)
@click.option(
    "--runtime-flag", multiple=True, help="Extra flag for `RUNTIME run`, repeatable (e.g. --runtime-flag=--cpus=2)."
)
@click.option("--both", is_flag=True, help="Measure natively first, then in the container: one comparable pair.")
@_measure_options
def container(
    models_file: str,
    runtime: str,
    image: str | None,
    rootfs: str | None,
    memory: str | None,
    shm_size: str,
    ipc_host: bool,
    gpus: str,
    memlock: str,
    stack: str,
    network: str,
    oci_runtime: str | None,
    python_inside: str | None,
    runtime_flag: tuple,
    both: bool,
    **measure_values,
) -> None:
    """Run `kvprobe measure` in a container with the same models and settings (--both: native too)."""
    from kvprobe.container_launcher import (
        ContainerError,
        ContainerSpec,
        default_oci_runtime,
        mounts,
        preflight,
        probe_environment,
        version_mismatch,
    )
    from kvprobe.environment.gpu import Nvml
    from kvprobe.report.pairing import check_pairs

    console = Console()
    if measure_values.get("label") not in (None, "auto"):
        raise BadInput("--label is set by `kvprobe container` itself (native for --both, container inside)")
    try:
        models = load_models(models_file, list(measure_values["only"]) or None)
    except (ConfigError, EngineNotInstalled) as exc:
        raise BadInput(str(exc)) from None
    if gpus == "auto":
        with Nvml() as nvml:
            gpus = "all" if nvml.device_count() else None
    try:
        limits = {
            "memory": memory,
            "shm_size": shm_size,
            "ipc_host": ipc_host,
            "memlock": None if memlock == "none" else memlock,
            "stack": None if stack == "none" else stack,
        }
        spec = ContainerSpec(
            runtime=runtime,
            image=image,
            rootfs=rootfs,
            gpus=None if gpus in (None, "none") else gpus,
            network=network,
            oci_runtime=oci_runtime or default_oci_runtime(runtime),
            python=python_inside,
            runtime_flags=list(runtime_flag),
            **limits,
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    out_dir = Path(measure_values["out_dir"]).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        volume_flags = mounts(models, Path(models_file), out_dir, [])
        preflight(spec)
        inside = probe_environment(spec, volume_flags)
    except ContainerError as exc:
        raise BadInput(str(exc)) from None
    differences = version_mismatch(collect("native").software, inside.software)
    if differences:
        console.print(f"[red]refusing an unmatched pair:[/] {escape('; '.join(differences))}")
        sys.exit(EXIT_FAILED)
    limits = ContainerLimits(
        memory_limit_bytes=inside.cgroup.limit_bytes,
        shm_bytes=inside.shm_bytes,
        memlock_limit_bytes=inside.memlock_limit_bytes,
        cgroup_version=inside.cgroup.version,
    )
    console.print(f"container sees: memory limit {limits.memory_limit_bytes}, /dev/shm {limits.shm_bytes}")

    status = EXIT_OK
    _sigterm_as_interrupt()
    if both:
        console.rule("native")
        status = run_measure(models_file, **{**measure_values, "label": "native", "out_dir": str(out_dir)})
        if status == EXIT_INTERRUPTED:
            console.print("[yellow]interrupted during the native half: the container half was not started[/]")
            sys.exit(EXIT_INTERRUPTED)
    status = max(status, _container_half(console, spec, models_file, measure_values, volume_flags, limits))
    if both:
        problems = check_pairs(ResultStore(out_dir), [m.name for m in models])
        for problem in problems:
            console.print(f"[red]unmatched:[/] {escape(problem)}")
        if problems:
            status = EXIT_FAILED
    sys.exit(status)


@main.command()
@click.argument("results_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help=REPORT_HELP["out"])
@click.option("--format", "formats", default="all", show_default=True, help=REPORT_HELP["format"])
@click.option("--title", default=None, help="Title of the Markdown and HTML report.")
@click.option("--front-matter", is_flag=True, help="Start the Markdown with Hugo front matter.")
@click.option("--date", default=None, metavar="YYYY-MM-DD", help="The front matter's date (default: today).")
@click.option("--external", default=None, type=click.Path(dir_okay=False), help=EXTERNAL_HELP)
@click.option("--models", "models_file", type=click.Path(dir_okay=False), help=REPORT_HELP["models"])
def report(
    results_dirs: tuple[str, ...],
    out_dir: str | None,
    formats: str,
    title: str | None,
    front_matter: bool,
    date: str | None,
    external: str | None,
    models_file: str | None,
) -> None:
    """Compare native and container results, and an experiment's conditions: statistics, tables, charts.

    Several RESULTS_DIRS (from several machines, say) are read as one set of results."""
    try:
        _report(results_dirs, out_dir, formats, title, front_matter, date, external, models_file)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]: the report files written so far are whole")
        sys.exit(EXIT_INTERRUPTED)


def _report(
    results_dirs: tuple[str, ...],
    out_dir: str | None,
    formats: str,
    title: str | None,
    front_matter: bool,
    date: str | None,
    external: str | None,
    models_file: str | None,
) -> None:
    from kvprobe.report.summary import build_report
    from kvprobe.report.writers import FORMATS, ReportOptions, write_report

    chosen = list(FORMATS) if formats == "all" else [f.strip() for f in formats.split(",") if f.strip()]
    if not chosen:
        raise BadInput(f"--format: no format named (known: {', '.join(FORMATS)}, all)")
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise BadInput(f"--format: unknown format {unknown[0]!r} (known: {', '.join(FORMATS)}, all)")
    try:
        options = ReportOptions(title=title, front_matter=front_matter, date=date)
    except ValueError as exc:
        raise BadInput(f"--date: {exc}") from None
    loaded, problems = [], []
    for results_dir in results_dirs:
        root = Path(results_dir)
        if not root.is_dir():
            raise BadInput(f"{results_dir}: no such results directory")
        found, unreadable = ResultStore(root).load_all()
        loaded, problems = loaded + found, problems + unreadable
    if not loaded:
        detail = "".join(f"\n  {p}" for p in problems)
        where = ", ".join(results_dirs)
        raise BadInput(f"{where}: no kvprobe result files found (expected MODEL/CONDITION-RUN-rN.json){detail}")
    loaded, counted_once = distinct_results(loaded)
    summary = build_report([doc for _, doc in loaded], problems)
    target = Path(out_dir) if out_dir else Path(results_dirs[0]) / "report"
    if external:
        options = dataclasses.replace(options, external=_external(external, models_file))
    written = write_report(summary, target, chosen, options)
    console = Console()
    if problems:
        console.print(f"[yellow]skipped {len(problems)} unreadable result file(s)[/]")
    for duplicate in counted_once:
        console.print(f"[yellow]warning:[/] {escape(duplicate)}", highlight=False)
    for problem in summary.unmatched:
        console.print(f"[yellow]not compared:[/] {escape(problem)}", highlight=False)
    console.print(
        f"{len(summary.models)} model(s) compared; wrote {len(written)} file(s) to {escape(str(target))}",
        highlight=False,
    )
    for path in written:
        console.print(f"  {escape(str(path))}", highlight=False)


def _external(path: str, models_file: str | None):
    """The study's table summarised, checked against the configs of the matching shipped models."""
    from kvprobe.predict import predict
    from kvprobe.report.external import STUDY_MODELS, load_benchmark_spark, summarise_external

    try:
        source = load_benchmark_spark(Path(path))
        models = {m.name: m for m in load_models(models_file)} if models_file else {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"--external {path}: not the study's results file ({exc})") from None
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    predictions = {}
    for study_name, name in STUDY_MODELS.items():
        if name in models:
            settings = models[name]
            config = settings.hf_config()
            predictions[study_name] = predict(name, config, settings.kv_cache_dtype, settings.dtype)
    return summarise_external(source, predictions)


PREDICT_FROM_HELP = "A result of the same model whose activation peak and non-torch memory to subtract too."


@main.command(name="predict")
@click.argument("models_file", type=click.Path(dir_okay=False))
@click.option("--memory", required=True, metavar="SIZE", help="The memory the budget comes from, e.g. 80g or 119.6g.")
@click.option(
    "--utilization",
    type=FiniteFloat(0.0, 1.0, min_open=True),
    default=None,
    help="gpu_memory_utilization (default: each model's own).",
)
@click.option("--only", multiple=True, help="Only this model (repeatable).")
@click.option("--from", "from_result", type=click.Path(dir_okay=False), help=PREDICT_FROM_HELP)
def predict_command(
    models_file: str, memory: str, utilization: float | None, only: tuple, from_result: str | None
) -> None:
    """KV bytes per token and block, weights, and the KV a budget leaves: from config.json, no engine."""
    from kvprobe.output.prediction import print_predictions
    from kvprobe.predict import predict

    try:
        models = load_models(models_file, list(only) or None)
        memory_bytes = parse_size(memory)
        earlier = load_result(Path(from_result)) if from_result else None
    except (ConfigError, EngineNotInstalled) as exc:
        raise BadInput(str(exc)) from None
    except (ValueError, ResultFileError) as exc:
        raise BadInput(str(exc)) from None
    other = None
    if earlier is not None and earlier.memory_breakdown is not None:
        report = earlier.memory_breakdown
        other = (report.activation_peak_bytes or 0.0) + (report.non_torch_bytes or 0.0)
    rows, unusable = [], []
    for settings in models:
        quantization = settings.extra_engine_args.get("quantization")
        try:
            config = settings.hf_config()
            rows.append(
                predict(
                    settings.name,
                    config,
                    settings.kv_cache_dtype,
                    settings.dtype,
                    settings.tensor_parallel_size,
                    settings.block_size or 16,
                    quantization,
                )
            )
        except (OSError, ValueError) as exc:  # UnusableConfig and UnsafeFile are ValueErrors
            unusable.append(f"{models_file}: {exc}".replace("\n", f"\n{models_file}: "))
    if unusable:
        raise BadInput("\n".join(unusable))
    print_predictions(
        Console(),
        rows,
        memory_bytes,
        utilization,
        {m.name: m.gpu_memory_utilization for m in models},
        other,
        {m.name: m.max_model_len for m in models},
    )


if __name__ == "__main__":
    main()
