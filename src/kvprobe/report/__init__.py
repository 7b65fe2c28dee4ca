"""`kvprobe report`: result files in, Markdown/HTML/CSV/JSON/charts out. It never runs an engine."""

from __future__ import annotations

from kvprobe.report.writers import WRITERS, write_all

__all__ = ["WRITERS", "write_all"]
