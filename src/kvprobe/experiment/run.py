"""Run an experiment's cells, one `kvprobe measure` (or `kvprobe container`) child per cell.

The experiment only orders and starts cells; each cell is an ordinary measurement, with its own
journal and manifest in the shared results directory, told its condition and repeat. The
experiment's manifest (`experiment.json`) lists finished cells, so `--resume` skips them and
resumes the interrupted one through its own journal.

A cell is finished when the results directory holds a result of this experiment run for every model
of the cell, whatever its child's exit code said; the results' status (complete or not) is the
cell's. A child that exited 0 without writing (or 1 after a refused version pair, or killed by the
OOM killer) leaves its cell unfinished, listed under `unfinished` in the manifest with why, and
`--resume` runs it again. The experiment's own exit code is 0, 1 (a cell failed or is unfinished),
2 (bad input, before anything ran) or 130.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvprobe.errors import InputError
from kvprobe.experiment.cgroup import CellCgroup
from kvprobe.experiment.plan import Cell, schedule, search_settings
from kvprobe.experiment.spec import Experiment
from kvprobe.measure.request import MeasureRequest, StartSettings, kvprobe_command
from kvprobe.results.schema import ExperimentProgress
from kvprobe.results.store import EXPERIMENT_MANIFEST as MANIFEST
from kvprobe.results.store import MAX_EXPERIMENT_MANIFEST_BYTES, RunLock, write_json_atomic
from kvprobe.safe_io import read_json
from kvprobe.units import parse_size

LOCK = ".kvprobe-experiment.lock"
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """A cell's measurement gets SIGTERM (an interrupt to it) if the experiment is killed."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def cell_request(experiment: Experiment, cell: Cell, out_dir: Path, run_id: str, resume: bool) -> MeasureRequest:
    """The cell's measurement: the experiment file's settings, the cell's condition and repeat;
    `resume` continues the cell's own unfinished measurement (its journal), as after an interrupt."""
    file, condition = experiment.file, cell.condition
    floor = parse_size(file.guard_floor) if file.guard_floor else None
    start = StartSettings(cooldown_s=file.cooldown, trial_timeout_s=file.trial_timeout, guard_floor_bytes=floor)
    return MeasureRequest(
        models_file=str(experiment.models_file),
        only=tuple(file.only),
        out_dir=str(out_dir),
        label="native" if condition.container is None else "auto",
        repeats=file.repeats,
        only_repeat=cell.repeat,
        search=search_settings(experiment),
        start=start,
        condition=condition,
        experiment=experiment.reference.model_copy(update={"run_id": run_id}),
        container=condition.container,
        resume=resume,
    )


def cell_results(out_dir: Path, experiment: Experiment, cell: Cell, run_id: str) -> dict[str, str]:
    """The cell's models that have a result written by this experiment run, and each result's status
    (read from the files)."""
    found: dict[str, str] = {}
    for model in experiment.models:
        for path in (out_dir / model.name).glob(f"{cell.condition.name}-*-r{cell.repeat}.json"):
            try:
                data = read_json(path)
            except (OSError, ValueError):  # UnsafeFile (a link, a FIFO, too large) is a ValueError
                continue  # half-written or foreign: not this cell's result
            reference = data.get("experiment") if isinstance(data, dict) else None
            if (
                isinstance(reference, dict)
                and reference.get("run_id") == run_id
                and data.get("condition") == cell.condition.name
                and data.get("repeat") == cell.repeat
            ):
                found[model.name] = str(data.get("status"))
                break
    return found


@dataclass(frozen=True)
class Outcome:
    """How an experiment run ended: its exit code and the cells left unfinished (key: why)."""

    status: int
    unfinished: dict[str, str]


class ExperimentRun:
    """One experiment in one results directory; `run` returns its exit code and unfinished cells."""

    def __init__(self, experiment: Experiment, out_dir: Path, on_cell: Callable[[Cell, str], None]):
        self.experiment = experiment
        self.out_dir = Path(out_dir)
        self.on_cell = on_cell
        self.identity = experiment.identity()
        self.failed: list[str] = []  # keys of the cells whose measurement exited 1 (a model failed)

    def _open(self, resume: bool) -> dict:
        path = self.out_dir / MANIFEST
        if resume and path.exists():
            try:
                recorded = ExperimentProgress.model_validate(read_json(path, MAX_EXPERIMENT_MANIFEST_BYTES))
            except (OSError, ValueError) as exc:  # torn, garbage, a link, a FIFO, another shape
                raise InputError(
                    f"{path}: not a readable experiment manifest ({str(exc).splitlines()[0]}); remove it to start anew"
                ) from None
            if recorded.identity not in (self.identity, self.experiment.file_digests()):
                raise InputError(
                    f"{path}: --resume: this directory holds a run of other experiment settings or models "
                    f"({self.experiment.path} or {self.experiment.models_file} changed since); "
                    f"use another --out, or remove {MANIFEST} to start anew"
                )
            return {**recorded.model_dump(), "status": "running"}
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)
        manifest = {"run_id": run_id, "status": "running", "identity": self.identity, "done": {}, "unfinished": {}}
        write_json_atomic(path, manifest)
        return manifest

    def run(self, resume: bool) -> Outcome:
        lock = RunLock(self.out_dir, LOCK)
        try:
            lock.acquire()
        except OSError as exc:
            raise InputError(f"--out {self.out_dir}: cannot be used ({exc.strerror})") from None
        manifest = self._open(resume)
        resumed = bool(manifest["done"]) or resume
        status = EXIT_OK
        for cell in schedule(self.experiment):
            if cell.key in manifest["done"]:
                self.on_cell(cell, "done earlier")
                status = max(status, manifest["done"][cell.key])
                self.failed += [cell.key] if manifest["done"][cell.key] == EXIT_FAILED else []
                continue
            self.on_cell(cell, "starting")
            code, interrupted = self._run_cell(cell, manifest["run_id"], resumed)
            written = cell_results(self.out_dir, self.experiment, cell, manifest["run_id"])
            missing = [m.name for m in self.experiment.models if m.name not in written]
            if missing:
                manifest["unfinished"][cell.key] = f"exit {code}, no result for {', '.join(missing)}"
                self.on_cell(cell, f"unfinished ({manifest['unfinished'][cell.key]})")
            else:  # every result is written (the child may have been interrupted at its end): they decide
                complete = all(status == "complete" for status in written.values())
                manifest["done"][cell.key] = EXIT_OK if complete else EXIT_FAILED
                manifest["unfinished"].pop(cell.key, None)
                status = max(status, manifest["done"][cell.key])
                self.failed += [cell.key] if manifest["done"][cell.key] == EXIT_FAILED else []
            write_json_atomic(self.out_dir / MANIFEST, manifest)
            if interrupted or code == EXIT_INTERRUPTED:
                return Outcome(EXIT_INTERRUPTED, dict(manifest["unfinished"]))
        manifest["status"] = "unfinished" if manifest["unfinished"] else "finished"
        write_json_atomic(self.out_dir / MANIFEST, manifest)
        lock.release()
        return Outcome(EXIT_FAILED if manifest["unfinished"] else status, dict(manifest["unfinished"]))

    def _run_cell(self, cell: Cell, run_id: str, resume: bool) -> tuple[int, bool]:
        """(the cell's exit code, whether the experiment was interrupted meanwhile)."""
        request = cell_request(self.experiment, cell, self.out_dir, run_id, resume)
        command = [*kvprobe_command(), *request.arguments()]
        limit = cell.condition.cgroup_limit_bytes
        cgroup = CellCgroup(f"kvprobe-{os.getpid()}-{cell.condition.name}", limit) if limit else None
        if cgroup is not None:
            cgroup.create()

        def prepare_child() -> None:
            _die_with_parent()
            if cgroup is not None:
                cgroup.join()

        # The experiment runs no threads, so preexec_fn is safe here; it is the only way to join before exec.
        child = subprocess.Popen(command, preexec_fn=prepare_child, start_new_session=True)  # noqa: PLW1509
        try:
            return child.wait(), False
        except KeyboardInterrupt:
            # SIGTERM, not SIGINT: a shell's background job starts with SIGINT ignored, and so would the
            # cell. The cell takes it as an interrupt: it ends its trial, journals it, and exits 130.
            child.send_signal(signal.SIGTERM)
            return child.wait(), True
        finally:
            if cgroup is not None:
                cgroup.remove()
