"""Find and end every process of a trial's session, including those that outlived their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kvprobe.environment.memory import read_kernel_fields
from kvprobe.worker_protocol import INTERRUPTS

PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold interrupts back while a trial's processes are started or ended: a second Ctrl-C (or a
    closing terminal) then takes effect once that is done, instead of abandoning the engine. A process
    spawned meanwhile inherits the mask: kvprobe's workers lift it first (accept_interrupts)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_interrupts() -> None:
    """After an interrupt has ended the run's trials: further ones are ignored while kvprobe finishes
    its records and exits 130 (one arriving then ended the process by SIGINT, with no exit code)."""
    for interrupt in INTERRUPTS:
        signal.signal(interrupt, signal.SIG_IGN)


def become_subreaper() -> bool:
    """Orphans of our trials are re-parented to us (not to init), so we can reap and see them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        return False


def reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _stat_fields(pid: str) -> tuple[str, int, int] | None:
    """(state, pgrp, session) from /proc/PID/stat; the command name may hold spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()
    return rest[0], int(rest[2]), int(rest[3])


START_TIME_FIELD = 22  # /proc/PID/stat: the process's start time in clock ticks after boot
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def process_identity(pid: int) -> dict[str, str | int] | None:
    """What ties a pid to one process: its start time after boot and the boot's id (a pid is reused,
    and counted anew after a reboot; both together are not). None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        boot_id = BOOT_ID.read_text().strip()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()  # fields 3 onwards
    return {"pid": pid, "start_time": int(rest[START_TIME_FIELD - 3]), "boot_id": boot_id}


def members(leader: int) -> list[int]:
    """Live (non-zombie) processes whose process group or session is the trial's leader pid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields and fields[0] != "Z" and leader in (fields[1], fields[2]):
            found.append(int(entry))
    return found


def _smaps_rollup(pid: int) -> dict[str, int]:
    try:
        return read_kernel_fields(f"/proc/{pid}/smaps_rollup")
    except OSError:  # the process ended meanwhile
        return {}


def processes_memory(pids: list[int]) -> dict:
    """These processes' memory by proportional set size (shared pages split fairly), summed.

    `private_bytes` counts anonymous and shared-memory pages, what the engine itself holds;
    file-backed pages (its libraries) are page cache, which host and cgroup account apart.
    """
    totals = {"pss_bytes": 0, "private_bytes": 0, "file_bytes": 0}
    for pid in pids:
        rollup = _smaps_rollup(pid)
        totals["pss_bytes"] += rollup.get("Pss", 0)
        totals["private_bytes"] += rollup.get("Pss_Anon", 0) + rollup.get("Pss_Shmem", 0)
        totals["file_bytes"] += rollup.get("Pss_File", 0)
    return {**totals, "processes": len(pids), "pids": pids}


def resident_memory(leader: int) -> dict:
    """The trial group's memory (see processes_memory)."""
    return processes_memory(members(leader))


def ignores_sigterm(pid: int) -> bool:
    """Whether the process ignores SIGTERM (its SigIgn mask): Python's multiprocessing resource
    tracker does, by design, and exits by itself once the processes it watches are gone, unlinking
    the shared-memory segments they left behind."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), "0")
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


def _wait_until_none(find: Callable[[], list[int]], seconds: float, poll_s: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reap_zombies()
        if not find():
            return
        time.sleep(poll_s)


# The grace a process that handles SIGTERM gets. On one GPU every engine process exits within it
# (the 7B's trials: 0.25-0.47 s). vLLM's CPU engine core and worker (VLLM::Worker, spinning in its
# compute threads) and TP 2's VLLM::Worker_TP do not act on SIGTERM and are SIGKILLed after it:
# teardown 1.15-1.16 s on the CPU backend, 1.39-1.67 s at TP 2 (docs/benchmarks.md,
# docs/gpu-graphs/). (From 2a47d7b until workers lifted the mask their spawn held,
# worker_protocol.accept_interrupts, no trial process received SIGTERM at all.)
SIGTERM_GRACE_S = 1.0
# What a process that ignores SIGTERM gets, once the others are gone, to exit by itself.
CLEANUP_GRACE_S = 5.0


def end_processes(
    find: Callable[[], list[int]],
    grace_s: float = SIGTERM_GRACE_S,
    poll_s: float = 0.05,
    signal_group: Callable[[int], None] | None = None,
) -> float:
    """SIGTERM what `find` names; after `grace_s` SIGKILL what still runs, except processes that
    ignore SIGTERM (a resource tracker cleaning up after the others), which get CLEANUP_GRACE_S
    more to exit on their own before they are killed too. Return seconds until `find` names none.
    `signal_group` also gets each signal (a process group, which catches members born meanwhile)."""
    started = time.monotonic()
    if not find():
        return 0.0
    if signal_group is not None:
        signal_group(signal.SIGTERM)
    for pid in find():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    _wait_until_none(find, grace_s, poll_s)

    def handlers() -> list[int]:
        return [pid for pid in find() if not ignores_sigterm(pid)]

    for pid in handlers():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_until_none(handlers, 30.0, poll_s)
    _wait_until_none(find, CLEANUP_GRACE_S, poll_s)
    if find():
        if signal_group is not None:
            signal_group(signal.SIGKILL)
        for pid in find():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_until_none(find, 30.0, poll_s)
    reap_zombies()
    left = find()
    if left:
        raise RuntimeError(f"processes {left} survived SIGKILL")
    return time.monotonic() - started


def terminate(leader: int, grace_s: float = SIGTERM_GRACE_S, poll_s: float = 0.05) -> float:
    """End the whole trial group (a member that changed its group is still in the session)."""

    def signal_group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, sig)

    try:
        return end_processes(lambda: members(leader), grace_s, poll_s, signal_group)
    except RuntimeError:
        raise RuntimeError(f"processes {members(leader)} of trial group {leader} survived SIGKILL") from None
