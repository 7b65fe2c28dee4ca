"""The report's files: charts drawn, the document built, each chosen format rendered; written atomically.

Each writer takes only what it renders (Markdown the document, HTML the document and this run's
SVGs, CSV and JSON the numbers). Markdown links and HTML embeds only the charts drawn in the same run;
a chart with no data is not drawn, so it is neither written nor linked.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kvprobe.errors import InputError, RunFailed
from kvprobe.report.charts import alt_text, chart_specs, draw
from kvprobe.report.cluster_layout import cluster_blocks
from kvprobe.report.conditions_layout import experiment_answer, experiment_blocks
from kvprobe.report.csv_writer import CsvWriter
from kvprobe.report.document import Heading
from kvprobe.report.external import ExternalSummary
from kvprobe.report.external_layout import external_document
from kvprobe.report.html import HtmlWriter
from kvprobe.report.json_writer import JsonWriter
from kvprobe.report.layout import build_document
from kvprobe.report.markdown import MarkdownWriter, hugo_date
from kvprobe.report.summary import ReportSummary
from kvprobe.results.store import write_bytes_atomic

FORMATS = ("charts", "markdown", "html", "csv", "json")


@dataclass(frozen=True)
class ReportOptions:
    """How this run's report reads: its title, Hugo front matter (a page bundle), date, and an external source."""

    title: str | None = None
    front_matter: bool = False  # Markdown as a Hugo page bundle: index.md with front matter
    date: str | None = None  # the front matter's; today when None
    draft: bool = False  # the front matter's draft flag
    tags: tuple[str, ...] | None = None  # the front matter's tags; words.TAGS when None
    external: ExternalSummary | None = None

    def __post_init__(self) -> None:
        if self.date is not None:
            hugo_date(self.date)  # ValueError for anything but an ISO date: it goes into the page unquoted


def render_report(
    summary: ReportSummary, formats: list[str], options: ReportOptions = ReportOptions()
) -> dict[str, bytes]:
    """Every chosen format's files, in memory. Each writer gets only what it renders."""
    images: dict[str, bytes] = {}
    charts: dict[str, str] = {}  # stem -> alt text, of the charts drawn in this run
    if "charts" in formats:
        for spec in chart_specs(summary):
            images.update(draw(spec))
            charts[spec.stem] = alt_text(spec)
    date = options.date or time.strftime("%Y-%m-%d")
    document = build_document(summary, options.title, date, charts, experiment_answer(summary.experiments, charts))
    if document.front_matter is not None:
        document.front_matter = dataclasses.replace(
            document.front_matter, draft=options.draft, tags=options.tags or document.front_matter.tags
        )
    document.blocks += experiment_blocks(summary.experiments, charts)
    document.blocks += cluster_blocks(summary.clusters)
    if options.external is not None:  # a labelled section of its own, after kvprobe's measurements
        section = external_document(options.external, date)
        document.blocks += [Heading(2, section.title), *section.blocks]
    files: dict[str, bytes] = {}
    if "charts" in formats:
        files.update(images)
    if "markdown" in formats:
        files.update(MarkdownWriter(front_matter=options.front_matter).render(document))
    if "html" in formats:
        files.update(HtmlWriter().render(document, images))
    if "csv" in formats:
        files.update(CsvWriter().render(summary))
    if "json" in formats:
        files.update(JsonWriter().render(summary))
    return files


def write_report(summary: ReportSummary, out_dir: Path, formats: list[str], options: ReportOptions) -> list[Path]:
    """Every file rendered in memory, written to a staging folder beside `out_dir`, then renamed into
    it: a full disk or an unwritable folder leaves the report as it was (RunFailed says why)."""
    files = render_report(summary, formats, options)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".kvprobe-report-", dir=out_dir))
    except OSError as exc:
        raise InputError(f"--out {out_dir}: the report cannot be written there ({exc.strerror})") from None
    try:
        for name, contents in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(staging / name, contents)
        for name in files:
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, out_dir / name)
    except OSError as exc:
        raise RunFailed(f"--out {out_dir}: writing the report failed ({exc.strerror}); nothing was replaced") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / name for name in files]
