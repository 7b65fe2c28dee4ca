"""A self-contained HTML page of the report, with the SVG charts of the same run embedded inline."""

from __future__ import annotations

import html
import re
from typing import ClassVar

from kvprobe.report.document import Details, Document, Figure, Table
from kvprobe.report.markup import MarkupWriter, visible

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #1a202c; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #cbd5e0; padding: 4px 8px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #edf2f7; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
pre code { display: block; white-space: pre-wrap; }
code { background: #edf2f7; padding: 1px 4px; font-size: 0.85em; word-break: break-all; }
"""
_PROLOG = re.compile(r"^\s*<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>)?\s*")


class HtmlWriter(MarkupWriter):
    name = "html"
    STYLES: ClassVar[dict[str, str]] = {
        "text": "{}",
        "code": "<code>{}</code>",
        "strong": "<strong>{}</strong>",
        "emphasis": "<em>{}</em>",
    }

    def __init__(self) -> None:
        self._images: dict[str, bytes] = {}

    def render(self, document: Document, images: dict[str, bytes]) -> dict[str, bytes]:
        self._images = images
        return {"report.html": self.render_document(document).encode()}

    def escape(self, text: str) -> str:
        return html.escape(visible(text), quote=True)

    def heading(self, level: int, text: str) -> str:
        return f"<h{level}>{text}</h{level}>"

    def paragraph(self, text: str) -> str:
        return f"<p>{text}</p>"

    def table(self, table: Table) -> str:
        head = "".join(f"<th>{self.escape(h)}</th>" for h in table.header)
        rows = "".join(
            "<tr>"
            + "".join(
                f'<td class="num">{self.escape(c)}</td>' if numeric else f"<td>{self.escape(c)}</td>"
                for c, numeric in zip(row, table.numeric, strict=True)
            )
            + "</tr>"
            for row in table.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    def figure(self, figure: Figure) -> str:
        # Only the SVG this run's chart writer made is embedded; nothing is read from disk.
        svg = self._images.get(f"{figure.stem}.svg", b"").decode()
        alt = self.escape(figure.alt)
        return (
            f'<figure role="img" aria-label="{alt}">{_PROLOG.sub("", svg)}'
            f"<figcaption>{self.escape(figure.caption)}</figcaption></figure>"
        )

    def bullet_list(self, items: list[str]) -> str:
        return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"

    def details(self, details: Details) -> str:
        return (
            f"<details><summary>{self.escape(details.summary)}</summary>"
            f"<pre><code>{self.escape(details.text)}</code></pre></details>"
        )

    def page(self, document: Document, body: list[str]) -> str:
        title = self.escape(document.title)
        content = "\n".join([f"<h1>{title}</h1>", *body])
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}</style></head><body>\n{content}\n</body></html>\n"
        )
