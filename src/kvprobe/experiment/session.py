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

from kvprobe.environment.facts import collect
from kvprobe.environment.memory import read_meminfo
from kvprobe.errors import InputError
from kvprobe.experiment import preflight
from kvprobe.experiment.lanes import lane_problems
from kvprobe.experiment.plan import Cell, schedule
from kvprobe.experiment.run import EXIT_INTERRUPTED, ExperimentRun
from kvprobe.experiment.schedule_view import print_schedule
from kvprobe.experiment.spec import Experiment, load_experiment
from kvprobe.results.store import ResultStore
from kvprobe.units import gib

HOLD_HEADROOM = 2 << 30  # what a held helper must leave: the guard's default host floor


def machine_problems(experiment: Experiment, out_dir: Path) -> list[str]:
    """Sizes this machine cannot honour, refused before the first cell: a page cache larger than its
    memory or than the free disk under OUT/.scratch (it would fill the disk mid-run), held memory
    that leaves less than the guard's floor (the OOM killer would come first), a cgroup limit above
    its memory."""
    where = next((p for p in (out_dir, *out_dir.parents) if p.exists()), Path("/"))
    free, total = shutil.disk_usage(where).free, read_meminfo().get("MemTotal", 0)
    problems = []
    for c in experiment.conditions:
        field = f"{experiment.path}: condition '{c.name}': field"
        if c.page_cache_bytes and c.page_cache_bytes > min(free, total or free):
            problems.append(
                f"{field} 'page_cache': {gib(c.page_cache_bytes, unit=True)} is more than this "
                f"machine's memory ({gib(total, unit=True)}) or the {gib(free, unit=True)} free on {where}"
            )
        if c.hold_memory_bytes and total and c.hold_memory_bytes > total - HOLD_HEADROOM:
            problems.append(
                f"{field} 'hold_memory': {gib(c.hold_memory_bytes, unit=True)} leaves less than "
                f"{gib(HOLD_HEADROOM, unit=True)} of this machine's {gib(total, unit=True)}"
            )
        if c.cgroup_limit_bytes and total and c.cgroup_limit_bytes > total:
            problems.append(
                f"{field} 'cgroup_limit': {gib(c.cgroup_limit_bytes, unit=True)} is more than this "
                f"machine's memory ({gib(total, unit=True)})"
            )
    return problems


def refuse_to_start(experiment: Experiment, too_large: list[str]) -> None:
    """Before the first cell, not on a dry run: vLLM is here, the preflight passes, sizes fit."""
    if importlib.util.find_spec("vllm") is None:
        raise InputError("vLLM is not installed in this Python environment (see README: setup)")
    preflight.check(experiment)
    if too_large:
        raise InputError("\n".join(too_large))


def run_experiment(
    experiment_file: str,
    out_dir: str,
    resume: bool,
    dry_run: bool,
    console: Console,
    display: dict,
    devices: tuple[str, ...] = (),
) -> int:
    """The experiment's exit code: 0, 1 (a cell failed or is unfinished), 2 (bad input) or 130.
    `devices`: one lane of cells per GPU, run in parallel (experiment.lanes)."""
    loaded = load_experiment(experiment_file)
    if devices and (refused := lane_problems(loaded, collect(visible=None), devices)):
        raise InputError("\n".join(refused))
    earlier, _ = ResultStore(Path(out_dir)).load_all() if Path(out_dir).is_dir() else ([], [])
    print_schedule(console, loaded, [doc for _, doc in earlier])
    too_large = machine_problems(loaded, Path(out_dir))
    if dry_run:  # the file may be meant for another machine: said, not refused
        for problem in too_large:
            console.print(f"[yellow]warning:[/] on this machine, {escape(problem)}", highlight=False)
        return 0
    refuse_to_start(loaded, too_large)
    place = {cell.key: k for k, cell in enumerate(schedule(loaded), start=1)}

    def on_cell(cell: Cell, state: str) -> None:
        where = f"cell {place[cell.key]} of {len(place)}"
        console.rule(f"{where}: {escape(cell.condition.name)}, repeat {cell.repeat}: {state}")

    # the cells' measurements (children) show their progress as this command was asked to
    os.environ["KVPROBE_LOG_FORMAT"] = display["log_format"] or ("" if sys.stdout.isatty() else "jsonl")
    os.environ["KVPROBE_SHOW_ENGINE_LOG"] = "1" if display["show_engine_log"] else ""
    if devices:
        console.print(
            f"in parallel on {len(devices)} GPUs ({escape(', '.join(devices))}): each cell's console output "
            f"in {escape(out_dir)}/lane-GPU/console-CONDITION-rREPEAT.log",
            highlight=False,
        )

    def on_warning(text: str) -> None:
        console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)

    run = ExperimentRun(loaded, Path(out_dir), on_cell, devices, on_warning)
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
