"""CSV: one row per run read (every condition and label), each metric column named with its unit.

`u_max_lower_bound` is true where the u_max search passed at the top of its range: then u_max and
every figure taken at it (the columns in `summary.LOWER_BOUND_COLUMNS`) are lower bounds.
`u_max_boundary` says what set u_max (engine refused / engine out of memory / killed / guard).
`enforce_eager` is true where the engine ran without CUDA graphs, which `vllm serve` captures by default.
"""

from __future__ import annotations

import csv
import io

from kvprobe.report.summary import Cell, ReportSummary
from kvprobe.report.words import CSV_UNITS

# Spreadsheets run a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Cell) -> Cell:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class CsvWriter:
    name = "csv"

    def render(self, summary: ReportSummary) -> dict[str, bytes]:
        if not summary.runs:
            return {}
        header = {
            name: f"{name} [{CSV_UNITS[summary.metrics[name]]}]" if name in summary.metrics else name
            for name in summary.runs[0]
        }
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(header.values()), lineterminator="\n")
        writer.writeheader()
        writer.writerows({header[k]: _cell(v) for k, v in row.items()} for row in summary.runs)
        return {"runs.csv": out.getvalue().encode()}
