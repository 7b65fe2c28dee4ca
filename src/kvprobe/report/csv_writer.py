"""CSV: one row per run (model, label, repeat) with every metric."""

from __future__ import annotations

import csv
import io

from kvprobe.report.document import Document
from kvprobe.report.summary import ReportSummary
from kvprobe.vocabulary import LABELS

# Spreadsheets run a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class CsvWriter:
    name = "csv"

    def render(self, summary: ReportSummary, document: Document, images: dict[str, bytes]) -> dict[str, bytes]:
        rows = [row for model in summary.models for label in LABELS for row in model.runs[label]]
        fields = list(rows[0]) if rows else ["model", "label", "run_id", "repeat"]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        return {"runs.csv": out.getvalue().encode()}
