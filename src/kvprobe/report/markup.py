"""The shared part of every markup writer (hyperfine's `MarkupExporter`): walk the document and
let the format say how each element looks and how text is escaped.

A format implements `escape` (the one place its untrusted text is made safe) and the elements.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from kvprobe.report import document as doc


def visible(text: str) -> str:
    """Control and other unprintable characters as visible escapes (\\x1e): in a report they would be
    invisible, or break a line or a table where no reader expects it."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in text)


class MarkupWriter(ABC):
    """Renders a Document as one text in a markup language.

    `STYLES` holds the format's template for each inline style; the text put into it is escaped.
    """

    STYLES: ClassVar[dict[str, str]]

    def render_document(self, document: doc.Document) -> str:
        body = [self.block(block) for block in document.blocks]
        return self.page(document, body)

    def block(self, block: doc.Block) -> str:
        if isinstance(block, doc.Heading):
            return self.heading(block.level, self.escape(block.text))
        if isinstance(block, doc.Paragraph):
            return self.paragraph(self.spans(block))
        if isinstance(block, doc.Table):
            return self.table(block)
        if isinstance(block, doc.Figure):
            return self.figure(block)
        if isinstance(block, doc.BulletList):
            return self.bullet_list([self.spans(item) for item in block.items])
        if isinstance(block, doc.Details):
            return self.details(block)
        raise TypeError(f"unknown block {block!r}")

    def spans(self, paragraph: doc.Paragraph) -> str:
        return "".join(self.inline(span) for span in paragraph.spans)

    def inline(self, span: doc.Span) -> str:
        return self.STYLES[span.style].format(self.escape(span.text))

    @abstractmethod
    def escape(self, text: str) -> str:
        """Untrusted plain text as literal text of this format, on one line."""

    @abstractmethod
    def heading(self, level: int, text: str) -> str: ...

    @abstractmethod
    def paragraph(self, text: str) -> str: ...

    @abstractmethod
    def table(self, table: doc.Table) -> str: ...

    @abstractmethod
    def figure(self, figure: doc.Figure) -> str: ...

    @abstractmethod
    def bullet_list(self, items: list[str]) -> str: ...

    @abstractmethod
    def details(self, details: doc.Details) -> str: ...

    @abstractmethod
    def page(self, document: doc.Document, body: list[str]) -> str:
        """The rendered blocks as a whole page."""
