"""The order an experiment runs in, and how long it should take (pure functions).

Conditions are interleaved by default, repeat by repeat (A B C A B C ...), so that drift in the
machine (temperature, fragmentation, the page cache) spreads over every condition alike. `order:
blocked` runs every repeat of one condition before the next (A A A B B B ...): the original study's
protocol, kept so that its own effect on the loss can be measured against the interleaved order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvprobe.experiment.spec import Experiment
from kvprobe.results.schema import Condition, TrialRecord

ASSUMED_START_S = 40.0  # a tiny model on the CPU backend took 29 s a start here (docs/benchmarks.md)
CONTAINER_OVERHEAD_S = 15.0  # per container (or chroot) cell: probing the side and starting it
BRACKETED_STARTS = 3  # a bracketed search usually needs its estimate, one step across, and one more


@dataclass(frozen=True)
class Cell:
    """One condition, one repeat: one `kvprobe measure` of every model."""

    repeat: int
    condition: Condition

    @property
    def key(self) -> str:
        return f"{self.condition.name}/r{self.repeat}"


def schedule(experiment: Experiment) -> list[Cell]:
    repeats = range(1, experiment.file.repeats + 1)
    if experiment.file.order == "blocked":
        return [Cell(repeat, c) for c in experiment.conditions for repeat in repeats]
    return [Cell(repeat, c) for repeat in repeats for c in experiment.conditions]


def starts_per_model(experiment: Experiment) -> int:
    """Engine starts one model's searches should need in one cell (a guess for boundary searches)."""
    file = experiment.file
    bisection = math.ceil(math.log2(0.95 / file.tolerance))
    per_search = BRACKETED_STARTS if file.strategy == "bracketed" else bisection
    starts = 0
    for search in file.searches:
        starts += 1 if search == "reference" else per_search + (1 if file.confirm else 0)
    return starts


@dataclass(frozen=True)
class Estimate:
    starts: int
    seconds: float
    seconds_per_start: float
    measured_from: int  # earlier trials the time per start came from; 0: ASSUMED_START_S


def estimate(experiment: Experiment, earlier: list[TrialRecord]) -> Estimate:
    """The whole schedule's engine starts and duration, timed by earlier trials where there are any."""
    cells = schedule(experiment)
    starts = len(cells) * len(experiment.models) * starts_per_model(experiment)
    per_start = (
        sum(t.wall_s + t.teardown_s for t in earlier) / len(earlier) if earlier else ASSUMED_START_S
    ) + experiment.file.cooldown
    containers = sum(1 for c in cells if c.condition.container or c.condition.native_from_image)
    return Estimate(starts, starts * per_start + containers * CONTAINER_OVERHEAD_S, per_start, len(earlier))
