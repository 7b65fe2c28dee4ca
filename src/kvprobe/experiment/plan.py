"""The order an experiment runs in, and how long it should take (pure functions).

Conditions are interleaved by default, repeat by repeat (A B C A B C ...), so that drift in the
machine (temperature, fragmentation, the page cache) spreads over every condition alike. `order:
blocked` runs every repeat of one condition before the next (A A A B B B ...): the original study's
protocol, kept so that its own effect on the loss can be measured against the interleaved order.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvprobe.config import ModelSettings, parse_utilization_range
from kvprobe.experiment.spec import Experiment
from kvprobe.measure.request import SearchSettings
from kvprobe.predict import weight_bytes
from kvprobe.results.schema import Condition, ResultDocument
from kvprobe.units import GIB

# Without this model's own starts, one start is guessed from its weights. The two ends it is drawn
# through: the tiny model took 29 s a start on this project's CPU backend (docs/benchmarks.md), and
# one GPT-OSS-120B start (about 61 GiB of weights) about 2 minutes on an H100.
RULE_FIXED_S = 30.0
RULE_S_PER_GIB = 1.5
RULE_TEXT = f"the model-size rule {RULE_FIXED_S:.0f} s + {RULE_S_PER_GIB} s per GiB of weights"
CONTAINER_OVERHEAD_S = 15.0  # per container (or chroot) cell: probing the side and starting it


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


def search_settings(experiment: Experiment) -> SearchSettings:
    """The experiment file's search settings, as each cell's request carries them."""
    file = experiment.file
    span = parse_utilization_range(file.range) if file.range is not None else None
    return SearchSettings(
        tolerance=file.tolerance,
        utilization_range=span,
        searches=tuple(file.searches),
        strategy=file.strategy,
        confirm=file.confirm,
    )


@dataclass(frozen=True)
class StartTime:
    """One model's time per engine start and where it comes from."""

    model: str
    seconds: float
    source: str  # "its N earlier starts in the results directory", or the model-size rule


def start_time(model: ModelSettings, earlier: list[ResultDocument]) -> StartTime:
    """This model's own starts in `earlier` where there are any (mean wall time plus teardown), else the
    model-size rule (RULE_FIXED_S + RULE_S_PER_GIB per GiB of predicted weights)."""
    own = [t for doc in earlier if doc.model == model.name for t in doc.trials]
    if own:
        seconds = sum(t.wall_s + t.teardown_s for t in own) / len(own)
        return StartTime(model.name, seconds, f"its {len(own)} earlier starts in the results directory")
    weights = weight_bytes(model.hf_config(), model.dtype, model.extra_engine_args.get("quantization"))
    seconds = RULE_FIXED_S + RULE_S_PER_GIB * weights / GIB
    return StartTime(model.name, seconds, f"{RULE_TEXT} ({weights / GIB:.1f} GiB predicted from config.json)")


@dataclass(frozen=True)
class Estimate:
    starts: int
    seconds: float
    per_model: tuple[StartTime, ...]


def estimate(experiment: Experiment, earlier: list[ResultDocument]) -> Estimate:
    """The whole schedule's engine starts and duration, each model timed by its own earlier starts where
    the results directory has them, else by the model-size rule; cooldowns and container cells added."""
    cells = schedule(experiment)
    search = search_settings(experiment)
    times = tuple(start_time(model, earlier) for model in experiment.models)
    starts = seconds = 0.0
    for model, timed in zip(experiment.models, times, strict=True):
        per_cell = search.expected_starts(model.utilization_range)
        starts += per_cell * len(cells)
        seconds += per_cell * len(cells) * (timed.seconds + experiment.file.cooldown)
    containers = sum(1 for c in cells if c.condition.container or c.condition.native_from_image)
    return Estimate(int(starts), seconds + containers * CONTAINER_OVERHEAD_S, times)
