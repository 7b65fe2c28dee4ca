"""Small statistics for repeated runs: mean, standard deviation, 95% interval, Welch's t-test, and a
linear trend over the runs' order.

Student's t distribution and Welch's test are SciPy's (`scipy.stats`); what is kvprobe's own is the
verdict that says why no test ran (too few runs, no variance), so a report never prints a bare p-value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from scipy import stats as scipy_stats


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    return float(2.0 * scipy_stats.t.sf(abs(t), df))


def t_quantile(p: float, df: float) -> float:
    """The t value with P(T <= t) = p."""
    return float(scipy_stats.t.ppf(p, df))


def least_squares(x: Sequence[Fraction], y: Sequence[Fraction]) -> tuple[Fraction, Fraction, Fraction]:
    """Slope, intercept and Sxx of y on x, exactly."""
    n = len(x)
    mean_x, mean_y = sum(x, Fraction(0)) / n, sum(y, Fraction(0)) / n
    sxx = sum(((a - mean_x) ** 2 for a in x), Fraction(0))
    sxy = sum(((a - mean_x) * (b - mean_y) for a, b in zip(x, y, strict=True)), Fraction(0))
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x, sxx


@dataclass(frozen=True)
class TrendFit:
    """Values against their position in a series (0, 1, 2, ...): the least-squares slope (exact), its
    standard error, 95% interval and t-test; None below three values. Its null hypothesis, no trend,
    is the exchangeability a test between two sets of runs assumes."""

    n: int
    slope: Fraction
    se: float | None
    ci95: tuple[float, float] | None
    p_value: float | None


def linear_trend(values: Sequence[Fraction]) -> TrendFit:
    slope, intercept, sxx = least_squares([Fraction(i) for i in range(len(values))], values)
    if len(values) < 3:
        return TrendFit(len(values), slope, None, None, None)
    squared = sum(((y - intercept - slope * i) ** 2 for i, y in enumerate(values)), Fraction(0))
    df = len(values) - 2
    se = math.sqrt(float(squared / df / sxx))
    half = t_quantile(0.975, df) * se
    p = 0.0 if se == 0 else t_two_sided_p(float(slope) / se, df)
    return TrendFit(len(values), slope, se, (float(slope) - half, float(slope) + half), p)


@dataclass
class Summary:
    n: int
    mean: float | None
    sd: float | None
    ci95_low: float | None
    ci95_high: float | None


def summarise(values: Sequence[float | None]) -> Summary:
    data = [float(v) for v in values if v is not None]
    n = len(data)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = sum(data) / n
    if n == 1:
        return Summary(1, mean, None, None, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in data) / (n - 1))
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half)


Verdict = Literal["tested", "identical", "no_variance", "too_few"]
"""tested: Welch's t-test ran. identical: every repeat on both sides gave the same value. no_variance:
each side repeated its own value exactly, and the two differ (a deterministic difference, no test).
too_few: fewer than two values on a side."""


@dataclass
class WelchResult:
    """Welch's t-test of two sides' values, or the verdict that says why none ran."""

    verdict: Verdict
    t: float | None = None
    df: float | None = None
    p_value: float | None = None
    difference: float | None = None  # mean(a) - mean(b)
    se: float | None = None  # Welch's standard error of the difference
    ci95_low: float | None = None  # the difference's 95% interval, on Welch's df
    ci95_high: float | None = None


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's unequal-variance t-test of mean(a) - mean(b), where there is variance to test."""
    sa, sb = summarise(a), summarise(b)
    if sa.mean is None or sa.sd is None or sb.mean is None or sb.sd is None:  # fewer than two values on a side
        return WelchResult("too_few")
    if sa.sd == 0 and sb.sd == 0:
        return WelchResult("identical" if sa.mean == sb.mean else "no_variance")
    with warnings.catch_warnings():  # nearly identical data: SciPy warns, the interval below shows it
        warnings.simplefilter("ignore", RuntimeWarning)
        tested = scipy_stats.ttest_ind(list(a), list(b), equal_var=False)
    difference = sa.mean - sb.mean
    se = math.sqrt(sa.sd**2 / sa.n + sb.sd**2 / sb.n)
    half = t_quantile(0.975, float(tested.df)) * se
    return WelchResult(
        "tested",
        float(tested.statistic),
        float(tested.df),
        float(tested.pvalue),
        difference,
        se,
        difference - half,
        difference + half,
    )


UNSTABLE_SD_FRACTION = 0.10  # pyperf's threshold: a standard deviation above 10% of the mean
FEW_RUNS = 3
SIGNIFICANT_P = 0.05  # a change is called a change below this p (or when both sides are constant and differ)


def unstable(summary: Summary) -> bool:
    """sd above 10% of the mean (pyperf warns at the same point)."""
    return bool(summary.sd is not None and summary.mean and summary.sd > UNSTABLE_SD_FRACTION * abs(summary.mean))
