"""`kvprobe bundle`: one archive of a results directory, to send to the maintainers.

Everything a maintainer needs to rebuild every figure goes in: result JSON, journals, run and
experiment manifests, the engines' logs. The host name and the home directory are replaced in every
file (`--keep-identity` keeps them): the home path by `~`, the host name by `HOST`, wherever it
stands as a whole name (not inside a path or a longer word, so `/proc/sys/vm` survives a host
called `vm`). Lock files and a written report are left out: the report is rebuilt from the rest.
"""

from __future__ import annotations

import io
import platform
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from kvprobe.errors import InputError

LEFT_OUT_DIRECTORIES = frozenset({"report"})
LEFT_OUT_SUFFIXES = (".lock",)
HOST_STAND_IN = "HOST"
HOME_STAND_IN = "~"


class Identity(NamedTuple):
    """What identifies the machine and its owner in the files: the host name and the home directory."""

    hostname: str
    home: str

    @classmethod
    def of_this_machine(cls) -> Identity:
        return cls(platform.node(), str(Path.home()))

    def patterns(self) -> list[tuple[re.Pattern[bytes], bytes]]:
        found = []
        if self.home not in ("", "/"):
            found.append(
                (re.compile(re.escape(self.home.rstrip("/").encode()) + rb"(?![\w.-])"), HOME_STAND_IN.encode())
            )
        for name in {self.hostname, self.hostname.split(".")[0]} - {""}:
            found.append(
                (re.compile(rb"(?<![\w./-])" + re.escape(name.encode()) + rb"(?![\w/-])"), HOST_STAND_IN.encode())
            )
        return found


@dataclass(frozen=True)
class Bundle:
    archive: Path
    files: int
    replaced: int  # occurrences of the host name and home path replaced


def bundled_files(results_dir: Path) -> list[Path]:
    """The regular files to send, sorted (no links, no locks, no written report)."""
    chosen = []
    for path in sorted(results_dir.rglob("*")):
        relative = path.relative_to(results_dir)
        if path.is_symlink() or not path.is_file() or path.name.endswith(LEFT_OUT_SUFFIXES):
            continue
        if relative.parts[0] in LEFT_OUT_DIRECTORIES:
            continue
        chosen.append(path)
    return chosen


def anonymized(data: bytes, patterns: list[tuple[re.Pattern[bytes], bytes]]) -> tuple[bytes, int]:
    total = 0
    for pattern, stand_in in patterns:
        data, count = pattern.subn(stand_in, data)
        total += count
    return data, total


def write_bundle(
    results_dir: Path, archive: Path | None = None, keep_identity: bool = False, identity: Identity | None = None
) -> Bundle:
    """Write RESULTS_DIR (default RESULTS_DIR.tar.gz) as one tar.gz under the directory's name."""
    results_dir = results_dir.resolve()
    if not results_dir.is_dir():
        raise InputError(f"RESULTS_DIR {results_dir}: not a directory")
    files = bundled_files(results_dir)
    if not any(path.suffix == ".json" for path in files):
        raise InputError(f"RESULTS_DIR {results_dir}: holds no result files (*.json)")
    target = archive or results_dir.with_name(results_dir.name + ".tar.gz")
    patterns = [] if keep_identity else (identity or Identity.of_this_machine()).patterns()
    replaced = 0
    with tarfile.open(target, "w:gz") as tar:
        for path in files:
            data, count = anonymized(path.read_bytes(), patterns)
            replaced += count
            relative, _ = anonymized(str(path.relative_to(results_dir)).encode(), patterns)
            entry = tarfile.TarInfo(f"{results_dir.name}/{relative.decode()}")
            entry.size, entry.mtime, entry.mode = len(data), int(time.time()), 0o644
            tar.addfile(entry, io.BytesIO(data))
    return Bundle(target, len(files), replaced)
