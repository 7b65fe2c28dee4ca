"""A rich live view of trials as they run, and the end-of-run summary table."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from kvprobe.results.schema import MemorySample, ResultDocument, TrialRecord
from kvprobe.trial.executor import TrialRequest
from kvprobe.units import gib

OUTCOME_STYLE = {"ok": "green", "guard": "magenta", "timeout": "yellow", "error": "red"}


class TrialProgress:
    """One line per trial (start, end, outcome), and while a trial runs a live status line with
    its elapsed time and the memory the guard watches. Replayed trials are marked as such.
    Engine and user text is escaped: it is printed as it is, never read as markup."""

    def __init__(self, console: Console):
        self.console = console
        self._started = 0.0
        self._label = ""
        self._status: Status | None = None

    def trial_started(self, request: TrialRequest) -> None:
        self._started = time.monotonic()
        model, search = request.model, request.search
        if request.utilization is not None:
            value = f"u={request.utilization}"
        else:
            value = f"kv={gib(request.kv_cache_memory_bytes)} GiB"
        self._label = escape(f"{model} {search} {value}")
        self.console.print(
            f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(model)} [bold]{search}[/] {value} ...", highlight=False
        )
        if self.console.is_terminal:
            self._status = self.console.status(self._label)
            self._status.start()

    def on_sample(self, sample: MemorySample) -> None:
        if self._status is None:
            return
        parts = [f"{time.monotonic() - self._started:.0f} s", f"MemAvailable {gib(sample.host_available, unit=True)}"]
        if sample.cgroup_headroom is not None:
            parts.append(f"cgroup headroom {gib(sample.cgroup_headroom, unit=True)}")
        if sample.gpu_used is not None:
            parts.append(f"GPU used {gib(sample.gpu_used, unit=True)}")
        self._status.update(f"{self._label}: {', '.join(parts)}")

    def trial_finished(self, model: str, record: TrialRecord, replayed: bool) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
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
    """A table on a terminal; piped to a file or a CI log, one line of `column value` pairs per row,
    which reads at any width (a table there would be cut to a few characters a column). Cells are text."""
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
