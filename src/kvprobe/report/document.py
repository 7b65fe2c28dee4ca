"""The report as a small document model: headings, paragraphs, tables, figures, lists.

`report.layout` builds one from the numbers; each markup writer renders it. All text in here is
plain text, whoever wrote it (model names and labels come from users, reasons from engines):
writers escape it for their format, in one place each.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Strong:
    text: str


@dataclass(frozen=True)
class Emphasis:
    text: str


Inline = Text | Code | Strong | Emphasis


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    spans: tuple[Inline, ...]

    @classmethod
    def of(cls, *spans: Inline | str) -> Paragraph:
        return cls(tuple(Text(s) if isinstance(s, str) else s for s in spans))


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # right-aligned columns


@dataclass(frozen=True)
class Figure:
    stem: str  # the chart's file name without suffix
    caption: str


@dataclass(frozen=True)
class BulletList:
    items: tuple[Paragraph, ...]


Block = Heading | Paragraph | Table | Figure | BulletList


@dataclass(frozen=True)
class FrontMatter:
    """Hugo's front matter for a blog post."""

    title: str
    date: str
    tags: tuple[str, ...]
    draft: bool = True


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)
    front_matter: FrontMatter | None = None
