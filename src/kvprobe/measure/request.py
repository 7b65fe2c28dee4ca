"""One measurement, asked for: the typed request every way of starting one produces.

`kvprobe measure`'s options, an experiment's cell and `kvprobe container`'s inner run all become a
`MeasureRequest`. It is the one place for the defaults, it gives the resume identity, and it is how
a parent hands a measurement to a child process (`argv`: `kvprobe measure --request JSON`), so no
option is written back into a command line by hand.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kvprobe.config import SERVE_SOURCE, ModelSettings, load_model_source
from kvprobe.results.schema import Condition, ContainerRun, ContainerSettings, ExperimentRef
from kvprobe.safe_io import child_python
from kvprobe.vocabulary import SEARCHES, KvApproach, Search, Strategy

BRACKETED_STARTS = 3  # a bracketed search usually needs its estimate, one step across, and one more
Prestart = Literal["auto", "on", "off"]
LabelChoice = Literal["native", "container", "auto"]


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchSettings(Settings):
    """How the boundaries are searched: nothing here changes the capacity found, only its precision."""

    tolerance: float = Field(0.01, ge=0.001, le=0.5, description="Utilization tolerance of the searches.")
    utilization_range: tuple[float, float] | None = Field(
        None, description="The utilization range searched, overriding each model's utilization_range."
    )
    searches: tuple[Search, ...] = Field(SEARCHES, min_length=1, description="The searches, in the order they run.")
    strategy: Strategy = "bracketed"
    confirm: bool = Field(True, description="Start each converged boundary once more.")
    fill_target: float = Field(0.95, ge=0.1, le=1.0, description="Share of KV blocks the fill must occupy at once.")
    throughput: bool = Field(False, description="Also time a fixed decode workload at u_max.")
    prestart: Prestart = Field("auto", description="Start the next trials' workers during a trial; auto: by pool.")
    kv_approach: KvApproach | Literal["auto"] = Field("auto", description="Side the physical search comes from.")

    def expected_starts(self, model_range: tuple[float, float]) -> int:
        """Engine starts one model's searches should need (a guess: a boundary search may stop early
        or need more). Bisection halves the range until the tolerance: ceil(log2(width / tolerance))
        starts; bracketed usually needs its estimate, one step across and one more."""
        low, high = self.utilization_range or model_range
        bisection = max(1, math.ceil(math.log2((high - low) / self.tolerance)))
        per_search = BRACKETED_STARTS if self.strategy == "bracketed" else bisection
        confirm = 1 if self.confirm else 0
        return sum(1 if search == "reference" else per_search + confirm for search in self.searches)

    @field_validator("utilization_range")
    @classmethod
    def _ordered(cls, span: tuple[float, float] | None) -> tuple[float, float] | None:
        if span is not None and not 0.0 < span[0] < span[1] <= 1.0:
            raise ValueError(f"the range must satisfy 0 < LO < HI <= 1, not {span[0]}:{span[1]}")
        return span


class StartSettings(Settings):
    """What happens around each engine start: pauses, caches, timeouts and the memory guard."""

    cooldown_s: float = Field(0.0, ge=0.0, description="Seconds between starts.")
    max_gpu_temp_c: int | None = Field(None, description="Wait before each start until the GPU is this cool.")
    drop_caches: bool = Field(False, description="Drop the page cache before each start (root).")
    trial_timeout_s: float = Field(900.0, ge=10.0, description="Seconds one engine start may take.")
    guard: bool = Field(True, description="End a trial whose free memory falls below the floor.")
    guard_floor_bytes: int | None = Field(None, gt=0, description="The guard's floor; None: kvprobe's default.")
    host_shared: bool = Field(
        False,
        description="Trials run beside this one on other GPUs (experiment --devices): a trial's end does "
        "not wait for host memory, which they move, to come back to its baseline; its GPU's still does.",
    )

    @field_validator("cooldown_s", "trial_timeout_s")
    @classmethod
    def _finite(cls, seconds: float) -> float:
        if not math.isfinite(seconds):
            raise ValueError("must be a finite number of seconds")
        return seconds


class MeasureRequest(Settings):
    """Everything one `kvprobe measure` run was asked to do."""

    models_file: str | None = Field(None, description="The models file; None: the serve command's model.")
    serve_command: tuple[str, ...] | None = Field(
        None, description="A `vllm serve MODEL --flag ...` command line whose one model is measured instead."
    )
    only: tuple[str, ...] = Field((), description="Measure only these models (all when empty).")
    out_dir: str = "results"
    label: LabelChoice = "auto"
    repeats: int = Field(1, ge=1)
    only_repeat: int | None = Field(None, ge=1, description="An experiment's cell: this repeat alone.")
    search: SearchSettings = SearchSettings()
    start: StartSettings = StartSettings()
    condition: Condition | None = Field(None, description="An experiment's condition; None: a plain run.")
    experiment: ExperimentRef | None = None
    container: ContainerSettings | None = Field(None, description="Run the measurement in this container.")
    both: bool = Field(False, description="With container: measure natively first, then in the container.")
    started_by: ContainerRun | None = Field(None, description="Inside a container: how kvprobe started it.")
    ray_address: str | None = None
    resume: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> MeasureRequest:
        problems = []
        if (self.models_file is None) == (self.serve_command is None):
            problems.append("models_file: give a models file or a `vllm serve` command line, one of the two")
        if self.serve_command is not None and self.container is not None:
            problems.append("serve_command: kvprobe container measures a models file's models (write one)")
        if self.serve_command is not None and self.only:
            problems.append("only: a `vllm serve` command line has one model; --only selects from a models file")
        if self.both and self.container is None:
            problems.append("both: measuring natively and in a container needs a container")
        if self.container is not None and self.label != "auto":
            problems.append("label: a container run's labels are set by kvprobe (native for both, container inside)")
        if self.only_repeat is not None and self.only_repeat > self.repeats:
            problems.append(f"only_repeat: {self.only_repeat} is above repeats ({self.repeats})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def models_source(self) -> str:
        """Where the models come from, for messages: the models file, or `vllm serve`."""
        return self.models_file if self.models_file is not None else SERVE_SOURCE

    def models(self) -> list[ModelSettings]:
        """The models this request measures (ConfigError names every problem)."""
        return load_model_source(self.models_file, self.serve_command, list(self.only) or None)

    def expected_starts(self, models: list[ModelSettings]) -> int:
        """Engine starts the whole run should need: every model, every repeat it measures."""
        repeats = 1 if self.only_repeat is not None else self.repeats
        return repeats * sum(self.search.expected_starts(m.utilization_range) for m in models)

    @property
    def drop_caches(self) -> bool:
        return self.start.drop_caches or bool(self.condition and self.condition.drop_caches)

    def identity(self) -> dict:
        """What decides what this run measures: --resume continues only a run with the same identity.
        Where results go, whether to resume and how a container started the run do not count."""
        kept = self.model_dump(mode="json", exclude={"models_file", "out_dir", "resume", "started_by", "experiment"})
        if self.models_file is None:
            return kept  # the serve command, in `kept`, is the whole input
        return {"models_file_sha256": hashlib.sha256(Path(self.models_file).read_bytes()).hexdigest(), **kept}

    def arguments(self) -> list[str]:
        """kvprobe's arguments that run this request in a child process (after `kvprobe_command`)."""
        return ["measure", "--request", self.model_dump_json()]


def kvprobe_command(python: str | None = None) -> list[str]:
    """How a child process runs kvprobe (see safe_io.child_python: never from the working directory)."""
    return [*child_python(python), "-m", "kvprobe.cli"]
