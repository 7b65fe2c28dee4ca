"""The kvprobe command line. It only parses options and wires the modules together: each command
builds its typed input and hands it to the module that does the work; every `KvprobeError` becomes
one message and an exit code here (2 bad input, 1 a failed run, 130 interrupted)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from kvprobe.cli_options import (
    BUNDLE_EPILOG,
    CONTAINER_EPILOG,
    EXPERIMENT_EPILOG,
    MEASURE_EPILOG,
    PREDICT_EPILOG,
    PREDICT_HELP,
    REPORT_EPILOG,
    SERVE_USAGE,
    FiniteFloat,
    container_options,
    display_options,
    measure_options,
    model_inputs,
    request_from_options,
)
from kvprobe.errors import InputError, KvprobeError
from kvprobe.trial.process_group import ignore_interrupts

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class Failure(click.ClickException):
    """A KvprobeError as click prints it ("Error: ..." on stderr), with kvprobe's exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        # click declares exit_code a ClassVar but reads it from the instance (ClickException.show, main).
        self.exit_code = exit_code  # type: ignore[misc]


class KvprobeGroup(click.Group):
    """kvprobe's commands, with its errors and interrupts turned into messages and exit codes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as exc:
            raise Failure(str(exc), EXIT_BAD_INPUT) from None
        except KvprobeError as exc:  # RunFailed, or a control-flow error that escaped its handler
            raise Failure(str(exc), EXIT_FAILED) from None
        except KeyboardInterrupt:
            ignore_interrupts()
            Console(stderr=True).print("[yellow]interrupted[/]")
            sys.exit(EXIT_INTERRUPTED)


def _interrupts() -> None:
    """SIGINT, SIGTERM, SIGHUP (a closed terminal or SSH session) and SIGQUIT all interrupt a run:
    trials ended, journal kept. SIGINT is set explicitly: a process started as a shell's background
    job inherits it ignored, and would not stop on it."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    for interrupt in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(interrupt, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@click.group(cls=KvprobeGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="kvprobe")
def main() -> None:
    """Measure the KV cache an LLM engine really gets, natively and in containers."""


@main.command(epilog=MEASURE_EPILOG, short_help="Find u_max, u_min, KV at the reference and the physical KV.")
@click.argument("inputs", nargs=-1, type=click.UNPROCESSED, metavar=SERVE_USAGE)
@measure_options
@display_options
@click.option("--ray-address", metavar="ADDRESS", help="An existing Ray cluster (host:port) for Ray models.")
def measure(inputs: tuple[str, ...], log_format: str | None, show_engine_log: bool, **values) -> None:
    """Find u_max, u_min, KV at the reference utilization and the physical KV capacity of each model:
    the models of MODELS_FILE, or the one model of your own `vllm serve` command line after --."""
    from kvprobe.measure.container_session import run_container
    from kvprobe.measure.session import run_measure
    from kvprobe.output.progress import make_console

    request = request_from_options(inputs, values)
    _interrupts()
    console = make_console(log_format)  # type: ignore[arg-type]
    image = request.condition.native_from_image if request.condition else None
    if image is not None and request.started_by is None:  # an experiment's native-from-image cell, not yet inside
        from kvprobe.measure.chroot import run_native_from_image

        sys.exit(run_native_from_image(request, image, console))
    if request.container is not None:  # an experiment's container cell
        sys.exit(_paired(run_container(request, console), request, console))
    sys.exit(run_measure(request, console, show_engine_log))


@main.command(epilog=CONTAINER_EPILOG, short_help="Measure in a container (--both: natively too).")
@click.argument("models_file", required=False, type=click.Path(dir_okay=False))
@container_options
@measure_options
@display_options
def container(models_file: str | None, log_format: str | None, show_engine_log: bool, **values) -> None:
    """Run `kvprobe measure` in a container with the same models and settings (--both: natively first)."""
    from kvprobe.measure.container_session import run_container
    from kvprobe.output.progress import make_console

    alias = values.pop("memory_alias")
    if alias is not None and values["memory"] is not None:
        raise InputError("--memory-limit: given twice (--memory is its old name); give one")
    values["memory"] = values["memory"] if alias is None else alias

    names: tuple[str, ...]
    names = ("runtime", "image", "rootfs", "memory", "shm_size", "ipc_host", "gpus", "memlock", "stack", "network")
    names += ("oci_runtime", "python", "runtime_flags", "both", "native_side")
    settings = {name: values.pop(name) for name in names}
    settings["runtime_flags"] = list(settings["runtime_flags"])
    request = request_from_options((models_file,) if models_file else (), values, settings)
    _interrupts()
    console = make_console(log_format)  # type: ignore[arg-type]
    sys.exit(_paired(run_container(request, console), request, console))


def _paired(status: int, request, console: Console) -> int:
    """After `--both`: every model must form a comparable native/container pair."""
    from kvprobe.report.pairing import check_pairs
    from kvprobe.results.store import ResultStore

    if not request.both or status == EXIT_INTERRUPTED:
        return status
    models = [m.name for m in request.models()]
    problems = check_pairs(ResultStore(Path(request.out_dir)), models)
    for problem in problems:
        console.print(f"[red]unmatched:[/] {escape(problem)}", highlight=False)
    return max(status, EXIT_FAILED) if problems else status


@main.command(epilog=EXPERIMENT_EPILOG, short_help="Run every condition of an experiment file.")
@click.argument("experiment_file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The results directory.")
@click.option("--resume", is_flag=True, help="Continue the unfinished experiment in --out, skipping finished cells.")
@click.option("--dry-run", is_flag=True, help="Print the schedule and its estimated duration; run nothing.")
@click.option(
    "--devices",
    default="",
    metavar="GPU,GPU",
    help="Run cells in parallel, one per GPU (NVML indices or UUIDs), each GPU's results under "
    "OUT/lane-GPU. Discrete GPUs only.",
)
@display_options
def experiment(experiment_file: str, out_dir: str, resume: bool, dry_run: bool, devices: str, **display) -> None:
    """Run every condition of EXPERIMENT_FILE for every repeat, interleaved (A B C A B C ...) or, with
    `order: blocked` in the file, all repeats of one condition before the next (A A B B ...).

    A cell is finished when it wrote a result for every model; unfinished cells are listed at the end
    (exit 1) and run again by --resume."""
    from kvprobe.experiment.session import run_experiment
    from kvprobe.output.progress import make_console

    console = make_console(display["log_format"])
    _interrupts()
    lanes = tuple(device.strip() for device in devices.split(",") if device.strip())
    sys.exit(run_experiment(experiment_file, out_dir, resume, dry_run, console, display, lanes))


@main.command(epilog=REPORT_EPILOG, short_help="Compare results: statistics, tables, charts.")
@click.argument("results_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Where to write (default: RESULTS_DIR/report)."
)
@click.option(
    "--format",
    "formats",
    default="all",
    show_default=True,
    help="Comma-separated: markdown, html, csv, json, charts, or all.",
)
@click.option("--title", default=None, help="Title of the Markdown and HTML report.")
@click.option(
    "--front-matter",
    is_flag=True,
    help="Write the Markdown as a Hugo page bundle: index.md with front matter, beside its chart images.",
)
@click.option("--date", default=None, metavar="YYYY-MM-DD", help="The front matter's date (default: today).")
@click.option("--draft", is_flag=True, help="Mark the front matter draft: true (Hugo builds it only with -D).")
@click.option(
    "--tags",
    default=None,
    metavar="TAG,TAG",
    help="The front matter's tags, comma-separated (default: vllm,kv-cache,containers).",
)
@click.option(
    "--external",
    default=None,
    type=click.Path(dir_okay=False),
    help="The original DGX Spark study's all_benchmark_results.json, shown as a labelled external source.",
)
@click.option(
    "--models",
    "models_file",
    type=click.Path(dir_okay=False),
    help="With --external: the models file whose configs check its figures.",
)
def report(
    results_dirs: tuple[str, ...],
    out_dir: str | None,
    formats: str,
    title: str | None,
    front_matter: bool,
    date: str | None,
    draft: bool,
    tags: str | None,
    external: str | None,
    models_file: str | None,
) -> None:
    """Compare native and container results, and an experiment's conditions: statistics, tables, charts.

    Several RESULTS_DIRS (from several machines, say) are read as one set of results."""
    from kvprobe.report.run import make_report
    from kvprobe.report.writers import ReportOptions

    chosen_tags = tuple(t.strip() for t in tags.split(",") if t.strip()) if tags is not None else None
    try:
        options = ReportOptions(title=title, front_matter=front_matter, date=date, draft=draft, tags=chosen_tags)
    except ValueError as exc:
        raise InputError(f"--date: {exc}") from None
    done = make_report(list(results_dirs), out_dir, formats, options, (external, models_file) if external else None)
    console = Console()
    if done.unreadable:
        console.print(f"[yellow]skipped {len(done.unreadable)} unreadable result file(s)[/]")
    for duplicate in done.counted_once:
        console.print(f"[yellow]warning:[/] {escape(duplicate)}", highlight=False)
    for problem in done.summary.unmatched:
        console.print(f"[yellow]not compared:[/] {escape(problem)}", highlight=False)
    one_sided = f", {len(done.summary.single)} reported on one side only" if done.summary.single else ""
    console.print(
        f"{len(done.summary.models)} model(s) compared{one_sided}; wrote {len(done.written)} file(s) to "
        f"{escape(str(done.target))}",
        highlight=False,
    )
    for path in done.written:
        console.print(f"  {escape(str(path))}", highlight=False)


@main.command(
    epilog="\b\nExamples:\n  kvprobe env\n  kvprobe env --json > environment.json",
    short_help="Print where a measurement would be taken.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the environment block as JSON.")
@click.option(
    "--label",
    type=click.Choice(["native", "container"]),
    default=None,
    show_default="decided from the container evidence",
    help="Record the block under this label (native or container).",
)
@click.option(
    "--recorded",
    type=click.Path(file_okay=False, exists=True),
    help="Read a recorded machine's files and NVML answers instead of this machine's (a simulation).",
)
def env(as_json: bool, label: str | None, recorded: str | None) -> None:
    """Print where a measurement would be taken: container, cgroup, memory, GPUs, software."""
    from kvprobe.environment.facts import collect
    from kvprobe.environment.recorded import recorded_problems
    from kvprobe.output.environment import print_environment

    problems = recorded_problems(Path(recorded)) if recorded else []
    if problems:
        raise InputError("\n".join(problems))
    block = collect(label, Path(recorded) if recorded else None)  # type: ignore[arg-type]
    if as_json:
        click.echo(block.model_dump_json(indent=1))
    else:
        print_environment(Console(), block)


@main.command(name="predict", epilog=PREDICT_EPILOG, short_help="KV and verdicts from config.json, no engine.")
@click.argument("inputs", nargs=-1, type=click.UNPROCESSED, metavar=SERVE_USAGE)
@click.option("--memory", metavar="SIZE", show_default="this machine's pool", help=PREDICT_HELP["memory"])
@click.option(
    "--utilization",
    type=FiniteFloat(0.0, 1.0, min_open=True),
    default=None,
    show_default="each model's own",
    help=PREDICT_HELP["utilization"],
)
@click.option("--only", multiple=True, help="Only this model (repeatable).")
@click.option("--from", "from_result", type=click.Path(dir_okay=False), help=PREDICT_HELP["from"])
@click.option("--json", "as_json", is_flag=True, help=PREDICT_HELP["json"])
def predict_command(
    inputs: tuple, memory: str | None, utilization: float | None, only: tuple, from_result: str | None, as_json: bool
) -> None:
    """KV bytes per token and block, weights, the KV a budget leaves and whether a max_model_len request fits:
    from config.json, no engine."""
    from kvprobe.output.prediction import predict_models, predictions_json, print_predictions

    models_file, serve_command = model_inputs(inputs)
    if models_file is None and serve_command is None:
        raise InputError("MODELS_FILE: missing (or a `vllm serve MODEL ...` command line after --)")
    done = predict_models(models_file, memory, utilization, only, from_result, serve_command)
    if as_json:
        click.echo(json.dumps(predictions_json(done.rows, done.pool, done.other_bytes), indent=1))
    else:
        print_predictions(Console(), done.rows, done.pool, from_result=done.other_bytes is not None)


@main.command(epilog=BUNDLE_EPILOG, short_help="One archive of results to send back, host name and home removed.")
@click.argument("results_dir", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--out", "archive", type=click.Path(dir_okay=False), show_default="RESULTS_DIR.tar.gz", help="The archive."
)
@click.option("--keep-identity", is_flag=True, help="Keep the host name and home paths as they are.")
def bundle(results_dir: str, archive: str | None, keep_identity: bool) -> None:
    """Write one tar.gz of RESULTS_DIR with what rebuilds every figure (results, journals, manifests,
    engine logs), the host name and home paths replaced unless --keep-identity."""
    from kvprobe.results.bundle import write_bundle

    done = write_bundle(Path(results_dir), Path(archive) if archive else None, keep_identity)
    click.echo(f"wrote {done.archive} ({done.files} files, {done.replaced} identity occurrences replaced)")
    click.echo("attach it to an issue: docs/field/send-results.md")


if __name__ == "__main__":
    main()
