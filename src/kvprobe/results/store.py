"""Atomic files, the results directory, the run manifest and the trial journal that makes --resume exact."""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from kvprobe.errors import InputError
from kvprobe.results.loader import ResultFileError, load_result
from kvprobe.results.schema import ExperimentProgress, ResultDocument, TrialRecord
from kvprobe.safe_io import (
    MAX_LOG_BYTES,
    UnsafeFile,
    create_new,
    decode_json,
    open_existing_or_new,
    read_json,
    read_text,
)

MANIFEST = ".kvprobe-run-{condition}.json"  # one per condition: native and container runs share a directory
RUN_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{4}")  # what open_run makes; nothing else names files here
LOCK = ".kvprobe.lock"  # held by the one measurement that owns the directory; the kernel drops it with its holder
JOURNAL_DIR = ".journal"
# kvprobe's own JSON files that are not results: an experiment's manifest, a report's summary
LANE_PREFIX = "lane-"  # an experiment's per-GPU results directories, OUT/lane-GPU (experiment.lanes)
EXPERIMENT_MANIFEST = "experiment.json"  # `kvprobe experiment`'s cells: done, unfinished (experiment.run)
MAX_EXPERIMENT_MANIFEST_BYTES = 16 << 20
NOT_RESULTS = (EXPERIMENT_MANIFEST, "summary.json")
TRIALS_DIR = ".trials"
SCRATCH = ".scratch"  # an experiment condition's page-cache file, removed when the run ends


def trial_log(results_dir: Path, log_path: str | None) -> str | None:
    """The text of a trial's engine log under `results_dir`, wherever the run that wrote it had that
    directory (results are moved: committed, unpacked from a bundle). None where the recorded path
    names no log there, passes a link or leads outside (it comes from a result file: untrusted), or no
    regular file is there; at most MAX_LOG_BYTES are read, undecodable bytes replaced."""
    marker = f"/{TRIALS_DIR}/"
    if not log_path or marker not in log_path:
        return None
    path = Path(results_dir).resolve() / TRIALS_DIR / log_path.split(marker, 1)[1]
    if path.resolve() != path:  # a link (.trials itself included) or a '..' on the way
        return None
    try:
        return read_text(path, MAX_LOG_BYTES, errors="replace")
    except (FileNotFoundError, UnsafeFile):
        return None


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync of the directory: readers see the old file or the whole
    new one, and a failed write (a full disk) leaves neither a torn file nor its temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(create_new(tmp), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=1, allow_nan=False) + "\n").encode())


class BadManifest(InputError):
    """The run manifest cannot be trusted (corrupt, or a run id that is not one kvprobe makes)."""


class DirectoryRefused(InputError):
    """A measurement cannot use this results directory; the message says why in one sentence."""


class DirectoryInUse(DirectoryRefused):
    """Another measurement owns this results directory."""


class LinkedDirectory(DirectoryRefused):
    """Files or folders kvprobe writes in this results directory are symbolic links."""


def planted_links(root: Path) -> list[Path]:
    """Symbolic links where kvprobe writes: the directory's own entries (lock, manifests, model
    folders, .journal, .trials, .scratch) and those one and two levels into these three."""
    root = Path(root)
    if not root.is_dir():
        return []
    candidates = [*root.iterdir()]
    for own in (JOURNAL_DIR, TRIALS_DIR, SCRATCH):
        folder = root / own
        if folder.is_dir() and not folder.is_symlink():
            candidates += [*folder.iterdir(), *folder.glob("*/*")]
    return sorted(path for path in candidates if path.is_symlink())


def misplaced_files(root: Path) -> list[Path]:
    """kvprobe's own folders (.journal, .trials and each run's folder in it) that are not folders."""
    root = Path(root)
    trials = root / TRIALS_DIR
    runs = [*trials.iterdir()] if trials.is_dir() and not trials.is_symlink() else []
    own = [root / JOURNAL_DIR, trials, *runs]
    return sorted(path for path in own if (path.exists() or path.is_symlink()) and not path.is_dir())


def refuse_links(root: Path) -> None:
    """LinkedDirectory when `planted_links` finds any, or kvprobe's folders are files: a prepared
    directory must not steer root's writes, nor end a run in a traceback."""
    files = [path for path in misplaced_files(root) if not path.is_symlink()]
    if files:
        raise LinkedDirectory(
            f"{root}: {', '.join(str(path.relative_to(root)) for path in files)}: a file where kvprobe keeps a "
            "folder; remove it or use another --out"
        )
    links = planted_links(root)
    if links:
        shown = ", ".join(str(path.relative_to(root)) for path in links[:5])
        more = f" and {len(links) - 5} more" if len(links) > 5 else ""
        raise LinkedDirectory(
            f"{root}: holds symbolic links where kvprobe writes ({shown}{more}); kvprobe does not follow "
            "links in a results directory, remove them or use another --out"
        )


class RunLock:
    """An exclusive flock on OUT/.kvprobe.lock for as long as a measurement runs. It is released
    when its holder exits in any way (even SIGKILL), so a lock that can be taken proves that every
    earlier owner of the directory is gone."""

    def __init__(self, root: Path, name: str = LOCK):
        self.path = Path(root) / name
        self.handle: TextIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        refuse_links(self.path.parent)
        try:
            fd = open_existing_or_new(self.path, os.O_RDWR)
        except UnsafeFile as exc:
            raise LinkedDirectory(f"{exc}; remove it or use another --out") from None
        handle = os.fdopen(fd, "r+")  # held open for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise DirectoryInUse(
                f"{self.path.parent}: in use by another kvprobe measurement (pid {owner}); "
                "wait for it to finish or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class ResultStore:
    """A results directory: one JSON per model and repeat, plus the run's journal."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def result_path(self, model: str, condition: str, run_id: str, repeat: int) -> Path:
        return self.root / model / f"{condition}-{run_id}-r{repeat}.json"

    def write_result(self, path: Path, document: ResultDocument) -> None:
        write_bytes_atomic(path, (document.model_dump_json(indent=1) + "\n").encode())

    def result_files(self) -> list[Path]:
        """MODEL/*.json, less kvprobe's own manifests (run manifests, experiment.json, summary.json)
        where a directory of several results directories or a report is named."""
        found = [*self.root.glob("*/*.json"), *self.root.glob(f"{LANE_PREFIX}*/*/*.json")]  # experiment --devices
        return sorted(
            path
            for path in found
            if path.name not in NOT_RESULTS and not path.name.startswith(".")  # .kvprobe-run-*.json, temporaries
        )

    def load_all(self) -> tuple[list[tuple[Path, ResultDocument]], list[str]]:
        """(readable results, one message per file that could not be used)."""
        documents, problems = [], []
        root = self.root.resolve()
        for path in self.result_files():
            if not path.resolve().is_relative_to(root):
                problems.append(f"{path}: a link to {path.resolve()}, outside the results directory; not read")
                continue
            if path.is_symlink():
                problems.append(f"{path}: a symbolic link; not read")
                continue
            try:
                documents.append((path, load_result(path)))
            except ResultFileError as exc:
                problems.append(str(exc))
        return documents, problems

    def experiment_progress(self) -> tuple[ExperimentProgress | None, str | None]:
        """The experiment manifest of this directory (None: there is none), or why it cannot be read."""
        path = self.root / EXPERIMENT_MANIFEST
        if not (path.exists() or path.is_symlink()):
            return None, None
        try:
            return ExperimentProgress.model_validate(read_json(path, MAX_EXPERIMENT_MANIFEST_BYTES, "a manifest")), None
        except (OSError, ValueError) as exc:  # torn, garbage, a link, a FIFO; pydantic's errors are ValueErrors
            return (
                None,
                f"{path}: not a readable experiment manifest ({str(exc).splitlines()[0]}); its cells not listed",
            )

    # --- run manifest -------------------------------------------------------------------------
    def _manifest(self, condition: str) -> Path:
        return self.root / MANIFEST.format(condition=condition)

    def open_run(self, condition: str, resume: bool, identity: dict) -> tuple[str, bool]:
        """Return (run_id, resumed): the run of `condition` (native, container or an experiment's
        condition). Resuming needs an unfinished run with the same identity."""
        manifest_path = self._manifest(condition)
        identity = json.loads(json.dumps(identity))  # tuples become lists, as they are stored
        if resume and manifest_path.exists():
            manifest = self._read_manifest(manifest_path)
            if manifest.get("status") == "running" and manifest.get("identity") == identity:
                return manifest["run_id"], True
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)
        write_json_atomic(
            manifest_path, {"run_id": run_id, "status": "running", "identity": identity, "started_at": time.time()}
        )
        return run_id, False

    @staticmethod
    def _read_manifest(path: Path) -> dict:
        """The run manifest, checked: its run id names files and folders under the results directory."""
        try:
            manifest = read_json(path)
        except OSError as exc:
            raise BadManifest(f"{path}: unreadable run manifest ({exc.strerror}); remove it to start anew") from None
        except UnsafeFile as exc:
            raise BadManifest(f"{exc}; remove it to start anew") from None
        if not isinstance(manifest, dict) or not RUN_ID.fullmatch(str(manifest.get("run_id"))):
            raise BadManifest(
                f"{path}: not a kvprobe run manifest (its run_id must look like "
                "20261125T120024-252c); remove it to start anew"
            )
        return manifest

    def close_run(self, condition: str, run_id: str, identity: dict) -> None:
        manifest_path = self._manifest(condition)
        manifest = self._read_manifest(manifest_path)
        if manifest.get("run_id") == run_id:
            manifest["status"] = "finished"
            manifest["finished_at"] = time.time()
            write_json_atomic(manifest_path, manifest)

    def journal(self, run_id: str) -> Journal:
        return Journal(self.root / JOURNAL_DIR / f"{run_id}.jsonl")


def distinct_results(
    found: list[tuple[Path, ResultDocument]],
) -> tuple[list[tuple[Path, ResultDocument]], list[str]]:
    """Each result once, by its identity (run id, model, condition, repeat): a directory named twice
    or a copy of a result would otherwise count it twice. Returns (the first of each, one line per
    file left out, naming the one counted)."""
    kept: dict[tuple[str, str, str, int], tuple[Path, ResultDocument]] = {}
    left_out = []
    for path, document in found:
        identity = (document.run_id, document.model, document.condition, document.repeat)
        if identity not in kept:
            kept[identity] = (path, document)
            continue
        first, earlier = kept[identity]
        same = (
            "the same result"
            if earlier == document
            else "the same run, model, condition and repeat (different content)"
        )
        left_out.append(f"{path}: {same} as {first}; counted once")
    return list(kept.values()), left_out


class Journal:
    """Append-only record of finished trials; a line is written (and fsynced) after each trial.

    A line it cannot use (cut off by a crash or a full disk, or not an entry) is skipped and
    counted in `skipped`, with its line number; that trial simply runs again.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, TrialRecord] = {}
        self.skipped: list[int] = []
        if self.path.exists() or self.path.is_symlink():
            for number, line in enumerate(read_text(self.path, errors="replace").splitlines(), start=1):
                try:
                    entry = decode_json(line, f"{self.path}:{number}")
                    self.entries[entry["key"]] = TrialRecord.model_validate(entry["trial"])
                except (ValueError, TypeError, KeyError, ValidationError):  # UnsafeFile is a ValueError
                    self.skipped.append(number)

    def get(self, key: str) -> TrialRecord | None:
        return self.entries.get(key)

    def append(self, key: str, trial: TrialRecord) -> None:
        self.entries[key] = trial
        line = json.dumps({"key": key, "trial": trial.model_dump(mode="json")}) + "\n"
        with os.fdopen(open_existing_or_new(self.path, os.O_RDWR | os.O_APPEND), "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a torn last line: start this entry on a line of its own
                    line = "\n" + line
            handle.write(line.encode())
            handle.flush()
            os.fsync(handle.fileno())

    def __len__(self) -> int:
        return len(self.entries)
