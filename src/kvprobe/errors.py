"""The errors kvprobe raises on purpose, in two families the command line maps to exit codes.

`InputError` (exit 2): what the user gave cannot be used (a file, an option, a directory, a missing
runtime or engine); nothing was measured. `RunFailed` (exit 1): a measurement began and a part of it
failed (a condition's set-up, a cgroup). Both carry a sentence meant for the user; `kvprobe.cli`
prints it and exits, so no such error ends in a traceback.
"""

from __future__ import annotations


class KvprobeError(Exception):
    """Every error kvprobe raises on purpose. Its text is one or more sentences, one per line."""


class InputError(KvprobeError):
    """Bad input: the command exits 2 with this text, having measured nothing."""


class RunFailed(KvprobeError):
    """A measurement could not go on: the command exits 1 with this text."""
