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

from kvprobe.cli_options import FiniteFloat, container_options, measure_options, request_from_options
from kvprobe.errors import InputError, KvprobeError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class Failure(click.ClickException):
    """A KvprobeError as click prints it ("Error: ..." on stderr), with kvprobe's exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


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
            Console(stderr=True).print("[yellow]interrupted[/]")
            sys.exit(EXIT_INTERRUPTED)


def _interrupts() -> None:
    """SIGTERM and SIGINT both interrupt a run (trials ended, journal kept). SIGINT is set explicitly:
    a process started as a shell's background job inherits it ignored, and would not stop on it."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@click.group(cls=KvprobeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kvprobe")
def main() -> None:
    """Measure the KV cache an LLM engine really gets, natively and in containers."""


MEASURE_EPILOG = """\b
Examples:
  kvprobe measure models.yaml --only tiny-llama --out results
  kvprobe measure models.yaml --searches reference,u_max --range 0.5:0.95
  kvprobe measure models.yaml --resume --out results     continue a killed run
"""


@main.command(epilog=MEASURE_EPILOG, short_help="Find u_max, u_min, KV at the reference and the physical KV.")
@click.argument("models_file", required=False, type=click.Path(dir_okay=False))
@measure_options
@click.option("--ray-address", metavar="ADDRESS", help="An existing Ray cluster (host:port) for Ray models.")
def measure(models_file: str | None, **values) -> None:
    """Find u_max, u_min, KV at the reference utilization and the physical KV capacity of each model."""
    from kvprobe.measure.container_session import run_container
    from kvprobe.measure.session import run_measure

    request = request_from_options(models_file, values)
    _interrupts()
    console = Console()
    image = request.condition.native_from_image if request.condition else None
    if image is not None and request.started_by is None:  # an experiment's native-from-image cell, not yet inside
        from kvprobe.measure.chroot import run_native_from_image

        sys.exit(run_native_from_image(request, image, console))
    if request.container is not None:  # an experiment's container cell
        sys.exit(_paired(run_container(request, console), request, console))
    sys.exit(run_measure(request, console))


CONTAINER_EPILOG = """\b
Examples:
  kvprobe container models.yaml --runtime docker --image kvprobe-vllm --both
  kvprobe container models.yaml --runtime podman --rootfs /:O --memory 8g --ipc-private --both
"""


@main.command(epilog=CONTAINER_EPILOG, short_help="Measure in a container (--both: natively too).")
@click.argument("models_file", required=False, type=click.Path(dir_okay=False))
@container_options
@measure_options
def container(models_file: str | None, **values) -> None:
    """Run `kvprobe measure` in a container with the same models and settings (--both: natively first)."""
    from kvprobe.measure.container_session import run_container

    names = ("runtime", "image", "rootfs", "memory", "shm_size", "ipc_host", "gpus", "memlock", "stack", "network")
    names += ("oci_runtime", "python", "runtime_flags", "both", "native_side")
    settings = {name: values.pop(name) for name in names}
    settings["runtime_flags"] = list(settings["runtime_flags"])
    request = request_from_options(models_file, values, settings)
    _interrupts()
    console = Console()
    sys.exit(_paired(run_container(request, console), request, console))


def _paired(status: int, request, console: Console) -> int:
    """After `--both`: every model must form a comparable native/container pair."""
    from kvprobe.config import load_models
    from kvprobe.report.pairing import check_pairs
    from kvprobe.results.store import ResultStore

    if not request.both or status == EXIT_INTERRUPTED:
        return status
    models = [m.name for m in load_models(request.models_file, list(request.only) or None)]
    problems = check_pairs(ResultStore(Path(request.out_dir)), models)
    for problem in problems:
        console.print(f"[red]unmatched:[/] {escape(problem)}", highlight=False)
    return max(status, EXIT_FAILED) if problems else status


@main.command(short_help="Run every condition of an experiment file, repeat by repeat.")
@click.argument("experiment_file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The results directory.")
@click.option("--resume", is_flag=True, help="Continue the unfinished experiment in --out, skipping finished cells.")
@click.option("--dry-run", is_flag=True, help="Print the schedule and its estimated duration; run nothing.")
def experiment(experiment_file: str, out_dir: str, resume: bool, dry_run: bool) -> None:
    """Run every condition of EXPERIMENT_FILE for every repeat, interleaved (A B C A B C ...) or, with
    `order: blocked` in the file, all repeats of one condition before the next (A A B B ...).

    A cell is finished when it wrote a result for every model; unfinished cells are listed at the end
    (exit 1) and run again by --resume."""
    import importlib.util

    from kvprobe.experiment import preflight
    from kvprobe.experiment.run import ExperimentRun
    from kvprobe.experiment.schedule_view import print_schedule
    from kvprobe.experiment.spec import load_experiment
    from kvprobe.results.store import ResultStore

    loaded = load_experiment(experiment_file)
    console = Console()
    earlier, _ = ResultStore(Path(out_dir)).load_all() if Path(out_dir).is_dir() else ([], [])
    print_schedule(console, loaded, [t for _, doc in earlier for t in doc.trials])
    if dry_run:
        return
    if importlib.util.find_spec("vllm") is None:
        raise InputError("vLLM is not installed in this Python environment (see README: setup)")
    preflight.check(loaded)

    def on_cell(cell, state: str) -> None:
        console.rule(f"{escape(cell.condition.name)}, repeat {cell.repeat}: {state}")

    _interrupts()
    try:
        outcome = ExperimentRun(loaded, Path(out_dir), on_cell).run(resume)
        status, unfinished = outcome.status, outcome.unfinished
    except KeyboardInterrupt:
        status, unfinished = EXIT_INTERRUPTED, {}
    for key, why in unfinished.items():
        console.print(f"[red]unfinished:[/] {escape(key)}: {escape(why)}", highlight=False)
    if status == EXIT_INTERRUPTED or unfinished:
        console.print(f"continue with --resume --out {escape(out_dir)}", highlight=False)
    sys.exit(status)


@main.command(short_help="Compare native, container and experiment results: statistics, tables, charts.")
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
@click.option("--front-matter", is_flag=True, help="Start the Markdown with Hugo front matter.")
@click.option("--date", default=None, metavar="YYYY-MM-DD", help="The front matter's date (default: today).")
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
    external: str | None,
    models_file: str | None,
) -> None:
    """Compare native and container results, and an experiment's conditions: statistics, tables, charts.

    Several RESULTS_DIRS (from several machines, say) are read as one set of results."""
    from kvprobe.report.run import make_report
    from kvprobe.report.writers import ReportOptions

    options = ReportOptions(title=title, front_matter=front_matter, date=date)
    done = make_report(list(results_dirs), out_dir, formats, options, (external, models_file) if external else None)
    console = Console()
    if done.unreadable:
        console.print(f"[yellow]skipped {len(done.unreadable)} unreadable result file(s)[/]")
    for problem in done.summary.unmatched:
        console.print(f"[yellow]not compared:[/] {escape(problem)}", highlight=False)
    console.print(
        f"{len(done.summary.models)} model(s) compared; wrote {len(done.written)} file(s) to "
        f"{escape(str(done.target))}",
        highlight=False,
    )
    for path in done.written:
        console.print(f"  {escape(str(path))}", highlight=False)


@main.command(short_help="Print where a measurement would be taken.")
@click.option("--json", "as_json", is_flag=True, help="Print the environment block as JSON.")
@click.option(
    "--label",
    type=click.Choice(["native", "container"]),
    default=None,
    show_default="decided from the container evidence",
    help="Record the block under this label.",
)
@click.option(
    "--recorded",
    type=click.Path(file_okay=False, exists=True),
    help="Read a recorded machine's files and NVML answers instead of this machine's (a simulation).",
)
def env(as_json: bool, label: str | None, recorded: str | None) -> None:
    """Print where a measurement would be taken: container, cgroup, memory, GPUs, software."""
    from kvprobe.environment.facts import collect
    from kvprobe.output.environment import print_environment

    block = collect(label, Path(recorded) if recorded else None)  # type: ignore[arg-type]
    if as_json:
        click.echo(block.model_dump_json(indent=1))
    else:
        print_environment(Console(), block)


PREDICT_HELP = {
    "memory": "The pool gpu_memory_utilization multiplies, with its unit: 119.6g, 119.6GiB, 80g (k, m, g, t are "
    "powers of 1024; GB is read as GiB). A bare number is refused.",
    "utilization": "gpu_memory_utilization, a fraction of the pool (0-1].",
    "from": "A result of the same model whose activation peak and non-torch memory to subtract too.",
    "json": "Print every figure as JSON (bytes, blocks and tokens exact), with the pool and its source.",
}
PREDICT_EPILOG = """\b
Examples:
  kvprobe predict models.yaml                       this machine's pool
  kvprobe predict models.yaml --memory 119.6g --only gpt-oss-120b
  kvprobe predict models.yaml --memory 80g --from results/MODEL/RESULT.json --json
"""


@main.command(name="predict", epilog=PREDICT_EPILOG, short_help="KV and verdicts from config.json, no engine.")
@click.argument("models_file", type=click.Path(dir_okay=False))
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
    models_file: str, memory: str | None, utilization: float | None, only: tuple, from_result: str | None, as_json: bool
) -> None:
    """KV bytes per token and block, weights, the KV a budget leaves and whether a max_model_len request fits:
    from config.json, no engine."""
    from kvprobe.output.prediction import predict_models, predictions_json, print_predictions

    done = predict_models(models_file, memory, utilization, only, from_result)
    if as_json:
        click.echo(json.dumps(predictions_json(done.rows, done.pool, done.other_bytes), indent=1))
    else:
        print_predictions(Console(), done.rows, done.pool, from_result=done.other_bytes is not None)


if __name__ == "__main__":
    main()
