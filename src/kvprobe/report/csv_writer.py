"""CSV: one row per run (model, label, repeat) with every metric."""

from __future__ import annotations

import csv
from pathlib import Path


class CsvWriter:
    name = "csv"

    def write(self, report: dict, out_dir: Path) -> list[Path]:
        rows = [row for model in report["models"] for label in ("native", "container") for row in model["runs"][label]]
        path = out_dir / "runs.csv"
        fields = list(rows[0]) if rows else ["model", "label", "run_id", "repeat"]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        return [path]
