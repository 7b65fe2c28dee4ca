"""Atomic files, the results directory, the run manifest and the trial journal that makes --resume exact."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kvprobe.results.loader import ResultFileError, load_result
from kvprobe.results.schema import ResultDocument, TrialRecord

MANIFEST = ".kvprobe-run-{label}.json"  # one per label: native and container runs share a directory
LOCK = ".kvprobe.lock"  # held by the one measurement that owns the directory; the kernel drops it with its holder
JOURNAL_DIR = ".journal"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync of the directory: readers see the old file or the whole
    new one, and a failed write (a full disk) leaves neither a torn file nor its temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
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


class DirectoryInUse(Exception):
    """Another measurement owns this results directory."""


class RunLock:
    """An exclusive flock on OUT/.kvprobe.lock for as long as a measurement runs. It is released
    when its holder exits in any way (even SIGKILL), so a lock that can be taken proves that every
    earlier owner of the directory is gone."""

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK
        self.handle = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the whole run
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

    def result_path(self, model: str, label: str, run_id: str, repeat: int) -> Path:
        return self.root / model / f"{label}-{run_id}-r{repeat}.json"

    def write_result(self, path: Path, document: ResultDocument) -> None:
        write_bytes_atomic(path, (document.model_dump_json(indent=1) + "\n").encode())

    def result_files(self) -> list[Path]:
        return sorted(self.root.glob("*/*.json"))

    def load_all(self) -> tuple[list[tuple[Path, ResultDocument]], list[str]]:
        """(readable results, one message per file that could not be used)."""
        documents, problems = [], []
        for path in self.result_files():
            try:
                documents.append((path, load_result(path)))
            except ResultFileError as exc:
                problems.append(str(exc))
        return documents, problems

    # --- run manifest -------------------------------------------------------------------------
    def _manifest(self, identity: dict) -> Path:
        return self.root / MANIFEST.format(label=identity["label"])

    def open_run(self, resume: bool, identity: dict) -> tuple[str, bool]:
        """Return (run_id, resumed). Resuming needs an unfinished run with the same identity."""
        manifest_path = self._manifest(identity)
        identity = json.loads(json.dumps(identity))  # tuples become lists, as they are stored
        if resume and manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("status") == "running" and manifest.get("identity") == identity:
                return manifest["run_id"], True
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)
        write_json_atomic(
            manifest_path, {"run_id": run_id, "status": "running", "identity": identity, "started_at": time.time()}
        )
        return run_id, False

    def close_run(self, run_id: str, identity: dict) -> None:
        manifest_path = self._manifest(identity)
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("run_id") == run_id:
            manifest["status"] = "finished"
            manifest["finished_at"] = time.time()
            write_json_atomic(manifest_path, manifest)

    def journal(self, run_id: str) -> Journal:
        return Journal(self.root / JOURNAL_DIR / f"{run_id}.jsonl")


class Journal:
    """Append-only record of finished trials; a line is written (and fsynced) after each trial."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, TrialRecord] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = TrialRecord.model_validate(entry["trial"])
                except (json.JSONDecodeError, TypeError, KeyError, ValidationError):
                    continue  # a line cut off by a crash: that trial simply runs again

    def get(self, key: str) -> TrialRecord | None:
        return self.entries.get(key)

    def append(self, key: str, trial: TrialRecord) -> None:
        self.entries[key] = trial
        line = json.dumps({"key": key, "trial": trial.model_dump(mode="json")}) + "\n"
        with open(self.path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def __len__(self) -> int:
        return len(self.entries)
