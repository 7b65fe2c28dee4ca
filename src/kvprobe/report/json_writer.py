"""The report's numbers as JSON (`summary.json`): the ReportSummary model, as it is (units in `metrics`)."""

from __future__ import annotations

from kvprobe.report.summary import ReportSummary


class JsonWriter:
    name = "json"

    def render(self, summary: ReportSummary) -> dict[str, bytes]:
        return {"summary.json": (summary.model_dump_json(indent=1) + "\n").encode()}
