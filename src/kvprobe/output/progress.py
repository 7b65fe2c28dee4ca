"""A rich live view of trials as they run, and the end-of-run summary table."""

from __future__ import annotations

import time
from typing import Optional

from rich.console import Console
from rich.status import Status
from rich.table import Table

from kvprobe.results.schema import TrialRecord
from kvprobe.trial.monitor import MemorySample

GIB = 1 << 30
OUTCOME_STYLE = {"ok": "green", "guard": "magenta", "timeout": "yellow", "error": "red"}


def gib(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


class TrialProgress:
    """One line per trial (start, end, outcome), and while a trial runs a live status line with
    its elapsed time and the memory the guard watches. Replayed trials are marked as such."""

    def __init__(self, console: Console):
        self.console = console
        self._started = 0.0
        self._label = ""
        self._status: Optional[Status] = None

    def trial_started(self, model: str, search: str, value: str) -> None:
        self._started = time.monotonic()
        self._label = f"{model} {search} {value}"
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {model} [bold]{search}[/] {value} ...", highlight=False)
        if self.console.is_terminal:
            self._status = self.console.status(self._label)
            self._status.start()

    def on_sample(self, sample: MemorySample) -> None:
        if self._status is None:
            return
        parts = [f"{time.monotonic() - self._started:.0f} s", f"MemAvailable {gib(sample.host_available)} GiB"]
        if sample.cgroup_headroom is not None:
            parts.append(f"cgroup headroom {gib(sample.cgroup_headroom)} GiB")
        if sample.gpu_used is not None:
            parts.append(f"GPU used {gib(sample.gpu_used)} GiB")
        self._status.update(f"{self._label}: {', '.join(parts)}")

    def trial_finished(self, model: str, record: TrialRecord, replayed: bool) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        style = OUTCOME_STYLE.get(record.outcome, "red")
        verdict = "pass" if record.passed else "fail"
        kv = f" KV {gib(record.kv_cache_bytes)} GiB, {record.kv_cache_tokens:,} tokens" if record.kv_cache_tokens else ""
        fill = (record.worker or {}).get("fill")
        fill_text = f", fill peak {fill['peak_kv_usage']:.0%}" if fill else ""
        tag = "replayed from journal" if replayed else f"{record.wall_s:.0f} s + teardown {record.teardown_s:.1f} s"
        reason = "" if record.passed else f" - {record.reason[:160]}"
        self.console.print(
            f"  #{record.number} [{style}]{record.outcome}[/] ({verdict}){kv}{fill_text} [dim]{tag}[/]{reason}",
            highlight=False,
        )


def summary_table(documents: list[dict]) -> Table:
    table = Table(title="kvprobe measure: summary")
    for column in ("model", "label", "repeat", "u_ref KV GiB", "u_max", "u_min", "KV@u_max GiB", "tokens@u_max",
                   "physical KV GiB", "starts", "status"):
        table.add_column(column, justify="right" if column not in ("model", "label", "status") else "left")
    for doc in documents:
        ref = doc.get("reference") or {}
        at_max = doc.get("kv_at_u_max") or {}
        physical = doc.get("physical_capacity") or {}
        censored = ((doc.get("searches") or {}).get("u_max") or {}).get("censored")
        u_max = doc.get("u_max")
        table.add_row(
            doc["model"],
            doc["label"],
            str(doc["repeat"]),
            gib(ref.get("bytes")),
            "-" if u_max is None else (f">={u_max:.2f}" if censored else f"{u_max:.2f}"),
            "-" if doc.get("u_min") is None else f"{doc['u_min']:.2f}",
            gib(at_max.get("bytes")),
            "-" if not at_max.get("tokens") else f"{at_max['tokens']:,}",
            gib(physical.get("bytes")),
            str(doc["engine_starts"]),
            doc["status"] if not doc["errors"] else f"{doc['status']}: {doc['errors'][0][:60]}",
        )
    return table
