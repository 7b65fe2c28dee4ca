"""Pure boundary searches: the largest (or smallest) setting whose trial passes, to a tolerance.

A search knows nothing of engines or output. It calls `probe(value) -> bool`, optionally asks
`predict(passing_values) -> value` for where the boundary should lie, and returns the bracket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

Probe = Callable[[float], bool]
Predictor = Callable[[], Optional[float]]


@dataclass
class SearchResult:
    """Where the boundary lies: `passing` passed and `failing` (one tolerance step beyond) failed."""

    passing: Optional[float]
    failing: Optional[float]
    tolerance: float
    trials: list[tuple[float, bool]] = field(default_factory=list)
    converged: bool = False
    censored: bool = False
    non_monotone: bool = False

    @property
    def engine_starts(self) -> int:
        return len(self.trials)


@dataclass
class _Bracket:
    """The open interval still unknown, in an axis where small values pass and large ones fail."""

    passing: Optional[float] = None
    failing: Optional[float] = None
    results: dict[float, bool] = field(default_factory=dict)
    non_monotone: bool = False

    def record(self, value: float, passed: bool) -> None:
        self.results[value] = passed
        contradicted = any(
            (v > value and ok and not passed) or (v < value and not ok and passed) for v, ok in self.results.items()
        )
        self.non_monotone |= contradicted
        if passed and (self.passing is None or value > self.passing) and (self.failing is None or value < self.failing):
            self.passing = value
        if not passed and (self.failing is None or value < self.failing) and (self.passing is None or value > self.passing):
            self.failing = value

    def inside(self, value: float) -> bool:
        above = self.passing is None or value > self.passing + 1e-12
        below = self.failing is None or value < self.failing - 1e-12
        return above and below and value not in self.results


class _Axis:
    """Maps the caller's values onto an axis where small values pass, snapped to the tolerance grid."""

    def __init__(self, tolerance: float, passing_below: bool, integer: bool):
        self.tolerance = tolerance
        self.sign = 1.0 if passing_below else -1.0
        self.integer = integer

    def snap(self, x: float) -> float:
        snapped = round(x / self.tolerance) * self.tolerance
        return float(round(snapped)) if self.integer else round(snapped, 10)

    def to_axis(self, value: float) -> float:
        return self.sign * value

    def from_axis(self, x: float) -> float:
        value = self.sign * x
        return float(round(value)) if self.integer else round(value, 10)


def find_boundary(
    probe: Probe,
    lo: float,
    hi: float,
    tolerance: float,
    *,
    passing_below: bool = True,
    start: Optional[float] = None,
    predict: Optional[Predictor] = None,
    known: Iterable[tuple[float, bool]] = (),
    integer: bool = False,
    max_trials: int = 40,
) -> SearchResult:
    """Search [lo, hi] for the boundary between passing and failing values.

    passing_below=True finds the largest passing value (u_max, KV blocks); False finds the
    smallest (u_min). `known` seeds the bracket with earlier outcomes (no engine start).
    With `predict`, a guess goes to the predicted boundary and then one tolerance step across it;
    if that does not close the bracket, `predict` is asked once more (it may know more by then).
    Without it, and after that, the search bisects.
    """
    if not lo < hi:
        raise ValueError(f"empty search range [{lo}, {hi}]")
    if tolerance <= 0:
        raise ValueError("tolerance must be positive")
    axis = _Axis(tolerance, passing_below, integer)
    a_lo, a_hi = sorted((axis.to_axis(lo), axis.to_axis(hi)))
    bracket = _Bracket()
    for value, passed in known:
        if lo <= value <= hi:
            bracket.record(axis.to_axis(value), passed)
    trials: list[tuple[float, bool]] = []

    def clamp(x: float) -> float:
        return min(max(x, a_lo), a_hi)

    def run(x: float) -> bool:
        x = clamp(x)
        passed = bool(probe(axis.from_axis(x)))
        trials.append((axis.from_axis(x), passed))
        bracket.record(x, passed)
        return passed

    def gap_closed() -> bool:
        if bracket.passing is None or bracket.failing is None:
            return False
        return bracket.failing - bracket.passing <= tolerance * (1 + 1e-9)

    def done() -> bool:
        if gap_closed() or len(trials) >= max_trials:
            return True
        if bracket.passing is None and bracket.failing is not None and bracket.failing <= a_lo + 1e-12:
            return True  # even the lowest value failed
        if bracket.failing is None and bracket.passing is not None and bracket.passing >= a_hi - 1e-12:
            return True  # even the highest value passed
        return False

    if start is not None and not done():
        x = clamp(axis.to_axis(start))
        if bracket.inside(x):
            run(x)

    # Up to two predictions: the second may use what the first guess's failure revealed.
    previous_guess = None
    for _ in range(2 if predict is not None else 0):
        if done() or bracket.passing is None:
            break
        guess = predict()
        if guess is None or guess == previous_guess:  # nothing learned: bisect instead
            break
        previous_guess = guess
        x = clamp(axis.snap(axis.to_axis(guess)))
        if x <= bracket.passing:
            x = clamp(axis.snap(bracket.passing) + tolerance)
        elif bracket.failing is not None and x >= bracket.failing:
            x = clamp(axis.snap(bracket.failing) - tolerance)
        if not bracket.inside(x):
            break
        x = clamp(x + tolerance if run(x) else x - tolerance)
        if not done() and bracket.inside(x):
            run(x)  # one step across the guess; if it did not flip, predict again or bisect

    while not done():
        low, high = bracket.passing, bracket.failing
        if low is None and high is not None and high - a_lo <= tolerance * (1 + 1e-9):
            x = a_lo
        elif high is None and low is not None and a_hi - low <= tolerance * (1 + 1e-9):
            x = a_hi
        else:
            left = a_lo if low is None else low
            right = a_hi if high is None else high
            middle = axis.snap((left + right) / 2)
            candidates = [middle, middle + tolerance, middle - tolerance, (left + right) / 2]
            x = next((c for c in candidates if bracket.inside(c) and a_lo <= c <= a_hi), None)
            if x is None:
                break
        run(x)

    passing = None if bracket.passing is None else axis.from_axis(bracket.passing)
    failing = None if bracket.failing is None else axis.from_axis(bracket.failing)
    return SearchResult(
        passing=passing,
        failing=failing,
        tolerance=tolerance,
        trials=trials,
        converged=gap_closed(),
        censored=bracket.failing is None and bracket.passing is not None,
        non_monotone=bracket.non_monotone,
    )
