"""The hold_memory helper: touch SIZE bytes of anonymous memory, say "held", keep them until killed.

python -m kvprobe.measure.hold_memory SIZE
"""

from __future__ import annotations

import mmap
import signal
import sys

PAGE = mmap.PAGESIZE


def main(size: int) -> None:
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, size, PAGE):  # a page only counts once written
        region[offset] = 1
    print("held", flush=True)
    signal.pause()


if __name__ == "__main__":
    main(int(sys.argv[1]))
