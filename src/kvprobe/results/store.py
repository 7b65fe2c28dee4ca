"""Atomic result files, the run manifest and the trial journal that makes --resume exact."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Iterator, Optional

from kvprobe.results.schema import TrialRecord

MANIFEST = ".kvprobe-run-{label}.json"  # one per label: native and container runs share a directory
JOURNAL_DIR = ".journal"


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file, fsync, rename: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def trial_key(model: str, repeat: int, search: str, utilization, kv_bytes, fill_target, throughput: bool) -> str:
    return json.dumps([model, repeat, search, utilization, kv_bytes, fill_target, throughput])


class ResultStore:
    """A results directory: one JSON per model and repeat, plus the run's journal."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def result_path(self, model: str, label: str, run_id: str, repeat: int) -> Path:
        return self.root / model / f"{label}-{run_id}-r{repeat}.json"

    def write_result(self, path: Path, document: dict) -> None:
        write_json_atomic(path, document)

    def results(self) -> Iterator[tuple[Path, dict]]:
        for path in sorted(self.root.glob("*/*.json")):
            try:
                yield path, json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue

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
        write_json_atomic(manifest_path, {"run_id": run_id, "status": "running", "identity": identity, "started_at": time.time()})
        return run_id, False

    def close_run(self, run_id: str, identity: dict) -> None:
        manifest_path = self._manifest(identity)
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("run_id") == run_id:
            manifest["status"] = "finished"
            manifest["finished_at"] = time.time()
            write_json_atomic(manifest_path, manifest)

    def journal(self, run_id: str) -> "Journal":
        return Journal(self.root / JOURNAL_DIR / f"{run_id}.jsonl")


class Journal:
    """Append-only record of finished trials; a line is written (and fsynced) after each trial."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by a crash: that trial simply runs again
                self.entries[entry["key"]] = entry["trial"]

    def get(self, key: str) -> Optional[TrialRecord]:
        found = self.entries.get(key)
        return TrialRecord.from_dict(found) if found else None

    def append(self, key: str, trial: TrialRecord) -> None:
        data = trial.to_dict()
        self.entries[key] = data
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"key": key, "trial": data}, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def __len__(self) -> int:
        return len(self.entries)
