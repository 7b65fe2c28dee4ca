"""`kvprobe experiment`'s terminal output: the schedule and its estimated duration."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from kvprobe.experiment.plan import estimate, schedule
from kvprobe.experiment.spec import Experiment
from kvprobe.measure.containers import runtime_flag_warnings
from kvprobe.measure.session import code_from_model_directories
from kvprobe.output.progress import print_rows
from kvprobe.results.schema import Condition, ResultDocument
from kvprobe.units import gib


def describe(condition: Condition) -> str:
    """What a condition does, in a few words."""
    parts: list[str] = [condition.where]
    box, image = condition.container, condition.native_from_image
    if box is not None:
        parts.append(
            f"{box.runtime}, memory {box.memory or 'unlimited'}, "
            + ("ipc host" if box.ipc_host else f"shm {box.shm_size}")  # a shm size: a private IPC namespace
        )
        named = (("pid", box.pid), ("cgroup", box.cgroup), ("cgroupns", box.cgroupns), ("seccomp", box.seccomp))
        parts += [f"{field} {value}" for field, value in named if value is not None]
        parts += [f"network {box.network}"] if box.network != "none" else []  # none: kvprobe's default
        parts += ["privileged"] if box.privileged else []
        parts += [f"runtime flags {' '.join(box.runtime_flags)}"] if box.runtime_flags else []
    if image is not None:
        parts.append(f"chroot of {image.image or image.rootfs} in the host's namespaces")
    for size, text in (
        (condition.page_cache_bytes, "page cache {} GiB"),
        (condition.hold_memory_bytes, "memory held {} GiB"),
        (condition.cgroup_limit_bytes, "cgroup limit {} GiB, not visible to the engine"),
    ):
        if size:
            parts.append(text.format(gib(size)))
    if condition.drop_caches:
        parts.append("caches dropped")
    if condition.weights:
        parts.append(f"weights {condition.weights}")
    return "; ".join(parts)


def print_schedule(console: Console, experiment: Experiment, earlier: list[ResultDocument]) -> None:
    cells = schedule(experiment)
    rows: list[tuple[str, ...]] = [
        (str(i), str(c.repeat), c.condition.name, describe(c.condition)) for i, c in enumerate(cells, start=1)
    ]
    print_rows(
        console,
        f"experiment {experiment.file.name}: schedule ({experiment.file.order})",
        ("cell", "repeat", "condition", "what"),
        rows,
        left=("condition", "what"),
    )
    for condition in experiment.conditions:  # what a shared file would let a container touch, said first
        box = condition.container
        for warning in runtime_flag_warnings(box.runtime_flags) if box else []:
            console.print(f"[yellow]warning:[/] condition {escape(condition.name)}: {escape(warning)}", highlight=False)
    for warning in code_from_model_directories(experiment.models):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    guess = estimate(experiment, earlier)
    console.print(
        f"{len(cells)} cells x {len(experiment.models)} model(s): about {guess.starts} engine starts, "
        f"estimated {guess.seconds / 60:.0f} min",
        highlight=False,
    )
    for timed in guess.per_model:
        console.print(
            f"  {escape(timed.model)}: about {timed.seconds / 60:.1f} min per start: from {escape(timed.source)}",
            highlight=False,
        )
