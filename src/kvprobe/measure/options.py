"""Everything about how a model is measured that does not change its capacity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kvprobe.results.schema import Condition, ContainerRun, Environment, ExperimentRef, GuardSettings, RunOptions
from kvprobe.vocabulary import SEARCHES, KvApproach, Label, Search, Strategy

Prestart = Literal["auto", "on", "off"]


def _pool_in_words(environment: Environment) -> str:
    """Whose memory the KV cache lives in, as the reasons below say it."""
    if environment.kv_pool == "gpu":
        return "discrete GPU"
    return "unified memory" if environment.gpu.available and environment.gpu.devices else "CPU backend"


# vLLM 0.26 builds its config for a world of 2+ ranks by importing flashinfer.comm (all-reduce
# fusion), which initializes CUDA: a waiting worker would hold a CUDA context on the device measured.
PARALLEL_PRESTART = (
    "tensor/pipeline parallel ({ranks} ranks): vLLM's config build for 2+ ranks imports flashinfer.comm, "
    "which initializes CUDA, so a waiting worker would hold device memory during the trial before its own"
)


def resolve_prestart(choice: Prestart, environment: Environment, ranks: int = 1) -> tuple[bool, str]:
    """Whether the next trials' workers may import during a trial, and why (`ranks`: the most
    engine ranks of any model in the run).

    Only on a discrete GPU by default: there a waiting worker's host memory is not the pool
    measured. On the CPU backend and on unified memory it would be, so it stays off unless forced.
    Never on a Ray cluster (see cluster.agent: the trial's processes are found by its tag), nor
    with 2+ ranks (PARALLEL_PRESTART), even when forced.
    """
    if environment.cluster is not None:  # even when forced: the trial's tag is set when its worker starts
        return False, "Ray cluster: a worker started before its trial could not tag that trial's Ray workers"
    if ranks > 1:
        return False, PARALLEL_PRESTART.format(ranks=ranks)
    if choice != "auto":
        return choice == "on", f"--prestart {choice}"
    said = _pool_in_words(environment)
    if environment.kv_pool == "gpu":
        return True, f"{said}: a waiting worker holds no device memory, and host memory is not the pool"
    return False, f"{said}: a waiting worker's host memory would be part of the pool measured"


def resolve_kv_approach(choice: KvApproach | Literal["auto"], environment: Environment) -> tuple[KvApproach, str]:
    """From which side the physical-capacity search approaches its boundary, and why.

    Every passing kv_blocks start runs the fill test, the longest part of a start. On a
    discrete GPU a budget that does not fit fails at its allocation, in seconds, so the search
    comes from above and, where its prediction is close, pays for one fill only. On the CPU
    backend and on unified memory an over-budget start may allocate and fail only while it
    fills, squeezing the host: the search comes from below, from the budget u_max started with.
    """
    if choice != "auto":
        return choice, f"--kv-approach {choice.replace('_', '-')}"
    said = _pool_in_words(environment)
    if environment.kv_pool == "gpu":
        return "from_above", f"{said}: a budget that does not fit fails at its allocation, before any fill"
    return "from_below", f"{said}: a budget that does not fit may fail only in its fill, squeezing the host"


@dataclass(frozen=True)
class MeasureOptions:
    label: Label = "native"
    repeats: int = 1
    tolerance: float = 0.01
    utilization_range: tuple[float, float] | None = None  # overrides each model's range
    searches: tuple[Search, ...] = SEARCHES
    fill_target: float = 0.95
    throughput: bool = False
    cooldown_s: float = 0.0
    max_gpu_temp_c: int | None = None
    drop_caches: bool = False
    strategy: Strategy = "bracketed"
    confirm: bool = True  # start each boundary's passing setting once more
    prestart: Prestart = "auto"  # start the next trials' workers (imports) while a trial runs
    prestart_reason: str = ""  # why, once `resolve_prestart` decided "on" or "off"
    kv_approach: KvApproach = "from_below"  # see resolve_kv_approach
    kv_approach_reason: str = ""
    retries: int = 1  # a timed-out trial is tried again this often before it counts as a failure
    container: ContainerRun | None = None  # how `kvprobe container` started this run, recorded as-is
    condition: Condition | None = None  # what `kvprobe experiment` does around each start; None: nothing
    experiment: ExperimentRef | None = None
    only_repeat: int | None = None  # measure this repeat alone (an experiment's cell), not 1..repeats
    host_shared: bool = False  # a lane of `experiment --devices`: host memory is not awaited at a trial's end

    @property
    def condition_name(self) -> str:
        return self.condition.name if self.condition else self.label

    @property
    def repeat_numbers(self) -> range:
        return range(self.only_repeat, self.only_repeat + 1) if self.only_repeat else range(1, self.repeats + 1)

    def record(self, utilization_range: tuple[float, float], guard: GuardSettings) -> RunOptions:
        """What a result keeps of these options, with the range searched and the guard applied."""
        kept = {name: getattr(self, name) for name in RunOptions.model_fields if hasattr(self, name)}
        resolved = {"prestart": self.prestart == "on"}
        return RunOptions(
            **{
                **kept,
                "utilization_range": utilization_range,
                "guard": guard,
                "searches": list(self.searches),
                **resolved,
            }
        )
