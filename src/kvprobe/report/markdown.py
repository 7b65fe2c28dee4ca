"""Markdown: tables ready to paste into a Hugo post. With front matter it is a Hugo page bundle:
`index.md` beside its chart images, titled by the front matter alone (a theme prints that title)."""

from __future__ import annotations

import datetime
import json
import re
from typing import ClassVar

from kvprobe.report.document import Details, Document, Figure, Span, Table, emphasis
from kvprobe.report.markup import MarkupWriter, visible

# What gives plain text a meaning in CommonMark/GFM (Hugo's goldmark): a backslash before it makes
# it literal. Escaped only where it can act, so that ordinary text stays readable in the raw file:
_ALWAYS = re.compile(r"([\\`*|~\[\]])")  # code, emphasis, table cells, strikethrough, links
_ACTIVE = re.compile(
    r"<(?=[A-Za-z/!?])"  # raw HTML or an autolink
    r"|&(?=#?\w+;)"  # an entity
    r"|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])"  # emphasis (never inside a word)
)
_BLOCK_START = re.compile(r"^(\s*|\s*\d+)((?<=\d)[.)](?=\s|$)|(?<!\d)(?:[#+=-](?=\s|$)|>))")  # heading, list, quote
_LINE_BREAKS = re.compile(r"[\r\n\t\f\v\u2028\u2029\x85]+")
# Hugo expands shortcodes ({{< name >}}, {{% name %}}) before Markdown is read, in code spans too:
# a backslash between the braces keeps Hugo from seeing one and renders as the brace itself.
_SHORTCODE = re.compile(r"\{(?=\{\s*[<%])")


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?")


def hugo_date(value: str) -> str:
    """The front matter's date as given if it is an ISO 8601 date (YYYY-MM-DD) or date and time, else
    ValueError: it is written unquoted, and anything else could add keys or raw HTML to the page."""
    if _ISO_DATE.fullmatch(value):
        try:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return value
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an ISO date (YYYY-MM-DD) or date and time (YYYY-MM-DDTHH:MM:SS)")


class MarkdownWriter(MarkupWriter):
    name = "markdown"
    STYLES: ClassVar[dict[str, str]] = {"text": "{}", "code": "`{}`", "strong": "**{}**", "emphasis": "*{}*"}

    def __init__(self, front_matter: bool = False):
        self.front_matter = front_matter

    def render(self, document: Document) -> dict[str, bytes]:
        name = "index.md" if self._bundle(document) else "report.md"
        return {name: self.render_document(document).encode()}

    def _bundle(self, document: Document) -> bool:
        return self.front_matter and document.front_matter is not None

    def escape(self, text: str) -> str:
        text = _SHORTCODE.sub(r"{\\", _ALWAYS.sub(r"\\\1", visible(_LINE_BREAKS.sub(" ", text))))
        return _ACTIVE.sub(lambda match: "\\" + match.group(0), text)

    def _line(self, text: str) -> str:
        """Text that starts a line: a leading #, >, -, + or '1.' would start a block; escape it."""
        return _BLOCK_START.sub(r"\1\\\2", text)

    def heading(self, level: int, text: str) -> str:
        return f"{'#' * level} {text}"

    def paragraph(self, text: str) -> str:
        return self._line(text)

    def table(self, table: Table) -> str:
        lines = [self._row(table.header), "| " + " | ".join("---:" if n else "---" for n in table.numeric) + " |"]
        lines += [self._row(row) for row in table.rows]
        return "\n".join(lines)

    def _row(self, cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(self.escape(c) for c in cells) + " |"

    def figure(self, figure: Figure) -> str:
        return f"![{self.escape(figure.alt)}]({figure.stem}.png)\n\n{self._line(self.inline(emphasis(figure.caption)))}"

    def bullet_list(self, items: list[str]) -> str:
        return "\n".join(f"- {self._line(item)}" for item in items)

    def details(self, details: Details) -> str:
        return self._line(self.escape(f"{details.summary}: {details.elsewhere}."))

    def inline(self, span: Span) -> str:
        if span.style != "code":
            return super().inline(span)
        # Code spans take no backslash escapes: a fence longer than any run of backticks inside keeps them.
        text = visible(_LINE_BREAKS.sub(" ", span.text))
        if _SHORTCODE.search(text):  # a code span cannot escape it: the text is shown as text instead
            return self.escape(text)
        fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
        pad = " " if text.startswith("`") or text.endswith("`") else ""
        return f"{fence}{pad}{text}{pad}{fence}"

    def page(self, document: Document, body: list[str]) -> str:
        lines: list[str] = []
        matter = document.front_matter
        if self._bundle(document) and matter:
            # JSON strings are valid YAML scalars: quotes, colons and newlines stay inside the value.
            lines += [
                "---",
                f"title: {json.dumps(matter.title)}",
                f"date: {hugo_date(matter.date)}",
                f"draft: {str(matter.draft).lower()}",
                f"tags: {json.dumps(list(matter.tags))}",
                "---",
                "",
            ]
        else:
            lines += [f"# {self.escape(document.title)}", ""]
        for block in body:
            lines += [block, ""]
        return "\n".join(lines)
