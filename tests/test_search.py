"""The boundary searches against deterministic capacity functions (no engine)."""

import pytest

from kvprobe.search import find_boundary


def step_function(boundary):
    return lambda u: u <= boundary + 1e-9


def test_bisection_finds_u_max_to_tolerance():
    result = find_boundary(step_function(0.734), 0.05, 0.99, 0.01)
    assert result.converged and not result.censored
    assert result.passing <= 0.734 < result.failing
    assert result.failing - result.passing <= 0.01 + 1e-9
    assert 6 <= result.engine_starts <= 8


def test_bracketed_search_with_a_good_prediction_needs_at_most_four_starts():
    result = find_boundary(step_function(0.734), 0.05, 0.99, 0.01, start=0.5, predict=lambda: 0.7385)
    assert result.converged
    assert result.passing <= 0.734 < result.failing
    assert result.engine_starts <= 4


@pytest.mark.parametrize("guess", [0.30, 0.95, 0.60, 0.99])
def test_a_wrong_prediction_still_converges(guess):
    result = find_boundary(step_function(0.734), 0.05, 0.99, 0.01, start=0.2, predict=lambda: guess)
    assert result.converged
    assert result.passing <= 0.734 < result.failing
    assert result.engine_starts <= 10


def test_a_failing_first_trial_searches_downward():
    result = find_boundary(step_function(0.31), 0.05, 0.99, 0.01, start=0.9, predict=lambda: 0.95)
    assert result.trials[0] == (0.9, False)
    assert result.converged and result.passing <= 0.31 < result.failing


def test_nothing_passes():
    result = find_boundary(lambda u: False, 0.05, 0.99, 0.01)
    assert result.passing is None and not result.converged
    assert (0.05, False) in result.trials


def test_everything_passes_is_censored_at_the_top_of_the_range():
    result = find_boundary(lambda u: True, 0.05, 0.30, 0.01)
    assert result.passing == 0.30 and result.censored and result.failing is None


def test_non_monotone_noise_returns_a_verified_local_boundary():
    # A dip that fails inside the passing region: bisection may land on either edge,
    # but the answer must always be a tested pass one tolerance below a tested failure.
    def capacity(u):
        return u <= 0.80 and not 0.52 <= u <= 0.545

    result = find_boundary(capacity, 0.05, 0.99, 0.01, start=0.3, predict=lambda: 0.79)
    outcomes = dict(result.trials)
    assert outcomes[result.passing] is True
    assert outcomes[result.failing] is False
    assert result.failing - result.passing <= 0.01 + 1e-9


def test_non_monotone_outcomes_are_flagged():
    results = iter([True, False, True])  # pass, fail higher up, then pass above that failure? no: below
    seen = []

    def flaky(u):
        seen.append(u)
        return next(results, u < 0.5)

    result = find_boundary(flaky, 0.05, 0.99, 0.01, known=[(0.6, False), (0.7, True)])
    assert result.non_monotone


def test_smallest_passing_value_for_u_min():
    result = find_boundary(lambda u: u >= 0.137, 0.01, 0.5, 0.01, passing_below=False, start=0.4)
    assert result.converged
    assert result.passing >= 0.137 > result.failing
    assert result.passing - result.failing <= 0.01 + 1e-9


def test_known_outcomes_seed_the_bracket_without_engine_starts():
    calls = []

    def probe(u):
        calls.append(u)
        return u >= 0.2

    result = find_boundary(
        probe, 0.05, 0.99, 0.01, passing_below=False, known=[(0.5, True), (0.21, True)], predict=lambda: 0.2
    )
    assert 0.5 not in calls and 0.21 not in calls
    assert result.passing == 0.2 and result.failing == 0.19
    assert len(calls) == 2


def test_integer_axis_for_kv_blocks():
    result = find_boundary(
        lambda b: b <= 12_345, 1_000, 40_000, 100, start=10_000, integer=True, predict=lambda: 12_000
    )
    assert result.passing <= 12_345 < result.failing
    assert result.failing - result.passing <= 100
    assert all(float(v).is_integer() for v, _ in result.trials)


def test_a_second_prediction_uses_what_the_first_failure_revealed():
    seen = []

    def probe(u):
        seen.append(u)
        return u <= 0.71 + 1e-9

    def predict():  # like vLLM's refusal message, which names the memory actually available
        return 0.714 if any(u > 0.71 for u in seen) else 0.85

    result = find_boundary(probe, 0.05, 0.99, 0.01, start=0.2, predict=predict)
    assert result.passing == 0.71 and result.failing == 0.72
    assert result.trials == [(0.2, True), (0.85, False), (0.84, False), (0.71, True), (0.72, False)]


def kv_wall(capacity):
    """An explicit KV budget passes up to `capacity` blocks (each pass would run the fill test)."""
    return lambda blocks: blocks <= capacity


@pytest.mark.parametrize(
    ("capacity", "guess", "passes", "failures"),
    [
        (12_345, 12_320, 1, 1),  # the guess is right: one step above fails, the guess passes
        (12_345, 12_420, 1, 2),  # a step high: the scan comes down one step at a time
        (12_345, 12_120, None, None),  # low: the first start passes, bisection goes on upwards
        (12_345, 19_000, None, None),  # far too high: the scan stops at the start, then bisects
    ],
)
def test_with_cheap_failures_the_kv_search_comes_from_above(capacity, guess, passes, failures):
    probe = kv_wall(capacity)
    common = {"start": 12_050, "integer": True, "predict": lambda: guess}
    above = find_boundary(probe, 1_000, 40_000, 100, failures_cheap=True, **common)
    below = find_boundary(probe, 1_000, 40_000, 100, **common)
    assert (above.passing, above.failing) == (below.passing, below.failing)  # the same boundary either way
    assert above.converged and above.passing <= capacity < above.failing
    passed = [value for value, ok in above.trials if ok]
    if passes is not None:
        assert (len(passed), len(above.trials) - len(passed)) == (passes, failures)
        assert len([value for value, ok in below.trials if ok]) >= 2  # from below: the start and the guess pass
    if guess > 15_000:  # after DESCENT_STEPS failures the start is probed, then the search bisects
        scanned = [value for value, _ in above.trials[: above.trials.index((12_050, True))]]
        assert scanned == [19_100, 19_000, 18_900]


def test_cheap_failures_change_nothing_without_a_prediction():
    probe = kv_wall(12_345)
    plain = find_boundary(probe, 1_000, 40_000, 100, start=12_050, integer=True)
    cheap = find_boundary(probe, 1_000, 40_000, 100, start=12_050, integer=True, failures_cheap=True)
    assert plain.trials == cheap.trials
