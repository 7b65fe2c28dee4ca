"""A memory cgroup for one experiment cell, without a cgroup namespace of its own.

The cell's `kvprobe measure` (and so its engine) is placed in a child of kvprobe's own memory
cgroup, limited to SIZE. The kernel enforces the limit, but the engine, reading
/sys/fs/cgroup as it is mounted, still sees the host's totals: the situation reported for
engines on GB10 inside Docker, reproduced here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from kvprobe.environment.memory import LAYOUTS, read_cgroup_memory
from kvprobe.errors import RunFailed

REMOVE_TIMEOUT_S = 30.0


class CgroupError(RunFailed):
    """The cgroup could not be made (not root, no memory controller, v2 without delegation)."""


class CellCgroup:
    """Create with `create()`, let a child join with `join` (a preexec function), `remove()` after."""

    def __init__(self, name: str, limit_bytes: int, root: str = "/sys/fs/cgroup"):
        own = read_cgroup_memory(root)
        if own.version == "none" or own.path is None:
            raise CgroupError("no memory cgroup here")
        self.version = "v2" if own.version == "v2" else "v1"
        self.path = Path(own.path) / name
        self.limit_bytes = limit_bytes

    def create(self) -> None:
        try:
            if self.version == "v2":  # a child gets the memory controller only if its parent hands it down
                (self.path.parent / "cgroup.subtree_control").write_text("+memory\n")
            self.path.mkdir(exist_ok=True)
            (self.path / LAYOUTS[self.version].limit).write_text(f"{self.limit_bytes}\n")
        except OSError as exc:
            raise CgroupError(f"cannot make memory cgroup {self.path}: {exc.strerror}") from None

    def join(self) -> None:
        """Move the calling process in (run in the child between fork and exec)."""
        (self.path / "cgroup.procs").write_text(f"{os.getpid()}\n")

    def remove(self) -> None:
        """Remove the cgroup once its last process is gone (a cell's trials may still be exiting)."""
        deadline = time.monotonic() + REMOVE_TIMEOUT_S
        while self.path.exists():
            try:
                self.path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
