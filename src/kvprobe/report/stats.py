"""Small statistics for repeated runs: mean, standard deviation, 95% interval, Welch's t-test.

Student's t distribution comes from the regularized incomplete beta function, so the report
needs no SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's method for the incomplete beta continued fraction (Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The t value with P(T <= t) = p, by bisection on the two-sided p-value."""
    target = 2.0 * (1.0 - p)  # two-sided tail mass beyond the quantile
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided_p(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


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


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's unequal-variance t-test of mean(a) - mean(b), where there is variance to test."""
    sa, sb = summarise(a), summarise(b)
    if sa.n < 2 or sb.n < 2:
        return WelchResult("too_few")
    va, vb = sa.sd**2 / sa.n, sb.sd**2 / sb.n
    if va + vb == 0:
        return WelchResult("identical" if sa.mean == sb.mean else "no_variance")
    t = (sa.mean - sb.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    return WelchResult("tested", t, df, t_two_sided_p(t, df))


UNSTABLE_SD_FRACTION = 0.10  # pyperf's threshold: a standard deviation above 10% of the mean
FEW_RUNS = 3


def unstable(summary: Summary) -> bool:
    """sd above 10% of the mean (pyperf warns at the same point)."""
    return bool(summary.sd is not None and summary.mean and summary.sd > UNSTABLE_SD_FRACTION * abs(summary.mean))
