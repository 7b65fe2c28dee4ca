"""The report's summary as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from kvprobe.results.store import write_json_atomic


class JsonWriter:
    name = "json"

    def write(self, report: dict, out_dir: Path) -> list[Path]:
        path = out_dir / "summary.json"
        write_json_atomic(path, json.loads(json.dumps(report, default=str)))
        return [path]
