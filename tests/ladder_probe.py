"""What isolation the process running this script is under, as JSON: its namespaces (the inode of
each /proc/self/ns link), its cgroups (/proc/self/cgroup), the memory limit it can read, the size of
/dev/shm, its seccomp mode, and how many entries each directory named on the command line holds.
Run inside each rung of a ladder test; standard library only."""

import json
import os
import sys
from pathlib import Path

NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "uts", "user")


def read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def main() -> None:
    shm = os.statvfs("/dev/shm")
    status = dict(line.split(":\t", 1) for line in (read("/proc/self/status") or "").splitlines() if ":\t" in line)
    print(
        json.dumps(
            {
                "ns": {name: os.stat(f"/proc/self/ns/{name}").st_ino for name in NAMESPACES},
                "cgroup": read("/proc/self/cgroup"),
                "memory_limit": read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
                or read("/sys/fs/cgroup/memory.max"),
                "shm_bytes": shm.f_blocks * shm.f_frsize,
                "seccomp": status.get("Seccomp"),
                "entries": {path: len(os.listdir(path)) for path in sys.argv[1:]},
            }
        )
    )


if __name__ == "__main__":
    main()
