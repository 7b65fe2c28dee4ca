"""A self-contained HTML page: the Markdown report's content with the SVG charts embedded inline."""

from __future__ import annotations

import html
import re
from pathlib import Path

from kvprobe.report.markdown import render

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #1a202c; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #cbd5e0; padding: 4px 8px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #edf2f7; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
code { background: #edf2f7; padding: 1px 4px; font-size: 0.85em; word-break: break-all; }
"""


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(markdown: str, out_dir: Path) -> str:
    """Enough Markdown for our own report: headings, tables, lists, images, paragraphs."""
    body: list[str] = []
    lines = markdown.splitlines()
    if lines and lines[0] == "---":  # front matter is for Hugo, not for the page
        lines = lines[lines.index("---", 1) + 1:]
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            header = _cells(line)
            aligns = _cells(lines[i + 1]) if i + 1 < len(lines) else []
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            numeric = [a.endswith(":") for a in aligns]
            table = ["<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr></thead><tbody>"]
            for row in rows:
                cells = "".join(
                    ('<td class="num">' if k < len(numeric) and numeric[k] else "<td>") + f"{_inline(c)}</td>"
                    for k, c in enumerate(row)
                )
                table.append(f"<tr>{cells}</tr>")
            body.append("".join(table) + "</tbody></table>")
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif match := re.match(r"!\[([^\]]*)\]\(([^)]+)\.png\)", line):
            svg_path = out_dir / f"{match.group(2)}.svg"
            svg = svg_path.read_text() if svg_path.exists() else ""
            svg = re.sub(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>)?", "", svg)
            body.append(f"<figure>{svg}<figcaption>{html.escape(match.group(1))}</figcaption></figure>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(body)


class HtmlWriter:
    name = "html"
    options = ("title",)

    def __init__(self) -> None:
        self.title = "KV cache: native vs container"

    def configure(self, title: str | None = None) -> None:
        self.title = title or self.title

    def write(self, report: dict, out_dir: Path) -> list[Path]:
        charts = [c for c in ("kv_cache", "utilization_window", "memory_breakdown") if (out_dir / f"{c}.svg").exists()]
        content = markdown_to_html(render(report, self.title, False, charts), out_dir)
        page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}</title>"
                f"<style>{STYLE}</style></head><body>\n{content}\n</body></html>\n")
        path = out_dir / "report.html"
        path.write_text(page)
        return [path]
