"""The "why" from the engine's own arithmetic: a KV difference between two sets of runs split into
the changes of its sizing equation's inputs (engines.sizing.decompose), each in bytes, with the
residual the equation does not account for. Numbers only; the layouts write the words.

Each run contributes its reference trial's SizingCheck (recorded by the result builder, or computed
here for results made before it was recorded). The inputs are averaged per side and the equation
evaluated at the means; the residual is the mean engine KV difference less every input's
contribution: it holds the inputs' interaction, the engines' block rounding and whatever the
equation misses.
"""

from __future__ import annotations

from pydantic import Field

from kvprobe.engines.sizing import check_trial, decompose, inputs_from
from kvprobe.report.compare import Model
from kvprobe.results.schema import ResultDocument, SizingCheck


class SizingDecomposition(Model):
    """The mean KV difference (after - before) split by the equation's inputs."""

    equation: str | None = Field(None, description="The sizing equation both sides share; None where they differ.")
    n_before: int = Field(0, description="Runs with a complete reference check on the reference side.")
    n_after: int = 0
    engine_kv_before_bytes: float | None = None
    engine_kv_after_bytes: float | None = None
    contributions: dict[str, int] = Field(
        default_factory=dict, description="Input -> the KV change its move alone gives (bytes)."
    )
    residual_bytes: float | None = Field(None, description="Engine KV difference - the sum of the contributions.")
    largest_check_residual_bytes: int | None = Field(
        None, description="The largest |engine - prediction| of a single run on either side."
    )
    missing: list[str] = Field(default_factory=list, description="Inputs the runs lack (nothing decomposed).")


def run_check(doc: ResultDocument) -> SizingCheck | None:
    """The reference trial's check, as recorded or computed from an older result."""
    if doc.reference is None:
        return None
    recorded = next((c for c in doc.sizing_checks if c.trial == doc.reference.trial), None)
    if recorded is not None:
        return recorded
    trial = next((t for t in doc.trials if t.number == doc.reference.trial), None)
    total = doc.cuda_view.total_bytes if doc.cuda_view else None
    return None if trial is None else check_trial(trial, doc.environment, total, doc.settings.get("engine", "vllm"))


def all_checks(doc: ResultDocument) -> list[SizingCheck]:
    """Every trial's check that reported KV, as recorded or computed from an older result."""
    if doc.sizing_checks:
        return doc.sizing_checks
    total = doc.cuda_view.total_bytes if doc.cuda_view else None
    engine = doc.settings.get("engine", "vllm")  # capacity_settings leaves out the default engine
    checks = (check_trial(trial, doc.environment, total, engine) for trial in doc.trials)
    return [check for check in checks if check is not None]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def decompose_runs(before: list[ResultDocument], after: list[ResultDocument]) -> SizingDecomposition | None:
    """Split the mean reference KV difference into input changes; None without checks on both sides."""
    sides = [[c for c in map(run_check, runs) if c is not None] for runs in (before, after)]
    if not sides[0] or not sides[1]:
        return None
    missing = sorted({name for side in sides for c in side for name in c.missing})
    equations = {c.equation for side in sides for c in side}
    complete = [[c for c in side if not c.missing and c.engine_kv_bytes is not None] for side in sides]
    residuals = [abs(c.residual_bytes) for side in complete for c in side if c.residual_bytes is not None]
    result = SizingDecomposition(
        equation=equations.pop() if len(equations) == 1 else None,
        n_before=len(complete[0]),
        n_after=len(complete[1]),
        missing=missing,
        largest_check_residual_bytes=max(residuals) if residuals else None,
    )
    if result.equation is None or not complete[0] or not complete[1]:
        return result
    engine = [_mean([float(c.engine_kv_bytes or 0) for c in side]) for side in complete]
    means = []
    for side in complete:
        names = set().union(*(c.inputs for c in side))
        # an optional input (a visible cgroup limit) counts only where every run of the side has it
        means.append({n: _mean([c.inputs[n] for c in side]) for n in names if all(n in c.inputs for c in side)})
    split = decompose(inputs_from(result.equation, means[0]), inputs_from(result.equation, means[1]))  # type: ignore[arg-type]
    return result.model_copy(
        update={
            "engine_kv_before_bytes": engine[0],
            "engine_kv_after_bytes": engine[1],
            "contributions": split.contributions,
            "residual_bytes": engine[1] - engine[0] - sum(split.contributions.values()),
        }
    )
