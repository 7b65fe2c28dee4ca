"""Read result files of every schema version through one loader (as pyperf's `_bench.py` does).

Each older version has an upgrade step to the next; a file is upgraded step by step to
`SCHEMA_VERSION` and then validated by `ResultDocument`. Unknown versions and malformed
files raise `ResultFileError`, whose message names the file and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from kvprobe.errors import InputError
from kvprobe.results.schema import SCHEMA_VERSION, ResultDocument
from kvprobe.safe_io import UnsafeFile, read_json
from kvprobe.search import contradicts
from kvprobe.vocabulary import ABOVE_WINDOW, BELOW_WINDOW

MAX_RESULT_BYTES = 64 << 20  # a result with all its trials is well under a MiB


class ResultFileError(InputError, ValueError):
    """A result file that cannot be used; the message names the file and the problem."""


def _recheck_non_monotone(data: dict[str, Any]) -> None:
    """0.1 counted a start refused for too much memory as evidence against u_min (and the reverse),
    which flagged monotone searches as non-monotone; recompute the flag from the trials as today."""
    trials = [t for t in data.get("trials") or [] if isinstance(t, dict)]
    evidence = {"u_max": ((*ABOVE_WINDOW, "error"), True), "u_min": (BELOW_WINDOW, False)}
    for name, (failures, passing_below) in evidence.items():
        search = (data.get("searches") or {}).get(name)
        if not isinstance(search, dict):
            continue
        points = [
            (t["utilization"], bool(t.get("passed")))
            for t in trials
            if t.get("utilization") is not None
            and t.get("kv_cache_memory_bytes") is None
            and (t.get("passed") or t.get("outcome") in failures)
        ]
        search["non_monotone"] = contradicts(points, passing_below)


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (kvprobe 0.1) had the same fields, but for KV bytes per block (unknown there: its
    KV bytes are the engine's two-decimal GiB log) and a wrong non_monotone rule; `options` also
    held free-form annotations, of which only `container` was ever written."""
    _recheck_non_monotone(data)
    options = data.get("options")
    if isinstance(options, dict):
        known = {
            "tolerance",
            "utilization_range",
            "fill_target",
            "drop_caches",
            "cooldown_s",
            "guard",
            "searches",
            "strategy",
            "container",
        }
        data["options"] = {k: v for k, v in options.items() if k in known}
    return {**data, "schema_version": 2}


def _upgrade_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 knew two conditions only, named by the label: `native` and `container`."""
    return {**data, "condition": data.get("label"), "schema_version": 3}


def _upgrade_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 measured one machine: no cluster, no per-node trials or attribution (their defaults)."""
    return {**data, "schema_version": 4}


# version -> the step that turns a document of that version into the next one
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_v1, 2: _upgrade_v2, 3: _upgrade_v3}


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(document)"
    return f"field '{where}': {error['msg']}"


def parse_result(data: Any, source: str = "result") -> ResultDocument:
    """A decoded JSON value -> the current ResultDocument, upgrading older versions."""
    if not isinstance(data, dict):
        raise ResultFileError(f"{source}: not a kvprobe result (expected a JSON object, got {type(data).__name__})")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultFileError(f"{source}: not a kvprobe result (no schema_version)")
    readable = sorted({*UPGRADES, SCHEMA_VERSION})
    if version not in readable:
        newer = " (written by a newer kvprobe)" if version > SCHEMA_VERSION else ""
        raise ResultFileError(
            f"{source}: schema_version {version}{newer} is not one this kvprobe reads ({', '.join(map(str, readable))})"
        )
    while version < SCHEMA_VERSION:
        data = UPGRADES[version](dict(data))
        version = data["schema_version"]
    try:
        return ResultDocument.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors()[:5])
        more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
        raise ResultFileError(f"{source}: not a valid kvprobe result: {problems}{more}") from None


def load_result(path: Path) -> ResultDocument:
    """Read one result file: a regular file of sane size, not a link, JSON of sane depth."""
    path = Path(path)
    try:
        data = read_json(path, MAX_RESULT_BYTES)
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnsafeFile as exc:
        raise ResultFileError(str(exc)) from None
    return parse_result(data, str(path))
