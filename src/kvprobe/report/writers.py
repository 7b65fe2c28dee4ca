"""One writer per output format, made per run with its options; files are written atomically.

Every writer renders the same inputs (the numbers, the document, this run's chart images) to
file contents; `write_report` writes them. Markdown links and HTML embeds only the charts
drawn in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kvprobe.report.charts import ChartWriter, chart_specs, draw
from kvprobe.report.cluster_layout import cluster_blocks
from kvprobe.report.conditions_layout import experiment_blocks
from kvprobe.report.csv_writer import CsvWriter
from kvprobe.report.document import Document, Heading
from kvprobe.report.external import ExternalSummary
from kvprobe.report.html import HtmlWriter
from kvprobe.report.json_writer import JsonWriter
from kvprobe.report.layout import build_document, external_document
from kvprobe.report.markdown import MarkdownWriter, hugo_date
from kvprobe.report.summary import ReportSummary
from kvprobe.results.store import write_bytes_atomic

FORMATS = ("charts", "markdown", "html", "csv", "json")


class Writer(Protocol):
    name: str

    def render(self, summary: ReportSummary, document: Document, images: dict[str, bytes]) -> dict[str, bytes]:
        """File name -> contents."""


def make_writers(formats: list[str], front_matter: bool = False) -> list[Writer]:
    """The chosen formats' writers, each made for this run with its options."""
    made: dict[str, Writer] = {
        "charts": ChartWriter(),
        "markdown": MarkdownWriter(front_matter=front_matter),
        "html": HtmlWriter(),
        "csv": CsvWriter(),
        "json": JsonWriter(),
    }
    return [made[name] for name in FORMATS if name in formats]


@dataclass(frozen=True)
class ReportOptions:
    """How this run's report reads: its title, Hugo front matter, date, and an external source."""

    title: str | None = None
    front_matter: bool = False
    date: str | None = None  # the front matter's; today when None
    external: ExternalSummary | None = None

    def __post_init__(self) -> None:
        if self.date is not None:
            hugo_date(self.date)  # ValueError for anything but an ISO date: it goes into the page unquoted


def render_report(
    summary: ReportSummary, formats: list[str], options: ReportOptions = ReportOptions()
) -> dict[str, bytes]:
    """Every chosen format's files, in memory."""
    images: dict[str, bytes] = {}
    stems: list[str] = []
    if "charts" in formats:
        for spec in chart_specs(summary):
            images.update(draw(spec))
            stems.append(spec.stem)
    document = build_document(summary, options.title, options.date or time.strftime("%Y-%m-%d"), stems)
    document.blocks += experiment_blocks(summary.experiments, stems)
    document.blocks += cluster_blocks(summary.clusters)
    if options.external is not None:  # a labelled section of its own, after kvprobe's measurements
        section = external_document(options.external, document.front_matter.date)
        document.blocks += [Heading(2, section.title), *section.blocks]
    files: dict[str, bytes] = {}
    for writer in make_writers(formats, options.front_matter):
        files.update(writer.render(summary, document, images))
    return files


def write_report(summary: ReportSummary, out_dir: Path, formats: list[str], options: ReportOptions) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, contents in render_report(summary, formats, options).items():
        write_bytes_atomic(out_dir / name, contents)
        written.append(out_dir / name)
    return written
