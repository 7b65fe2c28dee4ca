"""`kvprobe experiment` from its file to its exit code: load and show the schedule, check before the
first cell, run the cells, and say which failed or are unfinished."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from kvprobe.errors import InputError
from kvprobe.experiment import preflight
from kvprobe.experiment.plan import Cell, schedule
from kvprobe.experiment.run import EXIT_INTERRUPTED, ExperimentRun
from kvprobe.experiment.schedule_view import print_schedule
from kvprobe.experiment.spec import Experiment, load_experiment
from kvprobe.results.store import ResultStore
from kvprobe.units import gib


def disk_problems(experiment: Experiment, out_dir: Path) -> None:
    """A page-cache condition writes its file under OUT/.scratch: refuse one larger than the free disk
    there (it would fill the disk mid-run) with a sentence, before the first cell."""
    where = next((p for p in (out_dir, *out_dir.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(where).free
    problems = [
        f"{experiment.path}: condition '{c.name}': field 'page_cache': {gib(c.page_cache_bytes, unit=True)} "
        f"is more than the {gib(free, unit=True)} free on {where}"
        for c in experiment.conditions
        if c.page_cache_bytes and c.page_cache_bytes > free
    ]
    if problems:
        raise InputError("\n".join(problems))


def run_experiment(
    experiment_file: str, out_dir: str, resume: bool, dry_run: bool, console: Console, display: dict
) -> int:
    """The experiment's exit code: 0, 1 (a cell failed or is unfinished), 2 (bad input) or 130."""
    loaded = load_experiment(experiment_file)
    earlier, _ = ResultStore(Path(out_dir)).load_all() if Path(out_dir).is_dir() else ([], [])
    print_schedule(console, loaded, [doc for _, doc in earlier])
    if dry_run:
        return 0
    if importlib.util.find_spec("vllm") is None:
        raise InputError("vLLM is not installed in this Python environment (see README: setup)")
    place = {cell.key: k for k, cell in enumerate(schedule(loaded), start=1)}
    preflight.check(loaded)
    disk_problems(loaded, Path(out_dir))

    def on_cell(cell: Cell, state: str) -> None:
        where = f"cell {place[cell.key]} of {len(place)}"
        console.rule(f"{where}: {escape(cell.condition.name)}, repeat {cell.repeat}: {state}")

    # the cells' measurements (children) show their progress as this command was asked to
    os.environ["KVPROBE_LOG_FORMAT"] = display["log_format"] or ("" if sys.stdout.isatty() else "jsonl")
    os.environ["KVPROBE_SHOW_ENGINE_LOG"] = "1" if display["show_engine_log"] else ""
    run = ExperimentRun(loaded, Path(out_dir), on_cell)
    try:
        outcome = run.run(resume)
        status, unfinished = outcome.status, outcome.unfinished
    except KeyboardInterrupt:
        status, unfinished = EXIT_INTERRUPTED, {}
    if run.failed:
        console.print(f"[red]failed cells[/] ({len(run.failed)} of {len(place)}): {escape(', '.join(run.failed))}")
    for key, why in unfinished.items():
        console.print(f"[red]unfinished:[/] {escape(key)}: {escape(why)}", highlight=False)
    if status == EXIT_INTERRUPTED or unfinished:
        console.print(f"continue with --resume --out {escape(out_dir)}", highlight=False)
    return status
