"""The report as a small document model: headings, paragraphs, tables, figures, lists.

`report.layout` builds one from the numbers; each markup writer renders it. All text in here is
plain text, whoever wrote it (model names and labels come from users, reasons from engines):
writers escape it for their format, in one place each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Style = Literal["text", "code", "strong", "emphasis"]


@dataclass(frozen=True)
class Span:
    """A run of plain text in one inline style."""

    text: str
    style: Style = "text"


def code(text: str) -> Span:
    return Span(text, "code")


def strong(text: str) -> Span:
    return Span(text, "strong")


def emphasis(text: str) -> Span:
    return Span(text, "emphasis")


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    spans: tuple[Span, ...]

    @classmethod
    def of(cls, *spans: Span | str) -> Paragraph:
        return cls(tuple(Span(s) if isinstance(s, str) else s for s in spans))


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # right-aligned columns


@dataclass(frozen=True)
class Figure:
    stem: str  # the chart's file name without suffix
    caption: str  # what the chart shows and how to read it
    alt: str  # the chart's data in words, for readers who cannot see it


@dataclass(frozen=True)
class BulletList:
    items: tuple[Paragraph, ...]


@dataclass(frozen=True)
class Details:
    """A long literal (a command line) folded away: HTML shows it in a collapsible block; a blog's
    Markdown, where raw HTML is dropped (Hugo's default), says where to find it instead."""

    summary: str  # the fold's one-line label
    text: str  # the literal, shown as code
    elsewhere: str  # where the Markdown reader finds it (a CSV column)


Block = Heading | Paragraph | Table | Figure | BulletList | Details


@dataclass(frozen=True)
class FrontMatter:
    """Hugo's front matter for a blog post."""

    title: str
    date: str
    tags: tuple[str, ...]
    draft: bool = False  # Hugo builds a draft only with --buildDrafts


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)
    front_matter: FrontMatter | None = None
