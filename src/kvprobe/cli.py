"""The kvprobe command line. It only parses options and wires the modules together."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import signal
import sys
from pathlib import Path
from typing import Optional

import click
from rich.console import Console

from kvprobe import environment
from kvprobe.config import ConfigError, load_models, parse_utilization_range
from kvprobe.engines import get_engine
from kvprobe.engines.vllm_args import EngineNotInstalled
from kvprobe.environment.memory import host_memory, read_cgroup_memory
from kvprobe.measure import SEARCHES, MeasureOptions, ModelMeasurement, can_drop_caches, measure_model
from kvprobe.output.progress import TrialProgress, summary_table
from kvprobe.results.store import ResultStore
from kvprobe.trial.monitor import GuardPolicy
from kvprobe.trial.runner import TrialLimits, TrialRunner

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class BadInput(click.ClickException):
    exit_code = EXIT_BAD_INPUT


def parse_size(text: str) -> int:
    """'2g', '512MiB', '1073741824' -> bytes."""
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = cleaned[-1] if cleaned and cleaned[-1] in SIZE_UNITS else ""
    number = cleaned[: -1] if unit else cleaned
    try:
        return int(float(number) * SIZE_UNITS[unit])
    except ValueError:
        raise BadInput(f"cannot read size {text!r} (examples: 2g, 512m, 1073741824)") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kvprobe")
def main() -> None:
    """Measure the KV cache an LLM engine really gets, natively and in containers."""


def _measure_options(func):
    options = [
        click.option("--out", "out_dir", default="results", show_default=True, type=click.Path(file_okay=False),
                     help="Results directory (one JSON per model and repeat)."),
        click.option("--label", type=click.Choice(["native", "container", "auto"]), default="auto", show_default=True,
                     help="Where this run happens; auto decides from the container evidence."),
        click.option("--only", multiple=True, help="Measure only this model (repeatable)."),
        click.option("--repeats", type=click.IntRange(1), default=1, show_default=True),
        click.option("--cooldown", "cooldown_s", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="Seconds to wait between engine starts."),
        click.option("--max-gpu-temp", type=int, default=None, help="Wait before each start until the GPU is this cool (C)."),
        click.option("--tolerance", type=click.FloatRange(0.001, 0.5), default=0.01, show_default=True,
                     help="Utilization tolerance of the searches."),
        click.option("--range", "utilization_range", default=None, metavar="LO:HI",
                     help="Utilization range to search, overriding each model's utilization_range."),
        click.option("--searches", default=",".join(SEARCHES), show_default=True,
                     help="Which measurements to run, comma separated."),
        click.option("--fill-target", type=click.FloatRange(0.1, 1.0), default=0.95, show_default=True,
                     help="Share of KV blocks the fill test must occupy at once."),
        click.option("--throughput", is_flag=True, help="Also time a fixed decode workload at u_max."),
        click.option("--trial-timeout", type=click.FloatRange(10), default=900.0, show_default=True),
        click.option("--guard-floor", default=None, metavar="SIZE",
                     help="Kill a trial when free memory falls below SIZE (default: max(2 GiB, 3%) host, 3% cgroup)."),
        click.option("--no-guard", is_flag=True, help="Disable the host-memory guard (not advised on unified memory)."),
        click.option("--drop-caches", is_flag=True, help="Drop the page cache before each trial (root only)."),
        click.option("--resume", is_flag=True, help="Continue the last unfinished run in --out, skipping finished work."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@click.argument("models_file", type=click.Path(dir_okay=False))
@_measure_options
def measure(models_file: str, **kwargs) -> None:
    """Find u_max, u_min, KV at the reference utilization and the physical KV capacity."""
    sys.exit(run_measure(models_file, **kwargs))


def run_measure(models_file: str, out_dir: str, label: str, only: tuple, repeats: int, cooldown_s: float,
                max_gpu_temp: Optional[int], tolerance: float, utilization_range: Optional[str], searches: str,
                fill_target: float, throughput: bool, trial_timeout: float, guard_floor: Optional[str],
                no_guard: bool, drop_caches: bool, resume: bool, extra: Optional[dict] = None) -> int:
    console = Console(stderr=False)
    try:
        models = load_models(models_file, list(only) or None)
        span = parse_utilization_range(utilization_range) if utilization_range else None
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    except ValueError as exc:
        raise BadInput(f"--range: {exc}") from None
    except EngineNotInstalled as exc:
        raise BadInput(f"{models_file}: {exc}") from None
    chosen = tuple(s.strip() for s in searches.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SEARCHES]
    if unknown:
        raise BadInput(f"--searches: unknown search {unknown[0]!r} (known: {', '.join(SEARCHES)})")
    if drop_caches and not can_drop_caches():
        raise BadInput("--drop-caches needs root and a writable /proc/sys/vm/drop_caches")
    if importlib.util.find_spec("vllm") is None:
        raise BadInput("vLLM is not installed in this Python environment (see README: setup)")
    floor = parse_size(guard_floor) if guard_floor else None

    env_block = environment.collect(None if label == "auto" else label)
    if label == "auto":
        label = "container" if env_block["container"]["detected"] else "native"
        env_block["label"] = label
    for warning in env_block["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")

    options = MeasureOptions(
        label=label, repeats=repeats, tolerance=tolerance, utilization_range=span, searches=chosen,
        fill_target=fill_target, throughput=throughput, cooldown_s=cooldown_s, max_gpu_temp_c=max_gpu_temp,
        drop_caches=drop_caches, extra=extra or {},
    )
    cgroup = read_cgroup_memory()
    guard = GuardPolicy.disabled() if no_guard else GuardPolicy.default(host_memory()["MemTotal"], cgroup.limit_bytes, floor)
    store = ResultStore(Path(out_dir))
    identity = {
        "models_file_sha256": hashlib.sha256(Path(models_file).read_bytes()).hexdigest(),
        "only": sorted(only), "repeats": repeats, "label": label, "tolerance": tolerance,
        "range": span, "searches": chosen, "fill_target": fill_target, "throughput": throughput,
    }
    run_id, resumed = store.open_run(resume, identity)
    journal = store.journal(run_id)
    console.print(f"run {run_id} ({'resumed, ' + str(len(journal)) + ' trials journaled' if resumed else 'new'}), "
                  f"label {label}, results in {out_dir}")
    if resume and not resumed:
        console.print("[yellow]warning:[/] nothing to resume (no unfinished run with these settings); starting anew")

    engine = get_engine()
    runner = TrialRunner(engine, Path(out_dir) / ".trials" / run_id, TrialLimits(timeout_s=trial_timeout, guard=guard))
    # New trial numbers continue after the journaled ones, so a resumed run never reuses one.
    first = max((e["number"] for e in journal.entries.values()), default=0) + 1
    numbers = iter(range(first, 1_000_000))
    progress = TrialProgress(console)
    documents = []
    _sigterm_as_interrupt()
    try:
        for repeat in range(1, repeats + 1):
            for settings in models:
                path = store.result_path(settings.name, label, run_id, repeat)
                if path.exists():
                    console.print(f"{settings.name} repeat {repeat}: already measured ({path})")
                    documents.append(json.loads(path.read_text()))
                    continue
                measurement = ModelMeasurement(settings, repeat, runner, engine, journal, options, progress,
                                               lambda: next(numbers))
                document = measure_model(measurement, run_id, env_block)
                store.write_result(path, document)
                documents.append(document)
                console.print(f"wrote {path}")
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: finished trials are journaled; continue with --resume --out {out_dir}")
        return 130
    finally:
        runner.close()
    store.close_run(run_id)
    console.print(summary_table(documents))
    return EXIT_OK if all(d["status"] == "complete" for d in documents) else EXIT_FAILED


def _sigterm_as_interrupt() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the environment block as JSON.")
@click.option("--label", type=click.Choice(["native", "container"]), default=None)
def env(as_json: bool, label: Optional[str]) -> None:
    """Print where a measurement would be taken: container, cgroup, memory, GPUs, software."""
    block = environment.collect(label)
    if as_json:
        click.echo(json.dumps(block, indent=1, default=str))
        return
    from kvprobe.output.environment import print_environment

    print_environment(Console(), block)


if __name__ == "__main__":
    main()
