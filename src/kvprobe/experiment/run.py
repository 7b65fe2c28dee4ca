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

from kvprobe.environment.gpu import CUDA_VISIBLE_DEVICES
from kvprobe.errors import InputError
from kvprobe.experiment.cgroup import CellCgroup
from kvprobe.experiment.lanes import Lane, lanes
from kvprobe.experiment.plan import Cell, schedule, search_settings
from kvprobe.experiment.spec import Experiment
from kvprobe.measure.request import MeasureRequest, StartSettings, kvprobe_command
from kvprobe.results.schema import ExperimentProgress
from kvprobe.results.store import EXPERIMENT_MANIFEST as MANIFEST
from kvprobe.results.store import LANE_PREFIX, MAX_EXPERIMENT_MANIFEST_BYTES, RunLock, write_json_atomic
from kvprobe.safe_io import open_existing_or_new, read_json
from kvprobe.trial.process_group import interrupts_held
from kvprobe.trial.runner import end_stale_groups
from kvprobe.units import parse_size
from kvprobe.worker_protocol import INTERRUPTS

LOCK = ".kvprobe-experiment.lock"
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
PR_SET_PDEATHSIG = 1
POLL_S = 0.2  # how often running cells are looked at


def _die_with_parent() -> None:
    """A cell's measurement gets SIGTERM (an interrupt to it) if the experiment is killed."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def cell_request(experiment: Experiment, cell: Cell, lane: Lane, run_id: str, resume: bool) -> MeasureRequest:
    """The cell's measurement: the experiment file's settings, the cell's condition and repeat, in
    its lane; `resume` continues the cell's own unfinished measurement (its journal), as after an
    interrupt."""
    file, condition = experiment.file, cell.condition
    floor = parse_size(file.guard_floor) if file.guard_floor else None
    start = StartSettings(
        cooldown_s=file.cooldown,
        trial_timeout_s=file.trial_timeout,
        guard_floor_bytes=floor,
        host_shared=lane.device is not None,
    )
    return MeasureRequest(
        models_file=str(experiment.models_file),
        only=tuple(file.only),
        out_dir=str(lane.out_dir),
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

    def __init__(
        self,
        experiment: Experiment,
        out_dir: Path,
        on_cell: Callable[[Cell, str], None],
        devices: tuple[str, ...] = (),
        on_warning: Callable[[str], None] = lambda _: None,
    ):
        """`devices`: run cells in parallel, one lane per GPU (experiment.lanes); none: one at a time."""
        self.on_warning = on_warning
        self.experiment = experiment
        self.out_dir = Path(out_dir)
        self.lanes = lanes(self.out_dir, devices)
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
            # a manifest of the file-digest era continues under the settings' identity from now on
            return {**recorded.model_dump(), "status": "running", "identity": self.identity}
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)
        manifest = {"run_id": run_id, "status": "running", "identity": self.identity, "done": {}, "unfinished": {}}
        manifest["lanes"] = {}
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
        self._end_stale_lanes()
        pending = []
        for cell in schedule(self.experiment):
            if cell.key in manifest["done"]:
                self.on_cell(cell, "done earlier")
                self.failed += [cell.key] if manifest["done"][cell.key] == EXIT_FAILED else []
            else:
                pending.append(cell)
        interrupted = self._run_cells(pending, manifest, resumed)
        status = max([EXIT_OK, *manifest["done"].values()])
        if interrupted:
            return Outcome(EXIT_INTERRUPTED, dict(manifest["unfinished"]))
        manifest["status"] = "unfinished" if manifest["unfinished"] else "finished"
        write_json_atomic(self.out_dir / MANIFEST, manifest)
        lock.release()
        return Outcome(EXIT_FAILED if manifest["unfinished"] else status, dict(manifest["unfinished"]))

    def _end_stale_lanes(self) -> None:
        """A killed experiment's lanes may have left trial groups running: end those of every lane
        directory under OUT (its lock, once taken, proves its owner gone), whichever lanes run now."""
        for directory in sorted(self.out_dir.glob(f"{LANE_PREFIX}*")):
            lock = RunLock(directory)
            lock.acquire()  # DirectoryInUse: a measurement of another run works there
            try:
                ended, spared = end_stale_groups(directory / ".trials")
            finally:
                lock.release()
            for leader in ended:
                self.on_warning(f"ended trial group {leader} left running in {directory} by a killed earlier run")
            for why in spared:
                self.on_warning(why)

    def _run_cells(self, cells: list[Cell], manifest: dict, resumed: bool) -> bool:
        """Run `cells` in schedule order, one at a time in each lane; True if interrupted. A cell that
        exits 130 stops the experiment as an interrupt does: the other lanes' cells are ended, and
        what each wrote is recorded. A cell resumed goes back to the lane it ran in (its journal is
        there), where that lane runs now."""
        queue, free = list(cells), list(self.lanes)
        running: list[tuple[Cell, Lane, CellChild]] = []
        interrupted = False
        try:
            while running or (queue and not interrupted):
                try:
                    self._start_free_lanes(queue, free, running, manifest, resumed, interrupted)
                    ended = next((entry for entry in running if entry[2].poll() is not None), None)
                    if ended is None:
                        time.sleep(POLL_S)
                        continue
                    with interrupts_held():  # recorded before a second interrupt can take effect
                        running.remove(ended)
                        cell, lane, child = ended
                        code = child.finish()
                        self._record(cell, lane, code, manifest)
                        free.append(lane)
                    if code == EXIT_INTERRUPTED and not interrupted:
                        interrupted = True
                        for _, _, other in running:
                            other.interrupt()
                except KeyboardInterrupt:
                    interrupted = True
                    for _, _, child in running:
                        child.interrupt()
        finally:  # an error (a cgroup that cannot be made, a full disk): no cell is left running
            with interrupts_held():
                for _, _, child in running:
                    child.interrupt()
                for cell, lane, child in running:
                    self._record(cell, lane, child.finish(), manifest)
        return interrupted

    def _start_free_lanes(
        self,
        queue: list[Cell],
        free: list[Lane],
        running: list[tuple[Cell, Lane, CellChild]],
        manifest: dict,
        resumed: bool,
        interrupted: bool,
    ) -> None:
        """Each free lane takes the first queued cell it may run (a resumed cell only its own lane)."""
        for lane in list(free):
            if interrupted:
                return
            cell = next((c for c in queue if self._may_run(c, lane, manifest)), None)
            if cell is None:
                continue
            queue.remove(cell)
            free.remove(lane)
            self.on_cell(cell, f"starting on {lane.name}" if lane.name else "starting")
            with interrupts_held():  # the child is in `running` before an interrupt can take effect
                child = self._start_cell(cell, lane, manifest["run_id"], resumed)
                running.append((cell, lane, child))
            if lane.device is not None:
                manifest["lanes"][cell.key] = lane.device
                write_json_atomic(self.out_dir / MANIFEST, manifest)

    def _may_run(self, cell: Cell, lane: Lane, manifest: dict) -> bool:
        """A cell that ran in a lane that runs now goes back there (its journal is in that lane's
        directory); any other cell runs in any lane."""
        earlier = manifest["lanes"].get(cell.key)
        return earlier is None or earlier == lane.device or earlier not in {each.device for each in self.lanes}

    def _record(self, cell: Cell, lane: Lane, code: int, manifest: dict) -> None:
        """The cell is done by its results (their status decides), or unfinished with why."""
        written = cell_results(lane.out_dir, self.experiment, cell, manifest["run_id"])
        missing = [m.name for m in self.experiment.models if m.name not in written]
        if missing:
            manifest["unfinished"][cell.key] = f"exit {code}, no result for {', '.join(missing)}"
            self.on_cell(cell, f"unfinished ({manifest['unfinished'][cell.key]})")
        else:  # every result is written (the child may have been interrupted at its end)
            complete = all(status == "complete" for status in written.values())
            manifest["done"][cell.key] = EXIT_OK if complete else EXIT_FAILED
            manifest["unfinished"].pop(cell.key, None)
            self.failed += [cell.key] if manifest["done"][cell.key] == EXIT_FAILED else []
        write_json_atomic(self.out_dir / MANIFEST, manifest)

    def _start_cell(self, cell: Cell, lane: Lane, run_id: str, resume: bool) -> CellChild:
        request = cell_request(self.experiment, cell, lane, run_id, resume)
        limit = cell.condition.cgroup_limit_bytes
        name = f"kvprobe-{os.getpid()}-{cell.condition.name}-r{cell.repeat}"  # lanes run a condition's repeats at once
        cgroup = CellCgroup(name, limit) if limit else None
        if cgroup is not None:
            cgroup.create()

        def prepare_child() -> None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)  # spawned with interrupts held
            _die_with_parent()
            if cgroup is not None:
                cgroup.join()

        environment, output = None, None
        if lane.device is not None:  # the lanes' consoles would interleave: each cell logs to a file
            environment = {**os.environ, CUDA_VISIBLE_DEVICES: lane.device}
            lane.out_dir.mkdir(parents=True, exist_ok=True)
            log = lane.out_dir / f"console-{cell.condition.name}-r{cell.repeat}.log"
            output = open_existing_or_new(log, os.O_WRONLY | os.O_APPEND)
        # The experiment runs no threads, so preexec_fn is safe here; it is the only way to join before exec.
        child = subprocess.Popen(
            [*kvprobe_command(), *request.arguments()],
            preexec_fn=prepare_child,  # noqa: PLW1509
            start_new_session=True,
            env=environment,
            stdout=output,
            stderr=output,
        )
        if output is not None:
            os.close(output)
        return CellChild(child, cgroup)


class CellChild:
    """One cell's running measurement, with the cgroup it was started in (removed at its end)."""

    def __init__(self, process: subprocess.Popen, cgroup: CellCgroup | None):
        self.process, self.cgroup = process, cgroup

    def poll(self) -> int | None:
        return self.process.poll()

    def interrupt(self) -> None:
        """SIGTERM, not SIGINT: a shell's background job starts with SIGINT ignored, and so would the
        cell. The cell takes it as an interrupt: it ends its trial, journals it, and exits 130."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def finish(self) -> int:
        """Wait for it to exit, remove its cgroup, and return its exit code."""
        code = self.process.wait()
        if self.cgroup is not None:
            self.cgroup.remove()
        return code
