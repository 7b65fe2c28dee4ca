"""Pure boundary searches: the largest (or smallest) setting whose trial passes, to a tolerance.

A search knows nothing of engines or output. It calls `probe(value) -> bool`, optionally asks
`predict(passing_values) -> value` for where the boundary should lie, and returns the bracket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Probe = Callable[[float], bool]
Predictor = Callable[[], float | None]

# From above, the probes that step down from beyond a prediction before the search falls back on
# its start: the prediction's own step, one on either side of it (a physical-capacity prediction
# from the u_max start's report was within one step on the H100 and H200 runs in docs/).
DESCENT_STEPS = 3


@dataclass
class SearchResult:
    """Where the boundary lies: `passing` passed and `failing` (one tolerance step beyond) failed."""

    passing: float | None
    failing: float | None
    tolerance: float
    trials: list[tuple[float, bool]] = field(default_factory=list)
    converged: bool = False
    censored: bool = False
    non_monotone: bool = False
    confirmed: bool | None = None  # set by the caller that starts the boundary once more

    @property
    def engine_starts(self) -> int:
        return len(self.trials)


@dataclass
class _Bracket:
    """The open interval still unknown, in an axis where small values pass and large ones fail."""

    passing: float | None = None
    failing: float | None = None
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
        if (
            not passed
            and (self.failing is None or value < self.failing)
            and (self.passing is None or value > self.passing)
        ):
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


def contradicts(outcomes: Iterable[tuple[float, bool]], passing_below: bool = True) -> bool:
    """Whether a failure lies on the passing side of a pass (the outcomes are not monotone)."""
    points = [(value if passing_below else -value, passed) for value, passed in outcomes]
    lowest_failure = min((x for x, passed in points if not passed), default=None)
    return lowest_failure is not None and any(passed and x > lowest_failure for x, passed in points)


class _BoundarySearch:
    """One search's state: the axis, the bracket so far and the trials it started."""

    def __init__(
        self, probe: Probe, lo: float, hi: float, tolerance: float, passing_below: bool, integer: bool, max_trials: int
    ):
        self.probe = probe
        self.tolerance = tolerance
        self.max_trials = max_trials
        self.axis = _Axis(tolerance, passing_below, integer)
        self.lo, self.hi = lo, hi
        self.a_lo, self.a_hi = sorted((self.axis.to_axis(lo), self.axis.to_axis(hi)))
        self.bracket = _Bracket()
        self.trials: list[tuple[float, bool]] = []

    def seed(self, known: Iterable[tuple[float, bool]]) -> None:
        for value, passed in known:
            if self.lo <= value <= self.hi:
                self.bracket.record(self.axis.to_axis(value), passed)

    def clamp(self, x: float) -> float:
        return min(max(x, self.a_lo), self.a_hi)

    def run(self, x: float) -> bool:
        """Probe the grid value at axis position x; the value probed is the value recorded."""
        x = self.clamp(x)
        value = self.axis.from_axis(x)
        passed = bool(self.probe(value))
        self.trials.append((value, passed))
        self.bracket.record(x, passed)
        return passed

    def gap_closed(self) -> bool:
        low, high = self.bracket.passing, self.bracket.failing
        return low is not None and high is not None and high - low <= self.tolerance * (1 + 1e-9)

    def done(self) -> bool:
        low, high = self.bracket.passing, self.bracket.failing
        even_lowest_failed = low is None and high is not None and high <= self.a_lo + 1e-12
        even_highest_passed = high is None and low is not None and low >= self.a_hi - 1e-12
        return self.gap_closed() or len(self.trials) >= self.max_trials or even_lowest_failed or even_highest_passed

    def try_start(self, start: float) -> None:
        x = self.clamp(self.axis.to_axis(start))
        if not self.done() and self.bracket.inside(x):
            self.run(x)

    def follow_predictions(self, predict: Predictor) -> None:
        """Up to two predictions: the second may use what the first guess's failure revealed."""
        previous_guess = None
        for _ in range(2):
            passing = self.bracket.passing
            if self.done() or passing is None:
                return
            guess = predict()
            if guess is None or guess == previous_guess:  # nothing learned: bisect instead
                return
            previous_guess = guess
            x = self._inside_bracket(self.clamp(self.axis.snap(self.axis.to_axis(guess))), passing)
            if not self.bracket.inside(x):
                return
            x = self.clamp(x + self.tolerance if self.run(x) else x - self.tolerance)
            if not self.done() and self.bracket.inside(x):
                self.run(x)  # one step across the guess; if it did not flip, predict again or bisect

    def descend(self, guess: float | None, floor: float | None) -> None:
        """Failures cheap: from one step beyond `guess` towards the passing side, one step at a
        time, for DESCENT_STEPS probes at most, until one passes or the next would reach `floor`
        (a value expected to pass, started next by the caller; bisection follows). A pass right
        away means the guess was low: bisection goes on above it."""
        if guess is None:
            return
        x = self.clamp(self.axis.snap(self.axis.to_axis(guess)) + self.tolerance)
        stop = None if floor is None else self.clamp(self.axis.to_axis(floor))
        for _ in range(DESCENT_STEPS):
            if self.done() or not self.bracket.inside(x) or (stop is not None and x <= stop + 1e-12):
                return
            if self.run(x):
                return
            x = self.clamp(x - self.tolerance)

    def _inside_bracket(self, x: float, passing: float) -> float:
        """A guess outside the open bracket (`passing` is its passing end) moves one step inside it."""
        if x <= passing:
            return self.clamp(self.axis.snap(passing) + self.tolerance)
        if self.bracket.failing is not None and x >= self.bracket.failing:
            return self.clamp(self.axis.snap(self.bracket.failing) - self.tolerance)
        return x

    def bisect(self) -> None:
        while not self.done():
            x = self._next_bisection()
            if x is None:
                return
            self.run(x)

    def _next_bisection(self) -> float | None:
        low, high, step = self.bracket.passing, self.bracket.failing, self.tolerance * (1 + 1e-9)
        if low is None and high is not None and high - self.a_lo <= step:
            return self.a_lo
        if high is None and low is not None and self.a_hi - low <= step:
            return self.a_hi
        left = self.a_lo if low is None else low
        right = self.a_hi if high is None else high
        middle = self.axis.snap((left + right) / 2)
        candidates = [middle, middle + self.tolerance, middle - self.tolerance, (left + right) / 2]
        return next((c for c in candidates if self.bracket.inside(c) and self.a_lo <= c <= self.a_hi), None)

    def result(self) -> SearchResult:
        bracket = self.bracket
        return SearchResult(
            passing=None if bracket.passing is None else self.axis.from_axis(bracket.passing),
            failing=None if bracket.failing is None else self.axis.from_axis(bracket.failing),
            tolerance=self.tolerance,
            trials=self.trials,
            converged=self.gap_closed(),
            censored=bracket.failing is None and bracket.passing is not None,
            non_monotone=bracket.non_monotone,
        )


def find_boundary(
    probe: Probe,
    lo: float,
    hi: float,
    tolerance: float,
    *,
    passing_below: bool = True,
    start: float | None = None,
    predict: Predictor | None = None,
    known: Iterable[tuple[float, bool]] = (),
    integer: bool = False,
    max_trials: int = 40,
    failures_cheap: bool = False,
) -> SearchResult:
    """Search [lo, hi] for the boundary between passing and failing values.

    passing_below=True finds the largest passing value (u_max, KV blocks); False finds the
    smallest (u_min). `known` seeds the bracket with earlier outcomes (no engine start).
    With `predict`, a guess goes to the predicted boundary and then one tolerance step across it;
    if that does not close the bracket, `predict` is asked once more (it may know more by then).
    Without it, and after that, the search bisects. Every value passed to `probe` lies on the
    search's grid (`start` excepted), and the boundary returned is one of them, exactly: callers
    never round.

    `failures_cheap`: a failing probe costs much less than a passing one (an explicit KV budget
    that does not fit fails at its allocation on a discrete GPU; one that fits then runs its fill
    test). The search then comes from the failing side: one step beyond the prediction, then one
    step at a time back towards `start` (DESCENT_STEPS at most), then `start`, then bisection.
    Where the prediction is within a step, exactly one probe passes.
    """
    if not lo < hi:
        raise ValueError(f"empty search range [{lo}, {hi}]")
    if tolerance <= 0:
        raise ValueError("tolerance must be positive")
    search = _BoundarySearch(probe, lo, hi, tolerance, passing_below, integer, max_trials)
    search.seed(known)
    if failures_cheap and predict is not None:
        search.descend(predict(), start)
    if start is not None:
        search.try_start(start)
    if predict is not None and not failures_cheap:
        search.follow_predictions(predict)
    search.bisect()
    return search.result()
