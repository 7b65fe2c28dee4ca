"""Files under a results directory are untrusted data: read and write them here, never through a link.

A results directory travels between machines and kvprobe runs as root, so every file it reads there
is opened without following a symbolic link, checked to be a regular file (a FIFO would hang the
read, /dev/zero would never end) and read up to a bound; JSON nested too deeply to decode becomes a
sentence. Files kvprobe writes there are created exclusively (a planted link or file is removed
first, never written through) or opened for appending without following a link.

`child_python` is the interpreter command for kvprobe's own child processes: the working directory
is never put on their import path (a `random.py` there would run in every worker).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from kvprobe.errors import InputError

MAX_JSON_BYTES = 64 << 20  # a result with all its trials, a journal, a config.json: well under this
MAX_LOG_BYTES = 1 << 30  # a trial's engine log
MAX_JSON_DEPTH = 64  # kvprobe's own files nest about 8 deep; far deeper fails later, in serialising a report


class UnsafeFile(InputError, ValueError):
    """A file kvprobe will not read or write: the message names the file and the reason."""


def _no_link(path: Path, exc: OSError) -> UnsafeFile:
    if exc.errno == errno.ELOOP:
        return UnsafeFile(f"{path}: a symbolic link; kvprobe does not follow links in a results directory")
    return UnsafeFile(f"{path}: cannot open: {exc.strerror}")


def _check_regular(path: Path, fd: int, limit: int | None) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"{path}: not a regular file")
    if limit is not None and info.st_size > limit:
        raise UnsafeFile(f"{path}: {info.st_size} bytes, more than the {limit} a file of its kind can hold")


def read_bytes(path: Path | str, limit: int = MAX_JSON_BYTES, follow: bool = False) -> bytes:
    """A regular file's bytes, at most `limit` of them; UnsafeFile for a link (unless `follow`: a
    user's own input, such as a config.json in a Hugging Face snapshot, is a link), a special file or more."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW) | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _no_link(path, exc) from None
    try:
        _check_regular(path, fd, limit)
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while read
                raise UnsafeFile(f"{path}: more than the {limit} bytes a file of its kind can hold")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path | str, limit: int = MAX_JSON_BYTES, errors: str = "strict", follow: bool = False) -> str:
    """`read_bytes` decoded as UTF-8; with errors='strict', UnsafeFile for text that is not UTF-8."""
    try:
        return read_bytes(path, limit, follow).decode("utf-8", errors=errors)
    except UnicodeDecodeError:
        raise UnsafeFile(f"{path}: not UTF-8 text") from None


def decode_json(text: str | bytes, source: str, kind: str = "a result") -> Any:
    """JSON without NaN or Infinity (not numbers `kind` can hold); UnsafeFile names `source` for bad
    or too deeply nested JSON."""

    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not a number {kind} can hold")

    try:
        data = json.loads(text, parse_constant=refuse_constant)
    except RecursionError:
        raise UnsafeFile(f"{source}: JSON nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsafeFile(f"{source}: not valid JSON ({exc})") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise UnsafeFile(f"{source}: JSON nested too deeply to read (more than {MAX_JSON_DEPTH} levels)")
    return data


def _depth(data: Any) -> int:
    """How deeply lists and objects nest in `data` (walked without recursion)."""
    deepest, level = 0, [data]
    while level:
        deepest += 1
        level = [
            child
            for value in level
            if isinstance(value, (list, dict))
            for child in (value.values() if isinstance(value, dict) else value)
        ]
    return deepest


def read_json(path: Path | str, limit: int = MAX_JSON_BYTES, kind: str = "a result", follow: bool = False) -> Any:
    """A JSON file read by `read_bytes` and decoded by `decode_json`."""
    return decode_json(read_bytes(path, limit, follow), str(path), kind)


def create_new(path: Path | str) -> int:
    """A file descriptor of a new, empty file at `path`, opened for writing. Whatever was there (a file
    left by an earlier run, a planted link) is removed first, and O_EXCL with O_NOFOLLOW makes the
    kernel refuse to write through anything put back in between."""
    path = Path(path)
    path.unlink(missing_ok=True)
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise UnsafeFile(f"{path}: appeared while kvprobe created it; not written") from None


def write_new(path: Path | str, data: bytes | str) -> None:
    """Write `data` to a new file made by `create_new`."""
    fd = create_new(path)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def open_existing_or_new(path: Path | str, flags: int) -> int:
    """A descriptor of the regular file at `path`, created if missing, never through a link:
    `flags` adds O_APPEND, O_RDWR and the like to O_CREAT | O_NOFOLLOW."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _no_link(path, exc) from None
    try:
        _check_regular(path, fd, None)
    except UnsafeFile:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return fd


def no_follow(path: str, flags: int) -> int:
    """An `opener` for open(): the last component of `path` is never followed if it is a link."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def child_python(python: str | None = None) -> list[str]:
    """This interpreter (or `python`, such as a container's), started so that neither the working
    directory nor a script's directory is put first on the import path: -P (Python 3.11+, PYTHONPATH
    still honoured), else -I (another interpreter's version is not known)."""
    safe = "-P" if python is None and sys.version_info >= (3, 11) else "-I"
    return [python or sys.executable, safe]
