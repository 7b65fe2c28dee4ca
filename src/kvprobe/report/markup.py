"""The shared part of every markup writer (hyperfine's `MarkupExporter`): walk the document and
let the format say how each element looks and how text is escaped.

A format implements `escape` (the one place its untrusted text is made safe) and the elements.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from kvprobe.report.document import (
    Block,
    BulletList,
    Code,
    Document,
    Emphasis,
    Figure,
    Heading,
    Inline,
    Paragraph,
    Strong,
    Table,
    Text,
)


class MarkupWriter(ABC):
    """Renders a Document as one text in a markup language."""

    def render_document(self, document: Document) -> str:
        body = [self.block(block) for block in document.blocks]
        return self.page(document, body)

    def block(self, block: Block) -> str:
        if isinstance(block, Heading):
            return self.heading(block.level, self.escape(block.text))
        if isinstance(block, Paragraph):
            return self.paragraph(self.spans(block))
        if isinstance(block, Table):
            return self.table(block)
        if isinstance(block, Figure):
            return self.figure(block)
        if isinstance(block, BulletList):
            return self.bullet_list([self.spans(item) for item in block.items])
        raise TypeError(f"unknown block {block!r}")

    def spans(self, paragraph: Paragraph) -> str:
        return "".join(self.inline(span) for span in paragraph.spans)

    def inline(self, span: Inline) -> str:
        if isinstance(span, Code):
            return self.code(span.text)
        text = self.escape(span.text)
        if isinstance(span, Strong):
            return self.strong(text)
        if isinstance(span, Emphasis):
            return self.emphasis(text)
        assert isinstance(span, Text)
        return text

    @abstractmethod
    def escape(self, text: str) -> str:
        """Untrusted plain text as literal text of this format, on one line."""

    @abstractmethod
    def heading(self, level: int, text: str) -> str: ...

    @abstractmethod
    def paragraph(self, text: str) -> str: ...

    @abstractmethod
    def table(self, table: Table) -> str: ...

    @abstractmethod
    def figure(self, figure: Figure) -> str: ...

    @abstractmethod
    def bullet_list(self, items: list[str]) -> str: ...

    @abstractmethod
    def code(self, text: str) -> str:
        """Untrusted text as inline code (escaping is the format's own)."""

    @abstractmethod
    def strong(self, text: str) -> str: ...

    @abstractmethod
    def emphasis(self, text: str) -> str: ...

    @abstractmethod
    def page(self, document: Document, body: list[str]) -> str:
        """The rendered blocks as a whole page."""
