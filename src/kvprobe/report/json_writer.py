"""The report's numbers as JSON (`summary.json`): the ReportSummary model, as it is."""

from __future__ import annotations

from kvprobe.report.document import Document
from kvprobe.report.summary import ReportSummary


class JsonWriter:
    name = "json"

    def render(self, summary: ReportSummary, document: Document, images: dict[str, bytes]) -> dict[str, bytes]:
        return {"summary.json": (summary.model_dump_json(indent=1) + "\n").encode()}
