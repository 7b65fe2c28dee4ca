"""One writer per output format behind a single interface: `write(report, out_dir) -> [paths]`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from kvprobe.report.charts import ChartWriter
from kvprobe.report.csv_writer import CsvWriter
from kvprobe.report.html import HtmlWriter
from kvprobe.report.json_writer import JsonWriter
from kvprobe.report.markdown import MarkdownWriter


class Writer(Protocol):
    name: str

    def write(self, report: dict, out_dir: Path) -> list[Path]: ...


# Charts come first: Markdown and HTML embed or link the chart files.
WRITERS: dict[str, Writer] = {w.name: w for w in (ChartWriter(), MarkdownWriter(), HtmlWriter(), CsvWriter(), JsonWriter())}


def write_all(report: dict, out_dir: Path, formats: list[str], options: dict) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, writer in WRITERS.items():
        if name in formats:
            if hasattr(writer, "configure"):
                writer.configure(**{k: v for k, v in options.items() if k in writer.options})
            written += writer.write(report, out_dir)
    return written
