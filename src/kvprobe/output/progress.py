"""What a run shows while it runs, and the end-of-run summary table.

On a terminal: one line per engine start (its setting, then its outcome), and while a start runs a
live rich `Progress` line: start k of about n, an ETA from this run's own starts, the phase of the
running start, and the memory figure the guard acts on beside its floor. Piped (or with
--log-format): one record per line (JSON Lines or logfmt), never wrapped, keys without spaces.
Engine and user text is untrusted: escaped on a terminal, quoted in a record, never read as markup.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kvprobe.results.schema import MemorySample, ResultDocument, TrialRecord
from kvprobe.trial.executor import TrialRequest
from kvprobe.trial.monitor import GuardPolicy
from kvprobe.units import gib

LogFormat = Literal["jsonl", "logfmt"]
LOG_FORMATS: tuple[LogFormat, ...] = ("jsonl", "logfmt")
OUTCOME_STYLE = {"ok": "green", "guard": "magenta", "timeout": "yellow", "error": "red"}
# The worker's phase marks and the engine's log patterns, in the words a user follows a start by.
PHASE_WORDS = {
    "prepare": "importing ahead",
    "import": "importing",
    "waiting": "imported, waiting",
    "engine_start": "weights",
    "weights_loaded": "profiling",
    "kv_allocated": "KV allocated",
    "ready": "KV allocated, measuring",
    "generated": "fill",
    "filled": "filled",
    "throughput": "throughput",
    "done": "done",
}
NEAR_FLOOR = 1.5  # warn before the first start when the guard's figure is below this many floors
DROP_CACHES_ADVICE = (
    "free the page cache first (sync; echo 3 | sudo tee /proc/sys/vm/drop_caches) or run as root with --drop-caches"
)
_LOGFMT_BARE = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def record_line(fields: Mapping[str, Any], log_format: LogFormat) -> str:
    """One record on one line: JSON (ASCII, so no control character survives) or logfmt."""
    if log_format == "jsonl":
        return json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
    parts = []
    for key, value in fields.items():
        text = json.dumps(value) if isinstance(value, bool) or value is None else str(value)
        if not _LOGFMT_BARE.fullmatch(text):
            text = json.dumps(text, ensure_ascii=True)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def record_key(column: str) -> str:
    """A table column as a record key: lower case, no spaces ('KV@u_max GiB' -> 'kv_at_u_max_gib')."""
    return re.sub(r"[^a-z0-9]+", "_", column.lower().replace("@", " at ")).strip("_")


class RecordConsole(Console):
    """A console whose every print is one record on one line (for pipes, files and CI logs): a
    message's markup is rendered to its plain text first; tables are written row by row (print_rows)."""

    def __init__(self, log_format: LogFormat, **kwargs: Any):
        super().__init__(soft_wrap=True, highlight=False, **kwargs)
        self.log_format = log_format

    def write_record(self, fields: Mapping[str, Any]) -> None:
        self.file.write(record_line({"time": round(time.time(), 3), **fields}, self.log_format) + "\n")
        self.file.flush()

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        markup = kwargs.get("markup", True) is not False
        words = [Text.from_markup(o).plain if isinstance(o, str) and markup else str(o) for o in objects]
        self.write_record({"event": "message", "text": " ".join(words)})

    def rule(self, title: Any = "", **kwargs: Any) -> None:  # type: ignore[override]
        self.print(title)


def make_console(log_format: LogFormat | None) -> Console:
    """A terminal's rich console; piped, or with a format given, a RecordConsole (JSON Lines by default)."""
    if log_format is None and sys.stdout.isatty():
        return Console()
    return RecordConsole(log_format or "jsonl")


def guard_figure(guard: GuardPolicy, sample: MemorySample) -> tuple[str, float | None, int | None]:
    """The host figure the guard acts on (MemAvailable, or on unified memory the lower of it and
    MemFree), its bytes, and its floor (None: no host floor)."""
    name, value = guard.host_view(sample)
    return name, value, guard.host_floor_bytes


def headroom_warning(guard: GuardPolicy, host_memory: Mapping[str, int]) -> str | None:
    """A warning when the guard's figure is already near its floor before the first start."""
    if guard.host_floor_bytes is None or "MemAvailable" not in host_memory:
        return None
    sample = MemorySample(host_available=host_memory["MemAvailable"], host_free=host_memory.get("MemFree"))
    name, value, floor = guard_figure(guard, sample)
    if floor is None or value is None or value >= NEAR_FLOOR * floor:
        return None
    return (
        f"{name} {gib(value, unit=True)} is already near the guard floor {gib(floor, unit=True)}: an engine "
        f"start that takes memory will be ended by the guard; {DROP_CACHES_ADVICE}"
    )


class TrialProgress:
    """What a run shows of its engine starts (see the module docstring). `expected_starts`: the
    search's estimate of the run's starts (the n of "start k of about n")."""

    def __init__(
        self,
        console: Console,
        guard: GuardPolicy | None = None,
        expected_starts: int | None = None,
        show_engine_log: bool = False,
    ):
        self.console = console
        self.guard = guard or GuardPolicy.disabled()
        self.expected = expected_starts
        self.show_engine_log = show_engine_log
        self.records = isinstance(console, RecordConsole)
        self.finished = 0  # starts finished in this run, replayed ones included
        self.durations: list[float] = []  # seconds of this run's own starts (wall and teardown)
        self._started = 0.0
        self._label = ""
        self._phase = "starting"
        self._sample: MemorySample | None = None
        self._live: Progress | None = None
        self._task: TaskID | None = None

    @property
    def number(self) -> int:
        """k: the running start's place in the run."""
        return self.finished + 1

    def of_about(self) -> str:
        return f"start {self.number} of about {max(self.expected or 0, self.number)}" if self.expected else ""

    def eta_seconds(self) -> float | None:
        """Seconds left: the mean of this run's starts times those left, less the running one's elapsed."""
        if not self.durations or not self.expected:
            return None
        mean = sum(self.durations) / len(self.durations)
        left_after = max(0, self.expected - self.number)
        return left_after * mean + max(0.0, mean - (time.monotonic() - self._started))

    def _eta_text(self) -> str:
        eta = self.eta_seconds()
        if eta is None:
            return "ETA after the first start" if self.expected else ""
        left = f"{eta:.0f} s" if eta < 120 else f"{eta / 60:.0f} min"
        return f"ETA ~{left} (from {len(self.durations)} starts)"

    def _memory_text(self) -> str:
        if self._sample is None:
            return ""
        name, value, floor = guard_figure(self.guard, self._sample)
        text = f"{name} {gib(value, unit=True)}" + (
            f" (guard floor {gib(floor, unit=True)})" if floor else " (no guard)"
        )
        if self._sample.cgroup_headroom is not None:
            text += f", cgroup headroom {gib(self._sample.cgroup_headroom, unit=True)}"
        return text

    def _status(self) -> str:
        parts = [self.of_about(), self._eta_text(), f"phase {self._phase}", self._memory_text()]
        return escape(" | ".join(part for part in parts if part))

    def trial_started(self, request: TrialRequest) -> None:
        self._started = time.monotonic()
        self._phase = "starting"
        model, search = request.model, request.search
        if request.utilization is not None:
            value = f"u={request.utilization}"
        else:
            value = f"kv={gib(request.kv_cache_memory_bytes)} GiB"
        if self.records:
            fields = {"event": "start", "model": model, "search": search, "setting": value, "start": self.number}
            eta = self.eta_seconds()
            fields |= {"of_about": self.expected, "eta_s": None if eta is None else round(eta)}
            self.console.write_record(fields)  # type: ignore[attr-defined]
            return
        self._label = escape(f"{model} {search} {value}")
        self.console.print(
            f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(model)} [bold]{search}[/] {value} "
            f"[dim]{escape(self.of_about())}[/]",
            highlight=False,
        )
        if self.console.is_terminal:
            columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
            self._live = Progress(*columns, TextColumn("{task.fields[status]}"), console=self.console)
            self._task = self._live.add_task(self._label, status=self._status())
            self._live.start()

    def _refresh(self) -> None:
        if self._live is not None and self._task is not None:
            self._live.update(self._task, status=self._status())

    def on_sample(self, sample: MemorySample) -> None:
        self._sample = sample
        self._refresh()

    def on_log(self, lines: list[str], phases: Mapping[str, float]) -> None:
        """New engine log lines, and the phases marked so far: a new phase is shown (and recorded)."""
        if self.show_engine_log:
            for line in lines:
                if self.records:
                    self.console.write_record({"event": "engine_log", "start": self.number, "line": line})  # type: ignore[attr-defined]
                else:
                    self.console.print(f"[dim]engine |[/] {escape(line)}", highlight=False, soft_wrap=True)
        last_mark = list(phases)[-1] if phases else None
        latest = PHASE_WORDS.get(last_mark, last_mark) if last_mark else self._phase
        if latest == self._phase:
            return
        self._phase = latest
        if self.records:
            fields: dict[str, Any] = {"event": "phase", "start": self.number, "phase": latest}
            fields["elapsed_s"] = round(time.monotonic() - self._started, 1)
            if self._sample is not None:
                name, value, floor = guard_figure(self.guard, self._sample)
                figure = None if value is None else int(value)
                fields |= {"guard_figure": name, "guard_figure_bytes": figure, "guard_floor_bytes": floor}
            self.console.write_record(fields)  # type: ignore[attr-defined]
        self._refresh()

    def trial_finished(self, model: str, record: TrialRecord, replayed: bool) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.finished += 1
        if not replayed:
            self.durations.append(record.wall_s + record.teardown_s)
        if self.records:
            self.console.write_record(  # type: ignore[attr-defined]
                {
                    "event": "trial",
                    "model": model,
                    "number": record.number,
                    "outcome": record.outcome,
                    "passed": record.passed,
                    "kv_cache_bytes": record.kv_cache_bytes,
                    "kv_cache_tokens": record.kv_cache_tokens,
                    "wall_s": round(record.wall_s, 1),
                    "teardown_s": round(record.teardown_s, 1),
                    "replayed": replayed,
                    "reason": "" if record.passed else record.reason,
                }
            )
            return
        style = OUTCOME_STYLE.get(record.outcome, "red")
        verdict = "pass" if record.passed else "fail"
        kv = (
            f" KV {gib(record.kv_cache_bytes, unit=True)}, {record.kv_cache_tokens:,} tokens"
            if record.kv_cache_tokens
            else ""
        )
        fill = record.worker.fill
        fill_text = f", fill peak {fill.peak_kv_usage:.0%}" if fill else ""
        tag = "replayed from journal" if replayed else f"{record.wall_s:.0f} s + teardown {record.teardown_s:.1f} s"
        reason = "" if record.passed else f" - {escape(record.reason[:160])}"
        self.console.print(
            f"  #{record.number} [{style}]{record.outcome}[/] ({verdict}){kv}{fill_text} [dim]{tag}[/]{reason}",
            highlight=False,
        )

    def already_measured(self, model: str, repeat: int, path: Path) -> None:
        self.console.print(f"{escape(model)} repeat {repeat}: already measured ({escape(str(path))})", highlight=False)

    def result_written(self, path: Path) -> None:
        self.console.print(f"wrote {escape(str(path))}", highlight=False)


def _u_max_text(doc: ResultDocument) -> str:
    if doc.u_max is None:
        return "-"
    return f">={doc.u_max:.2f}" if doc.u_max_censored else f"{doc.u_max:.2f}"


def _at_u_max(doc: ResultDocument, text: str) -> str:
    """A figure taken at u_max is a lower bound wherever u_max is: never a bare value beside u_max >=x."""
    return f">={text}" if doc.u_max_censored and text != "-" else text


SUMMARY_COLUMNS = (
    "model",
    "label",
    "repeat",
    "u_ref KV GiB",
    "u_max",
    "u_min",
    "KV@u_max GiB",
    "tokens@u_max",
    "physical KV GiB",
    "starts",
    "status",
)


def _summary_row(doc: ResultDocument) -> tuple[str, ...]:
    at_max = doc.kv_at_u_max
    return (
        doc.model,
        doc.label,
        str(doc.repeat),
        gib(doc.reference.bytes if doc.reference else None),
        _u_max_text(doc),
        "-" if doc.u_min is None else f"{doc.u_min:.2f}",
        _at_u_max(doc, gib(at_max.bytes if at_max else None)),
        _at_u_max(doc, "-" if not (at_max and at_max.tokens) else f"{at_max.tokens:,}"),
        gib(doc.physical_capacity.bytes if doc.physical_capacity else None),
        str(doc.engine_starts),
        doc.status if not doc.errors else f"{doc.status}: {doc.errors[0][:60]}",
    )


def print_rows(
    console: Console, title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]], left: tuple[str, ...] = ()
) -> None:
    """A table on a terminal; to a RecordConsole (piped, a file, a CI log) one record per row, keyed by
    the columns without spaces, which reads at any width and in awk or jq. Cells are text."""
    if isinstance(console, RecordConsole):
        for row in rows:
            cells = {record_key(column): value for column, value in zip(columns, row, strict=True)}
            console.write_record({"event": "row", "table": title, **cells})
        return
    if not console.is_terminal:
        console.print(title, highlight=False)
        for row in rows:
            pairs = [f"{column} {value}" for column, value in zip(columns, row, strict=True)]
            console.print(escape(" | ".join(pairs)), highlight=False, soft_wrap=True)
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)


def print_summary(console: Console, documents: list[ResultDocument]) -> None:
    rows = [_summary_row(doc) for doc in documents]
    print_rows(console, "kvprobe measure: summary", SUMMARY_COLUMNS, rows, left=("model", "label", "status"))
